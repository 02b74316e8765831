"""The README's measurements of the shipped Herlev bundle, in one run: how each IG baseline
adds up, the faithfulness table (with nucleus masks moved from the 40 px copy), and what
calibration and test-time augmentation did.

    python tools/measure_herlev.py [--cells 48] [--out runs/measure-herlev]
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

import xcyto
from xcyto.data import load_dataset
from xcyto.data import transfer_masks
from xcyto.training import select_split

ROOT = Path(__file__).resolve().parents[1]


def ig_baselines(bundle, cells, baselines=("background", "blur", "black", "white", "mean")) -> list[str]:
    """Integrated gradients with steps="auto" from each baseline, on the same cells."""
    lines = ["| baseline | completeness error: median | p90 | adds up (5 %) | IG steps: median | p90 | ms/cell |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    images = [sample.image for sample in cells]
    for baseline in baselines:
        started = time.perf_counter()
        explained = xcyto.explain(images, bundle, methods="integrated_gradients", neighbours=0, morphology=False,
                                  baseline=baseline, batch_size=8)
        seconds = (time.perf_counter() - started) / len(images) * 1000
        info = {key: np.array([e.heatmap("ig").info[key] for e in explained])
                for key in ("completeness_relative", "steps", "converged")}
        error, steps = info["completeness_relative"], info["steps"]
        lines.append(f"| {baseline} | {np.median(error):.3f} | {np.percentile(error, 90):.3f} | "
                     f"{int(info['converged'].sum())}/{len(error)} | {np.median(steps):.0f} | "
                     f"{np.percentile(steps, 90):.0f} | {seconds:.0f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "herlev-bundle")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("XCYTO_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--cells", type=int, default=48)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "measure-herlev")
    args = parser.parse_args()
    bundle = xcyto.load(args.bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        herlev = load_dataset(args.data / "herlev")
        masked = transfer_masks(select_split(bundle, herlev, "test"), load_dataset(args.data / "herlev-40px-masks"))
    rng = np.random.default_rng(0)
    chosen = [masked.samples[i] for i in np.sort(rng.choice(len(masked), min(args.cells, len(masked)), replace=False))]
    print(f"{bundle.name}: {len(chosen)} test cells with masks\n")
    lines = ig_baselines(bundle, chosen)

    from xcyto.evaluation import evaluate_explanations

    subset = masked.subset(range(len(masked)))
    report = evaluate_explanations(bundle, subset, n=args.cells, methods=["gradcam", "gradcampp", "integrated_gradients",
                                                                          "saliency", "random"],
                                   randomisation_cells=8)
    paths = report.save(args.out / "faithfulness")
    calibration = bundle.calibration
    test = bundle.config["metrics"]["test"]
    summary = {"ig_baselines": lines, "faithfulness": str(paths.get("markdown", "")),
               "calibration": calibration.to_dict(), "test_ece": [test["ece"], test["ece_calibrated"]],
               "tta": bundle.config.get("tta")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(report.to_markdown())
    print(f"calibration: {calibration.describe()}; test ECE {test['ece']:.3f} -> {test['ece_calibrated']:.3f}")
    print(f"test-time augmentation: {bundle.config.get('tta')}")


if __name__ == "__main__":
    main()
