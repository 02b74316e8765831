"""Evaluate a bundle on a dataset, and classify loose images: the ``evaluate`` and
``predict`` commands."""
from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

import numpy as np

from xcyto.atomic import write_json_atomic, write_text_atomic
from xcyto.bundle import SPLIT_FILE, Bundle, record_in_config
from xcyto.errors import DataError
from xcyto.loading import load
from xcyto.plotting import plot_confusion_matrix, save_figure
from xcyto.data import abnormal_flags
from xcyto.training._metrics import classification_metrics, headline_metrics
from xcyto.trust import p_abnormal, plot_risk_coverage, risk_coverage, set_metrics

#: Environment variable: the folder holding the datasets (``$XCYTO_DATA/herlev``, ...).
DATA_ENV = "XCYTO_DATA"

def bundle_scheme(bundle: Bundle, scheme: str | None = None) -> str | None:
    """The label scheme to load a bundle's data with: ``scheme`` when given, else the bundle's own
    (``None`` for the data's default)."""
    return scheme or (None if bundle.config.get("label_scheme", "default") == "default" else bundle.config["label_scheme"])


def training_data(bundle: Bundle) -> str | None:
    """Where the cells ``bundle`` was trained on are: its recorded source or, when that folder
    is not on this machine (a bundle made elsewhere), the folder of the same name under
    ``$XCYTO_DATA``."""
    source = (bundle.config.get("data") or {}).get("source")
    if not source or os.sep not in str(source) or Path(source).exists():
        return source
    moved = Path(os.environ[DATA_ENV]) / Path(source).name if os.environ.get(DATA_ENV) else None
    if moved is not None and moved.exists():
        return str(moved)
    raise DataError(f"{bundle.name} was trained on {source}, which is not on this machine; pass --data, or set "
                    f"{DATA_ENV} to the folder that holds {Path(source).name}")

def find_manifest(bundle) -> Path | None:
    """The bundle's split manifest: ``split.csv`` in the bundle, else in the run folder holding it."""
    if bundle.path is None:
        return None
    for folder in (bundle.path, bundle.path.parent):
        if (folder / SPLIT_FILE).is_file() and (folder == bundle.path or (folder / "settings.json").is_file()):
            return folder / SPLIT_FILE
    return None

def cells_in_split(bundle: Bundle, dataset, split: str):
    """``(cells, note)``: the cells of ``dataset`` in ``split`` of the bundle's manifest, and a
    sentence saying which were taken. Every cell is taken for ``split="all"``, when the
    bundle has no manifest, and when none of the data's cells is in it (new data: no split
    of the bundle's applies to it)."""
    from xcyto.data import load_split_manifest, manifest_cell_ids

    name, count = dataset.name, len(dataset)
    if split == "all":
        return dataset, f"all {count} cells of {name}"
    manifest = find_manifest(bundle)
    if manifest is None:
        return dataset, f"all {count} cells of {name} (the bundle has no {SPLIT_FILE}, so no {split} split applies)"
    if not manifest_cell_ids(manifest) & set(dataset.cell_ids):
        return dataset, (f"all {count} cells of {name}: none of them is in the bundle's {SPLIT_FILE} (cells the "
                         f"model never saw, so no {split} split applies)")
    chosen = load_split_manifest(manifest, dataset)[split]
    left_out = {entry["path"] for entry in (bundle.config.get("data_health") or {}).get("excluded", [])}
    if left_out:  # crops the training left out for data issues are out of every side
        kept = [i for i in chosen if dataset.cell_ids[i] not in left_out]
        dropped = len(chosen) - len(kept)
        if dropped:
            return dataset.subset(kept), (f"the {len(kept)} {split} cells of {name} listed in {manifest} "
                                          f"({dropped} left out for data issues, as in training)")
    return dataset.subset(chosen), f"the {len(chosen)} {split} cells of {name} listed in {manifest}"

def select_split(bundle: Bundle, dataset, split: str):
    """The cells of ``dataset`` in ``split`` (see :func:`cells_in_split`)."""
    return cells_in_split(bundle, dataset, split)[0]

def evaluate_bundle(bundle: Bundle, dataset, tta: bool | None = None) -> dict:
    """Metrics of ``bundle`` on every cell of ``dataset`` (its classes must match);
    ``tta`` overrides the bundle's test-time augmentation for this evaluation. With the
    bundle's prediction sets and screen, their coverage and sensitivity on these cells too."""
    return _evaluate(bundle, dataset, tta)[0]


def _evaluate(bundle: Bundle, dataset, tta: bool | None = None) -> tuple[dict, np.ndarray]:
    if list(dataset.classes) != bundle.classes:
        raise DataError(f"the data's classes {dataset.classes} differ from the bundle's {bundle.classes}; "
                        f"check --scheme")
    predictions = bundle.predict_cells(dataset.samples, progress=True, tta=tta)
    metrics = classification_metrics(predictions.logits, dataset.labels, bundle.classes, bundle.calibration,
                                     predictions.probabilities)
    metrics["tta"] = bundle.uses_tta(tta)
    sets = bundle.prediction_sets
    if sets is not None and len(dataset.labels):
        metrics["conformal"] = {**set_metrics(sets.predict(predictions.probabilities), dataset.labels, bundle.classes),
                                "target": sets.coverage, "sets": sets.describe()}
    screen = bundle.screen
    if screen is not None and screen.guaranteed and "binary" in metrics:
        found = screen.outcome(p_abnormal(predictions.probabilities, bundle.classes),
                               abnormal_flags(bundle.classes)[np.asarray(dataset.labels)])
        metrics["screen"] = {"threshold": screen.threshold, "target_sensitivity": screen.sensitivity,
                             "sensitivity": found["sensitivity"], "cleared_normal": found["cleared_normal"]}
    fusion = None
    if bundle.config.get("morphology_fusion") and len(dataset.labels):  # read with the measurements too
        from xcyto.fusion import load_fusion

        fusion = load_fusion(bundle)
    if fusion is not None:
        from xcyto.fusion import measured_features

        fused = fusion.fuse(predictions.probabilities, measured_features(bundle, dataset.samples, progress=True))
        scored = headline_metrics(classification_metrics(np.log(np.clip(fused, 1e-12, 1)), dataset.labels,
                                                         bundle.classes))
        scored.pop("per_class")
        metrics["fused"] = {"weight": fusion.weight, **scored}
    return metrics, predictions.probabilities

def evaluate_command(bundle_path, data, split="all", scheme=None, out=None, tta: bool | None = None) -> dict:
    from xcyto.data import load_dataset

    bundle = load(bundle_path)
    if data is None:  # the data the bundle was trained on
        data = training_data(bundle)
        if not data:
            raise DataError(f"bundle {bundle_path} does not record its data source; pass --data")
    scheme = bundle_scheme(bundle, scheme)
    everything = load_dataset(data, scheme=scheme)
    dataset, note = cells_in_split(bundle, everything, split)
    print(f"evaluating on {note}")
    metrics, probabilities = _evaluate(bundle, dataset, tta=tta)
    taken = split if dataset is not everything else "all"  # new data: every cell, whatever was asked
    metrics.update(bundle=str(bundle_path), bundle_sha256=bundle.sha256, data=str(data), split=taken,
                   split_requested=split, cells=note)
    views = bundle.describe_tta(tta)
    line = (f"{bundle.name} on {data} ({taken}, {metrics['n']} cells): accuracy {metrics['accuracy']:.3f}, "
            f"macro-F1 {metrics['macro_f1']:.3f}, ECE {metrics['ece_calibrated']:.3f}")
    if "binary" in metrics:
        line += f", normal/abnormal accuracy {metrics['binary']['accuracy']:.3f}"
    print(f"{line}; probabilities: {views}")
    print(trust_lines(metrics))
    if out:
        out = Path(out)
        write_json_atomic(out / "metrics.json", metrics)
        save_figure(plot_confusion_matrix(metrics["confusion_matrix"], bundle.classes, title=f"{bundle.name} ({taken})"),
                    out / "confusion_matrix.png")
        sets = bundle.prediction_sets
        curves = {"top probability": risk_coverage(probabilities, dataset.labels, bundle.classes)}
        if sets is not None:
            curves["set size"] = risk_coverage(probabilities, dataset.labels, bundle.classes,
                                               sets=sets.predict(probabilities))
        save_figure(plot_risk_coverage(curves, title=f"{bundle.name} ({taken}): risk against coverage"),
                    out / "risk_coverage.png")
        print(f"wrote {out / 'metrics.json'}, {out / 'confusion_matrix.png'} and {out / 'risk_coverage.png'}")
    return metrics


def trust_lines(metrics: dict) -> str:
    """The trust part of an evaluation, in words: grades, sets, screen, risk and coverage."""
    lines = []
    if "grades" in metrics:
        g = metrics["grades"]
        lines.append(f"grades ({g['scale']}): mean grade error {g['mean_grade_error']:.2f}, "
                     f"{g['errors_within_one_grade']:.0%} of errors within one grade, serious misses "
                     f"{g['serious_misses']} ({g['abnormal_called_normal']} abnormal called normal, "
                     f"{g['high_grade_called_low']} high grade called low)")
    if "conformal" in metrics:
        c = metrics["conformal"]
        lines.append(f"prediction sets at {c['target']:.0%}: coverage {c['coverage']:.3f} (lowest class "
                     f"{c['lowest_class']} {c['lowest_class_coverage']:.3f}), mean size {c['mean_set_size']:.2f}, "
                     f"single class {c['singletons']:.0%}")
    if "screen" in metrics:
        s = metrics["screen"]
        lines.append(f"screen (target sensitivity {s['target_sensitivity']:.2f}): sensitivity {s['sensitivity']:.3f}, "
                     f"clears {s['cleared_normal']:.0%} of normal cells")
    if "risk_coverage" in metrics:
        r = metrics["risk_coverage"]
        lines.append(f"accuracy {r['target_accuracy']:.2f} on the surest {r['coverage_at_target']:.0%} of cells")
    if "fused" in metrics:
        f = metrics["fused"]
        lines.append(f"with the measurements (weight {f['weight']:.2f}): accuracy {f['accuracy']:.3f}, "
                     f"macro-F1 {f['macro_f1']:.3f}"
                     + (f", serious misses {f['serious_misses']}" if "serious_misses" in f else ""))
    return "\n".join(lines)

def collect_images(arguments) -> list[Path]:
    """Image files named directly or found under folders, in a stable order."""
    from xcyto.data import is_image_file

    found = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)))
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if not found:
        raise DataError(f"no images found in {', '.join(map(str, arguments))}")
    return found

def predict_command(bundle_path, images, out=None, batch_size: int = 32, tta: bool | None = None) -> list[dict]:
    """Classify image files; a CSV row per image with its probabilities, whether they average
    the 8 dihedral views (``tta``: the bundle's choice unless overridden) and, when the bundle
    has a gallery, how unlike the training cells it is (``atypicality`` percentile, ``atypical``
    flag), and what the data checks find wrong with the image itself (``data_issues``: check
    names joined by ``;``, ``no_nucleus`` first). Unreadable or too small images get an
    ``error`` and the rest go on."""
    from xcyto.data.health import check_image
    from xcyto.data import check_cell_size, read_image
    from xcyto.embedding import load_gallery
    from xcyto.errors import ImageError

    bundle = load(bundle_path)
    gallery = load_gallery(bundle)
    paths = collect_images(images)
    rows, readable, arrays = [], [], []
    for path in paths:
        try:
            arrays.append(check_cell_size(read_image(path), str(path)))
            readable.append(len(rows))
            rows.append({"path": str(path), "error": ""})
        except ImageError as error:
            rows.append({"path": str(path), "error": str(error)})
    reference = (bundle.config.get("data_health") or {}).get("reference") or None
    sets, screen = bundle.prediction_sets, bundle.screen
    screen = screen if screen is not None and screen.guaranteed else None
    fusion = None
    if bundle.config.get("morphology_fusion"):
        from xcyto.fusion import load_fusion, measured_features

        fusion = load_fusion(bundle)  # None, with a warning, when its gallery is gone
    for start in range(0, len(arrays), batch_size):
        chunk = arrays[start:start + batch_size]
        _, probabilities, embeddings = bundle.predict_batch(bundle.preprocess(chunk), tta=tta)
        for row_index, array in zip(readable[start:start + batch_size], chunk):
            issues = check_image(array, reference=reference, path=rows[row_index]["path"])
            rows[row_index]["data_issues"] = ";".join(issue.check for issue in issues)
        probabilities = probabilities.cpu().numpy()
        chosen = sets.predict(probabilities) if sets else None
        refer = screen.refer(p_abnormal(probabilities, bundle.classes)) if screen else None
        fused = fusion.fuse(probabilities, measured_features(bundle, chunk)) if fusion else None
        if gallery is not None:
            scores, flags = gallery.atypicality(embeddings.cpu())
        for offset, (row_index, p) in enumerate(zip(readable[start:start + batch_size], probabilities)):
            rows[row_index].update(predicted=bundle.classes[int(p.argmax())], confidence=f"{p.max():.4f}",
                                   tta=int(bundle.uses_tta(tta)),
                                   **({"prediction_set": "|".join(bundle.classes[c] for c in np.argsort(-p)
                                                                  if chosen[offset, c])} if sets else {}),
                                   **({"screen": "refer" if refer[offset] else "clear"} if screen else {}),
                                   **({"fused_predicted": bundle.classes[int(fused[offset].argmax())],
                                       "fused_confidence": f"{fused[offset].max():.4f}"} if fusion else {}),
                                   **{f"p_{name}": f"{value:.4f}" for name, value in zip(bundle.classes, p)})
            if gallery is not None:
                rows[row_index].update(atypicality=f"{float(scores[offset]):.1f}", atypical=int(bool(flags[offset])))
    columns = ["path", "predicted", "confidence", "tta", *(["prediction_set"] if sets else []),
               *(["screen"] if screen else []), *(["fused_predicted", "fused_confidence"] if fusion else []),
               *[f"p_{name}" for name in bundle.classes],
               *(["atypicality", "atypical"] if gallery is not None else []), "data_issues", "error"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    empty = [row["path"] for row in rows if "no_nucleus" in row.get("data_issues", "").split(";")]
    if empty:
        print(f"no cell nucleus found in {len(empty)} of {len(rows)} images (data_issues: no_nucleus): their class "
              f"is the model's answer for background or debris, not a reading of a cell: {', '.join(empty[:5])}"
              + (" ..." if len(empty) > 5 else ""), file=sys.stderr)
    if out:
        write_text_atomic(out, text.getvalue())
        print(f"wrote {len(rows)} predictions to {out}")
    else:
        sys.stdout.write(text.getvalue())
    return rows


def screen_command(bundle_path, sensitivity: float = 0.98, coverage: float | None = None, data=None,
                   scheme=None, write: bool = True) -> dict:
    """Choose a bundle's screening threshold (and refit its prediction sets) on its validation
    cells and record both in its ``bundle.json``. The validation scores recorded at training are
    used when present; otherwise (or with ``data``) the validation cells of the bundle's split
    are predicted again, as the bundle predicts (calibrated, with its TTA)."""
    from xcyto.data import load_dataset
    from xcyto.trust import DEFAULT_COVERAGE, Screen, refit_records, trust_records

    bundle = load(bundle_path)
    if abnormal_flags(bundle.classes) is None:
        raise DataError(f"{bundle.name}: screening needs classes that are each normal or abnormal; "
                        f"{', '.join(bundle.classes)} are not")
    coverage = coverage or (bundle.prediction_sets.coverage if bundle.prediction_sets else DEFAULT_COVERAGE)
    recorded = (bundle.config.get("screen") or {}).get("validation")
    if recorded and data is None and bundle.prediction_sets is not None:
        records = refit_records(bundle.config, sensitivity, coverage)
        source = f"the scores of the {records['screen'].get('fitted_on') or str(len(recorded['abnormal'])) + ' validation cells'}, recorded in the bundle"
    else:
        data = data or training_data(bundle)
        if not data:
            raise DataError(f"bundle {bundle_path} records neither validation scores nor its data source; pass --data")
        everything = load_dataset(data, scheme=bundle_scheme(bundle, scheme))
        held_out = bundle.config.get("data", {}).get("n_calibration", 0) > 0
        cells, note = cells_in_split(bundle, everything, "calibration" if held_out else "val")
        if cells is everything:
            raise DataError(f"{bundle_path}: no {'calibration' if held_out else 'validation'} split of the bundle "
                            f"applies to {data} ({note})")
        probabilities = bundle.predict_cells(cells.samples, progress=True).probabilities
        records = trust_records(probabilities, cells.labels, bundle.classes, coverage=coverage, sensitivity=sensitivity,
                                fitted_on=f"{len(cells)} {'held-out calibration' if held_out else 'validation'} cells")
        source = note
    screen = Screen.from_dict(records["screen"])
    if write and bundle.path is not None:
        record_in_config(bundle.path, records)
    print(f"{bundle.name}, from {source}:\n  screen: {screen.describe()}\n  sets: {records['conformal']['description']}"
          + (f"\n  recorded in {bundle.path / 'bundle.json'}" if write and bundle.path is not None else ""))
    return records
