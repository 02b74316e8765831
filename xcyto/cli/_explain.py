"""``xcyto explain`` and ``xcyto evaluate-explanations``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EXPLAIN_EPILOG = """examples:
  # Grad-CAM and integrated gradients of one cell with the demo bundle (figure + JSON in explanations/)
  xcyto explain cell.bmp

  # several cells (or a folder), a trained bundle, more methods, one colour scale for all cells
  xcyto explain cells/*.bmp --bundle runs/herlev/bundle --methods gradcam,gradcampp,smoothgrad \\
      --normalise shared --out explained/

  # why not koilocytotic? explain a class other than the prediction
  xcyto explain cell.bmp --target Koilocytotic

  # IG from a white baseline with 64 steps; keep the raw maps as .npy
  xcyto explain cell.bmp --methods ig --option steps=64 --option baseline=white --arrays

  # what methods exist and which options they take
  xcyto explain --list-methods"""

EVALUATE_EPILOG = """examples:
  # every default method on 64 synthetic cells (they have nucleus, cell and evidence masks)
  xcyto evaluate-explanations --bundle artifacts/demo-bundle --data synthetic --out eval-maps

  # Herlev with its masks, two methods, IG with 16 steps, 128 cells
  xcyto evaluate-explanations --bundle runs/herlev/bundle --data ../shared/data/herlev-40px-masks \\
      --methods gradcam,integrated_gradients --option steps=16 --n 128 --out eval-herlev"""


def register(subparsers) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    explain = subparsers.add_parser(
        "explain", help="heatmaps, probabilities and neighbours for cell images",
        description="Explain a classifier's decision on cell images: one figure (cell, heatmap per method, "
                    "calibrated probabilities, nearest training cells) and one JSON per cell.",
        epilog=EXPLAIN_EPILOG, formatter_class=formatter)
    explain.add_argument("images", nargs="*", metavar="IMAGE", help="cell image files or folders of them")
    explain.add_argument("--bundle", default=None,
                         help="bundle folder (default: $XCYTO_BUNDLE, else artifacts/demo-bundle)")
    explain.add_argument("--methods", default="gradcam,integrated_gradients",
                         help="comma-separated methods (default %(default)s); see --list-methods")
    explain.add_argument("--target", default=None,
                         help="class name or index to explain (default: the predicted class)")
    explain.add_argument("--out", default="explanations", help="output folder (default %(default)s)")
    explain.add_argument("--neighbours", type=int, default=8, help="nearest gallery cells to show (default %(default)s)")
    explain.add_argument("--normalise", choices=("individual", "shared"), default="individual",
                         help="display scale per map, or one per method across all cells (default %(default)s)")
    explain.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="method option, e.g. steps=64, baseline=white, samples=32, layer=backbone.layer3")
    explain.add_argument("--batch-size", type=int, default=32, help="cells per batch (default %(default)s)")
    explain.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: where the bundle loads)")
    explain.add_argument("--arrays", action="store_true", help="also write the raw maps as .npy")
    explain.add_argument("--list-methods", action="store_true", help="list the explanation methods and exit")
    explain.set_defaults(func=run_explain)

    evaluate = subparsers.add_parser(
        "evaluate-explanations", help="faithfulness of explanation methods: deletion/insertion, "
                                      "randomisation, localisation",
        description="Measure explanation methods on cells with known masks: deletion and insertion AUC, "
                    "cascading model randomisation, nucleus/cell/evidence localisation, IG completeness. "
                    "Writes a Markdown and CSV table (mean and 95 % bootstrap interval) and a figure.",
        epilog=EVALUATE_EPILOG, formatter_class=formatter)
    evaluate.add_argument("--bundle", default=None, help="bundle folder (default: $XCYTO_BUNDLE or the demo bundle)")
    evaluate.add_argument("--data", required=True, help="dataset folder, CSV manifest, or 'synthetic'")
    evaluate.add_argument("--n", type=int, default=64, help="cells to evaluate on (default %(default)s)")
    evaluate.add_argument("--methods", default=None,
                          help="comma-separated methods (default: all but scorecam and occlusion, plus random)")
    evaluate.add_argument("--out", required=True, help="output folder")
    evaluate.add_argument("--steps", type=int, default=20, help="points of the deletion/insertion curves")
    evaluate.add_argument("--randomisation-cells", type=int, default=8,
                          help="cells for the randomisation check (0 skips it; default %(default)s)")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                          help="method option, e.g. steps=16 for IG")
    evaluate.set_defaults(func=run_evaluate)


def parse_options(pairs: list[str]) -> dict:
    """``["steps=64", "baseline=white"]`` -> ``{"steps": 64, "baseline": "white"}`` (values as JSON when they parse)."""
    from xcyto.errors import ExplainError

    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ExplainError(f"--option needs KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def expand_images(arguments: list[str]) -> list[Path]:
    from xcyto.data import is_image_file
    from xcyto.errors import ImageError

    paths = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise ImageError(f"{path}: folder contains no image files")
            paths += found
        else:
            paths.append(path)
    return paths


def _unique_names(paths: list[Path]) -> list[str]:
    names, seen = [], {}
    for path in paths:
        stem = path.stem or "cell"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def run_explain(args) -> int:
    from xcyto.explain import describe_methods, explain
    from xcyto.errors import ExplainError

    if args.list_methods:
        print(describe_methods())
        return 0
    if not args.images:
        raise ExplainError("no images given; usage: xcyto explain IMAGE... (or --list-methods)")
    paths = expand_images(args.images)
    explanations = explain([str(p) for p in paths], bundle=args.bundle, methods=args.methods,
                           target=args.target, neighbours=args.neighbours, normalise=args.normalise,
                           batch_size=args.batch_size, device=args.device, **parse_options(args.option))
    out = Path(args.out)
    for name, explanation in zip(_unique_names(paths), explanations):
        explanation.save(out, name=name, arrays=args.arrays)
        maps = ", ".join(f"{m} {explanation.timings_ms.get(m, 0):.0f} ms" for m in explanation.heatmaps)
        flag = "  [atypical]" if explanation.atypical else ""
        print(f"{explanation.source}: predicted {explanation.predicted} ({explanation.confidence:.2f}), "
              f"explained {explanation.target}; {maps}{flag}")
    print(f"wrote {len(explanations)} figure(s) and JSON to {out}/")
    return 0


def run_evaluate(args) -> int:
    from xcyto.evaluation import evaluate_explanations

    report = evaluate_explanations(args.bundle, args.data, n=args.n, methods=args.methods, seed=args.seed,
                                   batch_size=args.batch_size, steps=args.steps,
                                   randomisation_cells=args.randomisation_cells, options=parse_options(args.option))
    paths = report.save(args.out)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
