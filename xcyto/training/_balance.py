"""Class imbalance, decided on the validation cells: ``balance="auto"``.

A class-balanced loss buys recall of the rare classes with accuracy on the common ones, and
how good that trade is depends on the collection: on a Bethesda collection whose largest
class has 21 times the cells of its smallest, a weighted loss lost 19 points of accuracy and
11 of macro-F1 against plain cross-entropy. So ``auto`` trains with plain cross-entropy and
then chooses, on the validation cells, between its raw logits and the same logits adjusted
for the training class shares, ``z - tau * log(prior)`` (post-hoc logit adjustment, Menon et
al. 2021, "Long-tail learning via logit adjustment"), which needs no second training.
When the largest training class has at least ``TRY_WEIGHTED_FROM`` times the cells of the
smallest, the same run is also trained with a class-weighted loss (in ``<run>/balance-loss``)
and the validation cells choose between the two trainings by the same rule
(:func:`choose_training`): on a dirty copy of Herlev with one class 20 times rarer, neither
training won on every split, and the validation cells picked the better one on each. Below
that ratio the weights are close to 1 and a second training is not worth its time.

The rule (:func:`choose_prior_adjustment`): an adjustment is kept when it raises the
validation macro-F1 by at least ``MIN_MACRO_F1_GAIN`` and costs at most ``MAX_ACCURACY_LOSS``
of validation accuracy; among several such ``tau``, the highest macro-F1 wins. On a hundred
or so validation cells macro-F1 moves by more than a point between epochs, so a smaller gain
is noise (on one Herlev fold a gain of 0.001 would have cost 2.7 points of test accuracy).
Both figures of every option are recorded in the bundle, so the choice can be checked.
"""
from __future__ import annotations

import numpy as np

from xcyto.training._metrics import macro_f1

#: Strengths of the adjustment tried (1 is the Bayes-optimal correction for a balanced error).
TAUS = (0.5, 1.0)
#: Validation accuracy an adjustment may cost, and the macro-F1 it must gain (shares: 0.01 = one point).
MAX_ACCURACY_LOSS = 0.01
MIN_MACRO_F1_GAIN = 0.01
#: A class-weighted loss is trained too (and chosen on validation) from this imbalance on.
TRY_WEIGHTED_FROM = 3.0
RULE = (f"adjusted for the class shares when that raises validation macro-F1 by at least "
        f"{100 * MIN_MACRO_F1_GAIN:g} point and costs at most {100 * MAX_ACCURACY_LOSS:g} point of validation "
        f"accuracy (tau tried: {', '.join(map(str, TAUS))})")


def beats(candidate: dict, baseline: dict) -> bool:
    """The rule of both choices: ``candidate`` (``accuracy``, ``macro_f1`` on the validation
    cells) gains at least ``MIN_MACRO_F1_GAIN`` of macro-F1 and loses at most
    ``MAX_ACCURACY_LOSS`` of accuracy against ``baseline``."""
    return (candidate["macro_f1"] >= baseline["macro_f1"] + MIN_MACRO_F1_GAIN - 1e-9
            and candidate["accuracy"] >= baseline["accuracy"] - MAX_ACCURACY_LOSS - 1e-9)


def prior_offsets(class_counts, tau: float) -> np.ndarray:
    """``-tau * log(share)`` per class: added to the logits, it moves decisions towards rare classes."""
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    return -tau * np.log(counts / counts.sum())


def choose_prior_adjustment(logits: np.ndarray, labels: np.ndarray, class_counts,
                            taus=TAUS) -> tuple[np.ndarray | None, dict]:
    """``(offsets or None, report)``: the logit offsets to apply (``None``: keep the raw logits)
    and what was measured on these (validation) cells for each option."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    num_classes = logits.shape[1]

    def scores(values):
        predictions = values.argmax(axis=1)
        return {"accuracy": float((predictions == labels).mean()), "macro_f1": macro_f1(labels, predictions, num_classes)}

    raw = scores(logits)
    options = {"raw": raw}
    best_tau, best = None, raw
    for tau in taus:
        measured = scores(logits + prior_offsets(class_counts, tau))
        options[f"tau {tau:g}"] = measured
        if beats(measured, raw) and measured["macro_f1"] > best["macro_f1"]:
            best_tau, best = tau, measured
    report = {"chosen": "raw" if best_tau is None else "prior-adjusted", "tau": best_tau,
              "class_counts": [int(c) for c in class_counts], "validation_cells": int(len(labels)),
              "validation": options, "rule": RULE}
    return (None if best_tau is None else prior_offsets(class_counts, best_tau)), report


TRAINING_RULE = (f"the class-weighted loss is kept when it raises validation macro-F1 by at least "
                 f"{100 * MIN_MACRO_F1_GAIN:g} point and costs at most {100 * MAX_ACCURACY_LOSS:g} point of "
                 "validation accuracy")


def worth_weighting(class_counts) -> bool:
    """Whether ``auto`` also trains with a class-weighted loss (see the module's docstring)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    return counts.max() >= TRY_WEIGHTED_FROM * max(counts.min(), 1.0)


def choose_training(plain: dict, weighted: dict) -> tuple[bool, dict]:
    """``(keep_weighted, record)`` from the two trainings' validation figures (each a dict with
    ``accuracy`` and ``macro_f1``, at their chosen logits, calibration and TTA)."""
    keep = beats(weighted, plain)
    figures = {name: {"accuracy": float(v["accuracy"]), "macro_f1": float(v["macro_f1"])}
               for name, v in (("cross-entropy", plain), ("class-weighted loss", weighted))}
    return keep, {"chosen": "class-weighted loss" if keep else "cross-entropy", "validation": figures,
                  "rule": TRAINING_RULE}


def describe_balance(report: dict) -> str:
    """One line for cards: what was chosen and on what evidence."""
    if not report:
        return ""
    validation = report.get("validation", {})
    figures = "; ".join(f"{name}: accuracy {v['accuracy']:.3f}, macro-F1 {v['macro_f1']:.3f}"
                        for name, v in validation.items())
    if report.get("chosen") == "prior-adjusted":
        head = f"logits adjusted for the training class shares (tau {report['tau']:g})"
    else:
        head = "raw logits (no adjustment for the class shares)"
    line = f"{head}, chosen on {report.get('validation_cells', '?')} validation cells ({figures})"
    training = report.get("training")
    if training:
        trained = "; ".join(f"{name}: accuracy {v['accuracy']:.3f}, macro-F1 {v['macro_f1']:.3f}"
                            for name, v in training["validation"].items())
        line = (f"trained with {training['chosen']}, chosen between two trainings on the validation cells "
                f"({trained})" + ("" if training["chosen"] != "cross-entropy" else f"; {line}"))
    return line
