"""How much a nucleus view can zoom on each class: the nucleus's size against its crop's.

    python tools/measure_views.py ../shared/data/herlev --out docs/results/herlev-views

Segments every crop (xcyto.morphology.segment) and writes, per class: the median of the
nucleus's equivalent diameter over the crop's shorter side, and the share of crops where the
nucleus view (NUCLEUS_VIEW_SCALE diameters a side) and a tighter one (2 diameters) are smaller
than the crop, i.e. where a nucleus view reads the nucleus at a higher resolution than the whole
crop does. Where the view is the whole crop it cannot add anything. Writes views.csv.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xcyto.atomic import write_csv_atomic  # noqa: E402
from xcyto.data import load_dataset  # noqa: E402
from xcyto.data import NUCLEUS_VIEW_SCALE  # noqa: E402
from xcyto.morphology import SegmentationError, segment  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    ratios = np.full(len(dataset), np.nan)
    for index, sample in enumerate(tqdm(dataset.samples, desc="segmenting", unit="crop")):
        try:
            nucleus = segment(sample.image).nucleus
        except SegmentationError:
            continue
        if nucleus.any():
            ratios[index] = 2 * np.sqrt(nucleus.sum() / np.pi) / min(sample.image.shape[:2])
    rows = []
    for label, name in enumerate(dataset.classes):
        found = ratios[(dataset.labels == label) & np.isfinite(ratios)]
        rows.append({"class": name, "crops": int((dataset.labels == label).sum()), "segmented": len(found),
                     "median_diameter_over_side": round(float(np.median(found)), 3),
                     "zoomed_at_3_diameters": round(float(np.mean(NUCLEUS_VIEW_SCALE * found < 1)), 3),
                     "zoomed_at_2_diameters": round(float(np.mean(2 * found < 1)), 3)})
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(args.out / "views.csv", rows)
    print("| class | crops | nucleus diameter / crop side (median) | view smaller than the crop, 3 diameters | 2 diameters |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['class']} | {row['crops']} | {row['median_diameter_over_side']:.2f} | "
              f"{row['zoomed_at_3_diameters']:.0%} | {row['zoomed_at_2_diameters']:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
