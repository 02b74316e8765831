"""Train the shipped learned segmenter and measure it against the classical one.

    make artifacts            # or: python artifacts/build_segmenter.py [--data DIR]

A small U-Net (``xcyto.morphology._learned``) learns nucleus and cell from the Herlev cells of
the training split of the shipped Herlev bundle (group-aware 70/15/15 by source image,
seed 0), whose masks come from the 40 px Herlev copy matched cell by cell onto the 224 px
one, and from synthetic cells with exact masks. Dice is measured on the Herlev cells of
the test split (source images the segmenter never saw) and on held-out synthetic cells.
Writes ``xcyto/morphology/weights/`` (safetensors weights, JSON with settings and scores): the
segmenter ships inside the package, so an installed wheel has it.
A few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

from xcyto.data import load_dataset
from xcyto.data import transfer_masks
from xcyto.data import train_val_test_split
from xcyto.morphology._learned import CONFIG_FILE, LearnedSegmenter, dice_scores, train_segmenter
from xcyto.morphology import segment

HERE = Path(__file__).resolve().parent
SYNTHETIC_TRAIN = "synthetic:n=600,size=128,seed=31"
SYNTHETIC_TEST = "synthetic:n=120,size=128,seed=32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = Path(os.environ.get("XCYTO_DATA", HERE.parents[1] / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=data)
    parser.add_argument("--out", type=Path, default=HERE.parent / "xcyto" / "morphology" / "weights")
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 40 px copy has no source groups: matching gives them
        herlev = load_dataset(args.data / "herlev")
        masked = transfer_masks(herlev, load_dataset(args.data / "herlev-40px-masks"))
    split = train_val_test_split(herlev, seed=0)  # the shipped Herlev bundle's split
    in_split = {name: {herlev.samples[i].cell_id for i in getattr(split, name)} for name in ("train", "val", "test")}
    part = {name: [s for s in masked.samples if s.cell_id in ids] for name, ids in in_split.items()}
    synthetic_train, synthetic_test = load_dataset(SYNTHETIC_TRAIN), load_dataset(SYNTHETIC_TEST)
    record = train_segmenter(part["train"] + list(synthetic_train.samples), args.out, epochs=args.epochs,
                             validation=part["val"],
                             note=f"{len(part['train'])} Herlev training-split cells (masks from the 40 px copy) "
                                  f"and {len(synthetic_train)} synthetic cells ({SYNTHETIC_TRAIN})")
    learned = LearnedSegmenter.load(args.out)
    record["test"] = {"herlev": {"classical": dice_scores(segment, part["test"]),
                                 "learned": dice_scores(learned.segment, part["test"])},
                      "synthetic": {"classical": dice_scores(segment, synthetic_test.samples),
                                    "learned": dice_scores(learned.segment, synthetic_test.samples)}}
    (args.out / CONFIG_FILE).write_text(json.dumps(record, indent=1) + "\n")
    print("| data (held out) | segmenter | cells | nucleus Dice mean | median | cell Dice mean | median |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for data_name, scores in record["test"].items():
        for method, score in scores.items():
            print(f"| {data_name} | {method} | {score['cells']} | {score['nucleus_mean']:.3f} | "
                  f"{score['nucleus_median']:.3f} | {score['cell_mean']:.3f} | {score['cell_median']:.3f} |")
    print(f"trained in {record['train_seconds'] / 60:.1f} min -> {args.out}")


if __name__ == "__main__":
    main()
