"""Cross-validated comparison of architectures under the same settings: ``xcyto compare``.

The cells are split once into k group-aware, stratified folds. For fold ``k`` every
model trains on the other folds (a validation share carved from them, whole groups, for
choosing the best epoch and the calibration) and is tested on fold ``k``, so each cell is
tested exactly once per model and no source image is on two sides. Each (model, fold)
is an ordinary ``xcyto train`` run folder; a finished one is skipped and an interrupted
one resumed, so the command can be run again until it completes. Layout::

    OUT/
      compare.json            data, scheme, folds, seed, validation share, models
      folds.csv               the k-fold manifest (fold of each cell)
      splits/fold-K.csv       fold K as train / val / test (test = fold K)
      <model>/fold-K/         the training run (settings, checkpoint, metrics, bundle/)
      ensemble/fold-K.json    the soft-voting ensemble of the fold's bundles, tested on fold K
      results.csv             one row per model and fold
      leaderboard.md, leaderboard.csv, leaderboard.png
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from xcyto.atomic import atomic_path, write_csv_atomic, write_json_atomic, write_text_atomic
from xcyto.data import cross_validation_fold, kfold_split, manifest_text, save_split_manifest
from xcyto.errors import TrainingError, XcytoError
from xcyto.training._config import TrainConfig

#: (key in results, column title, better) of the leaderboard, in order.
METRICS = (("accuracy", "accuracy", "higher"), ("macro_f1", "macro-F1", "higher"),
           ("binary_accuracy", "2-class accuracy", "higher"), ("sensitivity", "abnormal sensitivity", "higher"),
           ("specificity", "abnormal specificity", "higher"), ("ece", "ECE", "lower"),
           ("mean_grade_error", "mean grade error", "lower"), ("serious_misses", "serious misses", "lower"),
           ("set_coverage", "set coverage (target 0.90)", "higher"), ("set_size", "mean set size", "lower"),
           ("coverage_at_90", "coverage at 0.90 accuracy", "higher"),
           ("train_seconds", "training time (s)", "lower"))
#: Settings that may change between runs of one comparison without invalidating it
#: (paths may be given relative or absolute; the fold manifests' content is checked instead).
#: Settings that do not change what a run trains (``fuse`` reads the trained network afterwards).
RUNTIME_SETTINGS = ("device", "amp", "num_workers", "out", "split_manifest", "data_check", "fuse")
ENSEMBLES = ("ensemble (equal)", "ensemble (fitted)")


@dataclass
class ModelEntry:
    """One contender: an architecture and the training settings it overrides."""

    architecture: str
    overrides: dict = field(default_factory=dict)
    label: str = ""


@dataclass
class Comparison:
    """What :func:`compare` produced: a row per (model, fold) and the leaderboard rows."""

    out: Path
    results: list[dict]
    leaderboard: list[dict]


def parse_models(text: str) -> list[ModelEntry]:
    """``"efficientnet_lite0,resnet18[weights=none,backbone_lr_mult=1],small_cnn"`` -> entries.

    Options in brackets are :class:`TrainConfig` fields for that model only. The label
    (the folder name) is the architecture, with the options added when it appears twice.
    """
    entries, depth, current = [], 0, ""
    for char in text + ",":
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            if current.strip():
                entries.append(_parse_entry(current.strip()))
            current = ""
        else:
            current += char
    if depth != 0 or not entries:
        raise TrainingError(f"cannot read --models {text!r}; expected e.g. 'efficientnet_lite0,resnet18[weights=none]'")
    counts = {}
    for entry in entries:
        counts[entry.architecture] = counts.get(entry.architecture, 0) + 1
    for entry in entries:
        options = "_".join(f"{key}-{value}" for key, value in entry.overrides.items())
        entry.label = entry.architecture if counts[entry.architecture] == 1 or not options else f"{entry.architecture}_{options}"
    labels = [entry.label for entry in entries]
    if len(set(labels)) != len(labels):
        raise TrainingError(f"--models lists the same model twice: {', '.join(labels)}")
    return entries


def _parse_entry(text: str) -> ModelEntry:
    from xcyto.models import get_spec

    name, _, options = text.partition("[")
    name = name.strip()
    get_spec(name)  # unknown architectures fail here, before any training
    overrides = {}
    types = {f.name: f.type for f in fields(TrainConfig)}
    for option in filter(None, (part.strip() for part in options.rstrip("]").split(","))):
        key, equals, value = option.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or key not in types or key in ("data", "out", "model", "split_manifest", "scheme", "seed"):
            raise TrainingError(f"{text}: {option!r} is not a per-model training setting (e.g. lr=2e-3, "
                                f"weights=none, backbone_lr_mult=1, image_size=96)")
        overrides[key] = _convert(value.strip(), types[key], key)
    return ModelEntry(architecture=name, overrides=overrides)


def _convert(value: str, kind, key: str):
    kind = str(kind)
    if value.lower() == "none" and "None" in kind:
        return None
    try:
        if kind.startswith("bool"):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except ValueError:
        raise TrainingError(f"{key}={value!r}: expected {kind}") from None
    return value


#: Folder (and leaderboard name) of the morphometric baseline (``morphometry=True``).
MORPHOMETRY = "morphometry (gradient boosting)"
MORPHOMETRY_DIR = "morphometry"
#: Folder (and leaderboard name) suffix of a model read with its cells' measurements (``fuse=True``).
FUSED_SUFFIX = "+measurements"


def compare(data: str, models, out, folds: int = 5, seed: int = 0, scheme: str | None = None,
            val_fraction: float = 0.15, ensemble: bool = True, only_folds=None, morphometry: bool = False,
            **settings) -> Comparison:
    """Train every model on every fold (skipping finished runs, resuming interrupted
    ones), test each on its held-out fold, and write the leaderboard.

    ``models``: a string for :func:`parse_models` or a list of :class:`ModelEntry`.
    ``settings``: :class:`TrainConfig` fields shared by all models (``image_size``,
    ``epochs``, ``batch_size``, ...). ``ensemble``: also test the soft-voting ensemble
    of each fold's bundles, with equal weights and with weights fitted on validation.
    ``only_folds``: train these folds only (e.g. ``[0]`` to choose settings on fold 0's
    validation cells before running every fold); the others are left for a later call.
    ``morphometry``: also cross-validate the interpretable baseline, gradient-boosted trees on
    the cells' morphometric features (:func:`xcyto.morphology.fit_baseline`), on the same folds.
    With ``fuse`` (a training setting, on by default) and a gallery, each model is also read
    with its cells' measurements (``xcyto fuse``: the weight chosen on the fold's validation
    cells), a row ``MODEL+measurements`` paired with the model's on the same test cells.
    """
    from xcyto.training._data import load_run_dataset

    entries = parse_models(models) if isinstance(models, str) else list(models)
    out = Path(out)
    base = TrainConfig(data=_data_key(data), scheme=scheme, seed=seed, val_fraction=val_fraction, **settings)
    base.validate()
    for entry in entries:
        replace(base, model=entry.architecture, **entry.overrides).validate()
    dataset = load_run_dataset(base)
    split = kfold_split(dataset, k=folds, seed=seed)
    _record_settings(out, base, folds, entries, manifest_text(dataset, split))
    if base.data_check == "auto":  # the crops are checked once for every fold and model
        base = replace(base, data_check=str(_check_once(out, dataset)))
    fold_manifests = [_fold_manifest(out, dataset, split, k, val_fraction, seed) for k in range(folds)]

    chosen = range(folds) if only_folds is None else sorted(set(int(k) for k in only_folds))
    if any(not 0 <= k < folds for k in chosen):
        raise TrainingError(f"folds to run must be in 0..{folds - 1}, got {list(only_folds)}")
    started = time.perf_counter()
    for k in chosen:
        manifest = fold_manifests[k]
        for entry in entries:
            config = replace(base, model=entry.architecture, out=str(out / entry.label / f"fold-{k}"),
                             split_manifest=str(manifest), **entry.overrides)
            if config.teacher:  # the fold's own teachers: {fold} in their paths
                config = replace(config, teacher=config.teacher.replace("{fold}", str(k)))
            _run(config, f"{entry.label}, fold {k + 1}/{folds}")
            if config.fuse and config.gallery:
                _fused_fold(out, entry.label, k, dataset)
        if ensemble and len(entries) > 1:
            _ensemble_fold(out, entries, k, dataset)
        if morphometry:
            _morphometry_fold(out, k, dataset, manifest, seed)
    print(f"all runs done in {time.perf_counter() - started:.0f} s")

    results = collect_results(out, entries, folds, ensemble=ensemble and len(entries) > 1, fused=base.fuse)
    board = leaderboard(results)
    write_leaderboard(out, results, board, title=f"{dataset.name}, {folds}-fold group-aware cross-validation")
    write_risk_coverage(out, [entry.label for entry in entries], folds, dataset.classes)
    return Comparison(out=out, results=results, leaderboard=board)


def write_risk_coverage(out: Path, labels: list[str], folds: int, classes: list[str]) -> Path | None:
    """``OUT/risk_coverage.png``: each model's accuracy and serious misses against the share of
    test cells it keeps, its folds' test cells pooled (each run's ``predictions.npz``)."""
    from xcyto.plotting import save_figure
    from xcyto.training._loop import PREDICTIONS_FILE
    from xcyto.trust import plot_risk_coverage, risk_coverage

    curves = {}
    for label in labels:
        found = [out / label / f"fold-{k}" / PREDICTIONS_FILE for k in range(folds)]
        found = [np.load(path) for path in found if path.is_file()]
        if found:
            probabilities = np.concatenate([f["test_probabilities"] for f in found])
            truth = np.concatenate([f["test_labels"] for f in found])
            curves[f"{label} ({len(found)} folds)"] = risk_coverage(probabilities, truth, classes)
    if not curves:
        return None
    path = out / "risk_coverage.png"
    save_figure(plot_risk_coverage(curves, title="Risk against coverage, test cells of every fold"), path)
    return path


def _check_once(out: Path, dataset) -> Path:
    """``OUT/data-check``: the data check every run of the comparison reads (made on first use)."""
    from xcyto.data.health import check, load_check

    folder = out / "data-check"
    if (folder / "summary.json").is_file() and load_check(folder).paths == dataset.cell_ids:
        return folder
    result = check(dataset, progress=True)
    result.save(folder, images=[sample.image for sample in dataset.samples])
    print(result.health_line())
    return folder


def _record_settings(out: Path, base: TrainConfig, folds: int, entries: list[ModelEntry], folds_text: str) -> None:
    """Write compare.json and folds.csv, or check that a comparison already here matches."""
    record = {"data": base.data, "scheme": base.scheme, "folds": folds, "seed": base.seed,
              "val_fraction": base.val_fraction}
    path = out / "compare.json"
    models = {}
    if path.is_file():
        saved = json.loads(path.read_text())
        saved["data"] = _data_key(saved.get("data"))
        changed = [key for key in record if saved.get(key) != record[key]]
        if changed:
            raise TrainingError(f"{out} holds a comparison with other {', '.join(changed)} "
                                f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); use another --out")
        if (out / "folds.csv").is_file() and (out / "folds.csv").read_text() != folds_text:
            raise TrainingError(f"{out / 'folds.csv'}: the folds drawn now differ from the saved ones "
                                "(has the data changed?); use another --out")
        models = saved.get("models", {})
    models.update({entry.label: {"architecture": entry.architecture, **entry.overrides} for entry in entries})
    write_json_atomic(path, {**record, "models": models})
    write_text_atomic(out / "folds.csv", folds_text)


def _data_key(data):
    """The data as a comparison records it (compare.json and each run's settings): a folder or
    file by its absolute path, so that ``../data/x`` and ``/abs/data/x`` continue one
    comparison; anything else (``synthetic:...``) as given."""
    if data is None or not os.path.exists(data):
        return data
    return str(Path(data).resolve())


def _fold_manifest(out: Path, dataset, split, k: int, val_fraction: float, seed: int) -> Path:
    path = out / "splits" / f"fold-{k}.csv"
    fold = cross_validation_fold(dataset, split, k, val_fraction=val_fraction, seed=seed)
    if not path.is_file():
        save_split_manifest(dataset, fold, path)
    elif path.read_text() != manifest_text(dataset, fold):
        raise TrainingError(f"{path} differs from the fold drawn now; use another --out")
    return path


def _run(config: TrainConfig, what: str) -> None:
    """Train one (model, fold): skip it when finished, resume it when interrupted."""
    from xcyto.training import train

    run_dir = Path(config.out)
    saved = run_dir / "settings.json"
    if saved.is_file():
        # a setting added to xcyto after that run was made has its default there
        previous = {**TrainConfig().to_dict(), **json.loads(saved.read_text())["config"]}
        previous["data"] = _data_key(previous["data"])
        wanted = config.to_dict()
        changed = sorted(key for key in wanted if key not in RUNTIME_SETTINGS and previous.get(key) != wanted[key])
        if changed:
            raise TrainingError(f"{run_dir} was trained with other settings "
                                f"({', '.join(f'{k}: {previous.get(k)!r} -> {wanted[k]!r}' for k in changed)}); "
                                "use another --out, or delete that folder to train it again")
        if (run_dir / "metrics.json").is_file() and (run_dir / "bundle" / "bundle.json").is_file():
            print(f"{what}: done already")
            return
    print(f"{what}: {'resuming' if saved.is_file() else 'training'} -> {run_dir}")
    started = time.perf_counter()
    train(config, resume=saved.is_file())
    print(f"{what}: {time.perf_counter() - started:.0f} s")


def _ensemble_fold(out: Path, entries: list[ModelEntry], k: int, dataset) -> None:
    """Test the fold's ensemble (equal and fitted weights) on the held-out fold; keep the metrics."""
    from xcyto.loading import load
    from xcyto.ensemble import fit_weights, make_ensemble, member_probabilities_on
    from xcyto.training._evaluate import evaluate_bundle, select_split
    from xcyto.training._metrics import headline_metrics

    members = [load(out / entry.label / f"fold-{k}" / "bundle") for entry in entries]
    path = out / "ensemble" / f"fold-{k}.json"
    shas, tta = [member.sha256 for member in members], [member.tta for member in members]
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("members_sha256") == shas and kept.get("members_tta") == tta:  # else made by other code
            return
    ensemble = make_ensemble(members)
    test = select_split(members[0], dataset, "test")
    val = select_split(members[0], dataset, "val")
    record = {"members": [entry.label for entry in entries], "members_sha256": shas,
              "members_tta": tta, "runs": {}}  # each member with its own test-time augmentation
    for label in ENSEMBLES:
        if label == "ensemble (fitted)":
            ensemble.set_weights(fit_weights(member_probabilities_on(ensemble, val.samples), val.labels))
        metrics = headline_metrics(evaluate_bundle(ensemble, test))
        record["runs"][label] = {"weights": ensemble.weights.tolist(), "test": metrics}
    write_json_atomic(path, record)
    print(f"ensemble, fold {k + 1}: weights fitted on validation "
          f"{', '.join(f'{e.label} {w:.2f}' for e, w in zip(entries, ensemble.weights))}")


def _morphometry_fold(out: Path, k: int, dataset, manifest: Path, seed: int) -> None:
    """The morphometric baseline on fold ``k``: features of every cell (measured once for the
    comparison, ``morphometry/features.npy``), trees fitted on the training cells."""
    from xcyto.data import load_split_manifest
    from xcyto.morphology import baseline_log_probabilities, feature_table, fit_baseline, list_features
    from xcyto.training._metrics import classification_metrics

    run_dir = out / MORPHOMETRY_DIR / f"fold-{k}"
    if (run_dir / "metrics.json").is_file():
        return
    cache = out / MORPHOMETRY_DIR / "features.npz"
    cached = np.load(cache) if cache.is_file() else None
    if cached is not None and list(cached["cell_ids"]) == list(dataset.cell_ids):
        features = cached["features"]
    else:
        started = time.perf_counter()
        features = feature_table(dataset.samples, progress=True)
        with atomic_path(cache) as temporary:
            np.savez(temporary, features=features, cell_ids=np.array(dataset.cell_ids), names=np.array(list_features()))
        print(f"morphometry of {len(dataset)} cells in {time.perf_counter() - started:.0f} s")
    split = load_split_manifest(manifest, dataset)
    labels, classes = dataset.labels, list(dataset.classes)
    started = time.perf_counter()
    model = fit_baseline(features[split.train], labels[split.train], seed=seed)
    seconds = time.perf_counter() - started
    metrics = {name: classification_metrics(baseline_log_probabilities(model, features[indices], len(classes)),
                                            labels[indices], classes)
               for name, indices in (("val", split.val), ("test", split.test))}
    metrics.update(best_epoch=None, epochs_run=None, train_seconds=seconds, evaluated_on="test",
                   model="HistGradientBoostingClassifier on the morphometric features")
    write_json_atomic(run_dir / "metrics.json", metrics)
    print(f"{MORPHOMETRY}, fold {k + 1}: accuracy {metrics['test']['accuracy']:.3f}")


def _fused_fold(out: Path, label: str, k: int, dataset) -> None:
    """``LABEL+measurements/fold-K``: the fold's bundle read with its cells' measurements, the
    weight chosen on its validation cells and recorded in the bundle (:func:`fuse_bundle`)."""
    from xcyto.bundle import record_in_config
    from xcyto.fusion import RECORD
    from xcyto.loading import load
    from xcyto.training._fuse import fuse_bundle

    run_dir = out / f"{label}{FUSED_SUFFIX}" / f"fold-{k}"
    bundle_path = out / label / f"fold-{k}" / "bundle"
    if not (bundle_path / "bundle.json").is_file():
        return
    bundle = load(bundle_path)
    if (run_dir / "metrics.json").is_file() and json.loads((run_dir / "metrics.json").read_text()).get(
            "bundle_sha256") == bundle.sha256:
        return  # done already for these very weights
    started = time.perf_counter()
    record = bundle.config.get(RECORD)
    if not (record or {}).get("test"):  # trained before fusion was the default, or with --no-fuse
        try:
            _, record = fuse_bundle(bundle, dataset, progress=True)
        except XcytoError as error:
            print(f"{label}{FUSED_SUFFIX}, fold {k + 1}: not fused ({error})")
            return
        record_in_config(bundle_path, {RECORD: record})
    write_json_atomic(run_dir / "metrics.json", {"test": record["test"]["fused"], "network": record["test"]["network"],
                                                 "weight": record["weight"], "evaluated_on": "test",
                                                 "bundle_sha256": bundle.sha256,
                                                 "fuse_seconds": time.perf_counter() - started})
    print(f"{label}{FUSED_SUFFIX}, fold {k + 1}: weight {record['weight']:.2f}, accuracy "
          f"{record['test']['network']['accuracy']:.3f} -> {record['test']['fused']['accuracy']:.3f}")


# -- results ---------------------------------------------------------------------------------
def collect_results(out: Path, entries: list[ModelEntry], folds: int, ensemble: bool = True,
                    fused: bool = True) -> list[dict]:
    """One row per finished (model, fold), ensembles included: test metrics, time, size."""
    rows, parameters = [], {}
    for entry in entries:
        for k in range(folds):
            run_dir = out / entry.label / f"fold-{k}"
            if not (run_dir / "metrics.json").is_file():
                continue
            metrics = json.loads((run_dir / "metrics.json").read_text())
            if entry.label not in parameters:
                parameters[entry.label] = _parameter_count(run_dir / "bundle")
            row = _row(entry.label, k, metrics["test"], metrics.get("train_seconds"), parameters[entry.label])
            row.update(val_accuracy=metrics["val"]["accuracy"], val_macro_f1=metrics["val"]["macro_f1"],
                       best_epoch=metrics.get("best_epoch"), epochs_run=metrics.get("epochs_run"))
            balance = metrics.get("balance") or {}
            raw = balance.get("test_if_balance_none") or balance.get("test_if_raw") or {}
            row.update(balance=balance.get("chosen"), accuracy_if_raw=raw.get("accuracy", row["accuracy"]),
                       macro_f1_if_raw=raw.get("macro_f1", row["macro_f1"]))
            rows.append(row)
    for entry in entries if fused else []:
        for k in range(folds):
            path = out / f"{entry.label}{FUSED_SUFFIX}" / f"fold-{k}" / "metrics.json"
            if path.is_file():
                metrics = json.loads(path.read_text())
                rows.append(_row(f"{entry.label}{FUSED_SUFFIX}", k, metrics["test"], None,
                                 parameters.get(entry.label, 0)))
    for k in range(folds):
        path = out / MORPHOMETRY_DIR / f"fold-{k}" / "metrics.json"
        if path.is_file():
            metrics = json.loads(path.read_text())
            row = _row(MORPHOMETRY, k, metrics["test"], metrics["train_seconds"], 0)
            row.update(val_accuracy=metrics["val"]["accuracy"], val_macro_f1=metrics["val"]["macro_f1"])
            rows.append(row)
    if ensemble:
        for k in range(folds):
            path = out / "ensemble" / f"fold-{k}.json"
            if not path.is_file():
                continue
            record = json.loads(path.read_text())
            members = [row for row in rows if row["fold"] == k and row["model"] in record["members"]]
            seconds = sum(row["train_seconds"] for row in members) if len(members) == len(record["members"]) else None
            for label, run in record["runs"].items():
                rows.append(_row(label, k, run["test"], seconds, sum(parameters.get(m, 0) for m in record["members"])))
    return rows


def _row(model: str, fold: int, test: dict, seconds, parameters: int) -> dict:
    """A leaderboard row; its ECE is that of the probabilities the model predicts with (calibrated,
    and for an ensemble the mixture of its members' own, with their test-time augmentation)."""
    binary = test.get("binary") or {}
    grades, sets = test.get("grades") or {}, test.get("conformal") or {}
    def read(key):
        return test.get(f"binary_{key}", binary.get(key))
    return {"model": model, "fold": fold, "n_test": test["n"], "accuracy": test["accuracy"],
            "macro_f1": test["macro_f1"], "binary_accuracy": read("accuracy"), "sensitivity": read("sensitivity"),
            "specificity": read("specificity"), "ece": test["ece_calibrated"],
            "mean_grade_error": test.get("mean_grade_error", grades.get("mean_grade_error")),
            "serious_misses": test.get("serious_misses", grades.get("serious_misses")),
            "set_coverage": test.get("set_coverage", sets.get("coverage")),
            "set_size": test.get("set_mean_set_size", sets.get("mean_set_size")),
            "coverage_at_90": test.get("coverage_at_0.90_accuracy",
                                       (test.get("risk_coverage") or {}).get("coverage_at_target")),
            "train_seconds": seconds,
            "parameters": parameters, "val_accuracy": None, "val_macro_f1": None, "best_epoch": None,
            "epochs_run": None, "balance": None, "accuracy_if_raw": None, "macro_f1_if_raw": None}


def _parameter_count(bundle_path: Path) -> int:
    from xcyto.loading import load

    return int(sum(p.numel() for p in load(bundle_path).model.parameters()))


def leaderboard(results: list[dict]) -> list[dict]:
    """Per model: folds done, and mean and standard deviation (over folds) of each metric;
    best macro-F1 first."""
    board = []
    for model in dict.fromkeys(row["model"] for row in results):
        rows = [row for row in results if row["model"] == model]
        entry = {"model": model, "folds": len(rows), "n_test": int(sum(row["n_test"] for row in rows)),
                 "parameters": rows[0]["parameters"]}
        for key, _, _ in METRICS:
            values = np.array([row[key] for row in rows if row.get(key) is not None], dtype=float)
            entry[f"{key}_mean"] = float(values.mean()) if len(values) else None
            entry[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        board.append(entry)
    return sorted(board, key=lambda entry: -(entry["macro_f1_mean"] or 0.0))


def write_leaderboard(out: Path, results: list[dict], board: list[dict], title: str) -> None:
    """results.csv, leaderboard.csv, leaderboard.md and leaderboard.png, each written atomically."""
    write_csv_atomic(out / "results.csv", results)
    write_csv_atomic(out / "leaderboard.csv", board)
    markdown = leaderboard_markdown(board, title)
    write_text_atomic(out / "leaderboard.md", markdown)
    if results:
        from xcyto.plotting import save_figure

        save_figure(plot_leaderboard(results, board), out / "leaderboard.png")
    print(markdown)
    print(f"wrote {out / 'leaderboard.md'}, leaderboard.csv, results.csv and leaderboard.png")


def leaderboard_markdown(board: list[dict], title: str) -> str:
    shown = [(key, name, better) for key, name, better in METRICS if any(e[f"{key}_mean"] is not None for e in board)]
    header = ["model", "folds", *[f"{name} {'↑' if better == 'higher' else '↓'}" for _, name, better in shown],
              "parameters (M)"]
    lines = [f"Leaderboard: {title}. Mean ± standard deviation over folds; each fold's test cells were unseen "
             "in its training (ECE of the calibrated probabilities).", "",
             "| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(shown) + 1)]
    for entry in board:
        cells = [entry["model"], str(entry["folds"])]
        for key, _, _ in shown:
            mean, std = entry[f"{key}_mean"], entry[f"{key}_std"]
            digits = 0 if key == "train_seconds" else 1 if key == "serious_misses" else 3
            cells.append("" if mean is None else f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}"))
        cells.append(f"{entry['parameters'] / 1e6:.2f}" if entry["parameters"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_leaderboard(results: list[dict], board: list[dict]):
    """One panel per metric: each fold a dot, the mean a bar with the standard deviation."""
    import matplotlib.pyplot as plt

    from xcyto.plotting import class_colors

    keys = [(key, name) for key, name, _ in METRICS if any(row.get(key) is not None for row in results)]
    models = [entry["model"] for entry in board]
    colors = class_colors(models)
    figure, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys) + 1, 3.6), squeeze=False)
    for axis, (key, name) in zip(axes[0], keys):
        for position, entry in enumerate(board):
            values = [row[key] for row in results if row["model"] == entry["model"] and row.get(key) is not None]
            if not values:
                continue
            axis.bar(position, np.mean(values), color=colors[entry["model"]], alpha=0.45,
                     yerr=np.std(values, ddof=1) if len(values) > 1 else None, capsize=3)
            axis.scatter(np.full(len(values), position), values, color=colors[entry["model"]], s=12, zorder=3)
        axis.set_xticks(range(len(models)), models, rotation=45, ha="right")
        axis.set_title(name)
        if key != "train_seconds":
            axis.set_ylim(0, 1)
    figure.tight_layout()
    return figure
