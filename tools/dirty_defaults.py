"""The training defaults on the dirty copy of Herlev (``tools/dirty_herlev.py``): class balancing
and the exclusion of crops with no nucleus, on several seeds (each its own split).

    python tools/dirty_defaults.py --data runs/herlev-dirty --out runs/dirty-defaults [--seeds 0 1 2]

Per seed it trains (resuming finished or interrupted runs):

- ``auto``: every default (``balance=auto``, ``exclude=no_nucleus``);
- ``loss``: ``--balance loss``, nothing else changed;
- ``keep``: ``--exclude none``, nothing else changed;

``--balance none`` needs no run of its own: ``auto`` trains with plain cross-entropy and records
what its raw logits score (``test_if_balance_none``). On these uneven classes ``auto`` also trains
with a class-weighted loss (``auto-SEED/balance-loss``), which is the ``loss`` variant's run when
that has none of its own. Every model is scored on the
test crops of its seed's split that hold a real, rightly labelled cell (``truth.csv`` kind
``clean``), so runs that leave out different crops are compared on the same cells. One row
per (seed, variant) goes to ``OUT/results.csv``; the summary table is printed. ``--score-only``
scores every finished run in ``OUT`` and trains nothing.
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
    parser.add_argument("--score-only", action="store_true",
                        help="train nothing: score every finished run in OUT (all seeds and variants)")
    args = parser.parse_args(argv)
    if args.score_only:
        finished = sorted((int(run.name.rsplit("-", 1)[1]), run.name.rsplit("-", 1)[0], run)
                          for run in args.out.glob("*-*") if (run / "metrics.json").is_file())
        finished += [(seed, "loss", run) for run in args.out.glob("auto-*/balance-loss")
                     if (run / "metrics.json").is_file()
                     for seed in [int(run.parent.name.rsplit("-", 1)[1])] if not (args.out / f"loss-{seed}").is_dir()]
        rows = [score_run(run, args.data, seed, variant) for seed, variant, run in sorted(finished)]
        write_rows(args.out / "results.csv", rows)
        print(summary(rows))
        return 0
    xcyto = [sys.executable, "-m", "xcyto"]
    check = args.out / "data-check"
    if not (check / "summary.json").is_file():
        subprocess.run([*xcyto, "data", "check", str(args.data / "cells.csv"), "--out", str(check)], check=True)
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            run = args.out / f"{variant}-{seed}"
            inner = args.out / f"auto-{seed}" / "balance-loss"  # the defaults' own weighted training
            if variant == "loss" and not run.is_dir() and (inner / "metrics.json").is_file():
                run = inner
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
    from xcyto.training import evaluate_bundle

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
    raw = balance.get("test_if_balance_none") or balance.get("test_if_raw") or metrics["test"]
    binary = on_clean.get("binary") or {}
    return {"seed": seed, "variant": variant, "balance_chosen": balance.get("chosen"), "tau": balance.get("tau"),
            "training_chosen": (balance.get("training") or {}).get("chosen", ""),
            "test_n": metrics["test"]["n"], "test_accuracy": metrics["test"]["accuracy"],
            "test_macro_f1": metrics["test"]["macro_f1"], "test_accuracy_if_raw": raw["accuracy"],
            "test_macro_f1_if_raw": raw["macro_f1"], "clean_n": on_clean["n"], "clean_accuracy": on_clean["accuracy"],
            "clean_macro_f1": on_clean["macro_f1"], "clean_specificity": binary.get("specificity"),
            "excluded": len((bundle.config.get("data_health") or {}).get("excluded", []))}


def write_rows(path: Path, rows: list[dict]) -> None:
    from xcyto.atomic import write_csv_atomic

    write_csv_atomic(path, rows)


def summary(rows: list[dict]) -> str:
    """Per seed, accuracy / macro-F1 on its test split: the defaults, ``--balance none`` (the
    defaults' raw logits), ``--balance loss``, the defaults against the better of the two, and
    (on the clean test cells) the defaults against ``--exclude none``."""
    lines = ["| seed | defaults (balance chosen) | balance none | balance loss | defaults minus the better | "
             "clean test cells: defaults / nothing excluded |", "|---|---|---|---|---|---|"]
    gaps = []

    def cell(row, prefix="test_", suffix=""):
        return "" if row is None else f"{row[prefix + 'accuracy' + suffix]:.3f} / {row[prefix + 'macro_f1' + suffix]:.3f}"

    for seed in sorted({row["seed"] for row in rows}):
        by = {row["variant"]: row for row in rows if row["seed"] == seed}
        auto, loss, keep = by.get("auto"), by.get("loss"), by.get("keep")
        gap = ""
        if auto and loss:
            best = [max(auto[f"test_{m}_if_raw"], loss[f"test_{m}"]) for m in ("accuracy", "macro_f1")]
            gaps.append([auto["test_accuracy"] - best[0], auto["test_macro_f1"] - best[1]])
            gap = f"{gaps[-1][0]:+.3f} / {gaps[-1][1]:+.3f}"
        clean = f"{cell(auto, 'clean_')} / {cell(keep, 'clean_')}" if keep else cell(auto, "clean_")
        lines.append(f"| {seed} | {cell(auto)} ({auto['balance_chosen'] if auto else ''}) | "
                     f"{cell(auto, suffix='_if_raw')} | {cell(loss)} | {gap} | {clean} |")
    lines.append("")
    means = []
    for variant in VARIANTS:
        chosen = [row for row in rows if row["variant"] == variant]
        if chosen:
            means.append(f"{variant} {np.mean([r['test_accuracy'] for r in chosen]):.3f} / "
                         f"{np.mean([r['test_macro_f1'] for r in chosen]):.3f} ({len(chosen)} seeds)")
    lines.append("means (accuracy / macro-F1 on each run's test split): " + ", ".join(means))
    if gaps:
        lines.append("defaults minus the better of none and loss, mean over seeds: "
                     f"{np.mean([g[0] for g in gaps]):+.3f} / {np.mean([g[1] for g in gaps]):+.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
