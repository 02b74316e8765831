"""``xcyto gallery build``, ``xcyto gallery flag-rate`` and ``xcyto project``."""
from __future__ import annotations

import argparse
from pathlib import Path

GALLERY_EPILOG = """examples:
  # embed the training cells of a bundle (its split.csv picks them) and store them in it
  xcyto gallery build --bundle runs/herlev/bundle --data ../shared/data/herlev

  # also fit the UMAP and t-SNE maps now instead of on first use
  xcyto gallery build --bundle runs/herlev/bundle --data ../shared/data/herlev --projections pca,umap,tsne

  # how many held-out cells are flagged "unlike the training cells" (expect about 1%)
  xcyto gallery flag-rate --bundle runs/herlev/bundle --data ../shared/data/herlev --split test"""

PROJECT_EPILOG = """examples:
  # test cells on the UMAP map of the training cells, misclassified ones ringed in red
  xcyto project --bundle runs/herlev/bundle --data ../shared/data/herlev --split test --method umap --out umap.png

  # the training map alone (PCA), with the positions written to a CSV
  xcyto project --bundle runs/herlev/bundle --data ../shared/data/herlev --split none --method pca --out pca.png"""



def register(subparsers) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    gallery = subparsers.add_parser("gallery", help="training-cell gallery of a bundle (neighbours, maps, atypicality)",
                                    description="Build or check the gallery of training-cell embeddings a bundle "
                                    "uses for nearest neighbours, maps and the atypicality flag.",
                                    epilog=GALLERY_EPILOG, formatter_class=formatter)
    actions = gallery.add_subparsers(dest="gallery_command", metavar="ACTION")

    build = actions.add_parser("build", help="embed the training cells and store them in the bundle",
                               epilog=GALLERY_EPILOG, formatter_class=formatter)
    _add_data_arguments(build, default_split="train")
    build.add_argument("--thumbnail-size", type=int, default=96, help="thumbnail side in pixels (default %(default)s)")
    build.add_argument("--k", type=int, default=5, help="neighbour rank of the atypicality score (default %(default)s)")
    build.add_argument("--percentile", type=float, default=99.0,
                       help="training percentile above which a cell is flagged (default %(default)s)")
    build.add_argument("--projections", default="pca",
                       help="maps to fit now, comma-separated from umap,pca,tsne (default %(default)s; "
                       "the others are fitted on first use)")
    build.set_defaults(func=run_gallery_build)

    flag_rate = actions.add_parser("flag-rate", help="share of cells flagged as unlike the training cells",
                                   epilog=GALLERY_EPILOG, formatter_class=formatter)
    _add_data_arguments(flag_rate, default_split="test")
    flag_rate.add_argument("--out", default=None, help="write the result as JSON here")
    flag_rate.set_defaults(func=run_flag_rate)
    gallery.set_defaults(func=lambda args: gallery.print_help() or 1)

    project = subparsers.add_parser("project", help="place cells on the bundle's training map (UMAP, PCA, t-SNE)",
                                    description="Draw the 2-D map of a bundle's training cells, coloured by class, "
                                    "with the cells of --data placed on it and the misclassified ones ringed.",
                                    epilog=PROJECT_EPILOG, formatter_class=formatter)
    _add_data_arguments(project, default_split="all", allow_none=True)
    project.add_argument("--method", default="umap", choices=("umap", "pca", "tsne"),
                         help="map (default %(default)s; t-SNE can only show the training cells: --split none)")
    project.add_argument("--out", required=True, help="figure path (.png, .pdf, .svg)")
    project.add_argument("--csv", default=None, help="also write each placed cell's position, prediction and flag")
    project.set_defaults(func=run_project)


def _add_data_arguments(parser, default_split: str, allow_none: bool = False) -> None:
    parser.add_argument("--bundle", required=True, help="bundle folder")
    parser.add_argument("--data", required=not allow_none, default=None,
                        help="dataset folder, CSV manifest or 'synthetic' (the bundle's own synthetic cells)")
    choices = ("all", "train", "val", "test") + (("none",) if allow_none else ())
    parser.add_argument("--split", default=default_split, choices=choices,
                        help="cells of this split of the bundle's split.csv (default %(default)s); every cell "
                        "when the bundle has no split.csv or none of the data's cells is in it (new data)")
    parser.add_argument("--scheme", default=None, help="label scheme (default: the bundle's)")
    parser.add_argument("--synthetic-seed", type=int, default=None,
                        help="with --data synthetic: new cells from this seed instead of the bundle's own")
    parser.add_argument("--synthetic-n", type=int, default=None,
                        help="with --data synthetic and --synthetic-seed: how many new cells (default: the bundle's)")
    parser.add_argument("--batch-size", type=int, default=64)


def load_cells(bundle, data: str, split: str, scheme: str | None = None, synthetic_seed: int | None = None,
               synthetic_n: int | None = None):
    """The cells of ``data`` in ``split`` of the bundle's manifest, and a note on what was taken.

    The manifest is ``split.csv`` in the bundle, else in the run folder holding it. With
    no manifest every cell is taken. ``data="synthetic"`` regenerates the synthetic cells
    the bundle was trained on (same number, size and seed).
    """
    from xcyto.data import load_dataset
    from xcyto.training import cells_in_split

    training = bundle.config.get("training", {})
    if data == "synthetic":
        options = {key: training[name] for key, name in (("n", "synthetic_n"), ("size", "synthetic_size"),
                                                         ("seed", "seed")) if name in training}
        if synthetic_seed is not None:
            options["seed"] = synthetic_seed
            if synthetic_n is not None:
                options["n"] = synthetic_n
        dataset = load_dataset("synthetic", **options)
    else:
        if scheme is None and bundle.config.get("label_scheme", "default") != "default":
            scheme = bundle.config["label_scheme"]
        dataset = load_dataset(data, scheme=scheme)
    if synthetic_seed is not None and split != "all":
        return dataset, f"all {len(dataset)} synthetic cells of seed {synthetic_seed} (new cells: no split applies)"
    return cells_in_split(bundle, dataset, split)


def run_gallery_build(args) -> int:
    from xcyto.loading import load
    from xcyto.embedding import build_gallery, check_method

    bundle = load(args.bundle)
    dataset, note = load_cells(bundle, args.data, args.split, args.scheme, args.synthetic_seed, args.synthetic_n)
    projections = tuple(check_method(name) for name in args.projections.split(",") if name.strip())
    print(f"gallery of {note}")
    held_out = None
    from xcyto.training import find_manifest

    if args.split == "train" and find_manifest(bundle) is not None:  # calibrate the flag on the validation cells
        held_out, _ = load_cells(bundle, args.data, "val", args.scheme, args.synthetic_seed, args.synthetic_n)
    gallery = build_gallery(bundle, dataset, thumbnail_size=args.thumbnail_size, batch_size=args.batch_size,
                            k=args.k, percentile=args.percentile, projections=projections, progress=True,
                            calibration_cells=held_out)
    counts = ", ".join(f"{name} {count}" for name, count in zip(gallery.classes, gallery.meta["class_counts"]))
    print(f"wrote {gallery.path}: {len(gallery)} cells x {gallery.embedding_dim} dims ({counts}); "
          f"a cell is flagged as atypical above the {gallery.calibration.percentile:g}th percentile of "
          f"{gallery.meta['atypicality']['calibrated_on']} (k = {gallery.calibration.k} neighbours)")
    return 0


def run_flag_rate(args) -> int:
    from xcyto.atomic import write_json_atomic
    from xcyto.loading import load
    from xcyto.embedding import false_flag_rate

    bundle = load(args.bundle)
    dataset, note = load_cells(bundle, args.data, args.split, args.scheme, args.synthetic_seed, args.synthetic_n)
    result = false_flag_rate(bundle, dataset, batch_size=args.batch_size)
    print(f"{note}: {result['flagged']} of {result['n']} flagged as unlike the training cells "
          f"({100 * result['rate']:.1f}%; expected about {100 - result['percentile']:g}% for cells like them)")
    for name, rate in result["per_class"].items():
        print(f"  {name:<24} {100 * rate:5.1f}%")
    if args.out:
        write_json_atomic(Path(args.out), {**result, "bundle": str(args.bundle), "data": args.data,
                                           "split": args.split})
        print(f"wrote {args.out}")
    return 0


def run_project(args) -> int:
    from xcyto.loading import load
    from xcyto.embedding import place_cells, plot_embedding_map, require_gallery
    from xcyto.plotting import save_figure

    from xcyto.errors import DataError, XcytoError

    if args.split != "none" and args.method == "tsne":
        raise XcytoError("t-SNE cannot place new cells on its map (it has no transform); use --method umap or "
                         "pca, or --split none to draw the training cells alone")
    if args.split != "none" and args.data is None:
        raise DataError("--data is needed to place cells (or --split none to draw the training map alone)")
    bundle = load(args.bundle)
    gallery = require_gallery(bundle)
    projection = gallery.projection(args.method)
    placement = None
    if args.split != "none":
        dataset, note = load_cells(bundle, args.data, args.split, args.scheme, args.synthetic_seed, args.synthetic_n)
        placement = place_cells(bundle, dataset, method=args.method, batch_size=args.batch_size, progress=True)
        print(f"placed {note} on the {projection.method} map: {int(placement.errors.sum())} misclassified "
              f"(ringed), {int(placement.atypical.sum())} flagged as unlike the training cells")
    figure = plot_embedding_map(
        projection.coords, gallery.labels, gallery.classes,
        placed=None if placement is None else placement.coords,
        placed_labels=None if placement is None else _plotted_labels(placement),
        errors=None if placement is None else placement.errors, method=projection.method,
        title=f"{bundle.name}: {projection.method.upper() if projection.method != 'tsne' else 't-SNE'} "
              f"of {len(gallery)} training cells" + ("" if placement is None else f", {len(placement.coords)} placed"))
    print(f"wrote {save_figure(figure, args.out)}")
    if args.csv and placement is not None:
        _write_placement_csv(Path(args.csv), placement, bundle.classes)
        print(f"wrote {args.csv}")
    return 0


def _plotted_labels(placement):
    # Cells whose classes the bundle does not know are drawn in the colour of the predicted class.
    return placement.labels if (placement.labels >= 0).all() else placement.predictions


def _write_placement_csv(path: Path, placement, classes: list[str]) -> None:
    import csv
    import io
    import os
    import tempfile

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["cell_id", "x", "y", "true", "predicted", "misclassified", "atypicality", "atypical"])
    for index, cell_id in enumerate(placement.cell_ids):
        label = int(placement.labels[index])
        writer.writerow([cell_id, f"{placement.coords[index, 0]:.5f}", f"{placement.coords[index, 1]:.5f}",
                         classes[label] if label >= 0 else "", classes[int(placement.predictions[index])],
                         int(placement.errors[index]), f"{placement.atypicality_scores[index]:.2f}",
                         int(placement.atypical[index])])
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", newline="") as stream:
        stream.write(text.getvalue())
    os.replace(temporary, path)

