"""One call for a cell's morphology: segment and measure at a working size, report in the
image's own pixels (or micrometres)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xcyto.morphology._features import FEATURES, measure, unit_of
from xcyto.morphology._segment import CellMasks, segment

#: Cells larger than this (pixels, longer side) are segmented and measured shrunk to it:
#: the features change little and the time drops fourfold from 224 px.
WORKING_SIZE = 128


#: The features shown first (demo table, figure, audit cards): what cytologists grade by.
KEY_FEATURES = ("nc_ratio", "nucleus_area", "nucleus_brightness", "nucleus_irregularity", "perinuclear_halo",
                "nucleus_elongation", "cytoplasm_area")


@dataclass
class Morphology:
    """A cell's masks (at the image's size) and features (in its pixels, or micrometres).

    ``percentiles[feature][class]``: the share (0-100) of that class's training cells with a
    lower value, when the bundle's gallery measured its training cells (else empty).
    """

    masks: CellMasks
    features: dict[str, float]
    units: dict[str, str]
    settings: dict
    percentiles: dict[str, dict[str, float]] = field(default_factory=dict)
    nucleus_found: bool = True

    def without_nucleus(self) -> "Morphology":
        """This cell with no nucleus: what depends on one is not measured (``nan``), never 0.
        Used when the segmenter's region is not a nucleus (the data checks found none)."""
        for name in NUCLEUS_FEATURES:
            self.features[name] = float("nan")
            self.percentiles.pop(name, None)
        self.masks = CellMasks(nucleus=np.zeros_like(self.masks.nucleus), cell=self.masks.cell, method=self.masks.method)
        self.nucleus_found = False
        return self

    def place_among(self, training: np.ndarray, names: list[str], labels: np.ndarray, classes: list[str]) -> None:
        """Fill :attr:`percentiles` from the training cells' features ``(N, F)`` (columns ``names``)."""
        for column, name in enumerate(names):
            value = self.features.get(name)
            if value is None or not np.isfinite(value):
                continue
            self.percentiles[name] = {}
            for label, class_name in enumerate(classes):
                values = np.asarray(training[labels == label, column], dtype=np.float64)
                values = values[np.isfinite(values)]
                if len(values):
                    self.percentiles[name][class_name] = float(100.0 * (values < value).mean())

    def key_rows(self, classes: list[str]) -> list[tuple[str, float, str, list[float | None]]]:
        """``(feature, value, unit, [percentile among each of classes' training cells, or None])``
        of each measured key feature (``KEY_FEATURES``): the rows of the demo's and the audit's tables."""
        return [(name, value, self.units.get(name, ""), [self.percentiles.get(name, {}).get(c) for c in classes])
                for name in KEY_FEATURES
                if (value := self.features.get(name)) is not None and np.isfinite(value)]

    def describe(self, name: str, class_name: str) -> str:
        """E.g. ``"N/C ratio 0.62: above 97 % of the normal_superficiel training cells"``."""
        value = self.features[name]
        text = f"{label(name)} {value:.3g}"
        share = self.percentiles.get(name, {}).get(class_name)
        if share is None:
            return text
        if share >= 50:
            return f"{text}: above {share:.0f} % of the {class_name} training cells"
        return f"{text}: below {100 - share:.0f} % of the {class_name} training cells"

    def to_dict(self) -> dict:
        return {"features": dict(self.features), "units": dict(self.units), "settings": dict(self.settings),
                "percentiles": {name: dict(values) for name, values in self.percentiles.items()},
                "nucleus_found": self.nucleus_found}


#: Features that measure the nucleus (or need one): ``nan`` when there is no nucleus.
NUCLEUS_FEATURES = tuple(name for name in FEATURES if name.startswith("nucleus") or name in ("nc_ratio", "perinuclear_halo"))


def outlined(image: np.ndarray, masks: CellMasks) -> np.ndarray:
    """A copy of ``image`` with the segmented cell (green) and nucleus (red) outlined."""
    import cv2

    drawn = np.ascontiguousarray(image.copy())
    thickness = max(1, round(min(drawn.shape[:2]) / 112))
    for mask, colour in ((masks.cell, (44, 160, 44)), (masks.nucleus, (214, 39, 40))):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(drawn, contours, -1, colour, thickness)
    return drawn


def label(name: str) -> str:
    """A feature's name as people write it: ``nc_ratio`` -> ``N/C ratio``."""
    return {"nc_ratio": "N/C ratio"}.get(name, name.replace("_", " "))


def analyse(image, method: str = "classical", microns_per_pixel: float | None = None,
            working_size: int = WORKING_SIZE) -> Morphology:
    """Segment ``image`` with ``method`` and measure every feature of ``FEATURES``."""
    import cv2

    from xcyto.data import to_rgb_uint8

    array = to_rgb_uint8(image)
    height, width = array.shape[:2]
    scale = min(1.0, working_size / max(height, width))
    small = array if scale == 1.0 else cv2.resize(array, (max(8, round(width * scale)), max(8, round(height * scale))),
                                                   interpolation=cv2.INTER_AREA)
    masks = segment(small, method)
    pixel = 1.0 / (small.shape[1] / width)  # image pixels per working pixel
    features = measure(small, masks, microns_per_pixel=pixel * (microns_per_pixel or 1.0))
    if small is not array:
        masks = CellMasks(nucleus=_resize_mask(masks.nucleus, width, height), cell=_resize_mask(masks.cell, width, height),
                          method=masks.method)
    units = {name: unit_of(name, microns_per_pixel) for name in FEATURES}
    found = Morphology(masks=masks, features=features, units=units,
                       settings={"segmenter": method, "working_size": working_size,
                                 "microns_per_pixel": microns_per_pixel})
    return found if masks.nucleus.any() else found.without_nucleus()


def _resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
