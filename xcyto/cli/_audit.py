"""``xcyto audit``: every misclassified or doubtful cell of a split, explained, scored and ranked."""
from __future__ import annotations

import argparse

from xcyto.cli._embedding import _add_data_arguments, load_cells
from xcyto.cli._train import add_tta_override, tta_override

EPILOG = """examples:
  # the test cells of the bundle's own split; open audit-herlev/report.html in a browser
  xcyto audit --bundle runs/herlev/bundle --data ../shared/data/herlev --split test --out audit-herlev

  # quicker: Grad-CAM only, the 50 most suspicious cases, correct calls below 80% count too
  xcyto audit --bundle runs/herlev/bundle --data ../shared/data/herlev --methods gradcam \\
      --max-cases 50 --confidence 0.8 --out audit-quick

  # a folder of cells the bundle never saw (class sub-folders named like the bundle's classes):
  # none of them is in its split.csv, so every cell is audited, and the report says so
  xcyto audit --bundle artifacts/herlev-bundle --data new-cells/ --out audit-new

  # the shipped demo bundle on new synthetic cells
  xcyto audit --bundle artifacts/demo-bundle --data synthetic --synthetic-seed 7 --synthetic-n 200 --out audit-demo

writes: report.html (self-contained: open it anywhere), cases.csv (every case with every
score, ranked), cells.csv (every cell), audit.json (settings, metrics), figures/, images/."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit", help="find and explain where a model goes wrong (HTML report, CSV)",
        description="Predict every cell of a split, then explain each misclassified cell and each correct one "
        "below --confidence (every method's heatmap for the predicted class, the CAM methods' for the given one, "
        "nearest training cells of both, the cell's measured morphology), score how suspicious it is (label-issue "
        "score by confident learning, neighbour disagreement, atypicality, agreement of the explanation methods, "
        "disagreement of the morphometric model) and rank the cases most worth a look first.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_data_arguments(parser, default_split="test")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    parser.add_argument("--methods", default="gradcam,integrated_gradients",
                        help="explanation methods, comma-separated (default %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="integrated-gradient steps (default: until they add up within 5 %%, at most 65 points)")
    parser.add_argument("--confidence", type=float, default=0.6,
                        help="correct calls below this calibrated probability are cases too (default %(default)s)")
    parser.add_argument("--k", type=int, default=10, help="neighbours voting in neighbour disagreement (default %(default)s)")
    parser.add_argument("--max-cases", type=int, default=None,
                        help="explain only this many cases, the most suspicious by the other signals (default: all)")
    parser.add_argument("--map", default="umap", choices=("umap", "pca", "none"),
                        help="map of the summary (default %(default)s)")
    parser.add_argument("--title", default=None, help="title of the report")
    parser.add_argument("--data-check", default="auto",
                        help="auto (check the audited crops first: a case with no nucleus, a cut nucleus, blur ... "
                        "is read as a data issue, not a model error), off, or a folder written by 'xcyto data "
                        "check' on the same cells (default %(default)s)")
    add_tta_override(parser)
    parser.set_defaults(func=run_audit)


def run_audit(args) -> int:
    from xcyto.audit import audit
    from xcyto.loading import load

    bundle = load(args.bundle)
    dataset, note = load_cells(bundle, args.data, args.split, args.scheme, args.synthetic_seed, args.synthetic_n)
    print(f"auditing {bundle.name} on {note}")
    options = {} if args.steps is None else {"steps": args.steps}
    data_check = {"auto": True, "off": False}.get(args.data_check)
    if data_check is None:
        from xcyto.data.health import load_check

        data_check = load_check(args.data_check)
        index_of = {path: i for i, path in enumerate(data_check.paths)}
        missing = [cell_id for cell_id in dataset.cell_ids if cell_id not in index_of]
        if missing:
            from xcyto.errors import DataError

            raise DataError(f"{args.data_check} did not check {len(missing)} of the audited cells "
                            f"(e.g. {missing[0]}); use --data-check auto")
        data_check = _subset_check(data_check, [index_of[cell_id] for cell_id in dataset.cell_ids])
    result = audit(bundle, dataset, methods=args.methods, confidence=args.confidence, k=args.k,
                   max_cases=args.max_cases, map_method=None if args.map == "none" else args.map,
                   batch_size=args.batch_size, progress=True, data_note=note, tta=tta_override(args),
                   data_check=data_check, **options)
    written = result.save(args.out, title=args.title)
    kinds = {kind: count for kind, count in result.kind_counts().items() if count}
    metrics = result.metrics
    print(f"{len(result.cell_ids)} cells: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}; "
          f"{len(result.cases)} cases ({', '.join(f'{n} {kind}' for kind, n in kinds.items()) or 'none'}) "
          f"in {result.settings['seconds']:.0f} s")
    if result.settings.get("data_issues"):
        issues = result.settings["data_issues"]
        print(f"data checks: {issues['crops']} audited crops have a data issue ({issues['cases']} of the cases): "
              f"{issues['health']}")
    for case in result.cases[:5]:
        print(f"  #{case.rank} {case.cell_id}: {case.reading} (suspicion {case.suspicion:.2f})")
    print(f"wrote {written['report']}, {written['cases']} and figures in {written['figures']}")
    return 0


def _subset_check(result, indices: list[int]):
    """The saved check restricted to the audited cells, in their order."""
    from dataclasses import replace

    from xcyto.data.health import Issue

    position = {old: new for new, old in enumerate(indices)}
    issues = [Issue(i.path, i.check, i.score, i.threshold, i.reason, position[i.index])
              for i in result.issues if i.index in position]
    return replace(result, paths=[result.paths[i] for i in indices], files=[result.files[i] for i in indices],
                   labels=result.labels[indices], groups=[result.groups[i] for i in indices],
                   scores={name: values[indices] for name, values in result.scores.items()}, issues=issues, pairs=[])
