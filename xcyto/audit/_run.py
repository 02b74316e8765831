"""Audit a bundle on labelled cells: every error and every doubtful call, explained and ranked.

One forward pass over all cells gives predictions and embeddings; the gallery gives
neighbours and atypicality; confident learning scores the labels; then only the cases
(misclassified, or correct below ``confidence``) go through the same batched
:func:`xcyto.explain` as everything else, for the predicted class and for the class in
question (the given label, or the runner-up when the call was right).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from xcyto import __version__
from xcyto.audit import _scores as S
from xcyto.errors import DataError, ExplainError

DEFAULT_METHODS = ("gradcam", "integrated_gradients")
#: Methods also run for the other class of a case (the given label, or the runner-up): the
#: cheap ones. Integrated gradients of that class cost the most (median 193 steps to add up
#: on the demo bundle, against 65 for the predicted class), for a map the cards rarely need.
OTHER_CLASS_FAMILIES = ("cam", "baseline")
#: Integrated gradients in an audit stop here even when they do not yet add up (their cards
#: and the summary say so): an audit explains hundreds of cells.
AUDIT_MAX_STEPS = 65
#: A correct call below this calibrated probability is a case too.
DEFAULT_CONFIDENCE = 0.6
#: Neighbours that vote in ``neighbour_disagreement``; and thumbnails shown per class.
DEFAULT_K = 10
SHOWN_PER_CLASS = 3
#: Cells explained together (one call of ``explain``).
CHUNK = 32


@dataclass
class Case:
    """One cell worth a look. ``overlays[(method, class)]``: H x W x 3 uint8 over ``image``;
    ``checks[(method, class)]``: ``(passed, label)`` of that map's check (``Heatmap.check_label``);
    ``neighbours[class]``: the nearest training cells of that class (``Neighbour``s)."""

    index: int
    cell_id: str
    source: str
    given: str
    predicted: str
    other: str
    probabilities: dict[str, float]
    signals: dict[str, float]
    label_issue_flag: bool
    atypical: bool
    kind: str
    reading: str
    data_issues: list = field(default_factory=list)  # the crop's xcyto.data.health.Issue, blocking first
    image: np.ndarray | None = None
    morphology: object | None = None  # xcyto.morphology.Morphology of the cell
    morphology_probabilities: dict[str, float] = field(default_factory=dict)  # by the morphometric model
    overlays: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    checks: dict[tuple[str, str], tuple] = field(default_factory=dict)
    neighbours: dict[str, list] = field(default_factory=dict)
    rank: int = 0

    @property
    def misclassified(self) -> bool:
        return self.given != self.predicted

    @property
    def suspicion(self) -> float:
        return self.signals["suspicion"]

    @property
    def roles(self) -> dict[str, str]:
        """The two classes shown, with their role: ``predicted``, and ``given`` (or
        ``runner-up`` when the call was right)."""
        return {self.predicted: "predicted", self.other: "given" if self.misclassified else "runner-up"}

    @property
    def pair(self) -> str:
        return f"{self.given} → {self.predicted}"


@dataclass
class AuditResult:
    """All cells' predictions and signals, the ranked cases, the metrics and the settings.

    Per-cell arrays are aligned with ``cell_ids``; ``signals[name]`` holds each signal
    of :data:`xcyto.audit.WEIGHTS` (``method_disagreement`` is nan for cells not explained).
    ``map_coords`` ``(N, 2)``: the cells on the gallery's 2-D map (``None`` without one).
    ``readings[kind]``: how often that reading is right here, measured on planted label flips
    (each case's reading checked against flips planted in the audited cells); ``label_errors``: the cells that
    pass the "likely label error" rule (read so, or "model and label disagree" when the
    estimate is low).
    """

    classes: list[str]
    cell_ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    signals: dict[str, np.ndarray]
    label_issue_flags: np.ndarray
    atypical: np.ndarray
    cases: list[Case]
    metrics: dict
    settings: dict
    map_coords: np.ndarray | None = None
    map_background: tuple[np.ndarray, np.ndarray] | None = None
    class_thresholds: np.ndarray | None = None
    readings: dict = field(default_factory=dict)
    label_errors: np.ndarray | None = None
    data_check: object | None = None  # xcyto.data.health.DataCheck of the audited cells (None: not checked)
    metrics_without_data_issues: dict | None = None  # the model's metrics on the crops with no data issue

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    def kind_counts(self) -> dict[str, int]:
        """How many cases of each kind (``xcyto.audit.KINDS``, in that order; zeros kept)."""
        return {kind: sum(case.kind == kind for case in self.cases) for kind in S.KINDS}

    def confused_pairs(self, top: int = 10) -> list[tuple[str, str, int]]:
        """``(given, predicted, count)`` of the most frequent errors, most frequent first."""
        matrix = np.asarray(self.metrics["confusion_matrix"])
        pairs = [(self.classes[i], self.classes[j], int(matrix[i, j]))
                 for i in range(len(self.classes)) for j in range(len(self.classes)) if i != j and matrix[i, j]]
        return sorted(pairs, key=lambda pair: -pair[2])[:top]

    def case(self, rank: int) -> Case:
        """The case of rank ``rank`` (1 = most worth a look)."""
        if not 1 <= rank <= len(self.cases):
            raise ExplainError(f"no case of rank {rank}: this audit has {len(self.cases)} cases")
        return self.cases[rank - 1]

    def plot_case(self, rank: int = 1, methods: list[str] | None = None):
        """A figure of one case: cell, overlays for both classes, nearest training cells of both."""
        from xcyto.audit._figures import plot_case

        return plot_case(self.case(rank), methods)

    def to_frame(self):
        """The ranked cases as a pandas DataFrame (the rows of ``cases.csv``, numbers as numbers)."""
        import pandas as pd

        from xcyto.audit._report import case_columns, case_rows

        frame = pd.DataFrame(case_rows(self), columns=case_columns(self))
        for column in frame.columns:
            try:
                frame[column] = pd.to_numeric(frame[column])
            except (ValueError, TypeError):
                pass  # text (ids, classes, readings) stays text
        return frame

    def _repr_html_(self) -> str:
        metrics = self.metrics
        head = (f"<p><b>{len(self.cell_ids)}</b> cells, accuracy <b>{metrics['accuracy']:.3f}</b>, "
                f"macro-F1 <b>{metrics['macro_f1']:.3f}</b>; <b>{len(self.cases)}</b> cases</p>")
        columns = ["rank", "cell_id", "given", "predicted", "suspicion", "kind", "reading"]
        frame = self.to_frame()
        return head + (frame[columns].head(10).to_html(index=False) if len(frame) else "")

    def save(self, out, title: str | None = None) -> dict:
        """Write ``report.html``, ``cases.csv``, ``cells.csv``, ``audit.json`` and PNGs into ``out``."""
        from xcyto.audit._report import write_audit

        return write_audit(self, out, title=title)


def audit(bundle, dataset, *, methods=DEFAULT_METHODS, confidence: float = DEFAULT_CONFIDENCE, k: int = DEFAULT_K,
          max_cases: int | None = None, map_method: str | None = "umap", batch_size: int = 64,
          progress: bool = False, data_note: str | None = None, seed: int = 0, tta: bool | None = None,
          data_check=True, **method_options) -> AuditResult:
    """Audit ``bundle`` (a Bundle or folder) on ``dataset`` (a CellDataset with the bundle's classes).

    ``confidence``: correct calls below this calibrated probability are cases too.
    ``k``: neighbours voting in ``neighbour_disagreement``. ``max_cases``: explain only the
    top cases by the other signals (default: all). ``map_method``: ``"umap"``, ``"pca"`` or
    ``None`` for the map of the summary. ``seed``: of the planted label flips that measure how
    often "likely label error" is right here (``result.readings``). ``tta``: average the
    probabilities over the 8 dihedral views (default: the bundle's choice). ``method_options``: e.g.
    ``steps=16`` for IG; integrated gradients stop at ``max_steps=AUDIT_MAX_STEPS`` unless told
    otherwise. The predicted class gets every method; the other class (given label or
    runner-up) the CAM methods only (``OTHER_CLASS_FAMILIES``). ``data_check``: check the
    crops first (:func:`xcyto.data.health.check`; or a :class:`xcyto.data.health.DataCheck` of these cells
    already made, or ``False``): a case with a data issue is read as one, first.
    """
    from xcyto.explain import gallery_for, resolve_bundle, resolve_methods
    from xcyto.training import classification_metrics

    started = time.perf_counter()
    bundle = resolve_bundle(bundle)
    methods = [m.name for m in resolve_methods(methods)]
    if "integrated_gradients" in methods and method_options.get("steps", "auto") == "auto":
        method_options = {"max_steps": AUDIT_MAX_STEPS, **method_options}
    if list(dataset.classes) != bundle.classes:
        raise DataError(f"the data's classes {list(dataset.classes)} differ from the bundle's {bundle.classes}; "
                        "pick the matching label scheme")
    if len(dataset) == 0:
        raise DataError("no cells to audit")
    if not 0.0 <= confidence <= 1.0:
        raise ExplainError(f"confidence must be within 0..1, got {confidence}")
    if k < 1:
        raise ExplainError(f"k must be >= 1, got {k}")

    checked = _data_check(dataset, data_check, progress)
    logits, probabilities, embeddings = bundle.predict_cells(dataset.samples, batch_size=batch_size,
                                                             progress=progress, tta=tta)
    labels = np.asarray(dataset.labels)
    predictions = probabilities.argmax(axis=1)
    label_issue, label_flags, thresholds = S.label_issue_scores(labels, probabilities)

    gallery = gallery_for(bundle)
    n = len(dataset)
    if gallery is not None:
        lookup = gallery.lookup(torch.from_numpy(embeddings), k=k)
        neighbour_labels = np.array([[nb.label for nb in row] for row in lookup.neighbours])
        atypicality_scores, atypical = np.asarray(lookup.atypicality_scores), np.asarray(lookup.atypical, bool)
    else:
        neighbour_labels, atypicality_scores, atypical = np.zeros((n, 0), int), np.zeros(n), np.zeros(n, bool)
    signals = {
        "label_issue": label_issue,
        "neighbour_disagreement": S.neighbour_disagreement(neighbour_labels, labels),
        "atypicality": S.atypicality_tail(atypicality_scores),
        "method_disagreement": np.full(n, np.nan),
        "morphology_disagreement": np.full(n, np.nan),
        **S.trust_signals(labels, probabilities, bundle.classes, bundle.prediction_sets),
        "atypicality_percentile": atypicality_scores,
    }

    chosen = np.flatnonzero((predictions != labels) | (probabilities.max(axis=1) < confidence))
    preliminary = S.suspicion({**signals, "method_disagreement": np.zeros(n), "morphology_disagreement": np.zeros(n)})
    chosen = chosen[np.argsort(-preliminary[chosen], kind="stable")]
    if max_cases is not None:
        chosen = chosen[:max(0, int(max_cases))]
    runner_up = np.argsort(-probabilities, axis=1)[:, 1] if probabilities.shape[1] > 1 else predictions
    others = np.where(predictions != labels, labels, runner_up)

    predicted_at = time.perf_counter()
    cases = _explain_cases(bundle, dataset, chosen, predictions, others, methods, method_options, progress)
    explained_at = time.perf_counter()
    if "gradcam" in methods and "integrated_gradients" in methods and cases:
        rho = S.map_agreement(np.stack([c.pop("gradcam") for c in cases]), np.stack([c.pop("ig") for c in cases]))
        signals["method_disagreement"][chosen] = (1.0 - rho) / 2.0
    morphometric = _morphometric_model(gallery)
    if morphometric is not None and cases:
        measured = np.array([[c["morphology"].features.get(name, np.nan) for name in morphometric[1]] for c in cases])
        from xcyto.morphology import baseline_log_probabilities

        morph_probabilities = np.exp(baseline_log_probabilities(morphometric[0], measured, len(bundle.classes)))
        signals["morphology_disagreement"][chosen] = 1.0 - morph_probabilities[np.arange(len(chosen)), predictions[chosen]]
        for parts, row in zip(cases, morph_probabilities):
            parts["morphology_probabilities"] = dict(zip(bundle.classes, row.round(4).tolist()))
    signals["suspicion"] = S.suspicion({**signals, **{name: np.nan_to_num(signals[name])
                                                      for name in ("method_disagreement", "morphology_disagreement")}})

    classes = bundle.classes
    label_errors = S.label_error_readings(labels, probabilities, neighbour_labels, label_flags)
    readings = {"label_error": S.estimate_reading_precision(labels, probabilities, neighbour_labels, seed=seed)}
    reading_precision = readings["label_error"]["precision"]
    built = []
    for index, parts in zip(chosen.tolist(), cases):
        neighbour_classes = [classes[label] for label in neighbour_labels[index]]
        given, predicted = classes[labels[index]], classes[predictions[index]]
        kind, reading = S.classify_case(
            given=given, predicted=predicted, runner_up=classes[runner_up[index]],
            p_given=float(probabilities[index, labels[index]]), p_predicted=float(probabilities[index].max()),
            label_error=bool(label_errors[index]), atypical=bool(atypical[index]),
            neighbour_classes=neighbour_classes, reading_precision=reading_precision,
            data_issues=checked.issues_of(index) if checked is not None else ())
        sample = dataset.samples[index]
        built.append(Case(
            index=index, cell_id=sample.cell_id, source=str(sample.path or ""), given=given, predicted=predicted,
            other=classes[others[index]], probabilities=dict(zip(classes, probabilities[index].round(4).tolist())),
            signals={name: float(values[index]) for name, values in signals.items()},
            label_issue_flag=bool(label_flags[index]), atypical=bool(atypical[index]), kind=kind, reading=reading,
            data_issues=checked.issues_of(index) if checked is not None else [], image=parts["image"], overlays=parts["overlays"], checks=parts["checks"], morphology=parts["morphology"],
            morphology_probabilities=parts.get("morphology_probabilities", {})))
    built.sort(key=lambda case: -case.suspicion)
    for rank, case in enumerate(built, start=1):
        case.rank = rank
    if gallery is not None and built:
        _attach_neighbours(gallery, embeddings, built, classes)

    metrics = classification_metrics(logits, labels, classes, bundle.calibration, probabilities)
    clean_metrics, data_summary = None, None
    if checked is not None:
        from xcyto.audit._scores import DATA_ISSUE_KINDS
        from xcyto.data.health import BLOCKING, CHECKS

        issue_checks = [name for name, c in CHECKS.items() if c.kind in DATA_ISSUE_KINDS]
        with_issue = checked.flagged(issue_checks)
        if (~with_issue).any():
            keep = np.flatnonzero(~with_issue)
            clean_metrics = classification_metrics(logits[keep], labels[keep], classes, bundle.calibration,
                                                   probabilities[keep])
        data_summary = {"crops": int(with_issue.sum()), "blocking": int(checked.flagged(BLOCKING).sum()),
                        "by_check": {name: n for name, n in checked.counts().items() if n},
                        "cases": sum(case.kind == "data_issue" for case in built),
                        "misclassified_with_data_issues": int((with_issue & (predictions != labels)).sum()),
                        "health": checked.health_line()}
    map_coords, background = _map(gallery, embeddings, map_method)
    settings = {
        "bundle_name": bundle.name, "bundle_sha256": bundle.sha256,
        "bundle_path": str(bundle.path) if bundle.path else None, "architecture": bundle.architecture,
        "input_size": bundle.input_size, "calibration": bundle.calibration.method, "temperature": bundle.temperature,
        "tta": bundle.uses_tta(tta), "probabilities_from": bundle.describe_tta(tta), "data": data_note or dataset.name,
        "cells": n, "methods": methods, "method_options": dict(method_options), "confidence": confidence,
        "k": k, "max_cases": max_cases, "seed": seed,
        "explanation_checks": (bundle.config.get("explanation_checks") or {}).get("randomisation", {}), "map": None if map_coords is None else map_method,
        "gallery": None if gallery is None else str(gallery.path), "weights": S.WEIGHTS,
        "data_issues": data_summary,
        "xcyto_version": __version__, "cleanlab_version": _version("cleanlab"),
        "seconds": round(time.perf_counter() - started, 2),
        "seconds_by_stage": {"predict_and_score": round(predicted_at - started, 2),
                             "explain_cases": round(explained_at - predicted_at, 2),
                             "neighbours_map_metrics": round(time.perf_counter() - explained_at, 2)},
    }
    return AuditResult(classes=classes, cell_ids=dataset.cell_ids, labels=labels, probabilities=probabilities,
                       signals=signals, label_issue_flags=label_flags, atypical=atypical, cases=built,
                       metrics=metrics, settings=settings, map_coords=map_coords, map_background=background,
                       class_thresholds=thresholds, readings=readings, label_errors=label_errors,
                       data_check=checked, metrics_without_data_issues=clean_metrics)


def _data_check(dataset, data_check, progress: bool):
    """The data check of the audited cells: made now, given, or none (``False``)."""
    if data_check is False or data_check is None:
        return None
    from xcyto.data.health import DataCheck, check

    if isinstance(data_check, DataCheck):
        if data_check.paths != dataset.cell_ids:
            raise DataError("the data check given is of other cells than the audited ones")
        return data_check
    return check(dataset, progress=progress)


def _explain_cases(bundle, dataset, chosen, predictions, others, methods, method_options, progress) -> list[dict]:
    """Per case: the model's view of the cell, overlays for the predicted and the other
    class, and the raw Grad-CAM / IG maps of the predicted class (for their agreement)."""
    from xcyto.explain import explain, get_method, options_for

    starts = range(0, len(chosen), CHUNK)
    if progress and len(chosen):
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="explaining cases", unit="batch", total=len(starts), leave=False)
    parts = []
    classes = bundle.classes
    other_methods = [m for m in methods if get_method(m).family in OTHER_CLASS_FAMILIES]
    for start in starts:
        rows = chosen[start:start + CHUNK]
        images = [dataset.samples[i].image for i in rows]
        # the audit has its probabilities already: the maps need no test-time augmentation
        for_predicted = explain(images, bundle, methods, target=predictions[rows].tolist(), neighbours=0,
                                tta=False, **method_options)
        for_other = [None] * len(rows)
        if other_methods:
            for_other = explain(images, bundle, other_methods, target=others[rows].tolist(), neighbours=0,
                                morphology=False, tta=False, **options_for(other_methods, method_options))
        for row, mine, theirs in zip(rows, for_predicted, for_other):
            overlays, checks = {}, {}
            for explanation, class_index in ((mine, predictions[row]), (theirs, others[row])):
                if explanation is None:
                    continue
                for m in explanation.heatmaps:
                    heatmap = explanation.heatmaps[m]
                    overlays[(m, classes[class_index])] = heatmap.overlay
                    checks[(m, classes[class_index])] = heatmap.check_label
            entry = {"image": mine.image, "overlays": overlays, "checks": checks, "morphology": mine.morphology}
            if "gradcam" in methods and "integrated_gradients" in methods:
                entry["gradcam"] = mine.heatmaps["gradcam"].raw
                entry["ig"] = mine.heatmaps["integrated_gradients"].raw
            parts.append(entry)
    return parts


def _morphometric_model(gallery):
    """``(model, feature names)``: gradient-boosted trees on the gallery's measured training
    cells (the measured model fusion reads too), or ``None`` when the gallery has no measurements."""
    from xcyto.fusion import measured_model

    fitted = measured_model(gallery)
    return None if fitted is None else fitted[:2]


def _attach_neighbours(gallery, embeddings: np.ndarray, cases: list[Case], classes: list[str]) -> None:
    queries = torch.from_numpy(embeddings[[case.index for case in cases]])
    index_of = {name: i for i, name in enumerate(classes)}
    for role in ("predicted", "other"):
        wanted = [index_of[getattr(case, role)] for case in cases]
        for case, found in zip(cases, gallery.neighbours_in_class(queries, wanted, SHOWN_PER_CLASS)):
            case.neighbours[getattr(case, role)] = found


def _map(gallery, embeddings: np.ndarray, method: str | None):
    """The audited cells on the gallery map, and the training cells behind them."""
    if gallery is None or method is None:
        return None, None
    projection = gallery.projection(method)
    return projection.transform(embeddings), (projection.coords, np.asarray(gallery.labels))


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
