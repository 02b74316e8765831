"""The network and the cell's measurements, read together (late fusion).

The measured model is the gradient-boosted trees the audit already consults as a second
opinion (:func:`xcyto.morphology.fit_baseline`), fitted on the training cells the bundle's
gallery measured. Its log-probabilities are added to the network's with one weight chosen on
the validation cells (log-loss; 0 when the measurements do not help there)::

    log p_fused = log p_network + weight * log p_measured   (renormalised)

Nothing new is stored but the weight: the trees are refitted from the gallery's measurements,
deterministically, and a checksum of their answers on those cells says if they came out the
same (no pickled model in a bundle). A feature's contribution is what the fused log-odds of a
class lose when that feature alone is put back to the training cells' median: an occlusion of
the model itself, so removing it moves the output by exactly that much, and the share of the
total effect the single features add up to is reported beside them.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np

from xcyto.errors import XcytoError

#: The weights tried on the validation cells.
WEIGHTS = tuple(round(w, 2) for w in np.arange(0.0, 1.0001, 0.05))
#: bundle.json key of the record.
RECORD = "morphology_fusion"
#: The feature whose absence means no nucleus was found.
NUCLEUS = "nucleus_area"
#: Below this total change (log-odds) the measurements moved nothing worth a share.
NEGLIGIBLE = 0.05
_CACHE: dict[int, tuple] = {}  # id(bundle) -> (weak reference, record, fusion): refitted once per bundle


class FusionWarning(UserWarning):
    """The refitted measured model does not answer as the one the weight was chosen for."""


def log_softmax(values: np.ndarray) -> np.ndarray:
    values = values - values.max(axis=1, keepdims=True)
    return values - np.log(np.exp(values).sum(axis=1, keepdims=True))


@dataclass
class MorphologyFusion:
    """A bundle's measured model and the weight its log-probabilities get."""

    model: object                 # HistGradientBoostingClassifier on the measured features
    features: list[str]           # the measured features, in the model's column order
    reference: np.ndarray         # (F,) the training cells' median of each feature
    num_classes: int
    weight: float
    record: dict = field(default_factory=dict)

    def measured_log_probabilities(self, features) -> np.ndarray:
        """``(N, C)`` log-probabilities of the measured model alone."""
        from xcyto.morphology import baseline_log_probabilities

        return baseline_log_probabilities(self.model, np.asarray(features, dtype=np.float64), self.num_classes)

    def measured(self, features) -> np.ndarray:
        """``(N,)`` bool: the cells whose nucleus was measured. The others (no nucleus found:
        background, debris) keep the network's reading; their measurements say nothing."""
        features = np.asarray(features, dtype=np.float64)
        if NUCLEUS in self.features:
            return np.isfinite(features[:, self.features.index(NUCLEUS)])
        return np.isfinite(features).any(axis=1)

    def fused_log_probabilities(self, probabilities, features) -> np.ndarray:
        """``(N, C)`` fused log-probabilities (the network's own for cells without a nucleus)."""
        features = np.asarray(features, dtype=np.float64)
        logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, 1.0))
        fused = log_softmax(logits + self.weight * self.measured_log_probabilities(features))
        unmeasured = ~self.measured(features)
        fused[unmeasured] = log_softmax(logits[unmeasured])
        return fused

    def fuse(self, probabilities, features) -> np.ndarray:
        """``(N, C)`` fused probabilities from the network's ``(N, C)`` and the ``(N, F)`` features."""
        return np.exp(self.fused_log_probabilities(probabilities, features))

    def log_odds(self, probabilities, features) -> np.ndarray:
        """``(N, C)`` fused log-odds of each class, log(p / (1 - p)), from the log-probabilities
        (exact where p is close to 1, where 1 - p would round to 0)."""
        fused = self.fused_log_probabilities(probabilities, features)
        others = np.empty_like(fused)
        for c in range(fused.shape[1]):  # log of the other classes' total
            rest = np.delete(fused, c, axis=1)
            top = rest.max(axis=1)
            others[:, c] = top + np.log(np.exp(rest - top[:, None]).sum(axis=1))
        return fused - others

    def contributions(self, probabilities, features) -> np.ndarray:
        """``(N, F, C)``: how much each feature moves each class's fused log-odds: the log-odds
        minus those with that feature alone set to the training cells' median."""
        features = np.asarray(features, dtype=np.float64)
        odds = self.log_odds(probabilities, features)
        moved = np.empty((len(features), len(self.features), self.num_classes))
        for j in range(len(self.features)):
            typical = features.copy()
            typical[:, j] = self.reference[j]
            moved[:, j] = odds - self.log_odds(probabilities, typical)
        return moved

    def to_record(self) -> dict:
        return {**self.record, "weight": self.weight, "features": list(self.features),
                "reference": [round(float(v), 6) for v in self.reference]}


@dataclass
class FusedReading:
    """One cell's fused prediction and the measurements that moved it, in words.

    A change is in log-odds of ``target``: what the fused log-odds lose when that feature alone
    is set to the training cells' median. ``completeness``: the share of the measurements'
    total effect on the class (every measured feature at its median) that the single-feature
    changes add up to (1: additive; the rest is features acting together); ``None`` when that
    effect is under ``NEGLIGIBLE``. Features not measured on the cell are left out of both."""

    probabilities: dict[str, float]
    predicted: str
    weight: float
    contributions: list[tuple[str, float, float, float]]  # (feature, value, training median, change)
    completeness: float | None  # None: the measurements moved the class too little to share out
    target: str

    def lines(self, top: int = 5) -> list[str]:
        from xcyto.morphology import unit_of

        said = []
        for name, value, typical, change in self.contributions[:top]:
            unit = unit_of(name)
            unit = f" {unit}" if unit in ("px", "px2", "um", "um2") else ""
            said.append(f"{name.replace('_', ' ')} {value:.3g}{unit} (typical {typical:.3g}): "
                        f"{change:+.2f} toward {self.target}")
        return said

    def describe(self, top: int = 5) -> str:
        head = (f"with its measurements (weight {self.weight:.2f}): {self.predicted} "
                f"{self.probabilities[self.predicted]:.0%}")
        if self.weight == 0:
            return head + "; the measurements did not help on the validation cells, so they move nothing"
        share = ("  (the measurements hardly move this class)" if self.completeness is None else
                 f"  (the single features add up to {self.completeness:.0%} of the measurements' effect)")
        return "\n".join([head, *("  " + line for line in self.lines(top)), share])

    def to_dict(self) -> dict:
        return {"probabilities": self.probabilities, "predicted": self.predicted, "weight": self.weight,
                "target": self.target, "completeness": self.completeness,
                "contributions": [{"feature": f, "value": v, "typical": t, "change": c}
                                  for f, v, t, c in self.contributions]}


def measured_model(gallery):
    """``(model, feature names, training medians)`` fitted on the gallery's measured training
    cells, or ``None`` when the gallery has none (see :func:`xcyto.morphology.fit_baseline`)."""
    measured = None if gallery is None else gallery.morphology
    if measured is None:
        return None
    from xcyto.morphology import fit_baseline

    values = np.asarray(measured[0], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: median nan, said below
        reference = np.nanmedian(values, axis=0)
    try:
        model = fit_baseline(values, np.asarray(gallery.labels))
    except ValueError as error:  # e.g. a gallery of one class: scikit-learn cannot fit it
        raise XcytoError(f"cannot fit the measured model on the gallery's {len(values)} training cells: {error}") from None
    return model, list(measured[1]), np.nan_to_num(reference)


def _measured(bundle, missing: str):
    """``(gallery, (model, names, medians))`` of the bundle, or a clear error saying ``missing``."""
    from xcyto.embedding import load_gallery

    gallery = load_gallery(bundle)
    fitted = measured_model(gallery)
    if fitted is None:
        raise XcytoError(f"{bundle.name}: {missing}")
    return gallery, fitted


def _checksum(model, gallery, num_classes: int) -> float:
    from xcyto.morphology import baseline_log_probabilities

    values = np.asarray(gallery.morphology[0], dtype=np.float64)
    return round(float(baseline_log_probabilities(model, values, num_classes).sum()), 4)


def fit_fusion(bundle, probabilities, features, labels) -> MorphologyFusion:
    """The weight of the measured model, chosen on held-out (validation) cells: the network's
    ``probabilities`` ``(n, C)`` of them, their measured ``features`` ``(n, F)`` and labels."""
    gallery, (model, names, reference) = _measured(bundle, "fusion needs the training cells' measurements, which "
                                                           "its gallery lacks; retrain with a gallery (the default)")
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(labels) == 0 or len(labels) != len(probabilities):
        raise XcytoError(f"fusion needs held-out cells with labels (got {len(labels)} for {len(probabilities)} cells)")
    fusion = MorphologyFusion(model, names, reference, len(bundle.classes), 0.0)
    losses = []
    for weight in WEIGHTS:
        fusion.weight = weight
        fused = fusion.fuse(probabilities, features)
        losses.append(float(-np.log(np.clip(fused[np.arange(len(labels)), labels], 1e-12, 1)).mean()))
    fusion.weight = WEIGHTS[int(np.argmin(losses))]  # ties: the smaller weight
    fusion.record = {"validation_log_loss": {str(w): round(l, 4) for w, l in zip(WEIGHTS, losses)},
                     "validation_cells": int(len(labels)), "checksum": _checksum(model, gallery, len(bundle.classes)),
                     "model": "HistGradientBoostingClassifier on the gallery's measured training cells"}
    return fusion


def load_fusion(bundle) -> MorphologyFusion | None:
    """The bundle's fusion (refitted from its gallery), or ``None`` when it has none."""
    record = bundle.config.get(RECORD)
    if not record:
        return None
    for key in [key for key, entry in _CACHE.items() if entry[0]() is None]:
        del _CACHE[key]  # bundles gone
    cached = _CACHE.get(id(bundle))
    if cached and cached[0]() is bundle and cached[1] == record:
        return cached[2]
    try:
        gallery, (model, names, reference) = _measured(bundle, "bundle.json records a fusion with the "
                                                               "measurements, but its gallery has none")
        if names != list(record["features"]):
            raise XcytoError(f"{bundle.name}: the gallery measured other features than the fusion was chosen for")
    except XcytoError as error:  # a missing or rebuilt gallery: the network alone, said once
        warnings.warn(f"{error}; reading the network alone (run `xcyto fuse` again)", FusionWarning, stacklevel=2)
        return None
    found = _checksum(model, gallery, len(bundle.classes))
    if abs(found - record.get("checksum", found)) > 1e-6 * max(1.0, abs(found)):
        warnings.warn(f"{bundle.name}: the measured model refitted from the gallery answers differently "
                      f"(checksum {found} against {record['checksum']}); another scikit-learn version? "
                      "Run `xcyto fuse` again", FusionWarning, stacklevel=2)
    fusion = MorphologyFusion(model, names, np.asarray(record["reference"], dtype=np.float64),
                              len(bundle.classes), float(record["weight"]), dict(record))
    _CACHE[id(bundle)] = (weakref.ref(bundle), dict(record), fusion)
    return fusion


def fused_reading(fusion: MorphologyFusion, probabilities, features: dict, classes: list[str],
                  target: str | None = None) -> FusedReading:
    """One cell: its network ``probabilities`` ``(C,)`` and measured ``features`` by name."""
    row = np.array([[features.get(name, np.nan) for name in fusion.features]], dtype=np.float64)
    network = np.asarray(probabilities, dtype=np.float64)[None]
    fused = fusion.fuse(network, row)[0]
    index = int(fused.argmax()) if target is None else classes.index(target)
    moved = fusion.contributions(network, row)[0][:, index]
    present = np.isfinite(row[0])
    typical = row.copy()
    typical[0, present] = fusion.reference[present]  # every measured feature at its median
    total = float(fusion.log_odds(network, row)[0, index] - fusion.log_odds(network, typical)[0, index])
    order = np.argsort(-np.abs(moved))
    completeness = float(moved[present].sum() / total) if abs(total) >= NEGLIGIBLE else None
    return FusedReading(
        probabilities={name: round(float(p), 4) for name, p in zip(classes, fused)},
        predicted=classes[int(fused.argmax())], weight=fusion.weight, target=classes[index],
        contributions=[(fusion.features[j], float(row[0, j]), float(fusion.reference[j]), float(moved[j]))
                       for j in order if np.isfinite(row[0, j])],
        completeness=completeness)
