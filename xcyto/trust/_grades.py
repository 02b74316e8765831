"""Errors measured in grades: cervical cytology's classes are grades of one continuum.

Calling carcinoma in situ "normal" is not the same error as calling it "severe dysplasia";
accuracy counts both as one. A scale maps each class to its grade (classes outside the
scale, such as AGC or columnar cells in Bethesda terms, map to ``None`` and are left out of
the grade metrics, and said so). Built in:

- ``herlev``: the three normal classes 0 < light 1 < moderate 2 < severe dysplasia 3 <
  carcinoma in situ 4; high grade (HSIL, CIN 2 and above) from moderate dysplasia.
- ``bethesda``: NILM 0 < ASC-US 1 < LSIL 2 < ASC-H 3 < HSIL 4 < SCC 5; high grade from
  ASC-H; AGC outside the scale.
- ``normal-abnormal``: any scheme whose classes are all normal or abnormal
  (:func:`xcyto.data.abnormal_flags`, e.g. SIPaKMeD): 0 and 1, no high grade.

A serious miss is an abnormal cell called normal, or a high-grade cell called low grade.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xcyto.data import abnormal_flags, class_key


@dataclass(frozen=True)
class GradeScale:
    """Grades of the classes of one scheme: ``grades[class_key] = grade``; ``high_from``: the
    lowest high grade (``None``: the scale has none)."""

    name: str
    grades: dict
    high_from: int | None

    def of(self, classes: list[str]) -> list[int | None]:
        return [self.grades.get(class_key(name)) for name in classes]

    def array(self, classes: list[str]) -> np.ndarray:
        """Each class's grade as an array, -1 for a class off the scale."""
        return np.array([-1 if g is None else g for g in self.of(classes)], dtype=int)

    def misses(self, true: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per cell, from true and predicted grades (-1: off the scale): ``(abnormal called
        normal, high grade called low grade)``; their union is the serious misses."""
        called_normal = (true > 0) & (predicted == 0)
        if self.high_from is None:
            return called_normal, np.zeros_like(called_normal)
        return called_normal, (true >= self.high_from) & (predicted > 0) & (predicted < self.high_from)


SCALES: dict[str, GradeScale] = {}


def register_scale(name: str, grades: dict[str, int], high_from: int | None = None) -> GradeScale:
    """Add (or replace) a scale: ``{class name: grade}``, 0 for normal; names match as
    :func:`xcyto.data.class_key` compares them."""
    scale = GradeScale(name, {class_key(k): int(v) for k, v in grades.items()}, high_from)
    SCALES[name] = scale
    return scale


register_scale("herlev", {"normal_superficiel": 0, "normal_intermediate": 0, "normal_columnar": 0,
                          "light_dysplastic": 1, "moderate_dysplastic": 2, "severe_dysplastic": 3,
                          "carcinoma_in_situ": 4}, high_from=2)
register_scale("bethesda", {"NILM": 0, "negative for intraepithelial lesion or malignancy": 0, "ASC-US": 1,
                            "LSIL": 2, "ASC-H": 3, "HSIL": 4, "SCC": 5, "squamous cell carcinoma": 5}, high_from=3)


def grade_scale(classes: list[str], scale: str | GradeScale | None = None) -> GradeScale | None:
    """The scale for ``classes``: the one named (or given), else the first built-in scale that
    grades at least two of them with two different grades, else normal/abnormal when every
    class is one or the other; ``None`` when the classes have no order."""
    if isinstance(scale, GradeScale):
        return scale
    if scale is not None:
        if scale not in SCALES:
            raise KeyError(f"no grade scale {scale!r} (known: {', '.join(SCALES)})")
        return SCALES[scale]
    for candidate in SCALES.values():
        grades = {g for g in candidate.of(classes) if g is not None}
        if len(grades) >= 2 and sum(g is not None for g in candidate.of(classes)) >= 2:
            return candidate
    flags = abnormal_flags(classes)
    if flags is not None:
        return GradeScale("normal-abnormal", {class_key(c): int(f) for c, f in zip(classes, flags)}, None)
    return None


def grade_metrics(labels, predictions, classes: list[str], scale: str | GradeScale | None = None) -> dict | None:
    """Mean absolute grade error, the share of errors within one grade, and serious misses, on
    the cells whose true and predicted classes are both on the scale (``None``: no scale)."""
    found = grade_scale(classes, scale)
    if found is None:
        return None
    grade_of = found.array(classes)
    labels, predictions = np.asarray(labels, int), np.asarray(predictions, int)
    true, predicted = grade_of[labels], grade_of[predictions]
    graded = (true >= 0) & (predicted >= 0)
    true, predicted = true[graded], predicted[graded]
    distance = np.abs(true - predicted)
    wrong = labels[graded] != predictions[graded]
    called_normal, high_called_low = found.misses(true, predicted)
    serious = called_normal | high_called_low
    abnormal = int((true > 0).sum())
    return {
        "scale": found.name,
        "graded_cells": int(graded.sum()),
        "outside_the_scale": [c for c, g in zip(classes, found.of(classes)) if g is None],
        "mean_grade_error": float(distance.mean()) if len(distance) else float("nan"),
        "errors_within_one_grade": float((distance[wrong] <= 1).mean()) if wrong.any() else float("nan"),
        "serious_misses": int(serious.sum()),
        "abnormal_called_normal": int(called_normal.sum()),
        "high_grade_called_low": int(high_called_low.sum()),
        "serious_miss_rate": float(serious.sum() / abnormal) if abnormal else float("nan"),
    }

