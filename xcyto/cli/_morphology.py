"""``xcyto concepts`` and ``xcyto segment``: the cell features behind a classifier's calls."""
from __future__ import annotations

import argparse

from xcyto.cli._embedding import _add_data_arguments, load_cells

CONCEPTS_EXAMPLES = """examples:
  # which measured features drive each class of a Herlev model, on its training cells
  xcyto concepts --bundle artifacts/herlev-bundle --data ../shared/data/herlev --out concepts-herlev

  # the shipped synthetic bundle on new synthetic cells (its classes' defining features are known)
  xcyto concepts --bundle artifacts/demo-bundle --data synthetic --synthetic-seed 7 --synthetic-n 300 --out concepts"""

SEGMENT_EXAMPLES = """examples:
  xcyto segment cell.bmp --out segmented            # outlines (PNG) and measurements (JSON, CSV)
  xcyto segment cells/ --method classical --microns-per-pixel 0.2 --out segmented"""


def register(subparsers) -> None:
    concepts = subparsers.add_parser(
        "concepts", help="which cell features (N/C ratio, nuclear size, halo...) drive each class (TCAV)",
        description="Concept activation vectors from morphometry: for each feature, the training cells in its top "
                    "and bottom quartile are two concepts; the TCAV score of a class is the share of its cells whose "
                    "logit rises along the concept, tested against random concepts. Beside it, the rank correlation "
                    "of the feature with the class logit and the partial dependence of the morphometric model. Writes "
                    "concepts.csv, concepts.md, a figure per class, and BUNDLE/concepts.json (shown by the demo).",
        epilog=CONCEPTS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_data_arguments(concepts, default_split="train")
    concepts.add_argument("--out", required=True, help="folder for the table and the figures")
    concepts.add_argument("--runs", type=int, default=10, help="CAVs per feature (default %(default)s); the random CAVs they are tested against number max(runs, 20)")
    concepts.add_argument("--cells", type=int, default=600, help="cells to use at most (default %(default)s)")
    concepts.add_argument("--seed", type=int, default=0)
    concepts.set_defaults(func=run_concepts)

    segment = subparsers.add_parser(
        "segment", help="segment and measure single-cell images (nucleus, cell, 22 features)",
        description="Nucleus and cell masks and the morphometric features of each image.",
        epilog=SEGMENT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    segment.add_argument("images", nargs="+", help="image files or folders")
    segment.add_argument("--out", required=True, help="folder for outlines and measurements")
    segment.add_argument("--method", default=None, help="learned (the default when shipped) or classical")
    segment.add_argument("--microns-per-pixel", type=float, default=None,
                         help="report lengths and areas in micrometres")
    segment.set_defaults(func=run_segment)


def run_concepts(args) -> int:
    import numpy as np

    from xcyto.atomic import write_csv_atomic, write_json_atomic, write_text_atomic
    from xcyto.loading import load
    from xcyto.morphology import concept_scores, feature_table, list_features, plot_concepts
    from xcyto.plotting import save_figure

    bundle = load(args.bundle)
    dataset, note = load_cells(bundle, args.data, args.split, args.scheme, args.synthetic_seed, args.synthetic_n)
    samples = list(dataset.samples)
    if len(samples) > args.cells:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(samples), args.cells, replace=False))
        samples = [samples[i] for i in keep]
    print(f"concepts of {bundle.name} on {len(samples)} of {note}")
    features = feature_table(samples, progress=True)
    report = concept_scores(bundle, samples, features, list_features(), runs=args.runs, seed=args.seed, progress=True)
    report.settings.update(data=note, bundle_sha256=bundle.sha256)
    from pathlib import Path

    out = Path(args.out)
    write_csv_atomic(out / "concepts.csv", report.rows())
    write_text_atomic(out / "concepts.md", report.to_markdown())
    for class_name in dict.fromkeys(score.class_name for score in report.scores):
        save_figure(plot_concepts(report, class_name), out / f"concepts_{class_name}.png")
    record = {"settings": report.settings, "scores": report.rows()}
    write_json_atomic(out / "concepts.json", record)
    write_json_atomic(Path(args.bundle) / "concepts.json", record)
    print(report.to_markdown())
    strongest = sorted((s for s in report.scores if s.significant), key=lambda s: -abs(s.tcav - 0.5))[:5]
    for score in strongest:
        print(f"  {score.sentence()}")
    print(f"wrote {out / 'concepts.md'}, concepts.csv, a figure per class, and {Path(args.bundle) / 'concepts.json'}")
    return 0


def run_segment(args) -> int:
    from pathlib import Path

    from PIL import Image

    from xcyto.atomic import write_csv_atomic, write_json_atomic
    from xcyto.data import read_image
    from xcyto.morphology import analyse, outlined, preferred_segmenter
    from xcyto.training import collect_images

    method = args.method or preferred_segmenter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in collect_images(args.images):
        image = read_image(path)
        cell = analyse(image, method, microns_per_pixel=args.microns_per_pixel)
        Image.fromarray(outlined(image, cell.masks)).save(out / f"{path.stem}_outline.png")
        write_json_atomic(out / f"{path.stem}.json", {"source": str(path), **cell.to_dict()})
        rows.append({"path": str(path), **{name: round(value, 5) for name, value in cell.features.items()}})
    write_csv_atomic(out / "features.csv", rows)
    print(f"segmented {len(rows)} images with the {method} segmenter -> {out}")
    return 0
