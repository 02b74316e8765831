"""Risk against coverage: what the cells a model keeps are worth when it abstains on the rest.

Cells are ranked by how sure the model is (its top probability, or the size of the cell's
prediction set, smaller first, ties broken by the top probability); keeping the surest
fraction gives the accuracy and the serious misses of what is kept. The coverage at which the
kept cells reach an accuracy (0.90 by default) says how much a person must still read.
"""
from __future__ import annotations

import numpy as np

from xcyto.trust._grades import GradeScale, grade_scale

TARGET_ACCURACY = 0.90


def risk_coverage(probabilities, labels, classes: list[str], sets=None, scale: str | GradeScale | None = None) -> dict:
    """``coverage``, ``accuracy`` and ``serious_misses`` (per kept cell) of the surest
    ``k`` cells for every ``k``; ``by``: what ranked them."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    confidence = probabilities.max(1)
    if sets is not None:
        order = np.lexsort((-confidence, np.asarray(sets, bool).sum(1)))
        by = "prediction-set size"
    else:
        order = np.argsort(-confidence, kind="stable")
        by = "top probability"
    predictions = probabilities.argmax(1)[order]
    kept_labels = labels[order]
    correct = np.cumsum(predictions == kept_labels)
    found = grade_scale(classes, scale)
    serious = np.zeros(len(labels))
    if found is not None:
        grade_of = found.array(classes)
        called_normal, high_called_low = found.misses(grade_of[kept_labels], grade_of[predictions])
        serious = np.cumsum(called_normal | high_called_low)
    kept = np.arange(1, len(labels) + 1)
    return {"by": by, "coverage": kept / len(labels), "accuracy": correct / kept,
            "serious_misses": serious / kept if found is not None else None}


def coverage_at_accuracy(curve: dict, target: float = TARGET_ACCURACY) -> float:
    """The largest share of cells the model may keep with their accuracy at ``target`` or above
    (0 when even its surest cell is wrong)."""
    reached = np.flatnonzero(np.asarray(curve["accuracy"]) >= target)
    return float(curve["coverage"][reached[-1]]) if len(reached) else 0.0


def plot_risk_coverage(curves: dict[str, dict], target: float = TARGET_ACCURACY, title: str | None = None):
    """One figure: accuracy (and serious misses, dashed) against coverage, one line per curve."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for name, curve in curves.items():
        line, = axis.plot(curve["coverage"], curve["accuracy"], label=f"{name}: accuracy")
        if curve.get("serious_misses") is not None:
            axis.plot(curve["coverage"], curve["serious_misses"], linestyle="--", color=line.get_color(),
                      label=f"{name}: serious misses per cell")
        kept = coverage_at_accuracy(curve, target)
        axis.axvline(kept, color=line.get_color(), linewidth=0.8, alpha=0.5)
    axis.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("coverage (share of cells the model keeps, surest first)")
    axis.set_ylabel("accuracy / serious misses")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=7, loc="lower left")
    axis.set_title(title or f"Risk against coverage (vertical: coverage at accuracy {target:.2f})", fontsize=9)
    return figure
