"""What a dataset holds, in numbers: the first thing to check before training on it."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from xcyto.data._records import MASK_NAMES, CellDataset


@dataclass
class DatasetSummary:
    """Counts and sizes of a loaded dataset (plain data, printable with :func:`format_summary`)."""

    name: str
    layout: str
    root: str
    n_cells: int
    classes: list[str]
    cells_per_class: dict[str, int]
    n_groups: int
    groups_per_class: dict[str, int]
    heights: tuple[int, int, int]  # min, median, max
    widths: tuple[int, int, int]
    masks: dict[str, int]  # cells having each mask
    warnings: list[str] = field(default_factory=list)


def summarize(dataset: CellDataset) -> DatasetSummary:
    """Per-class counts, groups, image sizes and masks of ``dataset``."""
    heights = np.array([sample.image.shape[0] for sample in dataset.samples])
    widths = np.array([sample.image.shape[1] for sample in dataset.samples])
    counts = Counter(sample.class_name for sample in dataset.samples)
    groups_by_class: dict[str, set[str]] = {name: set() for name in dataset.classes}
    for sample in dataset.samples:
        groups_by_class.setdefault(sample.class_name, set()).add(sample.group)
    return DatasetSummary(
        name=dataset.name,
        layout=dataset.layout,
        root=str(dataset.root) if dataset.root else "",
        n_cells=len(dataset),
        classes=list(dataset.classes),
        cells_per_class={name: counts.get(name, 0) for name in dataset.classes},
        n_groups=len({sample.group for sample in dataset.samples}),
        groups_per_class={name: len(groups) for name, groups in groups_by_class.items()},
        heights=_min_median_max(heights),
        widths=_min_median_max(widths),
        masks={name: sum(getattr(sample, f"{name}_mask") is not None for sample in dataset.samples)
               for name in MASK_NAMES},
        warnings=list(dataset.warnings),
    )


def format_summary(summary: DatasetSummary) -> str:
    """Human-readable report, one fact per line."""
    width = max([len(name) for name in summary.classes] + [5])
    lines = [
        f"dataset: {summary.name}" + (f"  ({summary.root})" if summary.root else ""),
        f"layout:  {summary.layout}",
        f"cells:   {summary.n_cells} in {len(summary.classes)} classes, {summary.n_groups} groups (source images)",
        "",
        f"  {'class':<{width}}  {'cells':>6}  {'groups':>6}",
    ]
    for name in summary.classes:
        lines.append(f"  {name:<{width}}  {summary.cells_per_class[name]:>6}  {summary.groups_per_class[name]:>6}")
    lines += [
        "",
        "image size (min / median / max):  "
        f"height {'/'.join(map(str, summary.heights))}, width {'/'.join(map(str, summary.widths))} px",
    ]
    found = [f"{name} {count}" for name, count in summary.masks.items() if count]
    lines.append(f"masks:   {', '.join(found)} of {summary.n_cells} cells" if found else "masks:   none")
    if summary.warnings:
        lines += ["", f"warnings ({len(summary.warnings)}):"] + [f"  - {line}" for line in summary.warnings]
    else:
        lines.append("warnings: none")
    return "\n".join(lines)


def _min_median_max(values: np.ndarray) -> tuple[int, int, int]:
    if len(values) == 0:
        return (0, 0, 0)
    return int(values.min()), int(np.median(values)), int(values.max())
