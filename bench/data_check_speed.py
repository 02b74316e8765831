"""How long ``xcyto data check`` takes on 1,000 crops of 100 to 224 px, against the segmenter's
own time on the same crops in the same run (target: at most 60 s on 2 cores, no bundle).

    python bench/data_check_speed.py [--crops 1000] [--seed 0]

Crops: Herlev cells (``$XCYTO_DATA/herlev``) each resized to a random side between 100 and
224 px, repeated to ``--crops``; synthetic cells when Herlev is not here. The segmenter
baseline is the learned segmenter alone (``xcyto.morphology.segment(image, "learned")``), one
crop at a time as ``xcyto.explain`` and the morphology use it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xcyto.data import CellDataset, load_dataset  # noqa: E402
from xcyto.data.health import check  # noqa: E402
from xcyto.morphology import segment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def crops(count: int, seed: int) -> tuple[CellDataset, str]:
    import cv2

    herlev = Path(os.environ.get("XCYTO_DATA", ROOT.parent / "shared" / "data")) / "herlev"
    source = load_dataset(herlev) if herlev.is_dir() else load_dataset(f"synthetic:n=200,size=224,seed={seed}")
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        sample = source.samples[index % len(source)]
        side = int(rng.integers(100, 225))
        image = cv2.resize(sample.image, (side, side), interpolation=cv2.INTER_AREA)
        samples.append(type(sample)(image=image, label=sample.label, class_name=sample.class_name,
                                    cell_id=f"{index:04d}-{sample.cell_id}", group=sample.group))
    where = "Herlev cells" if herlev.is_dir() else "synthetic cells"
    return CellDataset(samples=samples, classes=list(source.classes), name="bench"), where


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dataset, where = crops(args.crops, args.seed)
    check(dataset.subset(range(8)))  # warm-up: the segmenter's weights, caches
    started = time.perf_counter()
    result = check(dataset)
    total = time.perf_counter() - started
    started = time.perf_counter()
    for sample in dataset.samples:
        segment(sample.image, "learned")
    segmenter = time.perf_counter() - started
    stages = result.settings["seconds_by_stage"]
    print(f"{len(dataset)} crops ({where}, 100-224 px), {torch.get_num_threads()} threads, no bundle\n")
    print("| | seconds | per 1,000 crops | against the segmenter alone |")
    print("|---|---:|---:|---:|")
    per = 1000 / len(dataset)
    print(f"| learned segmenter alone (one crop at a time) | {segmenter:.1f} | {segmenter * per:.1f} | 1.00 |")
    print(f"| `xcyto data check`, all {len(result.scores)} checks | {total:.1f} | {total * per:.1f} | "
          f"{total / segmenter:.2f} |")
    for name, seconds in stages.items():
        print(f"| - {name.replace('_', ' ')} | {seconds:.1f} | {seconds * per:.1f} | {seconds / segmenter:.2f} |")
    print(f"\ntarget: at most 60 s per 1,000 crops -> {'met' if total * per <= 60 else 'NOT met'} "
          f"({total * per:.1f} s)")


if __name__ == "__main__":
    main()
