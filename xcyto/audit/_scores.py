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
``morphology_disagreement``
    ``1 - p(predicted class)`` by the morphometric model (gradient-boosted trees on the
    cell's measured nucleus and cytoplasm, fitted on the gallery's training cells): the
    measurements cytologists make do not back the CNN's call.

``outside_set``
    1 when the given label lies outside the cell's conformal prediction set (the model rules
    it out at the bundle's coverage), 0 when the set holds it or the bundle has no sets.
``grade_gap``
    how many grades apart the given and the predicted class are, over the scale's widest gap
    (:mod:`xcyto.trust`): a carcinoma in situ called normal outranks one called severe dysplasia.

``suspicion`` is their weighted mean (``WEIGHTS``): the audit's ranking, most worth a look first.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

#: Weights of the signals in ``suspicion``: label evidence first, then neighbours.
WEIGHTS = {"label_issue": 0.4, "neighbour_disagreement": 0.3, "atypicality": 0.1, "method_disagreement": 0.1,
           "morphology_disagreement": 0.1, "outside_set": 0.1, "grade_gap": 0.1}
#: Side of the grid both maps are pooled to before their ranks are compared.
AGREEMENT_GRID = 8
#: Atypicality percentile from which a cell starts to count as unusual.
ATYPICALITY_ONSET = 90.0

KINDS = {
    "data_issue": "data issue (not a model error)",
    "label_error": "likely label error",
    "disagreement": "model and label disagree",
    "atypical": "atypical cell",
    "confusion": "confusion between similar classes",
    "doubtful": "correct but doubtful",
}
#: "likely label error" is only said when planted flips show it right at least this often;
#: below, the same cells are read "model and label disagree".
MIN_READING_PRECISION = 0.5
#: Share of the audited cells whose label the precision estimate flips, and how many times.
PLANTED_RATE = 0.05
PLANTED_REPEATS = 20
#: The given label counts as implausible below this calibrated probability.
IMPLAUSIBLE_P = 0.05


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
    from xcyto.evaluation import spearman

    first, second = (torch.as_tensor(np.asarray(m, dtype=np.float32))[:, None] for m in (first, second))
    if first.shape[0] == 0:
        return np.zeros(0)
    pooled = [F.adaptive_avg_pool2d(m, grid) for m in (first, second)]
    return spearman(*pooled).numpy()


def suspicion(signals: dict[str, np.ndarray]) -> np.ndarray:
    """Weighted mean of the signals (see ``WEIGHTS``; a signal not given counts 0), in [0, 1]."""
    return sum(weight * np.asarray(signals[name], dtype=float) for name, weight in WEIGHTS.items()
               if name in signals) / sum(WEIGHTS.values())


def trust_signals(labels: np.ndarray, probabilities: np.ndarray, classes: list[str], sets=None) -> dict:
    """``outside_set`` and ``grade_gap`` of every cell (see the module's docstring)."""
    from xcyto.trust import grade_scale

    labels = np.asarray(labels, dtype=int)
    predictions = np.asarray(probabilities).argmax(axis=1)
    outside = np.zeros(len(labels))
    if sets is not None and len(labels):
        outside = (~sets.predict(probabilities)[np.arange(len(labels)), labels]).astype(float)
    gap = np.zeros(len(labels))
    scale = grade_scale(classes)
    if scale is not None:
        grades = scale.array(classes)
        on_scale = grades[grades >= 0]
        widest = on_scale.max() - on_scale.min()
        if widest > 0:
            both = (grades[labels] >= 0) & (grades[predictions] >= 0)
            gap = np.where(both, np.abs(grades[labels] - grades[predictions]) / widest, 0.0)
    return {"outside_set": outside, "grade_gap": gap}


def label_error_readings(labels: np.ndarray, probabilities: np.ndarray, neighbour_labels: np.ndarray,
                         label_flags: np.ndarray) -> np.ndarray:
    """Which cells the audit reads as "likely label error": the model calls another class,
    confident learning flags the label (or it is below ``IMPLAUSIBLE_P``), and most of the
    cell's nearest training cells share the model's call (cleanlab's flag alone without a gallery)."""
    labels = np.asarray(labels)
    predictions = np.asarray(probabilities).argmax(axis=1)
    p_given = np.asarray(probabilities)[np.arange(len(labels)), labels]
    implausible = np.asarray(label_flags, bool) | (p_given < IMPLAUSIBLE_P)
    neighbour_labels = np.asarray(neighbour_labels).reshape(len(labels), -1)
    k = neighbour_labels.shape[1]
    if k:
        backed = (neighbour_labels == predictions[:, None]).sum(axis=1) > k / 2
    else:
        backed = np.asarray(label_flags, bool)
    return (predictions != labels) & implausible & backed


def estimate_reading_precision(labels: np.ndarray, probabilities: np.ndarray, neighbour_labels: np.ndarray,
                               rate: float = PLANTED_RATE, repeats: int = PLANTED_REPEATS, seed: int = 0) -> dict:
    """How often "likely label error" is right on *these* cells with *this* model.

    Flips the labels of ``rate`` of the cells (each to a class drawn as the model's confusion
    matrix suggests: a flip ``y -> j`` is as likely as the model calling a ``y`` cell ``j``, plus
    one pseudo-count), reruns the scoring (confident learning and the reading rule; no
    explaining), and counts how many cells read "likely label error" were flipped
    (precision) and how many flipped cells were found (recall), over ``repeats`` draws.
    Cells read so without a flip count against precision even if their original label is
    wrong, so the estimate leans low.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    n, n_classes = probabilities.shape
    planted_count = max(1, int(round(rate * n)))
    predictions = probabilities.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (labels, predictions), 1.0)
    np.fill_diagonal(confusion, 0.0)
    flip_to = (confusion + 1.0) * (1 - np.eye(n_classes))
    flip_to /= flip_to.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    true_positive = read = 0
    recalls = []
    for _ in range(repeats):
        planted = rng.choice(n, size=min(planted_count, n), replace=False)
        given = labels.copy()
        given[planted] = [rng.choice(n_classes, p=flip_to[labels[i]]) for i in planted]
        _, flags, _ = label_issue_scores(given, probabilities)
        readings = label_error_readings(given, probabilities, neighbour_labels, flags)
        found = int(readings[planted].sum())
        true_positive += found
        read += int(readings.sum())
        recalls.append(found / len(planted))
    return {"precision": true_positive / read if read else float("nan"), "recall": float(np.mean(recalls)),
            "planted_rate": rate, "planted_cells": int(planted_count), "repeats": int(repeats),
            "readings_per_draw": read / repeats, "model_accuracy": float((predictions == labels).mean())}


#: Data checks that make a case a data issue: the crop, not the model, is at fault. Duplicates say
#: nothing of why a call went wrong; a morphology far from its class is evidence about the label,
#: added to the case's reading.
DATA_ISSUE_KINDS = ("cell", "image")


def classify_case(*, given: str, predicted: str, runner_up: str, p_given: float, p_predicted: float,
                  label_error: bool, atypical: bool, neighbour_classes: list[str],
                  reading_precision: float | None = None, data_issues=()) -> tuple[str, str]:
    """``(kind, reading)``: which of ``KINDS`` the case is, and one line saying why.

    ``data_issues``: the crop's :class:`xcyto.data.health.Issue` (blocking first). A crop with a data
    issue is a ``data_issue`` case whatever the model did, and its reading starts with it: a
    crop with no nucleus cannot tell whether the label or the model is wrong.

    ``label_error``: the cell passes :func:`label_error_readings`. It is read "likely label
    error" only when ``reading_precision`` (from :func:`estimate_reading_precision`) is at
    least ``MIN_READING_PRECISION``; otherwise "model and label disagree", with the estimate.
    """
    from xcyto.data.health import CHECKS

    found = [issue for issue in data_issues if CHECKS[issue.check].kind in DATA_ISSUE_KINDS]
    if found:
        _, model_reading = classify_case(given=given, predicted=predicted, runner_up=runner_up, p_given=p_given,
                                         p_predicted=p_predicted, label_error=label_error, atypical=atypical,
                                         neighbour_classes=neighbour_classes, reading_precision=reading_precision)
        first = found[0]
        if first.check == "no_nucleus":
            head = "no nucleus in this crop: the label cannot be checked"
        else:
            head = f"data issue: {first.reason}"
        others = "; also " + "; ".join(issue.title for issue in found[1:]) if len(found) > 1 else ""
        return "data_issue", f"{head}{others}. Then: {model_reading}"
    about_label = [issue for issue in data_issues if CHECKS[issue.check].kind == "label"]
    if about_label:
        kind, reading = classify_case(given=given, predicted=predicted, runner_up=runner_up, p_given=p_given,
                                      p_predicted=p_predicted, label_error=label_error, atypical=atypical,
                                      neighbour_classes=neighbour_classes, reading_precision=reading_precision)
        return kind, f"{reading}; the data check agrees the label is doubtful: {about_label[0].reason}"
    k = len(neighbour_classes)
    like_predicted = sum(name == predicted for name in neighbour_classes)
    like_given = sum(name == given for name in neighbour_classes)
    if label_error:
        neighbours = f" and {like_predicted} of its {k} nearest training cells" if k else ""
        evidence = f"the model ({p_predicted:.0%}){neighbours} say {predicted}, not {given}"
        if reading_precision is not None and not reading_precision >= MIN_READING_PRECISION:
            return "disagreement", (f"model and label disagree: {evidence}; with this model a 'likely label error' "
                                    f"would be right about {reading_precision:.0%} of the time (planted flips)")
        estimate = "" if reading_precision is None else f" (right {reading_precision:.0%} of the time on planted flips)"
        return "label_error", f"likely label error{estimate}: {evidence}"
    if atypical:
        return "atypical", ("atypical cell: unlike the training cells, so neither the label nor the "
                            f"prediction ({predicted}, {p_predicted:.0%}) can be leaned on")
    if predicted != given:
        neighbours = f"; neighbours: {like_given} {given}, {like_predicted} {predicted} of {k}" if k else ""
        return "confusion", f"confusion between {given} and {predicted}, classes that look alike here{neighbours}"
    return "doubtful", f"correct but doubtful: {predicted} at only {p_predicted:.0%}, runner-up {runner_up}"
