"""The data checks before training: what was found, which crops are left out, and why.

A run checks its crops once (``xcyto.data.health``) and keeps the result in
``<run>/data-check`` (reused when the run resumes), or reads a check saved by
``xcyto data check`` (``data_check=<folder>``, which ``xcyto compare`` uses so five folds check
the cells once). Crops flagged by the checks named in ``exclude`` (or listed in a CSV) leave
the split on every side: they teach nothing about their label, and their test score would
be noise. The split as drawn stays in ``split.csv``; the bundle records what was left out.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xcyto.data import Split
from xcyto.errors import TrainingError

CHECK_DIR = "data-check"


@dataclass
class Health:
    """The data check of a run: a summary for the bundle, and the crops left out."""

    record: dict = field(default_factory=dict)
    excluded: dict[int, list[str]] = field(default_factory=dict)  # crop index -> why (check names, or "listed")
    notes: list[str] = field(default_factory=list)

    def apply(self, split: Split) -> Split:
        """``split`` without the excluded crops (the split's own arrays are left unchanged)."""
        if not self.excluded:
            return split
        gone = np.array(sorted(self.excluded), dtype=np.int64)
        kept = {name: indices[~np.isin(indices, gone)] for name, indices in split.indices.items()}
        return Split(indices=kept, folds=split.folds, seed=split.seed, notes=list(split.notes))


def check_run_data(config, dataset, split: Split, run_dir: Path, write: bool) -> Health:
    """Check (or read the check of) ``dataset``; decide what ``config.exclude`` leaves out."""
    if config.data_check == "off":
        return Health(record={"checked": False})
    from xcyto.data.health import BLOCKING, check, load_check

    saved = Path(config.data_check) if config.data_check != "auto" else run_dir / CHECK_DIR
    result = None
    if (saved / "summary.json").is_file():
        result = load_check(saved)
        if result.paths != dataset.cell_ids:
            if config.data_check != "auto":
                raise TrainingError(f"{saved} checked other crops than {config.data} holds; run 'xcyto data check' "
                                    "on this data, or use data_check='auto'")
            result = None  # the data changed since: check again
    if result is None:
        result = check(dataset, progress=write)
        if write:
            result.save(run_dir / CHECK_DIR, report=True, images=[sample.image for sample in dataset.samples])
    excluded = _excluded(config.exclude, result, dataset)
    sides = {int(i): name for name in ("train", "val", "test") for i in split[name]}
    leaks = result.leaks(sides)
    counts = {name: n for name, n in result.counts().items() if n}
    notes = [result.health_line()]
    if excluded:
        reasons = {}
        for why in excluded.values():
            for name in why:
                reasons[name] = reasons.get(name, 0) + 1
        notes.append(f"left out {len(excluded)} crops ({', '.join(f'{name}: {n}' for name, n in reasons.items())}); "
                     f"exclude='{config.exclude}'")
    if leaks:
        notes.append(f"{len(leaks)} duplicate pairs lie on two sides of the split (leakage grouping cannot see): "
                     + ", ".join(f"{result.paths[pair.first]} ({a}) ~ {result.paths[pair.second]} ({b})"
                                 for pair, a, b in leaks[:3]) + (" ..." if len(leaks) > 3 else ""))
    record = {"checked": True, "crops": len(result), "counts": counts, "blocking": list(BLOCKING),
              "exclude": config.exclude, "excluded": [{"path": result.paths[i], "checks": why}
                                                      for i, why in sorted(excluded.items())],
              "cross_split_duplicates": [{"first": result.paths[pair.first], "second": result.paths[pair.second],
                                          "kind": pair.kind, "sides": [a, b]} for pair, a, b in leaks],
              "reference": result.reference, "health": result.health_line()}
    return Health(record=record, excluded=excluded, notes=notes)


def _excluded(exclude: str, result, dataset) -> dict[int, list[str]]:
    if not exclude or exclude == "none":
        return {}
    if exclude.lower().endswith(".csv"):
        path = Path(exclude)
        if not path.is_file():
            raise TrainingError(f"exclude: {path} not found (a CSV with a 'path' column)")
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if "path" not in (reader.fieldnames or []):
                raise TrainingError(f"exclude: {path} has no 'path' column (columns: {', '.join(reader.fieldnames or [])})")
            listed = {row["path"].strip() for row in reader}
        index_of = {cell_id: i for i, cell_id in enumerate(dataset.cell_ids)}
        index_of.update({str(sample.path): i for i, sample in enumerate(dataset.samples) if sample.path})
        return {index_of[p]: ["listed"] for p in listed if p in index_of}
    wanted = [name.strip() for name in exclude.split(",") if name.strip()]
    excluded: dict[int, list[str]] = {}
    for issue in result.issues:
        if issue.check in wanted:
            excluded.setdefault(issue.index, []).append(issue.check)
    return excluded
