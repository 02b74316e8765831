"""``xcyto data``: look at a dataset, check its crops, split it reproducibly, or generate synthetic cells."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from xcyto.errors import DataError

EPILOG = """examples:
  xcyto data summary ../shared/data/herlev
  xcyto data check ../shared/data/herlev --out herlev-check    # crops with no nucleus, blur, duplicates ...
  xcyto data summary ../shared/data/herlev --scheme binary
  xcyto data summary cells.csv                    # CSV manifest: path,label[,group]
  xcyto data split ../shared/data/herlev --out splits/herlev.csv --seed 0
  xcyto data split ../shared/data/herlev --out splits/herlev-5fold.csv --folds 5 --test-fraction 0.15
  xcyto data synth --n 1000 --size 128 --seed 0 --out synthetic-cells

Layouts are detected: SIPaKMeD (im_<Class>/ folders), Herlev (normal_*, *_dysplastic,
carcinoma_in_situ folders, optional -d.bmp masks), a .csv manifest, or any folder of
class sub-folders. Unreadable files are skipped and listed under 'warnings'."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="inspect, split or generate cell datasets",
        description="Inspect, split or generate cell datasets.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)

    summary = actions.add_parser(
        "summary", help="layout, classes, groups, image sizes, masks and problems of a dataset",
        description="Load a dataset and print what it holds: detected layout, cells and groups per\n"
                    "class, image sizes, masks, and any files that were skipped.",
        epilog="examples:\n  xcyto data summary ../shared/data/herlev\n"
               "  xcyto data summary ../shared/data/herlev-40px-masks\n  xcyto data summary synthetic",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_arguments(summary)
    summary.add_argument("--no-health", action="store_true",
                         help="skip the one-line data health check (segments every crop: about 40 s per 1,000)")
    summary.set_defaults(func=run_summary)

    check = actions.add_parser(
        "check", help="find crops with no nucleus, cut or off-centre nuclei, several cells, blur, duplicates ...",
        description="Check every crop of a dataset before training on it, with no classifier: is there a\n"
                    "nucleus, is it whole and centred, is there more than one cell, is the crop in focus,\n"
                    "well exposed, of the collection's size, a duplicate of another, or far from its\n"
                    "class's morphology? Writes issues.csv (path, check, score, threshold, reason), crops.csv\n"
                    "(every crop's score under every check), summary.json and a self-contained report.html.",
        epilog="examples:\n  xcyto data check ../shared/data/herlev --out herlev-check\n"
               "  xcyto data check cells.csv --out cells-check --bundle runs/herlev/bundle   # + embedding duplicates\n"
               "  xcyto data check cells.csv --out cells-check --checks no_nucleus,near_duplicate\n\n"
               "checks:\n" + "\n".join(f"  {name:22s} {description}" for name, description in _check_lines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_arguments(check)
    check.add_argument("--out", required=True, type=Path, help="folder to write the results to (replaced whole)")
    check.add_argument("--checks", default=None, help="comma-separated checks to run (default: all)")
    check.add_argument("--bundle", default=None, help="a trained bundle: its embeddings add near duplicates")
    check.set_defaults(func=run_check)

    split = actions.add_parser(
        "split", help="write a stratified, group-aware split manifest (CSV) and print its hash",
        description="Split a dataset by source group (stratified by class) and write the manifest\n"
                    "that makes the split reproducible. Fails if a group would leak across splits.",
        epilog="examples:\n  xcyto data split ../shared/data/herlev --out splits/herlev.csv\n"
               "  xcyto data split ../shared/data/herlev --out splits/cv.csv --folds 5 --test-fraction 0.15",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_arguments(split)
    split.add_argument("--out", required=True, type=Path, help="manifest CSV to write")
    split.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    split.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.15, 0.15),
                       metavar=("TRAIN", "VAL", "TEST"), help="split fractions (default 0.7 0.15 0.15)")
    split.add_argument("--folds", type=int, default=0, help="k-fold with this many folds instead of train/val/test")
    split.add_argument("--test-fraction", type=float, default=0.0,
                       help="with --folds: hold out this fraction as a fixed test set first")
    split.set_defaults(func=run_split)

    synth = actions.add_parser(
        "synth", help="generate synthetic Pap cells with masks, in the SIPaKMeD layout",
        description="Write procedurally generated cells (with nucleus/cytoplasm contours) in the\n"
                    "SIPaKMeD folder layout, so every loader and command can be tried without real data.",
        epilog="examples:\n  xcyto data synth --n 1000 --size 128 --seed 0 --out synthetic-cells\n"
               "  xcyto data summary synthetic-cells",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synth.add_argument("--n", type=int, default=1000, help="number of cells (default 1000)")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--out", required=True, type=Path, help="folder to write")
    synth.set_defaults(func=run_synth)


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="PATH", help="dataset folder, .csv manifest, or 'synthetic'")
    parser.add_argument("--scheme", choices=("default", "binary"), default=None,
                        help="label scheme: default, or binary (Herlev: normal vs abnormal)")
    parser.add_argument("--layout", default=None, help="skip detection: sipakmed, herlev, csv or folder")


def _load(args):
    from xcyto.data import DataWarning, load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # printed from dataset.warnings instead
        return load_dataset(args.source, scheme=args.scheme, **({"layout": args.layout} if args.layout else {}))


def _check_lines():
    from xcyto.data.health import CHECKS

    return [(name, check.title + (" (blocking)" if check.blocking else "")) for name, check in CHECKS.items()]


def run_summary(args) -> int:
    from xcyto.data import format_summary, summarize

    dataset = _load(args)
    print(format_summary(summarize(dataset)))
    if not args.no_health:
        from xcyto.data.health import check

        result = check(dataset, progress=True)
        line = result.health_line()
        print(line + (f": run xcyto data check {args.source} --out DIR for each crop and why" if result.issues else ""))
    return 0


def run_check(args) -> int:
    import time

    from xcyto.data.health import check

    dataset = _load(args)
    started = time.perf_counter()
    checks = [name.strip() for name in args.checks.split(",") if name.strip()] if args.checks else None
    result = check(dataset, checks=checks, bundle=args.bundle, progress=True)
    result.save(args.out, images=[sample.image for sample in dataset.samples])
    counts = result.counts()
    width = max(len(name) for name in counts)
    print(f"checked {len(dataset)} crops in {time.perf_counter() - started:.1f} s")
    for name, count in counts.items():
        print(f"  {name:<{width}}  {count:>5}  ({count / len(dataset):.1%})")
    print(result.health_line())
    print(f"wrote {args.out}/issues.csv, crops.csv, summary.json and report.html")
    return 0


def run_split(args) -> int:
    from xcyto.data import kfold_split, save_split_manifest, train_val_test_split

    dataset = _load(args)
    if args.folds:
        split = kfold_split(dataset, k=args.folds, seed=args.seed, test_fraction=args.test_fraction)
        parts = [f"fold {k}: {int((split.folds == k).sum())}" for k in range(split.n_folds)]
        parts.append(f"test: {len(split.test)}")
    else:
        split = train_val_test_split(dataset, fractions=args.fractions, seed=args.seed)
        parts = [f"{name}: {len(indices)}" for name, indices in split.indices.items()]
    digest = save_split_manifest(dataset, split, args.out)
    print(f"split {len(dataset)} cells ({', '.join(parts)}); no group or duplicate image crosses splits")
    for note in split.notes:
        print(f"warning: {note}")
    print(f"wrote {args.out}\nsha256 {digest}")
    return 0


def run_synth(args) -> int:
    try:
        from xcyto.data import write_sipakmed_layout
    except ModuleNotFoundError as error:
        if error.name != "xcyto.data._synthetic":
            raise
        raise DataError("the synthetic cell generator (xcyto.data._synthetic) is not installed") from None
    written = write_sipakmed_layout(args.out, n=args.n, seed=args.seed, size=args.size)
    where = written if isinstance(written, (str, Path)) else args.out
    print(f"wrote {args.n} synthetic cells ({args.size} px, seed {args.seed}) in the SIPaKMeD layout to {where}")
    print(f"next: xcyto data summary {where}")
    return 0
