"""Latency of explanation methods: ours (batched) vs the floor vs the naive way, in one run.

For each model and method, milliseconds per cell for one cell and for a batch:

- ours: ``xcyto.explain.explain_batch`` with that method alone (its shared forward included);
- floor: the bare passes the method needs, timed in the same run on the same inputs:
  1 forward+backward for the gradient CAMs and saliency, ``steps`` forward+backward for
  integrated gradients (in the same chunks ours uses), ``samples`` for SmoothGrad;
- naive: the libraries called one image at a time with their defaults
  (``pytorch_grad_cam.GradCAM`` on the same layer; captum ``IntegratedGradients`` with
  the same number of steps and no ``internal_batch_size``), timed on two cells.

Then ``xcyto.explain()`` of one cell at a time with its defaults (Grad-CAM, integrated
gradients until they add up within 5 %, 8 neighbours) on the shipped bundles' held-out
example cells, against the bare passes the same cell needed, timed right after it.

    python bench/explain_latency.py                 # full: batch 32, IG 32 steps, 3 repeats
    python bench/explain_latency.py --end-to-end-only   # explain() on real cells, one at a time
    python bench/explain_latency.py --quick         # batch 4, IG 16 steps: about a minute on 2 CPU cores
    python bench/explain_latency.py --models resnet18 --batch 8 --methods gradcam,smoothgrad
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xcyto.explain import explain_batch, get_method  # noqa: E402
from xcyto.explain import Context  # noqa: E402
from xcyto.models import create, get_layer, get_spec  # noqa: E402

FLOOR_PASSES = {"gradcam": 1, "gradcampp": 1, "hirescam": 1, "layercam": 1, "saliency": 1, "guided_gradcam": 2}


def now(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def timed(function, device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = now(device)
        function()
        times.append(now(device) - start)
    return statistics.median(times)


def timed_together(functions, device, repeats: int) -> list[float]:
    """Median seconds of each function, called in turn ``repeats`` times after one warm-up each,
    so a change in load on the shared machine affects all of them alike."""
    for function in functions:
        if function:
            function()
    times = [[] for _ in functions]
    for _ in range(repeats):
        for index, function in enumerate(functions):
            if function:
                start = now(device)
                function()
                times[index].append(now(device) - start)
    return [statistics.median(t) if t else float("nan") for t in times]


def forward_backward(model, rows: torch.Tensor, chunk: int) -> None:
    """The bare passes: forward and input-gradient backward of ``rows``, in chunks."""
    for part in rows.split(chunk):
        inputs = part.detach().requires_grad_(True)
        torch.autograd.grad(model(inputs)[:, 0].sum(), inputs)


def floor_function(model, batch, method: str, options: dict):
    name = get_method(method).name
    if name in ("integrated_gradients", "smoothgrad"):
        count = options["steps"] if name == "integrated_gradients" else options.get("samples", 16)
        context = Context(model, batch, layer=None, embedding_layer=None)
        chunk = options.get("internal_batch_size") or context.rows_per_chunk(backward=True)
        rows = batch.repeat(count, 1, 1, 1)

        def passes():  # in the layout ours uses for many passes (channels-last on CPU), to time overhead only
            context.many_passes()
            try:
                forward_backward(model, rows, chunk)
            finally:
                context.restore()

        return passes, f"{count} fwd+bwd (chunks of {chunk})"
    passes = FLOOR_PASSES.get(name)
    if passes is None:
        return None, "-"
    return lambda: [forward_backward(model, batch, batch.shape[0]) for _ in range(passes)], f"{passes} fwd+bwd"


def naive_function(model, batch, method: str, options: dict, layer: str):
    name = get_method(method).name
    targets = [0] * batch.shape[0]
    if name == "gradcam":
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = GradCAM(model=model, target_layers=[get_layer(model, layer)])
        return lambda: [cam(image[None], targets=[ClassifierOutputTarget(t)]) for image, t in zip(batch, targets)]
    if name == "integrated_gradients":
        from captum.attr import IntegratedGradients

        ig = IntegratedGradients(model)
        return lambda: [ig.attribute(image[None], target=t, n_steps=options["steps"]) for image, t in zip(batch, targets)]
    return None


def bench_model(name: str, args, device) -> list[dict]:
    spec = get_spec(name)
    model = create(name, num_classes=5).eval().to(device)
    generator = torch.Generator().manual_seed(0)
    rows, naive_ms = [], {}
    for batch_size in sorted({1, args.batch}):
        batch = torch.randn(batch_size, 3, args.size, args.size, generator=generator).to(device)
        for method in args.methods:
            method_name = get_method(method).name
            options = {k: v for k, v in {"steps": args.steps, "samples": args.samples}.items()
                       if k in get_method(method).options}
            floor, floor_label = floor_function(model, batch, method_name, {**options, "steps": args.steps})
            ours, floor_seconds = timed_together(
                [lambda: explain_batch(model, batch, [method_name], targets=0, layer=spec.cam_layer(args.size),
                                       normalise=None, options=options), floor], device, args.repeats)
            # one image at a time costs the same per cell at any batch size: time it on a few cells once
            key = (name, method_name)
            if key not in naive_ms and not args.no_naive:
                few = batch[: min(2, batch_size)]
                naive = naive_function(model, few, method_name, {"steps": args.steps}, spec.cam_layer(args.size))
                naive_ms[key] = timed(naive, device, 1) / few.shape[0] * 1000 if naive else float("nan")
            rows.append({"model": name, "method": method_name, "batch": batch_size,
                         "ours": ours / batch_size * 1000, "floor": floor_seconds / batch_size * 1000,
                         "floor_label": floor_label, "naive": naive_ms.get(key, float("nan"))})
            print_row(rows[-1], flush=True)
    return rows


def print_header() -> None:
    print("| model | method | batch | ours ms/cell | floor ms/cell | ours / floor | floor is | naive ms/cell | naive / ours |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|")


def print_row(row: dict, flush: bool = False) -> None:
    ratio = row["ours"] / row["floor"] if row["floor"] == row["floor"] else float("nan")
    speedup = row["naive"] / row["ours"] if row["naive"] == row["naive"] else float("nan")
    print(f"| {row['model']} | {row['method']} | {row['batch']} | {row['ours']:.1f} | {row['floor']:.1f} | "
          f"{ratio:.2f} | {row['floor_label']} | {row['naive']:.1f} | {speedup:.1f}x |", flush=flush)


def bench_end_to_end(args, device) -> None:
    """``xcyto.explain()`` of one cell at a time with its defaults (Grad-CAM, integrated
    gradients until they add up, 8 neighbours), on real cells when a Herlev bundle is at
    hand, against the floor of the same cell: the forward+backward passes its IG used (and
    one for Grad-CAM) on the bare model, timed right after it."""
    from xcyto.data import read_image
    from xcyto.explain import explain
    from xcyto.explain import default_bundle_path, resolve_bundle

    candidates = []
    herlev = Path(__file__).resolve().parents[1] / "artifacts" / "herlev-bundle"
    examples = Path(__file__).resolve().parents[1] / "artifacts" / "examples-herlev"
    if (herlev / "bundle.json").is_file():
        cells = [read_image(path) for path in sorted(examples.glob("*.jp*g"))[: args.cells]]
        candidates.append((resolve_bundle(herlev), cells, f"the Herlev bundle on {len(cells)} held-out Herlev cells"))
    rng = np.random.default_rng(0)
    noise = [(rng.random((args.size, args.size, 3)) * 255).astype(np.uint8) for _ in range(2)]
    candidates.append((temporary_bundle(args), noise, "Lite0 (ImageNet, untrained 5-class head), random images"))
    demo = default_bundle_path()
    if demo.is_dir():
        synthetic = sorted((demo.parent / "examples").glob("*.png"))[: args.cells]
        candidates.append((resolve_bundle(demo), [read_image(path) for path in synthetic],
                           f"the demo bundle on {len(synthetic)} synthetic cells"))
    print()
    print("| bundle | input | cells | explain() ms/cell: median | p90 | IG steps: median | max | adds up (5 %) "
          "| floor ms/cell: median | explain / floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for bundle, images, where in candidates:
        bundle.to(device)
        explain(images[0], bundle)  # warm-up: caches, the folded copy
        totals, floors, steps, converged = [], [], [], []
        for image in images:
            start = now(device)
            explanation = explain(image, bundle)
            totals.append(now(device) - start)
            info = explanation.heatmap("integrated_gradients").info
            steps.append(int(info["steps"]))
            converged.append(bool(info["converged"]))
            batch = bundle.preprocess(image)
            rows = batch.repeat(steps[-1] + 1, 1, 1, 1)
            chunk = Context(bundle.model, batch, layer=None, embedding_layer=None).rows_per_chunk(backward=True)
            floors.append(timed(lambda: forward_backward(bundle.model, rows, chunk), device, 1))
        ms, floor = np.array(totals) * 1000, np.array(floors) * 1000
        print(f"| {where} | {bundle.input_size} px | {len(images)} | {np.median(ms):.0f} | "
              f"{np.percentile(ms, 90):.0f} | {np.median(steps):.0f} | {max(steps)} | "
              f"{sum(converged)}/{len(converged)} | {np.median(floor):.0f} | {np.median(ms / floor):.2f} |", flush=True)


def temporary_bundle(args):
    from xcyto.bundle import Bundle
    from xcyto.data import CellDataset, CellSample
    from xcyto.embedding import build_gallery

    spec = get_spec("efficientnet_lite0")
    classes = [f"class{i}" for i in range(5)]
    bundle = Bundle(model=create("efficientnet_lite0", num_classes=5).eval(),
                    config={"architecture": "efficientnet_lite0", "classes": classes, "input_size": args.size,
                            "mean": list(spec.mean), "std": list(spec.std)})
    bundle.save(Path(tempfile.mkdtemp(prefix="xcyto-bench-")) / "bundle")
    rng = np.random.default_rng(1)
    samples = [CellSample(image=(rng.random((64, 64, 3)) * 255).astype(np.uint8), label=i % 5,
                          class_name=classes[i % 5], cell_id=f"c{i}", group=f"g{i}") for i in range(args.gallery_cells)]
    build_gallery(bundle, CellDataset(samples=samples, classes=classes, name="random"))
    return bundle


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_lite0,resnet18")
    parser.add_argument("--methods", default="gradcam,integrated_gradients")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32, help="IG steps")
    parser.add_argument("--samples", type=int, default=16, help="SmoothGrad samples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gallery-cells", type=int, default=64)
    parser.add_argument("--cells", type=int, default=14, help="cells explained one by one, end to end")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-naive", action="store_true", help="skip the per-image library baselines")
    parser.add_argument("--end-to-end-only", action="store_true", help="only explain() of real cells, one at a time")
    parser.add_argument("--quick", action="store_true",
                        help="batch 4, IG 16 steps, 1 repeat: about a minute on 2 quiet CPU cores")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.gallery_cells, args.steps = min(args.batch, 4), 1, 16, min(args.steps, 16)
    args.models = [m for m in args.models.split(",") if m]
    args.methods = [m for m in args.methods.split(",") if m]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"explain latency on {name}, {args.size} px, IG {args.steps} steps, batch {args.batch}, "
          f"median of {args.repeats}; torch {torch.__version__}; load average {_load()}\n")
    if not args.end_to_end_only:
        print_header()
        for model in args.models:
            bench_model(model, args, device)
    if "efficientnet_lite0" in args.models or args.end_to_end_only:
        bench_end_to_end(args, device)
    print(f"\nload average at the end: {_load()} (other processes share the CPU: compare columns, not runs)")
    return 0


def _load() -> str:
    try:
        return " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
