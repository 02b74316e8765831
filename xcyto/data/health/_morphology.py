"""Morphology far from its class: a crop whose measured nucleus lies far outside its class's range.

Two measurements grade a cervical cell before anything else: how large its nucleus is and
its nucleus-to-cell (N/C) ratio. Both come from the cell checks' masks, at no extra cost. For
each class, the median and the median absolute deviation (MAD, scaled to a standard
deviation) of both give its range; a crop's distance from its class is the root mean square
of its two robust z-scores. The range is estimated twice, the second time without the crops
the first found far, so a few mislabelled crops do not widen their class's range.

A normal intermediate cell labelled carcinoma in situ lies far outside that class's range; a
moderate dysplasia labelled severe does not, and is left alone on purpose: that is the
model's and the audit's question, not the data's. Needs no classifier.
"""
from __future__ import annotations

import numpy as np

FEATURES = ("log_nucleus_share", "nc_ratio")
#: Robust z (root mean square over ``FEATURES``) from which a crop is far from its class.
FAR = 3.0
#: Classes with fewer measured crops than this are not judged: their range would be noise.
MIN_CLASS_CROPS = 10


def measurements(image: np.ndarray, nucleus: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """``FEATURES`` of one crop: its main nucleus's share of the crop (log) and of its cell."""
    nucleus_pixels = int(nucleus.sum())
    if not nucleus_pixels:
        return np.full(len(FEATURES), np.nan)
    cell_pixels = int((cell | nucleus).sum())
    return np.array([np.log(nucleus_pixels / float(image.shape[0] * image.shape[1])), nucleus_pixels / max(cell_pixels, 1)])


def class_ranges(features: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{class: (median, scaled MAD)}`` of the measured crops of each class large enough."""
    measured = ~np.isnan(features).any(axis=1)
    ranges = {}
    for passes in range(2):
        keep = measured.copy()
        if passes:  # without the crops found far the first time
            keep &= ~(distances(features, labels, ranges) >= FAR)
        ranges = {}
        for label in range(num_classes):
            members = features[keep & (labels == label)]
            if len(members) >= MIN_CLASS_CROPS:
                median = np.median(members, axis=0)
                spread = 1.4826 * np.median(np.abs(members - median), axis=0)
                ranges[label] = (median, np.maximum(spread, 1e-3 + 0.05 * np.abs(median)))
    return ranges


def distances(features: np.ndarray, labels: np.ndarray, ranges: dict) -> np.ndarray:
    """Robust distance of each crop from its class's range (``nan``: not measured, or class not judged)."""
    scores = np.full(len(labels), np.nan)
    for index, (values, label) in enumerate(zip(features, labels)):
        if int(label) in ranges and not np.isnan(values).any():
            median, spread = ranges[int(label)]
            scores[index] = float(np.sqrt(np.mean(((values - median) / spread) ** 2)))
    return scores
