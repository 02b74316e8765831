"""Classifier metrics: accuracy, macro scores, ECE, normal/abnormal sensitivity and specificity,
errors in grades and the accuracy of the surest cells (:mod:`xcyto.trust`)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from xcyto.calibration import Calibration, expected_calibration_error
from xcyto.data import abnormal_flags
from xcyto.trust import TARGET_ACCURACY, coverage_at_accuracy, grade_metrics, risk_coverage


def macro_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    return float(f1_score(labels, predictions, labels=range(num_classes), average="macro", zero_division=0))


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str],
                           calibration: Calibration | None = None, probabilities: np.ndarray | None = None) -> dict:
    """Accuracy, macro precision/recall/F1, per-class report, ECE (raw and after
    ``calibration``), confusion matrix and, where the classes allow, normal/abnormal metrics.

    ``probabilities``: the predictions to score when they are not the calibrated softmax of
    ``logits`` (test-time augmentation averages several views); ``logits`` still give the raw ECE.
    """
    calibration = calibration or Calibration()
    labels = np.asarray(labels)
    if probabilities is None:
        probabilities = calibration.probabilities(logits)
    predictions = np.asarray(probabilities).argmax(axis=1)  # vector scaling or TTA can move the argmax
    report = classification_report(
        labels, predictions, labels=list(range(len(classes))), target_names=classes, output_dict=True, zero_division=0
    )
    metrics = {
        "n": int(len(labels)),
        "accuracy": float((predictions == labels).mean()) if len(labels) else float("nan"),
        "macro_precision": float(report["macro avg"]["precision"]),
        "macro_recall": float(report["macro avg"]["recall"]),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in classes},
        "ece": expected_calibration_error(Calibration().probabilities(logits), labels),
        "ece_calibrated": expected_calibration_error(probabilities, labels),
        "calibration": calibration.method,
        "temperature": float(calibration.temperature),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=list(range(len(classes)))).tolist(),
    }
    grades = grade_metrics(labels, predictions, classes)
    if grades is not None:
        metrics["grades"] = grades
    if len(labels):
        curve = risk_coverage(probabilities, labels, classes)
        metrics["risk_coverage"] = {"by": curve["by"], "target_accuracy": TARGET_ACCURACY,
                                    "coverage_at_target": coverage_at_accuracy(curve)}
    flags = abnormal_flags(classes)
    if flags is not None:
        true_abnormal = flags[labels]
        predicted_abnormal = flags[predictions]
        tp = int((true_abnormal & predicted_abnormal).sum())
        tn = int((~true_abnormal & ~predicted_abnormal).sum())
        metrics["binary"] = {
            "accuracy": float((true_abnormal == predicted_abnormal).mean()),
            "sensitivity": tp / max(int(true_abnormal.sum()), 1),
            "specificity": tn / max(int((~true_abnormal).sum()), 1),
            "f1": float(f1_score(true_abnormal, predicted_abnormal, zero_division=0)),
        }
    return metrics


def headline_metrics(metrics: dict) -> dict:
    """The part of :func:`classification_metrics` a bundle records (no confusion matrix)."""
    keys = ("n", "accuracy", "macro_precision", "macro_recall", "macro_f1", "ece", "ece_calibrated")
    headline = {key: metrics[key] for key in keys}
    if "binary" in metrics:
        for key in ("accuracy", "sensitivity", "specificity"):
            headline[f"binary_{key}"] = metrics["binary"][key]
    if "grades" in metrics:
        for key in ("mean_grade_error", "serious_misses", "serious_miss_rate"):
            headline[key] = metrics["grades"][key]
    if "risk_coverage" in metrics:
        headline["coverage_at_0.90_accuracy"] = metrics["risk_coverage"]["coverage_at_target"]
    if "conformal" in metrics:
        for key in ("coverage", "lowest_class_coverage", "mean_set_size", "singletons"):
            headline[f"set_{key}"] = metrics["conformal"][key]
    headline["per_class"] = metrics["per_class"]  # for the model card
    return headline
