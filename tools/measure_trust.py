"""Trust per cell, measured: conformal sets, the 0.98 screening threshold, grade errors and the
coverage for 0.90 accuracy, on each fold of a cross-validation run (fitted on the fold's
validation cells, or its held-out calibration cells where it has them, measured on its test
cells), and on the dirty copy of Herlev.

    python tools/measure_trust.py --cv runs/cv-herlev-auto/efficientnet_lite0 --out docs/results/herlev-cv-trust
    python tools/measure_trust.py --cv runs/cv-herlev-calibration/efficientnet_lite0 --out docs/results/herlev-cv-trust-calibration
    python tools/measure_trust.py --ensemble runs/cv-herlev-defaults/efficientnet_lite{0,1,2} --out docs/results/herlev-cv-trust-ensemble
    python tools/measure_trust.py --dirty runs/dirty-defaults --dirty-data runs/herlev-dirty --out docs/results/dirty-trust

Per fold: folds.csv (one row per fold, the README's table) and each fold's validation and test
probabilities (probabilities-fold-K.npz), so a later run can be paired with these fold by fold.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xcyto  # noqa: E402
from xcyto.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from xcyto.data import abnormal_flags, load_dataset  # noqa: E402
from xcyto.ensemble import make_ensemble, shared_split  # noqa: E402
from xcyto.training import cells_in_split, training_data  # noqa: E402
from xcyto.trust import (PredictionSets, Screen, coverage_at_accuracy, grade_metrics, p_abnormal,  # noqa: E402
                         risk_coverage, set_metrics, trust_records)


def measure_bundle(bundle, dataset, sensitivity: float, coverage: float, trained=None) -> tuple[dict, dict]:
    """``trained``: the bundle whose split and left-out crops apply (an ensemble's first member)."""
    trained = trained or bundle
    held_out = (trained.config.get("data") or {}).get("n_calibration", 0) > 0  # --calibration-fraction
    val, _ = cells_in_split(trained, dataset, "calibration" if held_out else "val")
    test, _ = cells_in_split(trained, dataset, "test")
    p_val = bundle.predict_cells(val.samples, progress=True).probabilities
    p_test = bundle.predict_cells(test.samples, progress=True).probabilities
    records = trust_records(p_val, val.labels, bundle.classes, coverage=coverage, sensitivity=sensitivity)
    sets = PredictionSets.from_dict(records["conformal"])
    screen = Screen.from_dict(records["screen"])
    labels = np.asarray(test.labels)
    found = set_metrics(sets.predict(p_test), labels, bundle.classes)
    abnormal = abnormal_flags(bundle.classes)[labels]
    screened = screen.outcome(p_abnormal(p_test, bundle.classes), abnormal)
    grades = grade_metrics(labels, p_test.argmax(1), bundle.classes)
    row = {
        "fitted_on": "calibration" if held_out else "val", "val_cells": len(val), "test_cells": len(test), "accuracy": float((p_test.argmax(1) == labels).mean()),
        "set_score": sets.score, "own_thresholds": int(sets.class_conditional.sum()),
        "coverage": found["coverage"], "lowest_class": found["lowest_class"],
        "lowest_class_coverage": found["lowest_class_coverage"], "mean_set_size": found["mean_set_size"],
        "singletons": found["singletons"],
        "screen_threshold": screen.threshold, "screen_guaranteed": screen.guaranteed,
        "screen_val_sensitivity": screen.validation_sensitivity,
        "screen_sensitivity": screened["sensitivity"], "screen_cleared_normal": screened["cleared_normal"],
        "abnormal_test_cells": int(abnormal.sum()), "missed_abnormal": screened["missed"],
        "mean_grade_error": grades["mean_grade_error"], "serious_misses": grades["serious_misses"],
        "abnormal_called_normal": grades["abnormal_called_normal"], "high_grade_called_low": grades["high_grade_called_low"],
        "coverage_at_0.90_accuracy": coverage_at_accuracy(risk_coverage(p_test, labels, bundle.classes)),
        "coverage_at_0.90_accuracy_by_set": coverage_at_accuracy(
            risk_coverage(p_test, labels, bundle.classes, sets=sets.predict(p_test))),
    }
    arrays = {"val_probabilities": p_val, "val_labels": np.asarray(val.labels), "test_probabilities": p_test,
              "test_labels": labels}
    return row, {"records": records, "per_class_coverage": found["per_class_coverage"], "arrays": arrays}


def write_rows(path: Path, rows: list[dict]) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    write_text_atomic(path, buffer.getvalue())


def cross_validation(folders: list[Path], out: Path, data: str | None, sensitivity: float, coverage: float) -> None:
    """One model's folds, or (several folders) the equal-weight ensemble of their bundles per fold."""
    rows, per_class = [], {}
    folds = sorted(p.name for p in folders[0].glob("fold-*")
                   if all((f / p.name / "bundle" / "bundle.json").is_file() for f in folders))
    dataset = None
    for fold in folds:
        members = [xcyto.load(folder / fold / "bundle") for folder in folders]
        bundle = members[0] if len(members) == 1 else make_ensemble(members)
        if shared_split(members) is None:
            raise SystemExit(f"{fold}: the members were trained on different splits")
        dataset = dataset or load_dataset(data or training_data(members[0]))
        row, extra = measure_bundle(bundle, dataset, sensitivity, coverage, trained=members[0])
        rows.append({"fold": fold, **row})
        per_class[fold] = extra["per_class_coverage"]
        np.savez_compressed(out / f"probabilities-{fold}.npz", **extra["arrays"])
        print(f"{fold}: coverage {row['coverage']:.3f} (lowest {row['lowest_class']} "
              f"{row['lowest_class_coverage']:.3f}), set size {row['mean_set_size']:.2f}, screen sensitivity "
              f"{row['screen_sensitivity']:.3f} clearing {row['screen_cleared_normal']:.0%} of normal cells")
    write_rows(out / "folds.csv", rows)
    numeric = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    summary = {"folds": len(rows), "target_coverage": coverage, "target_sensitivity": sensitivity,
               "mean": {k: float(np.mean([r[k] for r in rows])) for k in numeric},
               "per_class_coverage": per_class, "source": [str(folder) for folder in folders]}
    write_json_atomic(out / "summary.json", summary)
    print(json.dumps(summary["mean"], indent=1))


def dirty(folder: Path, data: Path, out: Path, sensitivity: float, coverage: float) -> None:
    """Set sizes of the crops that hold no cell (planted background) against the clean test cells,
    for a bundle trained with the defaults (no-nucleus crops left out) and one trained on everything."""
    from xcyto.data.health import check_image

    truth = {Path(row["path"]).name: row["kind"] for row in csv.DictReader(open(data / "truth.csv"))}
    dataset = load_dataset(str(data / "cells.csv"))
    results = {}
    for name in ("auto-0", "keep-0"):
        bundle = xcyto.load(folder / name / "bundle")
        _, extra = measure_bundle(bundle, dataset, sensitivity, coverage)
        sets = PredictionSets.from_dict(extra["records"]["conformal"])
        background = [s for s in dataset.samples if truth.get(Path(s.path).name) == "background"]
        test, _ = cells_in_split(bundle, dataset, "test")
        clean = [s for s in test.samples if truth.get(Path(s.path).name) == "clean"]
        sizes = {}
        for kind, samples in (("background", background), ("clean test cells", clean)):
            p = bundle.predict_cells(samples, progress=True).probabilities
            sizes[kind] = {"cells": len(samples), "mean_set_size": float(sets.predict(p).sum(1).mean()),
                           "mean_top_probability": float(p.max(1).mean())}
        flagged = sum(any(i.check == "no_nucleus" for i in check_image(s.image, path=str(s.path))) for s in background)
        sizes["background"]["flagged_no_nucleus"] = flagged
        results[name] = {"exclude": bundle.config.get("data_health", {}).get("exclude"), **sizes}
        print(name, json.dumps(results[name]))
    write_json_atomic(out / "dirty-trust.json", results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cv", type=Path, help="a model's folder of a compare run (fold-0 ... fold-K)")
    parser.add_argument("--ensemble", type=Path, nargs="+",
                        help="several models' folders of one compare run: their equal-weight ensemble, fold by fold")
    parser.add_argument("--data", default=None, help="the data of --cv (default: what the bundles record)")
    parser.add_argument("--dirty", type=Path, help="runs/dirty-defaults (auto-0 and keep-0 bundles)")
    parser.add_argument("--dirty-data", type=Path, default=Path("runs/herlev-dirty"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sensitivity", type=float, default=0.98)
    parser.add_argument("--coverage", type=float, default=0.9)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cv or args.ensemble:
        cross_validation([args.cv] if args.cv else args.ensemble, args.out, args.data, args.sensitivity, args.coverage)
    if args.dirty:
        dirty(args.dirty, args.dirty_data, args.out, args.sensitivity, args.coverage)


if __name__ == "__main__":
    main()
