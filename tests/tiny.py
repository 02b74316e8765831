"""Tiny real models for tests: trained for seconds on synthetic cells, no mocks."""
from __future__ import annotations

from pathlib import Path

import xcyto

TINY_SETTINGS = dict(
    data="synthetic", synthetic_n=250, synthetic_size=64, model="small_cnn", image_size=48,
    epochs=4, batch_size=32, lr=3e-3, backbone_lr_mult=1.0, patience=0, num_workers=0, seed=0,
)


def make_tiny_bundle(out_dir: Path, **overrides) -> "xcyto.Bundle":
    """Train a small CNN on synthetic cells into ``out_dir`` and load its bundle."""
    settings = {**TINY_SETTINGS, **overrides, "out": str(out_dir)}
    xcyto.train(**settings)
    return xcyto.load(Path(out_dir) / "bundle")


PAIR_DATA = "synthetic:n=100,size=32,seed=0"


def tiny_pair(root: Path) -> tuple[Path, Path]:
    """Two small CNNs (32 px without gallery, 40 px with one) trained for one epoch on the same
    cells and split: members for ensembles. Made once under ``root`` and reused."""
    paths = (Path(root) / "a", Path(root) / "b")
    for path, size, gallery in zip(paths, (32, 40), (False, True)):
        if not (path / "bundle" / "bundle.json").is_file():
            xcyto.train(data=PAIR_DATA, model="small_cnn", image_size=size, epochs=1, batch_size=16, lr=3e-3,
                        backbone_lr_mult=1.0, patience=0, num_workers=0, seed=0, gallery=gallery, out=str(path))
    return tuple(path / "bundle" for path in paths)


#: Settings of :func:`make_peaking_cells`' training: one optimiser step per epoch (a model
#: that changes little from one epoch to the next), stopped 2 epochs after the best one.
PEAKING_SETTINGS = dict(
    model="small_cnn", image_size=32, epochs=8, batch_size=16, lr=1e-2, backbone_lr_mult=1.0, patience=2,
    max_steps_per_epoch=1, num_workers=0, seed=1, gallery=False, balance="none", rotation="none", stain_jitter=0.0,
    label_smoothing=0.0, tta="off", data_check="off", exclude="none",
)


def make_peaking_cells(root: Path) -> tuple[Path, Path]:
    """Cells on which validation improves, then worsens as training goes on: ``(folder, split manifest)``.

    Training: ``a`` red cells, ``b`` blue ones, and a few ``c`` cells, red with a green stripe.
    Validation: red and blue cells, and striped cells labelled ``a``. A model that has learnt the
    colours but not yet the stripe scores best on validation; once it learns the stripe (from
    the few ``c`` cells) it calls the striped validation cells ``c``, and validation worsens.
    (Before that, after its first step, it knows nothing yet.) Train with :data:`PEAKING_SETTINGS`.
    """
    import numpy as np
    from PIL import Image

    from xcyto.data import Split, load_dataset, save_split_manifest

    root = Path(root)
    rng = np.random.default_rng(0)

    def image(kind: str) -> np.ndarray:
        pixels = np.empty((32, 32, 3))
        pixels[:] = (70, 70, 170) if kind == "b" else (200, 120, 120)
        if kind == "c":
            pixels[:, 14:18] = (40, 160, 40)
        return np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)

    plan = {"a": [("a", "train")] * 30 + [("a", "val")] * 8 + [("c", "val")] * 8,
            "b": [("b", "train")] * 30 + [("b", "val")] * 8,
            "c": [("c", "train")] * 6}
    for folder, cells in plan.items():
        (root / "cells" / folder).mkdir(parents=True, exist_ok=True)
        for index, (kind, side) in enumerate(cells):
            Image.fromarray(image(kind)).save(root / "cells" / folder / f"{kind}-{side}-{index:02d}.png")
    dataset = load_dataset(root / "cells")
    sides = np.array([Path(sample.path).name.split("-")[1] for sample in dataset.samples])
    split = Split(indices={name: np.flatnonzero(sides == name) for name in ("train", "val")})
    save_split_manifest(dataset, split, root / "split.csv")
    return root / "cells", root / "split.csv"
