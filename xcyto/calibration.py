"""Calibration of a classifier's probabilities, chosen on held-out validation cells.

Every calibration here is an affine map of the logits, ``z' = z * scale + bias`` (one
``scale`` and ``bias`` per class), then a softmax:

- ``none``: scale 1, bias 0;
- ``temperature`` (Guo et al. 2017): scale ``1 / T`` for every class, bias 0;
- ``vector`` scaling (Guo et al. 2017): a scale and a bias per class.

A bundle trained with ``balance="auto"`` may also carry ``prior``, offsets added to the
logits before the map (post-hoc logit adjustment for the class shares, chosen on the
validation cells, :mod:`xcyto.training`); the calibration is then fitted to the
adjusted logits, and both fold into one ``(scale, bias)``.

:func:`choose_calibration` fits each on part of the validation cells and measures ECE on
the rest (cross-fitting, 5 folds), then keeps the one with the lowest held-out ECE. A
calibration that does not lower ECE on held-out cells is not applied: on a few hundred
validation cells, a temperature fitted to all of them can make test ECE worse.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

METHODS = ("none", "temperature", "vector")
#: Below this many validation cells nothing is fitted: the estimate would be noise.
MIN_CELLS = 30
FOLDS = 5
#: Why ``none`` is kept when cross-fitting ran: no method was eligible.
NOTHING_HELPED = "no method lowered the held-out ECE without lowering the held-out accuracy"
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: Precision of the Gaussian prior that pulls vector scaling towards temperature scaling
#: (its weight in the mean NLL shrinks as 1 / cells: it matters only on few cells).
VECTOR_PRIOR = 1.0


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017): the share-weighted mean gap
    between accuracy and mean confidence per bin."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
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


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
    log_p = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return float(-log_p[np.arange(len(labels)), labels].mean())


@dataclass(frozen=True)
class Calibration:
    """``scale`` and ``bias`` per class (``None``: 1 and 0); ``prior``: offsets added to the
    logits first (``None``: none); ``report``: how it was chosen (held-out ECE and NLL of each
    method, cells, folds)."""

    method: str = "none"
    temperature: float = 1.0
    scale: tuple[float, ...] | None = None
    bias: tuple[float, ...] | None = None
    report: dict = field(default_factory=dict)
    prior: tuple[float, ...] | None = None

    def vectors(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scale, bias)`` as float32 arrays of length ``num_classes``, the prior folded in:
        ``(z + prior) * scale + bias``."""
        scale = np.full(num_classes, 1.0 / self.temperature) if self.scale is None else np.asarray(self.scale)
        bias = np.zeros(num_classes) if self.bias is None else np.asarray(self.bias)
        if self.prior is not None:
            bias = bias + scale * np.asarray(self.prior)
        return scale.astype(np.float32), bias.astype(np.float32)

    def apply(self, logits):
        """Calibrated logits, for a NumPy array or a tensor ``(..., K)``."""
        scale, bias = self.vectors(logits.shape[-1])
        if isinstance(logits, torch.Tensor):
            return logits.float() * torch.from_numpy(scale).to(logits.device) + torch.from_numpy(bias).to(logits.device)
        return np.asarray(logits, dtype=np.float64) * scale + bias

    def probabilities(self, logits):
        """Calibrated probabilities (NumPy in, NumPy out; tensor in, tensor out)."""
        calibrated = self.apply(logits)
        if isinstance(calibrated, torch.Tensor):
            return torch.softmax(calibrated, dim=-1)
        return np.exp(log_softmax(calibrated, axis=-1))

    def describe(self) -> str:
        """One line for cards and pages: what is applied, and the held-out evidence for it."""
        applied = {"none": "no calibration", "temperature": f"temperature scaling (T = {self.temperature:.3f})",
                   "vector": "vector scaling (a scale and a bias per class)"}[self.method]
        if self.prior is not None:
            applied = f"logits adjusted for the training class shares, then {applied}"
        held_out = self.report.get("held_out")
        if not held_out:
            reason = self.report.get("chosen_because")
            return applied + (f" ({reason})" if reason else "")
        eces = ", ".join(f"{method} {values['ece']:.3f}" for method, values in held_out.items())
        if self.method != "none":
            return (f"{applied}, chosen on {self.report['cells']} validation cells by cross-fitted ECE "
                    f"({self.report['folds']} folds; held-out ECE: {eces})")
        accuracies = ", ".join(f"{method} {values['accuracy']:.3f}" for method, values in held_out.items())
        return (f"{applied}: {NOTHING_HELPED} ({self.report['cells']} validation cells, {self.report['folds']} folds; "
                f"held-out ECE: {eces}; accuracy: {accuracies})")

    def to_dict(self) -> dict:
        return {"method": self.method, "temperature": self.temperature,
                "scale": None if self.scale is None else list(self.scale),
                "bias": None if self.bias is None else list(self.bias), "report": self.report,
                "prior": None if self.prior is None else list(self.prior)}

    @classmethod
    def from_config(cls, config: dict) -> "Calibration":
        """From a bundle's ``bundle.json``: its ``calibration`` entry, or (older bundles) its
        ``temperature``."""
        entry = config.get("calibration")
        if not entry:
            temperature = float(config.get("temperature", 1.0))
            return cls(method="temperature" if temperature != 1.0 else "none", temperature=temperature)
        return cls(method=entry["method"], temperature=float(entry.get("temperature", 1.0)),
                   scale=None if entry.get("scale") is None else tuple(entry["scale"]),
                   bias=None if entry.get("bias") is None else tuple(entry["bias"]),
                   report=dict(entry.get("report") or {}),
                   prior=None if entry.get("prior") is None else tuple(entry["prior"]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in ``TEMPERATURE_BOUNDS`` minimising the NLL of ``logits`` (bounded
    1-D search on log T, so the bounds hold during the search, not by clipping after it)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    low, high = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(lambda log_t: negative_log_likelihood(logits / np.exp(log_t), labels),
                            bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x))


def fit_vector(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vector scaling: per-class ``(scale, bias)`` minimising NLL plus a Gaussian prior
    centred on temperature scaling (``VECTOR_PRIOR``), by L-BFGS in float64."""
    temperature = fit_temperature(logits, labels)
    logits_t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    start = torch.full((logits_t.shape[1],), 1.0 / temperature, dtype=torch.float64)
    scale = start.clone().requires_grad_(True)
    bias = torch.zeros_like(start, requires_grad=True)
    optimizer = torch.optim.LBFGS([scale, bias], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t * scale + bias, labels_t)
        prior = (scale - start).square().sum() + bias.square().sum()
        loss = loss + VECTOR_PRIOR / (2 * len(labels_t)) * prior
        loss.backward()
        return loss

    optimizer.step(closure)
    return scale.detach().numpy(), bias.detach().numpy()


def fit(method: str, logits: np.ndarray, labels: np.ndarray, report: dict | None = None) -> Calibration:
    """A :class:`Calibration` of ``method`` fitted to all of ``logits``/``labels``."""
    report = report or {}
    if method == "none":
        return Calibration(report=report)
    if method == "temperature":
        return Calibration(method, temperature=fit_temperature(logits, labels), report=report)
    if method == "vector":
        scale, bias = fit_vector(logits, labels)
        return Calibration(method, scale=tuple(map(float, scale)), bias=tuple(map(float, bias)), report=report)
    raise ValueError(f"unknown calibration {method!r}; choose from {', '.join(METHODS)}")


def choose_calibration(logits: np.ndarray, labels: np.ndarray, methods=METHODS, folds: int = FOLDS,
                       seed: int = 0) -> Calibration:
    """The method of ``methods`` with the lowest cross-fitted ECE on these (validation) cells,
    refitted on all of them; ``none`` unless another lowers the held-out ECE without
    lowering the held-out accuracy."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if len(labels) < MIN_CELLS:
        return Calibration(report={"chosen_because": f"only {len(labels)} validation cells (< {MIN_CELLS})",
                                   "cells": int(len(labels))})
    held_out = {method: np.zeros_like(logits) for method in methods}
    for train, test in _folds(labels, folds, seed):
        for method in methods:
            held_out[method][test] = fit(method, logits[train], labels[train]).apply(logits[test])
    scores = {method: {"ece": expected_calibration_error(np.exp(log_softmax(values, axis=1)), labels),
                       "nll": negative_log_likelihood(values, labels),
                       "accuracy": float((values.argmax(axis=1) == labels).mean())}
              for method, values in held_out.items()}
    raw_accuracy = float((logits.argmax(axis=1) == labels).mean())
    # Eligible: lowers held-out ECE below no calibration, and costs no accuracy (vector
    # scaling can move the argmax).
    eligible = [method for method in methods if method != "none" and scores[method]["accuracy"] >= raw_accuracy
                and scores[method]["ece"] < scores.get("none", {"ece": np.inf})["ece"]]
    best = min(eligible, key=lambda method: (scores[method]["ece"], METHODS.index(method))) if eligible else "none"
    reason = "lowest ECE on held-out validation cells (cross-fitted)" if eligible else NOTHING_HELPED
    report = {"cells": int(len(labels)), "folds": folds, "held_out": scores, "chosen_because": reason}
    return fit(best, logits, labels, report)


def _folds(labels: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import KFold, StratifiedKFold

    counts = np.bincount(labels)
    if counts[counts > 0].min() >= folds:  # every class in every fold
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        return splitter.split(np.zeros(len(labels)), labels)
    return KFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)))
