"""The training defaults on the dirty copy of Herlev (``tools/dirty_herlev.py``): class balancing
and the exclusion of crops with no nucleus, on several seeds (each its own split).

    python tools/dirty_defaults.py --data runs/herlev-dirty --out runs/dirty-defaults [--seeds 0 1 2]

Per seed it trains (resuming finished or interrupted runs):

- ``auto``: every default (``balance=auto``, ``exclude=no_nucleus``);
- ``loss``: ``--balance loss``, nothing else changed;
- ``keep``: ``--exclude none``, nothing else changed;

``--balance none`` needs no run of its own: ``auto`` trains with plain cross-entropy and records
what its raw logits score (``test_if_raw``) when it adjusts them. Every model is scored on the
test crops of its seed's split that hold a real, rightly labelled cell (``truth.csv`` kind
``clean``), so runs that leave out different crops are compared on the same cells. One row
per (seed, variant) goes to ``OUT/results.csv``; the summary table is printed.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = {"auto": [], "loss": ["--balance", "loss"], "keep": ["--exclude", "none"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder written by tools/dirty_herlev.py")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args(argv)
    xcyto = [sys.executable, "-m", "xcyto"]
    check = args.out / "data-check"
    if not (check / "summary.json").is_file():
        subprocess.run([*xcyto, "data", "check", str(args.data / "cells.csv"), "--out", str(check)], check=True)
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            run = args.out / f"{variant}-{seed}"
            if not (run / "metrics.json").is_file():
                command = [*xcyto, "train", "--data", str(args.data / "cells.csv"), "--seed", str(seed), "--out", str(run),
                           "--data-check", str(check), *VARIANTS[variant]]
                if (run / "settings.json").is_file():
                    command.append("--resume")
                subprocess.run(command, check=True)
            rows.append(score_run(run, args.data, seed, variant))
            write_rows(args.out / "results.csv", rows)
    print(summary(rows))
    return 0


def score_run(run: Path, data: Path, seed: int, variant: str) -> dict:
    """The run's own test metrics, its raw-logit alternative, and its scores on the clean test cells."""
    from xcyto.data import load_dataset
    from xcyto.loading import load
    from xcyto.training.evaluate import evaluate_bundle

    metrics = json.loads((run / "metrics.json").read_text())
    with open(data / "truth.csv", newline="") as handle:
        kind = {row["path"]: row["kind"] for row in csv.DictReader(handle)}
    with open(run / "split.csv", newline="") as handle:
        test = [row["cell_id"] for row in csv.DictReader(handle) if row["split"] == "test"]
    dataset = load_dataset(data / "cells.csv")
    clean = [i for i, cell_id in enumerate(dataset.cell_ids) if cell_id in set(test) and kind.get(cell_id) == "clean"]
    bundle = load(run / "bundle")
    on_clean = evaluate_bundle(bundle, dataset.subset(clean))
    balance = metrics.get("balance") or {}
    raw = balance.get("test_if_raw") or metrics["test"]
    binary = on_clean.get("binary") or {}
    return {"seed": seed, "variant": variant, "balance_chosen": balance.get("chosen"), "tau": balance.get("tau"),
            "test_n": metrics["test"]["n"], "test_accuracy": metrics["test"]["accuracy"],
            "test_macro_f1": metrics["test"]["macro_f1"], "test_accuracy_if_raw": raw["accuracy"],
            "test_macro_f1_if_raw": raw["macro_f1"], "clean_n": on_clean["n"], "clean_accuracy": on_clean["accuracy"],
            "clean_macro_f1": on_clean["macro_f1"], "clean_specificity": binary.get("specificity"),
            "excluded": len((bundle.config.get("data_health") or {}).get("excluded", []))}


def write_rows(path: Path, rows: list[dict]) -> None:
    from xcyto.atomic import write_csv_atomic

    write_csv_atomic(path, rows)


def summary(rows: list[dict]) -> str:
    lines = ["| seed | defaults (auto) | balance none | balance loss | defaults, nothing excluded (clean test cells) |",
             "|---|---|---|---|---|"]
    for seed in sorted({row["seed"] for row in rows}):
        by = {row["variant"]: row for row in rows if row["seed"] == seed}
        auto, loss, keep = by.get("auto"), by.get("loss"), by.get("keep")

        def cell(row, prefix="test_", suffix=""):
            return "" if row is None else f"{row[prefix + 'accuracy' + suffix]:.3f} / {row[prefix + 'macro_f1' + suffix]:.3f}"
        lines.append(f"| {seed} | {cell(auto)} ({auto['balance_chosen'] if auto else ''}) | {cell(auto, suffix='_if_raw')} | "
                     f"{cell(loss)} | {cell(keep, 'clean_')} against {cell(auto, 'clean_')} |")
    means = {}
    for variant in VARIANTS:
        chosen = [row for row in rows if row["variant"] == variant]
        if chosen:
            means[variant] = np.mean([row["test_accuracy"] for row in chosen]), np.mean([row["test_macro_f1"] for row in chosen])
    lines.append("")
    lines.append("means (accuracy / macro-F1 on each run's test split): " + ", ".join(
        f"{variant} {a:.3f} / {f:.3f}" for variant, (a, f) in means.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
