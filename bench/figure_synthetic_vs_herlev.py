"""Figure for the README: synthetic cells of each class beside real Herlev cells.

Writes docs/images/synthetic_vs_herlev.png and docs/images/synthetic_masks.png (the
same synthetic cells with their nucleus, cell and evidence contours). Real cells come
from $XCYTO_DATA/herlev (default ../shared/data); without them the first figure shows
the synthetic cells alone.

    python bench/figure_synthetic_vs_herlev.py
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from xcyto.data import load_dataset
from xcyto.data._synthetic import CLASSES, make_dataset
from xcyto.plotting import plt, save_figure

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images"
PER_ROW = 6
TILE = 128
GAP = 6
CONTOUR_COLOURS = {"cytoplasm": (0, 150, 0), "nucleus": (0, 60, 255), "evidence": (230, 0, 0)}


def synthetic_rows() -> dict[str, list]:
    dataset = make_dataset(PER_ROW * len(CLASSES) * 2, seed=7, size=TILE)
    return {name: [c for c in dataset.samples if c.class_name == name][:PER_ROW] for name in CLASSES}


def herlev_rows() -> dict[str, list]:
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


def with_contours(cell) -> np.ndarray:
    image = cell.image.copy()
    for name, colour in CONTOUR_COLOURS.items():
        contours, _ = cv2.findContours(getattr(cell, f"{name}_mask").astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(image, contours, -1, colour, 1)
    return image


def mosaic(rows: dict[str, list[np.ndarray]]) -> np.ndarray:
    """Rows of ``TILE``-px tiles on white, ``GAP`` px apart, as one image."""
    height, width = len(rows) * (TILE + GAP) - GAP, PER_ROW * (TILE + GAP) - GAP
    canvas = np.full((height, width, 3), 255, np.uint8)
    for row, images in enumerate(rows.values()):
        for col, image in enumerate(images):
            top, left = row * (TILE + GAP), col * (TILE + GAP)
            canvas[top:top + TILE, left:left + TILE] = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    return canvas


def show(axis, rows: dict[str, list[np.ndarray]], title: str):
    axis.imshow(mosaic(rows))
    axis.set_yticks([row * (TILE + GAP) + TILE / 2 for row in range(len(rows))],
                    [name.replace("_", " ") for name in rows], fontsize=8)
    axis.set_xticks([])
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    axis.set_title(title, fontsize=10)


def main() -> None:
    synthetic, herlev = synthetic_rows(), herlev_rows()
    synthetic_images = {name: [c.image for c in cells] for name, cells in synthetic.items()}
    panels = [(synthetic_images, "synthetic (xcyto.data._synthetic), 5 SIPaKMeD classes")]
    if herlev:
        panels.append(({name: [c.image for c in cells] for name, cells in herlev.items()},
                       "real: Herlev, 7 classes (resized to the same tile)"))
    figure, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 6.0), squeeze=False)
    for axis, (rows, title) in zip(axes[0], panels):
        show(axis, rows, title)
        axis.set_anchor("N")  # the 5-row panel lines up with the top of the 7-row one
    figure.tight_layout()
    print("wrote", save_figure(figure, OUT / "synthetic_vs_herlev.png", dpi=110))

    figure, axis = plt.subplots(figsize=(6.6, 5.0))
    show(axis, {name: [with_contours(c) for c in cells] for name, cells in synthetic.items()},
         "synthetic ground truth: cell (green), nucleus (blue), evidence (red)")
    print("wrote", save_figure(figure, OUT / "synthetic_masks.png", dpi=110))


if __name__ == "__main__":
    main()
