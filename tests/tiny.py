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
