"""How many cells an audit gets through: xcyto's batched audit against explaining cases one by one.

Audits the shipped demo bundle on new synthetic cells with a share of them given a wrong
label (so there are cases to explain), and times each stage. The baseline, timed in the
same run on the first cases, is what a notebook loop would do: ``xcyto.explain`` called
once per case and per class (predicted and given), one image at a time.

    python bench/audit_throughput.py                   # 1000 cells, 20 % relabelled, IG steps "auto"
    python bench/audit_throughput.py --cells 200 --steps 8 --noise 0.1
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

import xcyto
from xcyto.audit import audit
from xcyto.audit._run import AUDIT_MAX_STEPS
from xcyto.data import load_dataset
from xcyto.explain import default_bundle_path, explain


def relabel(dataset, share: float, seed: int = 0):
    """A copy of ``dataset`` with ``share`` of its cells given another class's label."""
    rng = np.random.default_rng(seed)
    samples = list(dataset.samples)
    for index in rng.choice(len(samples), size=int(round(share * len(samples))), replace=False):
        wrong = (samples[index].label + int(rng.integers(1, len(dataset.classes)))) % len(dataset.classes)
        samples[index] = dataclasses.replace(samples[index], label=wrong, class_name=dataset.classes[wrong])
    return dataclasses.replace(dataset, samples=samples)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.2, help="share of cells given a wrong label")
    parser.add_argument("--steps", default="auto", help="integrated-gradient steps: 'auto' (the default: until "
                                                         "the attributions add up) or a number")
    parser.add_argument("--baseline-cases", type=int, default=8, help="cases explained one by one for the baseline")
    args = parser.parse_args(argv)
    args.steps = args.steps if args.steps == "auto" else int(args.steps)

    bundle = xcyto.load(default_bundle_path())
    size = bundle.config["training"]["synthetic_size"]
    original = load_dataset(f"synthetic:n={args.cells},size={size},seed=101")
    cells = relabel(original, args.noise)
    planted = {cell_id for cell_id, old, new in zip(cells.cell_ids, original.labels, cells.labels) if old != new}
    started = time.perf_counter()
    result = audit(bundle, cells, steps=args.steps, map_method="pca")
    audit_seconds = time.perf_counter() - started
    cases = result.cases
    found = sum(case.cell_id in planted for case in cases[:len(planted)])

    sample = cases[:args.baseline_cases]
    started = time.perf_counter()
    for case in sample:  # the same maps as the audit: every method for the predicted class, Grad-CAM for the other
        image = cells.samples[case.index].image
        explain(image, bundle, target=case.predicted, neighbours=0, tta=False, steps=args.steps,
                max_steps=AUDIT_MAX_STEPS)
        explain(image, bundle, methods="gradcam", target=case.other, neighbours=0, tta=False)
    per_case_naive = (time.perf_counter() - started) / max(len(sample), 1)
    naive_total = per_case_naive * len(cases)

    print(f"demo bundle ({bundle.architecture}, {size} px), {len(cells)} synthetic cells, "
          f"{len(planted)} relabelled; Grad-CAM + IG ({args.steps} steps, at most {AUDIT_MAX_STEPS}) for the "
          "predicted class and Grad-CAM for the other class of each case")
    print()
    stages = result.settings["seconds_by_stage"]
    explain_seconds = stages["explain_cases"]
    print("| cells | cases | audit (s) | of which: predict + score / explain cases / rest (s) | cells / min | "
          "explaining the cases one by one (s, extrapolated) | batched vs one by one |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    print(f"| {len(cells)} | {len(cases)} | {audit_seconds:.1f} | {stages['predict_and_score']:.1f} / "
          f"{explain_seconds:.1f} / {stages['neighbours_map_metrics']:.1f} | {60 * len(cells) / audit_seconds:.0f} | "
          f"{naive_total:.1f} | {naive_total / explain_seconds:.2f}x |")
    print()
    print(f"planted label errors among the top {len(planted)} cases: {found} of {len(planted)} "
          f"({100 * found / max(len(planted), 1):.0f} %)")


if __name__ == "__main__":
    main()
