"""Two rows of `xcyto compare` leaderboards, paired fold by fold on the same test cells.

    python tools/paired_folds.py runs/cv-herlev-defaults efficientnet_lite0 \
        runs/cv-herlev-grade efficientnet_lite0 --out docs/results/herlev-cv-grade

Each fold's split must be the same file in both runs (``splits/fold-K.csv``), else the pairing
means nothing and the tool stops. Writes folds.csv (baseline, candidate and difference per
fold) and summary.json (mean differences, folds better and worse, the paired t statistic).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xcyto.atomic import write_csv_atomic, write_json_atomic  # noqa: E402

KEYS = ("accuracy", "macro_f1", "binary_accuracy", "sensitivity", "specificity", "ece", "mean_grade_error",
        "serious_misses")


def rows_of(run: Path, model: str) -> dict[int, dict]:
    with open(run / "results.csv", newline="") as handle:
        found = {int(row["fold"]): row for row in csv.DictReader(handle) if row["model"] == model}
    if not found:
        raise SystemExit(f"{run / 'results.csv'} has no rows for {model!r}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline_run", type=Path)
    parser.add_argument("baseline_model")
    parser.add_argument("candidate_run", type=Path)
    parser.add_argument("candidate_model")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    baseline, candidate = rows_of(args.baseline_run, args.baseline_model), rows_of(args.candidate_run, args.candidate_model)
    rows = []
    for fold in sorted(set(baseline) & set(candidate)):
        split_a = args.baseline_run / "splits" / f"fold-{fold}.csv"
        split_b = args.candidate_run / "splits" / f"fold-{fold}.csv"
        if split_a.read_bytes() != split_b.read_bytes():
            raise SystemExit(f"fold {fold}: {split_a} and {split_b} differ; the runs are not paired")
        row = {"fold": fold, "test_cells": int(candidate[fold]["n_test"])}
        for key in KEYS:
            a, b = baseline[fold].get(key, ""), candidate[fold].get(key, "")
            if a not in ("", None) and b not in ("", None):
                row[f"baseline_{key}"], row[f"candidate_{key}"] = float(a), float(b)
                row[f"difference_{key}"] = float(b) - float(a)
        rows.append(row)
    if not rows:
        raise SystemExit("no fold is finished in both runs")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(args.out / "folds.csv", [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()}
                                              for row in rows])
    differences = np.array([row["difference_accuracy"] for row in rows])
    spread = differences.std(ddof=1) if len(differences) > 1 else 0.0
    summary = {
        "baseline": f"{args.baseline_run}:{args.baseline_model}", "candidate": f"{args.candidate_run}:{args.candidate_model}",
        "folds": len(rows),
        "mean": {key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key not in ("fold",)},
        "accuracy_difference_per_fold": differences.round(4).tolist(),
        "folds_better": int((differences > 0).sum()), "folds_worse": int((differences < 0).sum()),
        "paired_t": float(differences.mean() / (spread / np.sqrt(len(differences)))) if spread > 0 else None,
    }
    write_json_atomic(args.out / "summary.json", summary)
    for row in rows:
        print(f"fold {row['fold']}: " + ", ".join(f"{key} {row[f'baseline_{key}']:.3f} -> {row[f'candidate_{key}']:.3f}"
                                               for key in KEYS if f"baseline_{key}" in row))
    print(json.dumps({k: summary[k] for k in ("accuracy_difference_per_fold", "folds_better", "folds_worse", "paired_t")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
