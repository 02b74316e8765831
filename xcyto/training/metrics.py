"""Classifier metrics and calibration: accuracy, macro scores, ECE, temperature scaling."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from xcyto.data.schemes import abnormal_flags


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def macro_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    return float(f1_score(labels, predictions, labels=range(num_classes), average="macro", zero_division=0))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = bin_index == b
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL (one parameter, LBFGS on log T)."""
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    log_temperature = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.1, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_temperature.exp(), labels_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_temperature.exp().item())
    return float(np.clip(temperature, 0.05, 20.0))


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str], temperature: float = 1.0) -> dict:
    """Accuracy, macro precision/recall/F1, per-class report, ECE (raw and calibrated),
    confusion matrix and, where the classes allow, normal/abnormal metrics."""
    labels = np.asarray(labels)
    predictions = logits.argmax(axis=1)
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
        "ece": expected_calibration_error(softmax(logits), labels),
        "ece_calibrated": expected_calibration_error(softmax(logits, temperature), labels),
        "temperature": float(temperature),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=list(range(len(classes)))).tolist(),
    }
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
    headline["per_class"] = metrics["per_class"]  # for the model card
    return headline
