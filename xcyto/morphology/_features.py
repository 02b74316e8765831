"""Morphometry of a segmented cell: the features cytology grades by, one registry.

The Herlev benchmark (Jantzen et al. 2005) described each cell by 20 features of its
nucleus and cytoplasm: areas, the nucleus-to-cytoplasm ratio, brightness, shortest and
longest diameter, elongation, roundness, perimeter, the nucleus's position, and counts of
local intensity maxima and minima. Two more are added for what cytologists look at in
dysplasia and koilocytosis: the irregularity of the nuclear outline and a clear
perinuclear halo.

Each feature is a function ``compute(cell: CellContext) -> float`` registered with its
unit (``px``, ``px2``, ``ratio``, ``intensity``, ``count``): lengths and areas are in pixels,
or in micrometres (``um``, ``um2``) when the pixel size is known. ``measure`` computes all
of them (``nan`` where a region is empty).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from xcyto.morphology._segment import CellMasks


@dataclass(frozen=True)
class Feature:
    name: str
    compute: Callable
    unit: str  # "px", "px2", "ratio", "intensity" or "count"
    description: str


FEATURES: dict[str, Feature] = {}


def register_feature(name: str, unit: str, description: str):
    """Decorator: register ``compute(cell) -> float`` as feature ``name``."""

    def decorate(compute):
        FEATURES[name] = Feature(name, compute, unit, description)
        return compute

    return decorate


def list_features() -> list[str]:
    return list(FEATURES)


@dataclass
class CellContext:
    """What features read: the image (RGB uint8), its brightness (0..1) and the masks, with
    each region's scikit-image ``regionprops`` computed once."""

    image: np.ndarray
    masks: CellMasks
    cache: dict = field(default_factory=dict)

    @cached_property
    def brightness(self) -> np.ndarray:
        return self.image.astype(np.float64).mean(axis=2) / 255.0

    def region(self, name: str):
        """``regionprops`` of ``"nucleus"``, ``"cell"`` or ``"cytoplasm"`` (``None`` when empty)."""
        if name not in self.cache:
            from skimage.measure import regionprops

            mask = getattr(self.masks, name)
            found = regionprops(mask.astype(np.uint8)) if mask.any() else []
            self.cache[name] = found[0] if found else None
        return self.cache[name]


def measure(image, masks: CellMasks, microns_per_pixel: float | None = None) -> dict[str, float]:
    """Every registered feature of the cell, in pixels (or micrometres when the pixel size is
    given: lengths times it, areas times its square)."""
    from xcyto.data import to_rgb_uint8

    cell = CellContext(image=to_rgb_uint8(image), masks=masks)
    values = {}
    for name, feature in FEATURES.items():
        value = float(feature.compute(cell))
        if microns_per_pixel is not None and feature.unit in ("px", "px2"):
            value *= microns_per_pixel ** (1 if feature.unit == "px" else 2)
        values[name] = value
    return values


def unit_of(name: str, microns_per_pixel: float | None = None) -> str:
    unit = FEATURES[name].unit
    if microns_per_pixel is not None and unit in ("px", "px2"):
        return {"px": "um", "px2": "um2"}[unit]
    return unit


def _area(cell: CellContext, name: str) -> float:
    return float(getattr(cell.masks, name).sum())


def _mean_brightness(cell: CellContext, name: str) -> float:
    mask = getattr(cell.masks, name)
    return float(cell.brightness[mask].mean()) if mask.any() else math.nan


def _axes(cell: CellContext, name: str) -> tuple[float, float]:
    region = cell.region(name)
    if region is None:
        return math.nan, math.nan
    return float(region.axis_minor_length), float(region.axis_major_length)


def _perimeter(cell: CellContext, name: str) -> float:
    region = cell.region(name)
    return float(region.perimeter) if region is not None else math.nan


def _elongation(cell: CellContext, part: str) -> float:
    short, long = _axes(cell, part)
    return short / long if long else math.nan


def _roundness(cell: CellContext, name: str) -> float:
    """Area over the area of the circle of the longest diameter (Herlev's definition): 1 for a disc."""
    region = cell.region(name)
    if region is None or region.feret_diameter_max == 0:
        return math.nan
    return float(region.area / (math.pi * (region.feret_diameter_max / 2) ** 2))


#: A local maximum or minimum counts when it stands out from its surroundings by this much
#: brightness (0..1): grain of chromatin or cytoplasm, not noise.
EXTREMUM_CONTRAST = 0.03


def _extrema(cell: CellContext, name: str, minima: bool) -> float:
    """Regional brightness maxima (or minima) inside the region that stand out by at least
    ``EXTREMUM_CONTRAST`` (h-extrema, after a light blur): Herlev's counts of local maxima
    and minima, robust to flat regions and pixel noise."""
    from scipy import ndimage
    from skimage.morphology import h_maxima

    mask = getattr(cell.masks, name)
    if not mask.any():
        return math.nan
    sigma = max(0.5, min(mask.shape) / 128)
    # blurred within the region only (normalised convolution), so its border does not
    # bring in the brighter or darker pixels next to it
    weight = ndimage.gaussian_filter(mask.astype(np.float64), sigma)
    values = ndimage.gaussian_filter(np.where(mask, cell.brightness, 0.0), sigma) / np.maximum(weight, 1e-9)
    values = -values if minima else values
    values = np.where(mask, values, values[mask].min() - 1.0)  # nothing outside the region can win
    peaks = h_maxima(values, EXTREMUM_CONTRAST) & mask
    return float(ndimage.label(peaks)[1])


@register_feature("nucleus_area", "px2", "area of the nucleus")
def nucleus_area(cell):
    return _area(cell, "nucleus")


@register_feature("cytoplasm_area", "px2", "area of the cytoplasm (the cell without its nucleus)")
def cytoplasm_area(cell):
    return _area(cell, "cytoplasm")


@register_feature("nc_ratio", "ratio", "nucleus area over cell area (nucleus + cytoplasm), as in Herlev")
def nc_ratio(cell):
    total = _area(cell, "cell")
    return _area(cell, "nucleus") / total if total else math.nan


@register_feature("nucleus_brightness", "intensity", "mean brightness of the nucleus (0 black .. 1 white): low = hyperchromatic")
def nucleus_brightness(cell):
    return _mean_brightness(cell, "nucleus")


@register_feature("cytoplasm_brightness", "intensity", "mean brightness of the cytoplasm (0 .. 1)")
def cytoplasm_brightness(cell):
    return _mean_brightness(cell, "cytoplasm")


@register_feature("nucleus_shortest_diameter", "px", "minor axis of the nucleus's ellipse")
def nucleus_shortest_diameter(cell):
    return _axes(cell, "nucleus")[0]


@register_feature("nucleus_longest_diameter", "px", "major axis of the nucleus's ellipse")
def nucleus_longest_diameter(cell):
    return _axes(cell, "nucleus")[1]


@register_feature("nucleus_elongation", "ratio", "shortest over longest diameter of the nucleus: 1 round, toward 0 elongated")
def nucleus_elongation(cell):
    return _elongation(cell, "nucleus")


@register_feature("nucleus_roundness", "ratio", "nucleus area over the area of the circle of its longest diameter")
def nucleus_roundness(cell):
    return _roundness(cell, "nucleus")


@register_feature("nucleus_perimeter", "px", "length of the nucleus's outline")
def nucleus_perimeter(cell):
    return _perimeter(cell, "nucleus")


@register_feature("cell_shortest_diameter", "px", "minor axis of the cell's ellipse")
def cell_shortest_diameter(cell):
    return _axes(cell, "cell")[0]


@register_feature("cell_longest_diameter", "px", "major axis of the cell's ellipse")
def cell_longest_diameter(cell):
    return _axes(cell, "cell")[1]


@register_feature("cell_elongation", "ratio", "shortest over longest diameter of the cell")
def cell_elongation(cell):
    return _elongation(cell, "cell")


@register_feature("cell_roundness", "ratio", "cell area over the area of the circle of its longest diameter")
def cell_roundness(cell):
    return _roundness(cell, "cell")


@register_feature("cell_perimeter", "px", "length of the cell's outline")
def cell_perimeter(cell):
    return _perimeter(cell, "cell")


@register_feature("nucleus_position", "ratio", "distance of the nucleus's centre from the cell's centre, over the cell's radius")
def nucleus_position(cell):
    nucleus, whole = cell.region("nucleus"), cell.region("cell")
    if nucleus is None or whole is None:
        return math.nan
    offset = math.dist(nucleus.centroid, whole.centroid)
    return offset / max(whole.axis_major_length / 2, 1e-9)


@register_feature("nucleus_maxima", "count", "local brightness maxima in the nucleus (chromatin texture)")
def nucleus_maxima(cell):
    return _extrema(cell, "nucleus", minima=False)


@register_feature("nucleus_minima", "count", "local brightness minima in the nucleus (chromatin clumps)")
def nucleus_minima(cell):
    return _extrema(cell, "nucleus", minima=True)


@register_feature("cytoplasm_maxima", "count", "local brightness maxima in the cytoplasm")
def cytoplasm_maxima(cell):
    return _extrema(cell, "cytoplasm", minima=False)


@register_feature("cytoplasm_minima", "count", "local brightness minima in the cytoplasm")
def cytoplasm_minima(cell):
    return _extrema(cell, "cytoplasm", minima=True)


@register_feature("nucleus_irregularity", "ratio", "1 - solidity of the nucleus: 0 convex, higher = notched, irregular outline")
def nucleus_irregularity(cell):
    region = cell.region("nucleus")
    return 1.0 - float(region.solidity) if region is not None else math.nan


@register_feature("perinuclear_halo", "intensity", "brightness of a ring around the nucleus minus the rest of the cytoplasm: a clear halo (koilocytosis) is positive")
def perinuclear_halo(cell):
    from scipy import ndimage

    nucleus, cytoplasm = cell.masks.nucleus, cell.masks.cytoplasm
    if not nucleus.any() or not cytoplasm.any():
        return math.nan
    width = max(1, round(math.sqrt(nucleus.sum() / math.pi) * 0.5))  # half the nucleus's radius
    gap = max(1, width // 3)  # the nucleus's own blurred edge is not halo
    ring = (ndimage.binary_dilation(nucleus, iterations=gap + width) & ~ndimage.binary_dilation(nucleus, iterations=gap)
            & cytoplasm)
    rest = cytoplasm & ~ring
    if not ring.any() or not rest.any():
        return math.nan
    return float(cell.brightness[ring].mean() - cell.brightness[rest].mean())
