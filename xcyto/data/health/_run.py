"""Run every check over a dataset (or one image) and keep the result: :class:`DataCheck`."""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xcyto.data.health import _cells, _duplicates, _image, _morphology
from xcyto.data.health._registry import BLOCKING, CHECKS, Table
from xcyto.errors import DataError

ISSUE_COLUMNS = ("path", "check", "score", "threshold", "reason")
ISSUES_FILE, SUMMARY_FILE, CROPS_FILE, REPORT_FILE = "issues.csv", "summary.json", "crops.csv", "report.html"
FORMAT = "xcyto-data-check/1"
#: Crops segmented together before their working images are dropped (memory stays flat).
CHUNK = 256


@dataclass(frozen=True)
class Issue:
    """One problem of one crop: which check found it, its score against the threshold, and why."""

    path: str
    check: str
    score: float
    threshold: float
    reason: str
    index: int = -1  # the crop's position in the checked data (-1: a single image)

    @property
    def blocking(self) -> bool:
        return CHECKS[self.check].blocking if self.check in CHECKS else False

    @property
    def title(self) -> str:
        return CHECKS[self.check].title if self.check in CHECKS else self.check

    def to_row(self) -> dict:
        return {"path": self.path, "check": self.check, "score": _number(self.score),
                "threshold": _number(self.threshold), "reason": self.reason}


@dataclass
class DataCheck:
    """The checks of a dataset: every issue, and every crop's score under every check.

    ``paths``: the crops as ``xcyto data summary`` names them (relative to the data's root);
    ``scores[check]``: one score per crop (``nan`` where the check does not apply);
    ``pairs``: duplicate pairs; ``reference``: the collection's medians that relative checks
    compare with (kept so single images can be judged against the same collection).
    """

    paths: list[str]
    files: list[str]
    labels: np.ndarray
    classes: list[str]
    groups: list[str]
    scores: dict[str, np.ndarray]
    issues: list[Issue]
    pairs: list = field(default_factory=list)
    reference: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def issues_of(self, index: int) -> list[Issue]:
        """The issues of the crop at ``index``, blocking ones first."""
        return sorted((issue for issue in self.issues if issue.index == index), key=lambda issue: not issue.blocking)

    def flagged(self, checks=None) -> np.ndarray:
        """Boolean mask of the crops with an issue from ``checks`` (default: any)."""
        wanted = set(CHECKS if checks is None else checks)
        mask = np.zeros(len(self), bool)
        for issue in self.issues:
            if issue.check in wanted:
                mask[issue.index] = True
        return mask

    def counts(self) -> dict[str, int]:
        """Crops flagged by each check (every registered check, zeros kept)."""
        return {name: int(sum(issue.check == name for issue in self.issues)) for name in self.scores}

    def source_path(self, path: str) -> str:
        """The file behind a crop's ``path`` (as listed in ``issues.csv``)."""
        return self.files[self.paths.index(path)] or path

    def health_line(self) -> str:
        """One line for ``xcyto data summary`` and ``xcyto train``."""
        if not self.issues:
            return f"data health: no issues in {len(self)} crops"
        counts = {name: n for name, n in self.counts().items() if n}
        any_issue = int(self.flagged().sum())
        parts = [f"{n} {CHECKS[name].title if name in CHECKS else name} ({n / len(self):.0%})"
                 for name, n in sorted(counts.items(), key=lambda item: -item[1])]
        return f"data health: {any_issue} of {len(self)} crops ({any_issue / len(self):.0%}) have issues: " + ", ".join(parts)

    def leaks(self, sides: dict[int, str]) -> list[tuple]:
        """Duplicate pairs split across sides (``sides``: crop index -> ``train`` / ``val`` / ``test``)."""
        return _duplicates.across(self.pairs, sides)

    def summary(self) -> dict:
        counts = self.counts()
        per_class = {name: {check: int(sum(1 for i in self.issues if i.check == check and self.labels[i.index] == label))
                            for check in counts}
                     for label, name in enumerate(self.classes)}
        return {"format": FORMAT, "crops": len(self), "crops_with_issues": int(self.flagged().sum()),
                "blocking": list(BLOCKING), "crops_with_blocking_issues": int(self.flagged(BLOCKING).sum()),
                "counts": counts, "counts_by_class": per_class,
                "checks": {name: {"title": check.title, "kind": check.kind, "threshold": check.threshold,
                                  "flag_when": check.flag_when, "blocking": check.blocking,
                                  "measures": check.description}
                           for name, check in CHECKS.items() if name in counts},
                "duplicate_pairs": [{"first": self.paths[p.first], "second": self.paths[p.second], "kind": p.kind,
                                     "similarity": round(p.similarity, 4)} for p in self.pairs],
                "reference": self.reference, "health": self.health_line(), "settings": self.settings}

    def to_frame(self):
        """The issues as a pandas DataFrame (the rows of ``issues.csv``)."""
        import pandas as pd

        return pd.DataFrame([issue.to_row() for issue in self.issues], columns=list(ISSUE_COLUMNS)).astype(
            {"score": float, "threshold": float})

    def save(self, out, report: bool = True, images=None) -> Path:
        """Write ``issues.csv``, ``crops.csv``, ``summary.json`` and ``report.html`` into ``out``
        (one folder, replaced whole). ``images``: the crops (for the report's thumbnails);
        read from ``files`` when not given."""
        from xcyto.atomic import atomic_dir

        out = Path(out)
        with atomic_dir(out) as staging:
            (staging / ISSUES_FILE).write_text(_csv([issue.to_row() for issue in self.issues], ISSUE_COLUMNS))
            crop_rows = []
            for index, path in enumerate(self.paths):
                row = {"path": path, "label": self.classes[self.labels[index]], "group": self.groups[index]}
                row.update({name: _number(values[index]) for name, values in self.scores.items()})
                crop_rows.append(row)
            (staging / CROPS_FILE).write_text(_csv(crop_rows, ["path", "label", "group", *self.scores]))
            (staging / SUMMARY_FILE).write_text(json.dumps(self.summary(), indent=2) + "\n")
            if report:
                from xcyto.data.health._report import render

                (staging / REPORT_FILE).write_text(render(self, images))
        return out


def _number(value) -> str:
    return "" if value is None or not np.isfinite(value) else f"{float(value):.6g}"


def _csv(rows: list[dict], columns) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def check(dataset, *, checks=None, bundle=None, progress: bool = False) -> DataCheck:
    """Check every crop of ``dataset`` (a :class:`xcyto.data.CellDataset`); no classifier needed.

    ``checks``: names of checks to report (default: all of :data:`CHECKS`). ``bundle``: a
    trained bundle (or its folder) whose embeddings add near duplicates that pixels miss.
    ``progress``: show a progress bar.
    """
    started = time.perf_counter()
    chosen = list(CHECKS) if checks is None else list(checks)
    unknown = [name for name in chosen if name not in CHECKS]
    if unknown:
        raise DataError(f"unknown data checks: {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if len(dataset) == 0:
        raise DataError("no crops to check")
    samples = dataset.samples
    stages = {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        stages[name] = round(now - clock, 2)
        clock = now

    bar = _progress_bar(len(samples), progress)
    facts = [_image.image_facts(sample.image) for sample in samples]
    lap("image_facts")
    findings, measured = [], []
    for start in range(0, len(samples), CHUNK):  # the working images of one chunk at a time
        chunk = _cells.find_nuclei([sample.image for sample in samples[start:start + CHUNK]], keep_images=True,
                                   progress=bar.update if bar else None)
        for finding in chunk:
            measured.append(_morphology.measurements(finding.image, finding.nucleus_mask, finding.cell_mask))
            finding.image = finding.nucleus_mask = finding.cell_mask = None
        findings += chunk
    measured = np.array(measured).reshape(len(samples), len(_morphology.FEATURES))
    if bar:
        bar.close()
    lap("nuclei")
    labels = np.asarray(dataset.labels)
    groups = [sample.group for sample in samples]
    embeddings = _embeddings(bundle, samples) if bundle is not None else None
    pairs = _duplicates.find_pairs([f.pixels_md5 for f in facts], np.stack([f.hashes for f in facts]),
                                   np.stack([f.thumb for f in facts]), embeddings)
    lap("duplicates")
    table = _table([sample.cell_id for sample in samples], labels, list(dataset.classes), facts, findings)
    table.repeats = _duplicates.repeats(pairs, len(samples))
    table.morphometry = measured
    table.class_ranges = _morphology.class_ranges(measured, labels, len(dataset.classes))
    result = _evaluate(table, chosen, files=[str(sample.path or "") for sample in samples], groups=groups)
    lap("checks")
    result.pairs = pairs
    result.settings = {"checks": chosen, "segmenter": "learned", "work_side": _cells.WORK_SIDE,
                       "bundle": None if bundle is None else str(getattr(bundle, "path", bundle)),
                       "data": dataset.name, "layout": dataset.layout, "root": str(dataset.root or ""),
                       "seconds": round(time.perf_counter() - started, 2), "seconds_by_stage": stages,
                       "xcyto_version": _version()}
    return result


def check_image(image, reference: dict | None = None, path: str = "") -> list[Issue]:
    """The cell and image issues of one crop (anything :func:`xcyto.data.read_image` or
    :func:`xcyto.data.to_rgb_uint8` takes). ``reference``: a checked collection's medians (a
    bundle's training cells), for the checks relative to a collection (focus, size, aspect);
    without it only the absolute checks run."""
    from xcyto.data._io import to_rgb_uint8

    array = to_rgb_uint8(image)
    facts = [_image.image_facts(array)]
    findings = _cells.find_nuclei([array])
    table = _table([path], np.zeros(1, int), [""], facts, findings)
    relative = {"out_of_focus", "odd_size", "odd_aspect"}
    chosen = [name for name, c in CHECKS.items() if c.kind in ("cell", "image")
              and (reference or name not in relative)]
    result = _evaluate(table, chosen, files=[path], groups=[path], reference=reference)
    return [Issue(i.path, i.check, i.score, i.threshold, i.reason) for i in result.issues_of(0)]


def _table(paths, labels, classes, facts, findings) -> Table:
    def column(name, dtype=np.float64):
        return np.array([getattr(f, name) for f in facts], dtype=dtype)

    return Table(paths=list(paths), labels=np.asarray(labels), classes=list(classes), height=column("height", int),
                 width=column("width", int), brightness=column("brightness"),
                 darkest_density=column("darkest_density"), grey_std=column("grey_std"),
                 log_sharpness=column("log_sharpness"), nuclei=[f.nuclei + f.beside for f in findings],
                 mains=[f.main for f in findings])


def reference_of(table: Table) -> dict:
    """The collection's medians and size fence that the relative checks compare with."""
    sides = np.maximum(table.height, table.width).astype(np.float64)
    aspects = sides / np.maximum(np.minimum(table.height, table.width), 1)
    q1, q3 = np.percentile(np.log(sides), [25, 75])
    spread = 3 * (q3 - q1)
    return {"longer_side": float(np.median(sides)), "longer_side_fence": [float(np.exp(q1 - spread)), float(np.exp(q3 + spread))],
            "aspect": float(np.median(aspects)), "log_sharpness": float(np.median(table.log_sharpness)),
            "crops": len(table)}


def _evaluate(table: Table, chosen, files, groups, reference: dict | None = None) -> DataCheck:
    table.reference = reference or reference_of(table)
    scores, issues = {}, []
    for name in chosen:
        check_ = CHECKS[name]
        values = np.asarray(check_.score(table), dtype=np.float64)
        scores[name] = values
        for index in np.flatnonzero(check_.flags(values)):
            issues.append(Issue(table.paths[index], name, float(values[index]), float(check_.threshold),
                                check_.reason(table, int(index), float(values[index])), int(index)))
    # a crop with no nucleus has no nucleus to be off-centre, cut or far from its class
    empty = {issue.index for issue in issues if issue.check == "no_nucleus"}
    issues = [issue for issue in issues if issue.index not in empty or CHECKS[issue.check].kind != "cell"
              or issue.check == "no_nucleus"]
    issues.sort(key=lambda issue: (issue.index, not CHECKS[issue.check].blocking, chosen.index(issue.check)))
    return DataCheck(paths=table.paths, files=list(files), labels=table.labels, classes=table.classes,
                     groups=list(groups), scores=scores, issues=issues, reference=table.reference)


def _embeddings(bundle, samples) -> np.ndarray:
    from xcyto.loading import load

    bundle = load(bundle) if isinstance(bundle, (str, Path)) else bundle
    return np.asarray(bundle.predict_cells(samples).embeddings, dtype=np.float64)


def _progress_bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="checking crops", unit="crop", leave=False)


def load_check(folder) -> DataCheck:
    """A saved check (``issues.csv``, ``crops.csv``, ``summary.json``) read back, for training
    and audits to reuse instead of checking the same crops again."""
    folder = Path(folder)
    missing = [name for name in (ISSUES_FILE, CROPS_FILE, SUMMARY_FILE) if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: not a saved data check (missing {', '.join(missing)}); run 'xcyto data check'")
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    with open(folder / CROPS_FILE, newline="") as handle:
        crops = list(csv.DictReader(handle))
    classes = sorted({row["label"] for row in crops})
    classes = [name for name in summary.get("counts_by_class", {})] or classes
    index_of = {row["path"]: i for i, row in enumerate(crops)}
    names = [name for name in summary["counts"]]
    scores = {name: np.array([float(row[name]) if row.get(name) else np.nan for row in crops]) for name in names}
    with open(folder / ISSUES_FILE, newline="") as handle:
        issues = [Issue(row["path"], row["check"], float(row["score"]), float(row["threshold"]), row["reason"],
                        index_of[row["path"]]) for row in csv.DictReader(handle)]
    pairs = [_duplicates.Pair(index_of[p["first"]], index_of[p["second"]], p["kind"], p["similarity"])
             for p in summary.get("duplicate_pairs", []) if p["first"] in index_of and p["second"] in index_of]
    return DataCheck(paths=[row["path"] for row in crops], files=["" for _ in crops],
                     labels=np.array([classes.index(row["label"]) for row in crops]), classes=classes,
                     groups=[row["group"] for row in crops], scores=scores, issues=issues, pairs=pairs,
                     reference=summary.get("reference", {}), settings=summary.get("settings", {}))


def _version() -> str:
    from xcyto import __version__

    return __version__
