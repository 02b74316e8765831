"""``xcyto compare``, ``xcyto ensemble`` and ``xcyto card``."""
from __future__ import annotations

import argparse

from xcyto.cli._train import add_data_options, add_fit_options, train_settings

COMPARE_EPILOG = """examples:
  # the README's Herlev table: three EfficientNet-Lite models, 5-fold group-aware cross-validation,
  # the same settings for all, the morphometric baseline beside them (about 5 minutes per model
  # and fold on 2 CPU cores)
  xcyto compare --data ../shared/data/herlev --models efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 \\
      --folds 5 --image-size 160 --epochs 12 --patience 0 --balance none --morphometry --out runs/cv-herlev

  # every training setting at its default (input size and balancing from the data)
  xcyto compare --data ../shared/data/herlev --models efficientnet_lite0 --out runs/cv-herlev-defaults

  # quick: three architectures at 64 px
  xcyto compare --data ../shared/data/herlev --models efficientnet_lite0,resnet18,small_cnn \\
      --folds 5 --image-size 64 --epochs 6 --out runs/compare-herlev

  # per-model settings in brackets (any 'xcyto train' setting, with underscores)
  xcyto compare --data ../shared/data/herlev --models "efficientnet_lite0,resnet18[backbone_lr_mult=1,lr=2e-3]" \\
      --out runs/compare

  # interrupted? run the same command again: finished runs are kept, the interrupted one resumes
  xcyto compare --data ../shared/data/herlev --models efficientnet_lite0,resnet18,small_cnn --folds 5 \\
      --image-size 64 --epochs 6 --out runs/compare-herlev

  # seconds, on synthetic cells
  xcyto compare --data "synthetic:n=200,size=48,seed=0" --models "small_cnn,small_cnn[lr=3e-3]" --folds 3 \\
      --epochs 2 --out runs/compare-smoke"""

ENSEMBLE_EPILOG = """examples:
  # soft-voting ensemble of the fold-0 bundles of a comparison, weights fitted on their validation cells
  xcyto ensemble runs/compare-herlev/efficientnet_lite0/fold-0/bundle runs/compare-herlev/resnet18/fold-0/bundle \\
      runs/compare-herlev/small_cnn/fold-0/bundle --fit-weights --out runs/ensemble-herlev

  # given weights, then use it like any bundle
  xcyto ensemble A/bundle B/bundle --weights 2,1 --out runs/ensemble
  xcyto evaluate --bundle runs/ensemble --split test
  xcyto explain cell.bmp --bundle runs/ensemble --out explained/
  python demo/app.py --bundle runs/ensemble"""

CARD_EPILOG = """examples:
  xcyto card runs/herlev-lite0/bundle                                   # writes runs/herlev-lite0/bundle/MODEL_CARD.md
  xcyto card runs/herlev-lite0/bundle --data ../shared/data/herlev      # per-class metrics on its test split
  xcyto card runs/ensemble --out docs/ensemble-card.md"""


def register(subparsers) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    compare = subparsers.add_parser(
        "compare", help="cross-validated leaderboard of several architectures",
        description="Train several architectures under the same settings on k group-aware folds (each fold "
        "tested by models that never saw it), and write a leaderboard (Markdown, CSV, figure) with the "
        "soft-voting ensemble of each fold's models. Resumable: run it again to continue.",
        epilog=COMPARE_EPILOG, formatter_class=formatter)
    compare.add_argument("--models", required=True,
                         help="comma-separated architectures, each optionally with settings in brackets, "
                              "e.g. 'efficientnet_lite0,resnet18[backbone_lr_mult=1],small_cnn'")
    compare.add_argument("--folds", type=int, default=5, help="number of folds (default %(default)s)")
    compare.add_argument("--out", required=True, help="comparison folder")
    compare.add_argument("--morphometry", action="store_true",
                         help="also cross-validate gradient-boosted trees on the cells' morphometric features "
                              "(the interpretable baseline) on the same folds")
    compare.add_argument("--only-folds", default=None,
                         help="train only these folds, e.g. '0' to choose settings on fold 0's validation cells")
    compare.add_argument("--no-ensemble", dest="ensemble", action="store_false",
                         help="do not test the ensemble of each fold's models")
    add_data_options(compare)
    add_fit_options(compare)
    compare.set_defaults(func=run_compare)

    ensemble = subparsers.add_parser(
        "ensemble", help="combine bundles into one soft-voting bundle",
        description="Make a bundle that averages the calibrated probabilities of several bundles (same classes; "
        "input sizes may differ). It loads, evaluates, explains and serves like any bundle. When the members "
        "share a split (e.g. one fold of 'xcyto compare'), it is tested on that split's test cells.",
        epilog=ENSEMBLE_EPILOG, formatter_class=formatter)
    ensemble.add_argument("bundles", nargs="+", help="two or more bundle folders")
    ensemble.add_argument("--out", required=True, help="the ensemble's folder (members are copied into it)")
    ensemble.add_argument("--weights", default=None, help="comma-separated weights, one per bundle (default: equal)")
    ensemble.add_argument("--fit-weights", action="store_true",
                          help="fit the weights on the members' shared validation cells (lowest log-loss)")
    ensemble.add_argument("--data", default=None, help="the members' data (default: the source they record)")
    ensemble.add_argument("--scheme", default=None)
    ensemble.set_defaults(func=run_ensemble)

    card = subparsers.add_parser(
        "card", help="write a bundle's model card (Markdown)",
        description="Render a short Markdown model card: model, data and split, classes, per-class metrics, "
        "calibration, intended use and limits. Printed, and written to BUNDLE/MODEL_CARD.md (or --out).",
        epilog=CARD_EPILOG, formatter_class=formatter)
    card.add_argument("bundle", help="bundle or ensemble folder")
    card.add_argument("--data", default=None, help="compute the metrics on this data (default: those recorded)")
    card.add_argument("--split", default="test", choices=("all", "train", "val", "test"),
                      help="with --data: which split of the bundle's manifest (default %(default)s)")
    card.add_argument("--scheme", default=None)
    card.add_argument("--out", default=None, help="Markdown file (default BUNDLE/MODEL_CARD.md)")
    card.set_defaults(func=run_card)


def run_compare(args) -> int:
    from xcyto.training import compare

    settings = train_settings(args)
    for key in ("data", "scheme", "seed", "val_fraction", "out"):
        settings.pop(key)
    compare(args.data, args.models, args.out, folds=args.folds, seed=args.seed, scheme=args.scheme,
            val_fraction=args.val_fraction, ensemble=args.ensemble,
            only_folds=None if args.only_folds is None else _fold_list(args.only_folds),
            morphometry=args.morphometry, **settings)
    return 0


def _fold_list(text: str) -> list[int]:
    from xcyto.errors import TrainingError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TrainingError(f"--only-folds {text!r}: expected fold numbers such as '0' or '0,2'") from None


def run_ensemble(args) -> int:
    from xcyto.errors import BundleError

    weights = None
    if args.weights:
        try:
            weights = [float(value) for value in args.weights.split(",")]
        except ValueError:
            raise BundleError(f"--weights {args.weights!r}: expected numbers separated by commas") from None
    ensemble_command(args.bundles, args.out, weights=weights, fit=args.fit_weights, data=args.data,
                     scheme=args.scheme)
    return 0


def run_card(args) -> int:
    from xcyto.card import card_command

    card_command(args.bundle, data=args.data, split=args.split, scheme=args.scheme, out=args.out)
    return 0


def ensemble_command(bundles, out, weights=None, fit: bool = False, data=None, scheme=None) -> EnsembleBundle:
    """``xcyto ensemble``: build, optionally fit weights on validation, test, save, report."""
    from xcyto.ensemble import shared_split, fit_weights, make_ensemble, member_probabilities_on
    from xcyto.errors import BundleError
    from xcyto.training import evaluate_bundle, headline_metrics, select_split, training_data

    if fit and weights is not None:
        raise BundleError("give either weights or --fit-weights, not both")
    ensemble = make_ensemble(bundles, weights)
    reference = ensemble.members[0]  # select_split reads the manifest beside a bundle; the members share it
    dataset = None
    if fit or shared_split(ensemble.members) is not None:
        data = data or training_data(ensemble)
        if shared_split(ensemble.members) is None or not data:
            raise BundleError("fitting weights needs members that share a split (trained on the same split.csv, "
                              "e.g. one fold of 'xcyto compare') and their data (--data)")
        from xcyto.data import load_dataset

        label_scheme = ensemble.config.get("label_scheme", "default")
        dataset = load_dataset(data, scheme=scheme or (None if label_scheme == "default" else label_scheme))
    if fit:
        val = select_split(reference, dataset, "val")
        ensemble.set_weights(fit_weights(member_probabilities_on(ensemble, val.samples), val.labels))
        ensemble.config["weights_fitted_on"] = f"val ({len(val)} cells, negative log-likelihood)"
    if dataset is not None:
        cells = select_split(reference, dataset, "test")
        evaluated_on = "test" if len(cells) else "val"
        if not len(cells):
            cells = select_split(reference, dataset, "val")
        metrics = evaluate_bundle(ensemble, cells)
        ensemble.config["metrics"] = {"test": headline_metrics(metrics), "evaluated_on": evaluated_on}
    ensemble.save(out)
    summary = ", ".join(f"{name} {weight:.2f}" for name, weight in zip(ensemble.member_names, ensemble.weights))
    print(f"ensemble of {len(ensemble.members)} bundles ({summary}) -> {out}")
    test = ensemble.config["metrics"].get("test")
    if test:
        line = (f"{ensemble.config['metrics']['evaluated_on']} ({test['n']} cells): accuracy {test['accuracy']:.3f}, "
                f"macro-F1 {test['macro_f1']:.3f}, ECE {test['ece']:.3f}")
        if "binary_accuracy" in test:
            line += f", normal/abnormal accuracy {test['binary_accuracy']:.3f}"
        print(line)
    return ensemble
