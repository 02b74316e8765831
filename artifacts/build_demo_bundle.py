"""Rebuild the shipped demo bundle: EfficientNet-Lite0 (offline ImageNet weights)
fine-tuned on synthetic Pap cells at 112 px, with its gallery and example cells.

    make artifacts            # or: python artifacts/build_demo_bundle.py

Deterministic from the seeds below on a CPU; takes a few minutes on 2 cores. The result
is `artifacts/demo-bundle/` (weights, bundle.json, split.csv, gallery/) and
`artifacts/examples/` (held-out synthetic cells of every class, for the demo's examples).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from PIL import Image

import xcyto
from xcyto.data import make_dataset

HERE = Path(__file__).resolve().parent
SETTINGS = dict(
    data="synthetic", synthetic_n=700, synthetic_size=112, model="efficientnet_lite0", image_size=112,
    epochs=6, batch_size=16, lr=2e-3, backbone_lr_mult=0.3, patience=3, seed=0, gallery=False,
)
THUMBNAIL_SIZE = 64  # keeps the shipped bundle small
EXAMPLE_SEED = 12345  # examples come from another seed than the training cells
EXAMPLES_PER_CLASS = 2


def build(out: Path, examples: Path) -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        result = xcyto.train(**SETTINGS, out=run_dir)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(Path(run_dir) / "bundle", out)
        for figure in ("confusion_matrix.png", "learning_curves.png", "metrics.json"):
            shutil.copyfile(Path(run_dir) / figure, out / figure)
    build_demo_gallery(out)
    write_examples(examples)
    test = result.metrics["test"]
    print(f"demo bundle: {out} (test accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f})")


def build_demo_gallery(bundle_path: Path) -> None:
    """The training cells' embeddings, small thumbnails, and the PCA and UMAP maps."""
    from xcyto.data import load_dataset
    from xcyto.embedding import build_gallery
    from xcyto.training import select_split

    bundle = xcyto.load(bundle_path)
    cells = load_dataset(bundle.config["data"]["source"])
    build_gallery(bundle, select_split(bundle, cells, "train"), thumbnail_size=THUMBNAIL_SIZE,
                  projections=("pca", "umap"), calibration_cells=select_split(bundle, cells, "val"))


def write_examples(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    cells = make_dataset(n=EXAMPLES_PER_CLASS * 5 * 4, seed=EXAMPLE_SEED, size=SETTINGS["synthetic_size"])
    taken: dict[str, int] = {}
    for cell in cells.samples:
        if taken.get(cell.class_name, 0) < EXAMPLES_PER_CLASS:
            taken[cell.class_name] = taken.get(cell.class_name, 0) + 1
            Image.fromarray(cell.image).save(folder / f"{cell.class_name}-{taken[cell.class_name]}.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "demo-bundle")
    parser.add_argument("--examples", type=Path, default=HERE / "examples")
    args = parser.parse_args()
    build(args.out, args.examples)
