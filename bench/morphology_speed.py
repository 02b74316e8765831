"""What measuring the cell adds to an explanation: ``xcyto.explain`` with and without
``morphology``, and the segmentation and features alone, in one run.

    python bench/morphology_speed.py [--cells 14] [--repeats 3]

Cells: the Herlev bundle's held-out examples when shipped (224 px), else synthetic cells at
224 px with the demo bundle. Grad-CAM only, so the difference is the morphology's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xcyto.data import read_image  # noqa: E402
from xcyto.explain import default_bundle_path, explain, resolve_bundle  # noqa: E402
from xcyto.morphology import analyse  # noqa: E402
from xcyto.morphology import preferred_segmenter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    herlev = ROOT / "artifacts" / "herlev-bundle"
    if (herlev / "bundle.json").is_file():
        bundle = resolve_bundle(herlev)
        images = [read_image(p) for p in sorted((ROOT / "artifacts" / "examples-herlev").glob("*.jp*g"))[: args.cells]]
        where = "Herlev bundle, held-out Herlev cells"
    else:
        from xcyto.data import load_dataset

        bundle = resolve_bundle(default_bundle_path())
        images = [s.image for s in load_dataset(f"synthetic:n={args.cells},size=224,seed=5").samples]
        where = "demo bundle, synthetic cells at 224 px"
    method = preferred_segmenter()
    for image in images[:2]:  # warm-up: caches, the segmenter's weights
        explain(image, bundle, methods="gradcam")

    def per_cell(function) -> float:
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for image in images:
                function(image)
            runs.append((time.perf_counter() - start) / len(images) * 1000)
        return statistics.median(runs)

    without = per_cell(lambda image: explain(image, bundle, methods="gradcam", morphology=False))
    with_it = per_cell(lambda image: explain(image, bundle, methods="gradcam"))
    alone = per_cell(lambda image: analyse(image, method))
    sizes = sorted({image.shape[0] for image in images})
    print(f"{where}, {len(images)} cells of {sizes} px, {method} segmenter, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}\n")
    print("| explain() without morphology (ms/cell) | with (ms/cell) | added | segment + measure alone | target |")
    print("|---:|---:|---:|---:|---|")
    print(f"| {without:.1f} | {with_it:.1f} | {with_it - without:.1f} | {alone:.1f} | <= 50 ms added |")


if __name__ == "__main__":
    main()
