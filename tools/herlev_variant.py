"""A harder copy of Herlev to check that ``xcyto train``'s defaults do not lean on Herlev's
size or balance: every cell shrunk to 100 px on its longer side and shifted off-centre on a
116 px canvas of its own background, and one class cut to 40 cells.

    python tools/herlev_variant.py --out /tmp/herlev-small    # then: xcyto train --data /tmp/herlev-small/cells.csv

Written outside the repository (the data stays where it lies); a CSV manifest
``path,label,group`` keeps Herlev's source-image groups.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from xcyto.data import load_dataset
from xcyto.data import background_colour

SIDE, CANVAS, KEPT = 100, 116, 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("XCYTO_DATA", "../shared/data") + "/herlev")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shrink-class", default=None, help="class cut to 40 cells (default: the second smallest)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    counts = np.bincount(dataset.labels, minlength=len(dataset.classes))
    shrink = args.shrink_class or dataset.classes[int(np.argsort(counts)[1])]
    rng = np.random.default_rng(args.seed)
    members = [i for i, sample in enumerate(dataset.samples) if sample.class_name == shrink]
    dropped = set(rng.choice(members, size=max(0, len(members) - KEPT), replace=False).tolist())
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for index, sample in enumerate(dataset.samples):
        if index in dropped:
            continue
        image = Image.fromarray(sample.image)
        image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (CANVAS, CANVAS), background_colour(sample.image))
        left, top = (int(rng.integers(0, CANVAS - size + 1)) for size in image.size)
        canvas.paste(image, (left, top))
        path = args.out / "images" / f"{sample.cell_id.replace('/', '_')}.png"
        canvas.save(path)
        rows.append({"path": str(path), "label": sample.class_name, "group": sample.group})
    with open(args.out / "cells.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} cells ({shrink} cut to {KEPT}) at {SIDE} px on {CANVAS} px canvases -> {args.out / 'cells.csv'}")


if __name__ == "__main__":
    main()
