"""Rebuild the shipped Herlev bundle: ``xcyto train``'s default recipe on the real Herlev
cells (7 classes, group-aware 70/15/15 split by source image, seed 0), with its gallery
and a few held-out test cells as the demo's examples.

    make artifacts            # or: python artifacts/build_herlev_bundle.py [--data DIR]

Reads the Herlev folder from ``$XCYTO_DATA/herlev`` (default ``../shared/data/herlev``);
never copies the data set, only the gallery's thumbnails of the training cells and two
held-out test cells per class. About 10 minutes on 2 CPU cores. The result is
``artifacts/herlev-bundle/`` (weights, bundle.json with its metrics, split.csv, gallery/,
MODEL_CARD.md, concepts.json from ``xcyto concepts``) and ``artifacts/examples-herlev/``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import xcyto
from xcyto.card import write_card
from xcyto.cli import main as xcyto_cli
from xcyto.data import load_dataset
from xcyto.embedding import build_gallery
from xcyto.training import select_split

HERE = Path(__file__).resolve().parent
SETTINGS = dict(seed=0)  # everything else: xcyto train's defaults
THUMBNAIL_SIZE = 56  # keeps the bundle under the size limit below
EXAMPLES_PER_CLASS = 2
MAX_MEGABYTES = 25
SOURCE = ("Herlev Pap smear benchmark: J. Jantzen, J. Norup, G. Dounias, B. Bjerregaard, \"Pap-smear benchmark "
          "data for pattern classification\", NiSIS 2005; Herlev University Hospital and the Technical University "
          "of Denmark. Cells as redistributed at 224 x 224 px.")


def build(data: Path, out: Path, examples: Path) -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        result = xcyto.train(data=str(data), out=run_dir, **SETTINGS)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(Path(run_dir) / "bundle", out)
        bundle = xcyto.load(out)
        cells = load_dataset(data)
        build_gallery(bundle, select_split(bundle, cells, "train"), thumbnail_size=THUMBNAIL_SIZE,
                      projections=("pca", "umap"), calibration_cells=select_split(bundle, cells, "val"))
        bundle.config["data"]["attribution"] = SOURCE
        bundle.save(out)  # its metrics are in bundle.json; the run's figures stay out (size limit)
    if xcyto_cli(["fuse", "--bundle", str(out), "--data", str(data)]) != 0:  # the measurements beside the network
        raise SystemExit(f"xcyto fuse failed on {out}")
    write_card(xcyto.load(out), out / "MODEL_CARD.md")
    write_examples(select_split(bundle, cells, "test"), examples)
    with tempfile.TemporaryDirectory() as concepts_dir:  # BUNDLE/concepts.json, the demo's About tab
        if xcyto_cli(["concepts", "--bundle", str(out), "--data", str(data), "--out", concepts_dir]) != 0:
            raise SystemExit(f"xcyto concepts failed on {out}: the bundle has no concepts.json")
    megabytes = sum(path.stat().st_size for path in out.rglob("*") if path.is_file()) / 1e6
    if megabytes > MAX_MEGABYTES:
        raise SystemExit(f"{out} is {megabytes:.1f} MB, over the {MAX_MEGABYTES} MB limit: lower THUMBNAIL_SIZE")
    test = result.metrics["test"]
    print(f"Herlev bundle: {out} ({megabytes:.1f} MB; test accuracy {test['accuracy']:.3f}, "
          f"macro-F1 {test['macro_f1']:.3f})")


def write_examples(test_cells, folder: Path) -> None:
    """The first ``EXAMPLES_PER_CLASS`` test cells of each class (by cell id), copied as they are."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for label, name in enumerate(test_cells.classes):
        members = sorted((s for s in test_cells.samples if s.label == label), key=lambda s: s.cell_id)
        for index, sample in enumerate(members[:EXAMPLES_PER_CLASS], start=1):
            shutil.copyfile(sample.path, folder / f"{name}-{index}{Path(sample.path).suffix.lower()}")
    (folder / "SOURCE.txt").write_text(SOURCE + "\nHeld-out test cells of artifacts/herlev-bundle (never trained on).\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("XCYTO_DATA", HERE.parents[1] / "shared" / "data")) / "herlev"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--out", type=Path, default=HERE / "herlev-bundle")
    parser.add_argument("--examples", type=Path, default=HERE / "examples-herlev")
    arguments = parser.parse_args()
    build(arguments.data, arguments.out, arguments.examples)
