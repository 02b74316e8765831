"""Nucleus and cell segmentation of a single-cell crop: one registry, one calling convention.

Every segmenter is a function ``segment(image) -> CellMasks`` on an ``H x W x 3`` uint8 RGB
crop. Masks follow the data's convention: ``nucleus`` is the nucleus, ``cell`` the whole
cell (nucleus included), so the cytoplasm proper is ``cell & ~nucleus``.

``classical``: colour deconvolution (Ruifrok & Johnston 2001, scikit-image's ``rgb2hed``)
to the haematoxylin channel, Otsu thresholds for sure nucleus and sure background, and a
watershed on the intensity gradient between them; the cell is what differs from the
slide's background (its border colour) by more than Otsu's threshold of optical density.
The component nearest the crop's centre wins, since a crop is centred on its cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from xcyto.errors import XcytoError


class SegmentationError(XcytoError):
    """A segmenter that does not exist, or an image it cannot segment."""


@dataclass
class CellMasks:
    """Boolean ``H x W`` masks of one cell; ``method`` says which segmenter made them."""

    nucleus: np.ndarray
    cell: np.ndarray
    method: str = ""

    @property
    def cytoplasm(self) -> np.ndarray:
        return self.cell & ~self.nucleus


_SEGMENTERS: dict[str, Callable[[np.ndarray], CellMasks]] = {}


def register_segmenter(name: str):
    """Decorator: register ``function(image) -> CellMasks`` under ``name``."""

    def decorate(function):
        _SEGMENTERS[name] = function
        return function

    return decorate


def list_segmenters() -> list[str]:
    return sorted(_SEGMENTERS)


def segment(image, method: str = "classical") -> CellMasks:
    """Nucleus and cell masks of a single-cell crop (anything ``xcyto`` reads as an image)."""
    from xcyto.data import to_rgb_uint8

    if method not in _SEGMENTERS:
        raise SegmentationError(f"unknown segmenter {method!r}; choose one of: {', '.join(list_segmenters())}")
    array = to_rgb_uint8(image)
    if min(array.shape[:2]) < 8:
        raise SegmentationError(f"a {array.shape[1]} x {array.shape[0]} image is too small to segment (8 x 8 at least)")
    masks = _SEGMENTERS[method](array)
    masks.method = method
    return masks


def _central_component(mask: np.ndarray) -> np.ndarray:
    """The connected component of ``mask`` nearest the image centre, weighted by its size."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    height, width = mask.shape
    indices = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(mask, labels, indices)
    centres = np.array(ndimage.center_of_mass(mask, labels, indices))
    distance = np.hypot(centres[:, 0] - height / 2, centres[:, 1] - width / 2) / max(height, width)
    best = indices[np.argmax(sizes * np.exp(-4 * distance))]
    return labels == best


def _background_field(image: np.ndarray) -> np.ndarray:
    """The empty slide behind the cell, per channel: a plane fitted to the image border (light
    often falls unevenly across a field), robustly (the brightest half of the border, as
    neighbouring cells and debris there are darker)."""
    height, width = image.shape[:2]
    rows, cols = np.mgrid[:height, :width]
    border = np.zeros((height, width), bool)
    edge = max(1, min(height, width) // 32)
    border[:edge], border[-edge:], border[:, :edge], border[:, -edge:] = True, True, True, True
    pixels = image[border].astype(np.float64)
    brightest = pixels.sum(axis=1) >= np.median(pixels.sum(axis=1))
    design = np.stack([np.ones(border.sum()), rows[border] / height, cols[border] / width], axis=1)[brightest]
    coefficients, *_ = np.linalg.lstsq(design, pixels[brightest], rcond=None)
    grid = np.stack([np.ones(height * width), rows.ravel() / height, cols.ravel() / width], axis=1)
    return (grid @ coefficients).reshape(height, width, 3).clip(1, 255)


@register_segmenter("classical")
def classical(image: np.ndarray) -> CellMasks:
    from scipy import ndimage
    from skimage.color import rgb2hed
    from skimage.filters import sobel, threshold_otsu
    from skimage.morphology import disk, remove_small_objects
    from skimage.segmentation import watershed

    side = min(image.shape[:2])
    radius = max(1, round(side / 64))
    background = _background_field(image)
    density = -np.log((image.astype(np.float64) + 1) / (background + 1)).clip(min=0).sum(axis=2)
    smooth = ndimage.gaussian_filter(density, sigma=radius)
    cell = smooth > threshold_otsu(smooth) if np.ptp(smooth) > 0 else np.zeros(image.shape[:2], bool)
    cell = ndimage.binary_fill_holes(ndimage.binary_closing(cell, disk(radius)))
    cell = _central_component(remove_small_objects(cell, max_size=max(4, side * side // 400)))

    haematoxylin = ndimage.gaussian_filter(rgb2hed(image)[..., 0], sigma=radius / 2)
    inside = haematoxylin[cell]
    nucleus = np.zeros_like(cell)
    if inside.size > 16 and np.ptp(inside) > 0:
        threshold = threshold_otsu(inside)
        markers = np.zeros(cell.shape, np.int32)
        markers[~cell | (haematoxylin < threshold - 0.5 * (threshold - inside.min()))] = 1  # sure not nucleus
        markers[cell & (haematoxylin > threshold + 0.25 * (inside.max() - threshold))] = 2  # sure nucleus
        if (markers == 2).any():
            nucleus = watershed(sobel(haematoxylin), markers) == 2
            nucleus = ndimage.binary_fill_holes(ndimage.binary_opening(nucleus & cell, disk(max(1, radius // 2))))
            nucleus = _central_component(nucleus)
    return CellMasks(nucleus=nucleus, cell=cell | nucleus)
