"""One look for every figure: class colours, the heatmap colormap, saving.

A class keeps its colour in every plot (confusion matrices, maps, galleries), and every
heatmap uses ``HEATMAP_CMAP``, so figures can be read side by side.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

# Figures are written to files, often from worker threads (the demo): use Agg, unless
# the user chose a backend or a Jupyter kernel shows figures inline.
if not os.environ.get("MPLBACKEND") and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xcyto.atomic import atomic_path  # noqa: E402

HEATMAP_CMAP = "inferno"
_PALETTE = plt.get_cmap("tab10").colors


def class_colors(classes: list[str]) -> dict[str, tuple[float, float, float]]:
    """A stable colour per class, by position in the class list."""
    return {name: _PALETTE[index % len(_PALETTE)] for index, name in enumerate(classes)}


def save_figure(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a figure atomically (temporary file, then rename) and close it."""
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(figure)
    return Path(path)


def plot_confusion_matrix(matrix, classes: list[str], title: str = "Confusion matrix"):
    """Row-normalised colours with the raw counts written in each cell."""
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    size = 1.2 + 0.6 * len(classes)
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(matrix):
        axis.text(col, row, str(count), ha="center", va="center",
                  color="white" if normalised[row, col] > 0.5 else "black", fontsize=8)
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of true class")
    return figure


def plot_learning_curves(history: list[dict]):
    """Training loss and validation loss / macro-F1 per epoch."""
    epochs = [entry["epoch"] for entry in history]
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axis.plot(epochs, [e["train_loss"] for e in history], label="train")
    loss_axis.plot(epochs, [e["val_loss"] for e in history], label="validation")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    loss_axis.legend()
    score_axis.plot(epochs, [e["val_macro_f1"] for e in history], label="macro-F1")
    score_axis.plot(epochs, [e["val_accuracy"] for e in history], label="accuracy")
    score_axis.set_xlabel("epoch")
    score_axis.set_ylim(0, 1)
    score_axis.set_title("validation")
    score_axis.legend()
    figure.tight_layout()
    return figure
