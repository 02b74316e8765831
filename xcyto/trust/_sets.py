"""Conformal prediction sets: every class the model cannot rule out for a cell, at a stated
coverage (split conformal on the bundle's validation cells; Vovk et al. 2005, Angelopoulos &
Bates 2021).

The validation cells' scores are kept, so a set can be drawn at any coverage later. Per class,
the threshold is class-conditional (Mondrian: each class's own validation cells) where the
class has at least ``MIN_CLASS_CELLS`` of them, and marginal (all validation cells) otherwise,
since a class-conditional quantile of a few cells is a coin toss. The score is LAC (one minus
the class's probability: the smallest sets) or APS (the probability mass of the classes at least
as likely: sets that grow with the model's doubt); ``"auto"`` keeps the one with the smaller
mean set size on the validation cells. The p-values and sets come from ``crepes``.

The same validation cells also chose the best epoch, the calibration and test-time
augmentation; those choices read accuracy and ECE, not these scores, but the reuse can make
the sets a little too small on new cells: the coverage measured on held-out folds is what to
trust (Results on Herlev).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from crepes import ConformalClassifier

from xcyto.errors import XcytoError

DEFAULT_COVERAGE = 0.9
MIN_CLASS_CELLS = 20
SCORES = ("lac", "aps")


def nonconformity(probabilities: np.ndarray, score: str) -> np.ndarray:
    """``(N, C)``: how unusual each class would be as the cell's label (larger: less plausible)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if score == "lac":
        return 1.0 - probabilities
    if score == "aps":  # mass of the classes at least as probable as this one, itself included
        return (probabilities[:, None, :] * (probabilities[:, None, :] >= probabilities[:, :, None])).sum(-1)
    raise XcytoError(f"unknown conformal score {score!r} (one of {', '.join(SCORES)})")


@dataclass
class PredictionSets:
    """What drawing a set needs: the validation cells' scores of their own labels, their labels,
    which classes get a threshold of their own, and the score."""

    score: str
    calibration_scores: np.ndarray  # (n,) the score of each validation cell's label
    labels: np.ndarray              # (n,)
    num_classes: int
    class_conditional: np.ndarray   # (C,) bool
    coverage: float = DEFAULT_COVERAGE

    def p_values(self, probabilities: np.ndarray) -> np.ndarray:
        """``(N, C)`` conformal p-values (not smoothed, so the same cell gets the same set)."""
        scores = nonconformity(probabilities, self.score)
        marginal = ConformalClassifier().fit(self.calibration_scores).predict_p(scores, smoothing=False)
        if not self.class_conditional.any():
            return marginal
        mondrian = ConformalClassifier().fit(self.calibration_scores, bins=self.labels)
        values = marginal.copy()
        for c in np.flatnonzero(self.class_conditional):
            values[:, c] = mondrian.predict_p(scores, bins=np.full(len(scores), c), smoothing=False)[:, c]
        return values

    def predict(self, probabilities: np.ndarray, coverage: float | None = None) -> np.ndarray:
        """``(N, C)`` bool: the classes in each cell's set at ``coverage`` (default: the bundle's).
        A set is never empty: the most probable class is always in it."""
        coverage = self.coverage if coverage is None else float(coverage)
        if not 0 < coverage < 1:
            raise XcytoError(f"coverage must be between 0 and 1, got {coverage}")
        probabilities = np.asarray(probabilities, dtype=np.float64)
        sets = self.p_values(probabilities) > 1.0 - coverage + 1e-9  # strict: p == alpha is out, as the quantile rule has it
        sets[np.arange(len(sets)), probabilities.argmax(1)] = True
        return sets

    def describe(self) -> str:
        own = int(self.class_conditional.sum())
        how = ("class-conditional for every class" if own == self.num_classes else
               "marginal (no class has enough validation cells)" if own == 0 else
               f"class-conditional for {own} of {self.num_classes} classes, marginal for the rest")
        few = ("; too few to promise it, so every set holds every class"
               if (1 - self.coverage) * (len(self.labels) + 1) < 1 else "")
        return (f"{self.score.upper()} sets at {self.coverage:.0%} coverage, {how} "
                f"({len(self.labels)} validation cells{few}; {MIN_CLASS_CELLS} needed for a class's own threshold)")

    def to_dict(self) -> dict:
        return {"score": self.score, "coverage": self.coverage, "num_classes": self.num_classes,
                "min_class_cells": MIN_CLASS_CELLS, "class_conditional": self.class_conditional.tolist(),
                "calibration_scores": [round(float(s), 6) for s in self.calibration_scores],
                "labels": self.labels.tolist(), "description": self.describe()}

    @classmethod
    def from_dict(cls, record: dict) -> "PredictionSets":
        return cls(score=record["score"], calibration_scores=np.asarray(record["calibration_scores"], float),
                   labels=np.asarray(record["labels"], int), num_classes=int(record["num_classes"]),
                   class_conditional=np.asarray(record["class_conditional"], bool),
                   coverage=float(record.get("coverage", DEFAULT_COVERAGE)))


def fit_sets(probabilities, labels, num_classes: int | None = None, score: str = "auto",
             coverage: float = DEFAULT_COVERAGE, min_class_cells: int = MIN_CLASS_CELLS) -> PredictionSets:
    """Prediction sets from held-out cells' probabilities ``(n, C)`` and true labels ``(n,)``."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    num_classes = probabilities.shape[1] if num_classes is None else int(num_classes)
    if len(labels) == 0 or len(labels) != len(probabilities):
        raise XcytoError(f"prediction sets need held-out cells with labels (got {len(labels)} labels for "
                         f"{len(probabilities)} cells)")
    counts = np.bincount(labels, minlength=num_classes)
    own = counts >= min_class_cells
    if score == "auto":
        candidates = [fit_sets(probabilities, labels, num_classes, s, coverage, min_class_cells) for s in SCORES]
        sizes = [c.predict(probabilities).sum(1).mean() for c in candidates]
        return candidates[int(np.argmin(sizes))]  # ties: LAC, the simpler score
    scores = nonconformity(probabilities, score)[np.arange(len(labels)), labels]
    return PredictionSets(score=score, calibration_scores=scores, labels=labels, num_classes=num_classes,
                          class_conditional=own, coverage=float(coverage))


def set_metrics(sets: np.ndarray, labels, classes: list[str]) -> dict:
    """Coverage (overall and per class), mean set size and the share of single-class sets."""
    sets, labels = np.asarray(sets, bool), np.asarray(labels, int)
    covered = sets[np.arange(len(labels)), labels]
    per_class = {name: float(covered[labels == c].mean()) for c, name in enumerate(classes) if (labels == c).any()}
    lowest = min(per_class, key=per_class.get) if per_class else None
    return {"coverage": float(covered.mean()), "per_class_coverage": per_class,
            "lowest_class": lowest, "lowest_class_coverage": per_class.get(lowest, float("nan")),
            "mean_set_size": float(sets.sum(1).mean()), "singletons": float((sets.sum(1) == 1).mean())}
