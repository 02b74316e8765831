"""Figures of an audit: the cases by their signals, and one case as a figure for a notebook."""
from __future__ import annotations

from xcyto.audit._scores import KINDS
from xcyto.plotting import plt

KIND_COLOURS = dict(zip(KINDS, ("#6b4f9e", "#d62728", "#b7950b", "#7d3c98", "#d35400", "#6c7a89")))


def plot_signals(result):
    """Label-issue score against neighbour disagreement for every case, coloured by kind."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for kind, label in KINDS.items():
        members = [c for c in result.cases if c.kind == kind]
        if members:
            axis.scatter([c.signals["label_issue"] for c in members],
                         [c.signals["neighbour_disagreement"] for c in members],
                         s=[20 + 120 * c.suspicion for c in members], color=KIND_COLOURS[kind], alpha=0.7,
                         label=f"{label} ({len(members)})")
    for case in result.cases[:5]:
        axis.annotate(f"#{case.rank}", (case.signals["label_issue"], case.signals["neighbour_disagreement"]),
                      fontsize=8, xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("label-issue score (1 - p(given label))")
    axis.set_ylabel("neighbour disagreement")
    axis.set_xlim(-0.03, 1.03)
    axis.set_ylim(-0.03, 1.03)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title("cases: size = suspicion")
    figure.tight_layout()
    return figure


def plot_case(case, methods: list[str] | None = None):
    """One case: the cell, each overlay for both classes, and the nearest training cells of both."""
    overlays = [(key, image) for key, image in case.overlays.items() if methods is None or key[0] in methods]
    neighbour_rows = [(name, found) for name, found in case.neighbours.items() if found]
    columns = max(1 + len(overlays), max((len(found) for _, found in neighbour_rows), default=0), 1)
    rows = 1 + len(neighbour_rows)
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows + 0.5), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    if case.image is not None:
        axes[0, 0].imshow(case.image)
        axes[0, 0].set_title("cell", fontsize=9)
    for column, ((method, class_name), image) in enumerate(overlays, start=1):
        axes[0, column].imshow(image)
        axes[0, column].set_title(f"{method}\n→ {class_name} ({case.roles[class_name]})", fontsize=8)
    for row, (class_name, found) in enumerate(neighbour_rows, start=1):
        for column, neighbour in enumerate(found):
            axes[row, column].imshow(neighbour.thumbnail)
            title = f"nearest {class_name}" if column == 0 else ""
            axes[row, column].set_title(f"{title}\n{neighbour.similarity:.2f}", fontsize=8)
    figure.suptitle(f"#{case.rank} {case.cell_id}: given {case.given}, predicted {case.predicted}\n{case.reading}",
                    fontsize=9, color=KIND_COLOURS[case.kind])
    figure.tight_layout()
    return figure
