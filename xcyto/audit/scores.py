"""How suspicious a cell is, from four independent signals, and a one-line reading of it.

Each signal is in [0, 1], higher = more worth a look:

``label_issue``
    confident learning (cleanlab): ``1 - p(given label)``, the self-confidence score
    of the given label; ``label_issue_flag`` is cleanlab's verdict (the cell is counted
    off the diagonal of the confident joint, i.e. some other class ``j`` has
    ``p_j`` above class ``j``'s own threshold, the mean ``p_j`` of cells labelled ``j``).
``neighbour_disagreement``
    share of the ``k`` nearest training cells whose label differs from the given label.
``atypicality``
    how far into the tail of the training cells it lies: ``clip((score - 90) / 10, 0, 1)``
    of the gallery's atypicality percentile (cells like the training cells score 0).
``method_disagreement``
    ``(1 - rho) / 2``, rho the Spearman rank correlation of the Grad-CAM and IG maps of
    the predicted class (on an 8x8 grid): two methods pointing at different places.

``suspicion`` is their weighted sum (``WEIGHTS``): the audit's ranking, most worth a look first.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

#: Weights of the signals in ``suspicion``: label evidence first, then neighbours.
WEIGHTS = {"label_issue": 0.45, "neighbour_disagreement": 0.35, "atypicality": 0.1, "method_disagreement": 0.1}
#: Side of the grid both maps are pooled to before their ranks are compared.
AGREEMENT_GRID = 8
#: Atypicality percentile from which a cell starts to count as unusual.
ATYPICALITY_ONSET = 90.0

KINDS = {
    "label_error": "likely label error",
    "atypical": "atypical cell",
    "confusion": "confusion between similar classes",
    "doubtful": "correct but doubtful",
}


def label_issue_scores(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(score, flag, thresholds)`` per cell by confident learning (cleanlab).

    ``thresholds[j]``: mean predicted probability of class ``j`` over the cells labelled
    ``j`` (nan for a class with no cells), the per-class threshold of the confident joint.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = probabilities.shape[1]
    thresholds = np.array([probabilities[labels == j, j].mean() if (labels == j).any() else np.nan
                           for j in range(n_classes)])
    if len(labels) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool), thresholds
    # cleanlab needs every class to have labelled cells: work on the classes present
    present = np.unique(labels)
    sub_labels = np.searchsorted(present, labels)
    sub_probabilities = probabilities[:, present]
    sub_probabilities = sub_probabilities / sub_probabilities.sum(axis=1, keepdims=True).clip(min=1e-12)
    quality = get_label_quality_scores(sub_labels, sub_probabilities, method="self_confidence")
    if len(present) < 2:
        flags = np.zeros(len(labels), dtype=bool)
    else:
        with warnings.catch_warnings():  # "too few examples in class j": expected on small splits
            warnings.simplefilter("ignore")
            flags = np.asarray(find_label_issues(sub_labels, sub_probabilities, filter_by="confident_learning",
                                                 min_examples_per_class=1), dtype=bool)
    return 1.0 - quality, flags, thresholds


def neighbour_disagreement(neighbour_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Share of each cell's neighbours ``(N, k)`` whose label differs from its label ``(N,)``."""
    neighbour_labels = np.asarray(neighbour_labels)
    if neighbour_labels.size == 0:
        return np.zeros(len(labels))
    return (neighbour_labels != np.asarray(labels)[:, None]).mean(axis=1)


def atypicality_tail(scores: np.ndarray) -> np.ndarray:
    return np.clip((np.asarray(scores, dtype=float) - ATYPICALITY_ONSET) / (100.0 - ATYPICALITY_ONSET), 0.0, 1.0)


def map_agreement(first: np.ndarray, second: np.ndarray, grid: int = AGREEMENT_GRID) -> np.ndarray:
    """Spearman rho per cell between two stacks of maps ``(N, H, W)``, pooled to ``grid x grid``."""
    from xcyto.evaluation.sanity import spearman

    first, second = (torch.as_tensor(np.asarray(m, dtype=np.float32))[:, None] for m in (first, second))
    if first.shape[0] == 0:
        return np.zeros(0)
    pooled = [F.adaptive_avg_pool2d(m, grid) for m in (first, second)]
    return spearman(*pooled).numpy()


def suspicion(signals: dict[str, np.ndarray]) -> np.ndarray:
    """Weighted sum of the signals (see ``WEIGHTS``), in [0, 1]."""
    return sum(weight * np.asarray(signals[name], dtype=float) for name, weight in WEIGHTS.items())


def classify_case(*, given: str, predicted: str, runner_up: str, p_given: float, p_predicted: float,
                  label_flag: bool, atypical: bool, neighbour_classes: list[str]) -> tuple[str, str]:
    """``(kind, reading)``: which of ``KINDS`` the case is, and one line saying why."""
    k = len(neighbour_classes)
    like_predicted = sum(name == predicted for name in neighbour_classes)
    like_given = sum(name == given for name in neighbour_classes)
    if predicted != given and (label_flag or p_given < 0.05) and (like_predicted > k / 2 if k else label_flag):
        neighbours = f" and {like_predicted} of its {k} nearest training cells" if k else ""
        return "label_error", (f"likely label error: the model ({p_predicted:.0%}){neighbours} say "
                               f"{predicted}, not {given}")
    if atypical:
        return "atypical", ("atypical cell: unlike the training cells, so neither the label nor the "
                            f"prediction ({predicted}, {p_predicted:.0%}) can be leaned on")
    if predicted != given:
        neighbours = f"; neighbours: {like_given} {given}, {like_predicted} {predicted} of {k}" if k else ""
        return "confusion", f"confusion between {given} and {predicted}, classes that look alike here{neighbours}"
    return "doubtful", f"correct but doubtful: {predicted} at only {p_predicted:.0%}, runner-up {runner_up}"
