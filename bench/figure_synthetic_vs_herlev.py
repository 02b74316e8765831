"""Figure for the README: synthetic cells of each class beside real Herlev cells.

Writes docs/images/synthetic_vs_herlev.png (and synthetic_masks.png: nucleus, cell and
evidence contours). Real cells come from $XCYTO_DATA/herlev (default ../shared/data).

    python bench/figure_synthetic_vs_herlev.py
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np

from xcyto.data import load_dataset
from xcyto.data.synthetic import CLASSES, make_dataset
from xcyto.plotting import save_figure

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images"
PER_ROW = 6


def synthetic_rows(size=128):
    dataset = make_dataset(PER_ROW * 5 * 2, seed=7, size=size)
    return {name: [c for c in dataset.samples if c.class_name == name][:PER_ROW] for name in CLASSES}


def herlev_rows():
    root = Path(os.environ.get("XCYTO_DATA", REPO.parent / "shared" / "data")) / "herlev"
    if not root.is_dir():
        print(f"{root} not found: the figure shows synthetic cells only")
        return {}
    dataset = load_dataset(root)
    rng = np.random.default_rng(0)
    rows = {}
    for label, name in enumerate(dataset.classes):
        members = np.flatnonzero(dataset.labels == label)
        rows[name] = [dataset.samples[i] for i in rng.choice(members, PER_ROW, replace=False)]
    return rows


def grid(rows: dict, title: str, outline=False):
    figure, axes = plt.subplots(len(rows), PER_ROW, figsize=(PER_ROW * 1.3, len(rows) * 1.35))
    for row, (name, cells) in enumerate(rows.items()):
        for col, cell in enumerate(cells):
            image = cell.image.copy()
            if outline:
                for mask, colour in ((cell.cytoplasm_mask, (0, 160, 0)), (cell.nucleus_mask, (0, 0, 255)),
                                     (cell.evidence_mask, (255, 0, 0))):
                    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                    cv2.drawContours(image, contours, -1, colour, 1)
            axis = axes[row, col]
            axis.imshow(image)
            axis.set_xticks([]), axis.set_yticks([])
            if col == 0:
                axis.set_ylabel(name.replace("_", " ").replace("-", "-\n"), rotation=0, ha="right", va="center", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def main() -> None:
    synthetic = synthetic_rows()
    herlev = herlev_rows()
    figure = plt.figure(figsize=(2 * PER_ROW * 1.3 + 1, 7 * 1.35 + 0.6))
    left, right = figure.subfigures(1, 2, wspace=0.05)
    for subfigure, rows, title in ((left, synthetic, "synthetic (xcyto.data.synthetic)"),
                                   (right, herlev, "real: Herlev")):
        if not rows:
            continue
        axes = subfigure.subplots(len(rows), PER_ROW)
        for row, (name, cells) in enumerate(rows.items()):
            for col, cell in enumerate(cells):
                axes[row, col].imshow(cell.image)
                axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
            axes[row, 0].set_ylabel(name.replace("_", "\n").replace("-I", "-\nI"), rotation=0, ha="right",
                                    va="center", fontsize=8)
        subfigure.suptitle(title, fontsize=11)
    print("wrote", save_figure(figure, OUT / "synthetic_vs_herlev.png", dpi=90))
    print("wrote", save_figure(grid(synthetic, "nucleus (blue), cell (green), evidence (red)", outline=True),
                               OUT / "synthetic_masks.png", dpi=90))


if __name__ == "__main__":
    main()
