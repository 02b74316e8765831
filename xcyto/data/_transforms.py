"""From a cell image (and its masks) to the normalised tensor a model reads.

Geometry runs on ``tv_tensors.Image`` and ``tv_tensors.Mask`` together, so masks
follow every resize, pad, flip and rotation exactly (nearest-neighbour for masks);
colour changes touch the image only. Padding and rotation corners are filled with
the image's own background colour (median of its border), not black, so the model
cannot learn "black corner = augmented".

Order: the view (the whole crop, or the square around its nucleus: :mod:`xcyto.data._views`),
optional denoising/contrast preprocessing on the full-resolution uint8 image, resize (padding
to square by default, so cells keep their shape), augmentation at the final size (cheaper),
then float32 and normalisation with the model's mean/std.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from xcyto.data._io import to_rgb_uint8
from xcyto.data._records import MASK_NAMES, CellDataset, CellSample
from xcyto.data._views import check_view, view_box
from xcyto.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _clahe(image: np.ndarray) -> np.ndarray:
    """Contrast-limited histogram equalisation of lightness only, so stain hues stay."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _median(image: np.ndarray) -> np.ndarray:
    return cv2.medianBlur(image, 3)


def _nlmeans(image: np.ndarray) -> np.ndarray:
    """Non-local means: removes sensor noise and keeps chromatin edges (slowest, ~ms per cell)."""
    return cv2.fastNlMeansDenoisingColored(image, None, 5, 5, 7, 21)


def _none(image: np.ndarray) -> np.ndarray:
    return image


#: Preprocessing by name; each takes and returns ``H x W x 3`` uint8 RGB.
PREPROCESSING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": _none,
    "clahe": _clahe,
    "median": _median,
    "nlmeans": _nlmeans,
}


def preprocess(image: np.ndarray, name: str = "none") -> np.ndarray:
    """Apply the preprocessing registered as ``name`` in ``PREPROCESSING``."""
    return PREPROCESSING[_check_preprocessing(name)](np.ascontiguousarray(image))


def background_colour(image: np.ndarray) -> tuple[int, int, int]:
    """Median colour of the image border: the slide background around a centred cell."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return tuple(int(value) for value in np.median(border, axis=0))


class StainJitter:
    """Random rescaling of stain concentrations in HED optical-density space.

    The HED basis is made for H&E; on Papanicolaou stains it still moves colours
    along plausible stain directions (Tellez et al. 2018, "HED-light": sigma 0.05).
    """

    RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
    HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)

    def __init__(self, sigma: float = 0.05) -> None:
        self.sigma = sigma

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.sigma <= 0:
            return image
        alpha = 1 + (torch.rand(3) * 2 - 1) * self.sigma
        beta = (torch.rand(3) * 2 - 1) * self.sigma
        density = -torch.log((image.float() + 1) / 256).permute(1, 2, 0)
        stains = density @ self.HED_FROM_RGB * alpha + beta
        rgb = torch.exp(-(stains @ self.RGB_FROM_HED)) * 256 - 1
        out = rgb.permute(2, 0, 1).round_().clamp_(0, 255).to(torch.uint8)
        return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out


@dataclass
class CellTransform:
    """Callable: ``image -> tensor`` or ``(image, masks) -> (tensor, masks)``.

    ``image`` is anything :func:`~xcyto.data.to_rgb_uint8` accepts; ``masks`` an
    ``H x W`` or ``K x H x W`` array. Returns a float32 ``3 x size x size`` tensor
    normalised with ``mean``/``std``, and bool ``K x size x size`` masks.
    Build with :func:`train_transform` or :func:`eval_transform`.
    """

    size: int
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    preprocessing: str = "none"
    pad_to_square: bool = True
    flips: bool = False
    rotation_degrees: float = 0.0
    quarter_turns: bool = False
    photometric: Callable | None = None
    view: str = "cell"

    def __call__(self, image, masks=None):
        image = image if _is_rgb_uint8(image) else to_rgb_uint8(image)
        masks = None if masks is None else _mask_tensor(masks, image.shape[:2])
        left, top, width, height = view_box(image, self.view)  # the whole image for the cell view
        image = image[top:top + height, left:left + width]
        masks = None if masks is None else masks[:, top:top + height, left:left + width]
        image = preprocess(image, self.preprocessing)
        fill = list(background_colour(image))
        pixels = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        mask_stack = None if masks is None else tv_tensors.Mask(masks.contiguous())
        pixels, mask_stack = self._fit(pixels, mask_stack, fill)
        pixels, mask_stack = self._move(pixels, mask_stack, fill)
        if self.photometric is not None:
            pixels = self.photometric(pixels)
        tensor = self._normalise(pixels)
        if masks is None:
            return tensor
        return tensor, mask_stack.as_subclass(torch.Tensor).bool()

    def _fit(self, pixels, mask_stack, fill):
        """Resize to ``size x size``: keep aspect and pad with background, or stretch."""
        height, width = pixels.shape[-2:]
        if not self.pad_to_square:
            target = [self.size, self.size]
            return F.resize(pixels, target, antialias=True), _maybe(F.resize, mask_stack, target)
        left, top, new_width, new_height = fit_box(height, width, self.size)
        if (new_height, new_width) != (height, width):
            pixels = F.resize(pixels, [new_height, new_width], antialias=True)
            mask_stack = _maybe(F.resize, mask_stack, [new_height, new_width])
        padding = [left, top, self.size - new_width - left, self.size - new_height - top]
        if any(padding):
            pixels = F.pad(pixels, padding, fill=fill)
            mask_stack = _maybe(F.pad, mask_stack, padding, fill=0)
        return pixels, mask_stack

    def _move(self, pixels, mask_stack, fill):
        """Random flips and rotation, applied identically to image and masks."""
        if self.flips:
            if torch.rand(()) < 0.5:
                pixels, mask_stack = F.horizontal_flip(pixels), _maybe(F.horizontal_flip, mask_stack)
            if torch.rand(()) < 0.5:
                pixels, mask_stack = F.vertical_flip(pixels), _maybe(F.vertical_flip, mask_stack)
        if self.quarter_turns:  # with the flips: the 8 symmetries of the square, no interpolation
            turns = int(torch.randint(4, ()))
            pixels = tv_tensors.wrap(pixels.as_subclass(torch.Tensor).rot90(turns, dims=(-2, -1)), like=pixels)
            if mask_stack is not None:
                mask_stack = tv_tensors.wrap(mask_stack.as_subclass(torch.Tensor).rot90(turns, dims=(-2, -1)),
                                             like=mask_stack)
        if self.rotation_degrees > 0:
            angle = float((torch.rand(()) * 2 - 1) * self.rotation_degrees)
            pixels = _rotate_with_fill(pixels, angle, fill)
            mask_stack = _maybe(F.rotate, mask_stack, angle, interpolation=v2.InterpolationMode.NEAREST, fill=0)
        return pixels, mask_stack

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (pixels.as_subclass(torch.Tensor).float().div_(255.0) - mean).div_(std)


def fit_box(height: int, width: int, size: int, pad_to_square: bool = True) -> tuple[int, int, int, int]:
    """Where an ``height x width`` image lands in the ``size x size`` model input:
    ``(left, top, width, height)`` of the resized image (the whole square when stretched)."""
    if not pad_to_square:
        return 0, 0, size, size
    scale = size / max(height, width)
    new_height = min(size, max(1, round(height * scale)))
    new_width = min(size, max(1, round(width * scale)))
    return (size - new_width) // 2, (size - new_height) // 2, new_width, new_height


ROTATIONS = ("any_angle", "dihedral", "none")


def train_transform(size: int = 224, *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    preprocessing: str = "none", pad_to_square: bool = True, flips: bool = True,
                    rotation: str = "any_angle", color_jitter: float = 0.15, hue_jitter: float = 0.0,
                    stain_jitter: float = 0.05, blur_probability: float = 0.2, view: str = "cell") -> CellTransform:
    """Augmenting transform: h/v flips, rotation, colour and stain jitter, mild blur.

    Cells have no canonical orientation, so rotations and flips are label-preserving.
    ``rotation``: ``"any_angle"`` (bilinear, corners filled with the background colour),
    ``"dihedral"`` (quarter turns: with the flips, the 8 symmetries of the square, exact)
    or ``"none"``. ``stain_jitter``: sigma of the HED stain rescaling. ``view``: the whole crop
    (``"cell"``) or the square around its nucleus (``"nucleus"``).
    Hue jitter is off by default: stain jitter already shifts hues, and torchvision's
    HSV round trip costs ~10 ms per 224 px cell (the rest of the pipeline ~5 ms).
    """
    photometric = [
        v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=hue_jitter),
        StainJitter(stain_jitter),
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.0))], p=blur_probability),
    ]
    if rotation not in ROTATIONS:
        raise DataError(f"rotation must be one of {', '.join(ROTATIONS)}, got {rotation!r}")
    return CellTransform(size=_check_size(size), mean=_check_stats(mean, "mean"), std=_check_stats(std, "std"),
                         preprocessing=_check_preprocessing(preprocessing), pad_to_square=pad_to_square,
                         flips=flips, rotation_degrees=180.0 if rotation == "any_angle" else 0.0,
                         quarter_turns=rotation == "dihedral", photometric=v2.Compose(photometric),
                         view=check_view(view))


def eval_transform(size: int = 224, *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   preprocessing: str = "none", pad_to_square: bool = True, view: str = "cell") -> CellTransform:
    """Deterministic transform for validation, test and explanation: view, preprocess, fit, normalise."""
    return CellTransform(size=_check_size(size), mean=_check_stats(mean, "mean"), std=_check_stats(std, "std"),
                         preprocessing=_check_preprocessing(preprocessing), pad_to_square=pad_to_square,
                         view=check_view(view))


class CellTorchDataset(Dataset):
    """A torch Dataset over cells: ``(image tensor, label)`` or, with masks, a dict.

    With ``with_masks`` each item is ``{"image", "label", "index", "masks", "mask_present"}``:
    ``masks`` is bool ``3 x size x size`` in ``MASK_NAMES`` order (nucleus, cytoplasm =
    whole cell, evidence), all False where the cell lacks that mask, and
    ``mask_present`` says which exist, so batches collate with the default collate.
    """

    def __init__(self, dataset_or_samples: CellDataset | Sequence[CellSample], transform: CellTransform,
                 with_masks: bool = False) -> None:
        self.samples = dataset_or_samples.samples if isinstance(dataset_or_samples, CellDataset) else dataset_or_samples
        self.transform = transform
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        if not self.with_masks:
            return self.transform(sample.image), sample.label
        height, width = sample.image.shape[:2]
        present = [getattr(sample, f"{name}_mask") is not None for name in MASK_NAMES]
        stack = np.stack([
            getattr(sample, f"{name}_mask") if has else np.zeros((height, width), dtype=bool)
            for name, has in zip(MASK_NAMES, present)
        ])
        image, masks = self.transform(sample.image, stack)
        return {"image": image, "label": sample.label, "index": index, "masks": masks,
                "mask_present": torch.tensor(present)}


def _rotate_with_fill(pixels: tv_tensors.Image, angle: float, fill: list[int]) -> tv_tensors.Image:
    """Bilinear rotation whose new corners are exactly ``fill``.

    torchvision blends ``fill`` in after bilinear sampling with zero padding, which
    leaves a dark seam along the old border; rotating ``image - fill`` with zero
    fill and adding ``fill`` back interpolates towards the background instead.
    """
    offset = torch.tensor(fill, dtype=torch.float32).view(3, 1, 1)
    shifted = tv_tensors.Image(pixels.as_subclass(torch.Tensor).float() - offset)
    rotated = F.rotate(shifted, angle, interpolation=v2.InterpolationMode.BILINEAR, fill=0.0)
    out = (rotated.as_subclass(torch.Tensor) + offset).round_().clamp_(0, 255).to(torch.uint8)
    return tv_tensors.Image(out)


def _mask_tensor(masks, shape: tuple[int, int]) -> torch.Tensor:
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != tuple(shape):
        raise DataError(f"masks of shape {masks.shape} do not match the {shape[0]} x {shape[1]} image")
    return torch.from_numpy(np.ascontiguousarray(masks.astype(np.uint8, copy=False)))


def _maybe(function, mask_stack, *args, **kwargs):
    return None if mask_stack is None else function(mask_stack, *args, **kwargs)


def _is_rgb_uint8(image) -> bool:
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def _check_preprocessing(name: str) -> str:
    if name not in PREPROCESSING:
        raise DataError(f"unknown preprocessing {name!r}; choose from {', '.join(PREPROCESSING)}")
    return name


def _check_size(size: int) -> int:
    if int(size) != size or size < 8:
        raise DataError(f"image size must be a whole number of pixels >= 8, got {size}")
    return int(size)


def _check_stats(values: Sequence[float], what: str) -> tuple[float, float, float]:
    values = tuple(float(value) for value in values)
    if len(values) != 3 or not all(math.isfinite(value) for value in values) or (what == "std" and min(values) <= 0):
        raise DataError(f"normalisation {what} must be three finite numbers{' > 0' if what == 'std' else ''}, got {values}")
    return values
