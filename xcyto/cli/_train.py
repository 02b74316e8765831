"""``xcyto train``, ``xcyto evaluate``, ``xcyto predict`` and ``xcyto models``."""
from __future__ import annotations

import argparse
import os
from dataclasses import fields

from xcyto.training import BALANCE, ROTATIONS, SCHEDULES, TTA_MODES, VIEWS, TrainConfig

TRAIN_EPILOG = """examples:
  # fine-tune the default (EfficientNet-Lite0, offline ImageNet weights) on Herlev, 7 classes
  xcyto train --data ../shared/data/herlev --out runs/herlev-lite0

  # the same, normal vs abnormal
  xcyto train --data ../shared/data/herlev --scheme binary --out runs/herlev-binary

  # ResNet-18 from scratch, class-balanced loss, 30 epochs
  xcyto train --data ../shared/data/herlev --model resnet18 --weights none --balance loss --epochs 30 --out runs/r18

  # a small model on synthetic cells (no data needed)
  xcyto train --data synthetic --model small_cnn --epochs 5 --out runs/synthetic

  # continue an interrupted run
  xcyto train --out runs/herlev-lite0 --resume

  # two processes (GPUs, or CPU with gloo)
  torchrun --nproc_per_node=2 -m xcyto train --data ../shared/data/herlev --out runs/ddp"""

EVALUATE_EPILOG = """examples:
  xcyto evaluate --bundle runs/herlev-lite0/bundle --split test      # its own data and test split
  xcyto evaluate --bundle runs/herlev-lite0/bundle --data ../shared/data/herlev --split test
  xcyto evaluate --bundle artifacts/demo-bundle --data synthetic --out eval-synthetic"""

SCREEN_EPILOG = """examples:
  xcyto screen --bundle runs/herlev-lite0/bundle --sensitivity 0.98
  xcyto screen --bundle artifacts/herlev-bundle --data ../shared/data/herlev --dry-run

The guarantee is in expectation over new cells like the validation cells (conformal risk
control); it needs at least 1/(1 - SENSITIVITY) - 1 abnormal validation cells (49 for 0.98)."""

PREDICT_EPILOG = """examples:
  xcyto predict --bundle runs/herlev-lite0/bundle cell1.bmp cell2.bmp
  xcyto predict --bundle runs/herlev-lite0/bundle some/folder --out predictions.csv"""


def register(subparsers) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    train = subparsers.add_parser("train", help="train a classifier and write its bundle",
                                  description="Train a cell classifier; writes a run folder with metrics, "
                                  "figures, checkpoints and the bundle.", epilog=TRAIN_EPILOG, formatter_class=formatter)
    defaults = TrainConfig()
    add_data_options(train)
    train.add_argument("--out", default=defaults.out, help="run folder (default %(default)s)")
    train.add_argument("--model", default=defaults.model,
                       help="architecture (default %(default)s); 'xcyto models' lists them all")
    train.add_argument("--weights", default=defaults.weights,
                       help="'default' (the architecture's own: offline ImageNet weights for the EfficientNet-Lite "
                       "models, none for the others), 'imagenet' (torchvision downloads them once) or 'none'")
    train.add_argument("--head", default=defaults.head, choices=("linear", "concat_pool"),
                       help="classifier head: linear on average pooling, or on average and max pooling "
                       "(default %(default)s)")
    add_fit_options(train)
    train.add_argument("--test-fraction", type=float, default=defaults.test_fraction,
                       help="share of the source images (groups) held out for testing (default %(default)s)")
    train.add_argument("--split-manifest", default=None, help="reuse the split in this manifest CSV")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("evaluate", help="metrics of a bundle on a dataset",
                                     description="Evaluate a bundle on a dataset or one split of it.",
                                     epilog=EVALUATE_EPILOG, formatter_class=formatter)
    evaluate.add_argument("--bundle", required=True, help="bundle or ensemble folder")
    evaluate.add_argument("--data", default=None,
                          help="dataset folder, CSV manifest or 'synthetic' (default: the data the bundle was trained on)")
    evaluate.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                          help="cells of this split of the bundle's split.csv (default: all); data the bundle "
                          "never saw (none of its cells in split.csv) is evaluated whole")
    evaluate.add_argument("--scheme", default=None, help="label scheme (default: the bundle's)")
    evaluate.add_argument("--out", default=None, help="folder for metrics.json and confusion_matrix.png")
    add_tta_override(evaluate)
    evaluate.set_defaults(func=run_evaluate)

    predict = subparsers.add_parser("predict", help="classify images, write a CSV",
                                    description="Classify cell images with a bundle.",
                                    epilog=PREDICT_EPILOG, formatter_class=formatter)
    predict.add_argument("--bundle", required=True, help="bundle or ensemble folder")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--out", default=None, help="CSV path (default: print to the terminal)")
    add_tta_override(predict)
    predict.set_defaults(func=run_predict)

    screen = subparsers.add_parser(
        "screen", help="choose a screening threshold with a guaranteed sensitivity",
        description="Choose the threshold on p(abnormal) below which a cell may be cleared as normal, so that\n"
                    "on new cells the expected share of abnormal cells missed stays at or below 1 - SENSITIVITY\n"
                    "(conformal risk control on the bundle's validation cells), and refit its prediction sets.\n"
                    "Both are recorded in the bundle; predict, explain and the demo then say refer / clear.",
        epilog=SCREEN_EPILOG, formatter_class=formatter)
    screen.add_argument("--bundle", required=True, help="bundle folder (or a shipped name: herlev)")
    screen.add_argument("--sensitivity", type=float, default=0.98,
                        help="share of abnormal cells to refer, guaranteed in expectation (default %(default)s)")
    screen.add_argument("--coverage", type=float, default=None,
                        help="coverage of the prediction sets (default: the bundle's, else 0.9)")
    screen.add_argument("--data", default=None, help="the bundle's data, when it records no validation scores")
    screen.add_argument("--scheme", default=None, help="label scheme of --data")
    screen.add_argument("--dry-run", action="store_true", help="print the choice without recording it")
    screen.set_defaults(func=run_screen)

    fuse = subparsers.add_parser(
        "fuse", help="read the network and the cell's measurements together",
        description="Fuse a bundle's network with gradient-boosted trees on its training cells' measured\n"
                    "morphology (N/C ratio, nuclear area, ...): log p = log p_network + weight * log p_measured,\n"
                    "the weight chosen by log-loss on the validation cells (0 when the measurements do not help).\n"
                    "Prints what it does on the test cells and records the weight; xcyto.explain then shows the\n"
                    "fused prediction and, in words, the measurements that moved it.",
        epilog="example:\n  xcyto fuse --bundle runs/herlev/bundle", formatter_class=formatter)
    fuse.add_argument("--bundle", required=True, help="bundle folder with a gallery (the default)")
    fuse.add_argument("--data", default=None, help="the bundle's data (default: the data it was trained on)")
    fuse.add_argument("--scheme", default=None, help="label scheme of --data")
    fuse.add_argument("--dry-run", action="store_true", help="print the choice without recording it")
    fuse.set_defaults(func=run_fuse)

    models = subparsers.add_parser("models", help="the architectures 'xcyto train --model' accepts",
                                   description="List the registered architectures with their native input size "
                                   "and weights.")
    models.set_defaults(func=run_models)


def add_tta_override(parser) -> None:
    """``--tta`` for commands that use a bundle (evaluate, predict, audit)."""
    parser.add_argument("--tta", choices=("bundle", "on", "off"), default="bundle",
                        help="average the calibrated probabilities over the 8 dihedral views: as the bundle "
                        "chose at training (default), or on / off for this run")


def tta_override(args) -> bool | None:
    """``None`` (the bundle's choice), ``True`` or ``False`` from ``--tta``."""
    return {"bundle": None, "on": True, "off": False}[args.tta]


def add_data_options(parser) -> None:
    """Where the cells come from and how they are split (train and compare)."""
    defaults = TrainConfig()
    parser.add_argument("--data", default=defaults.data, help="dataset folder, CSV manifest, or 'synthetic' (default)")
    parser.add_argument("--scheme", default=None, help="label scheme, e.g. 'binary' (Herlev normal/abnormal)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the split, the initial head and the augmentations (default %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                        help="share of the source images (groups) used for validation: choosing the best epoch, "
                        "calibration and the TTA choice (default %(default)s)")
    parser.add_argument("--calibration-fraction", type=float, default=defaults.calibration_fraction,
                        help="share of the training groups held out for the prediction sets and the screening "
                        "threshold alone, so their guarantee holds as stated (default %(default)s: they are fitted "
                        "on the validation cells, which also chose the epoch and calibration)")
    parser.add_argument("--synthetic-n", type=int, default=defaults.synthetic_n, help="cells when --data synthetic")
    parser.add_argument("--synthetic-size", type=int, default=defaults.synthetic_size)


def add_fit_options(parser) -> None:
    """How a model is trained (train and compare)."""
    defaults = TrainConfig()
    parser.add_argument("--image-size", type=int, default=None, help="input size in pixels (default: the training cells' median longer side, rounded to 32, "
                        "at least 128 and at most 160 px or the architecture's native size)")
    parser.add_argument("--no-pad", dest="pad_to_square", action="store_false", help="stretch instead of padding to square")
    parser.add_argument("--preprocessing", default=defaults.preprocessing, help="none, clahe, median or nlmeans")
    parser.add_argument("--view", choices=VIEWS, default=defaults.view,
                        help="what of each crop the network reads: the whole crop, or the square around its "
                        "segmented nucleus (3 nucleus diameters a side) at the same input size (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="at most this many (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(default %(default)s)")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="head learning rate (default %(default)s)")
    parser.add_argument("--backbone-lr-mult", type=float, default=defaults.backbone_lr_mult,
                        help="backbone learning rate = lr x this (default %(default)s)")
    parser.add_argument("--freeze-epochs", type=int, default=defaults.freeze_epochs,
                        help="train only the head for this many epochs first")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW (default %(default)s)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                        help="learning-rate schedule (default %(default)s)")
    parser.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                        help="(default %(default)s)")
    parser.add_argument("--grade-loss", type=float, default=defaults.grade_loss,
                        help="weight of the expected grade distance added to the loss, so that far misses "
                        "(carcinoma in situ called normal) cost more than near ones; needs graded classes "
                        "(0: off; default %(default)s)")
    parser.add_argument("--teacher", nargs="+", default=None, metavar="BUNDLE",
                        help="distil: also learn each training cell's probabilities from these bundles or run "
                        "folders (several: their mean, e.g. an ensemble's members), trained on the same split; "
                        "the split is theirs unless given. In compare, {fold} in a path is the fold's number")
    parser.add_argument("--distill", type=float, default=defaults.distill,
                        help="share of the loss that follows the teacher (default %(default)s)")
    parser.add_argument("--distill-temperature", type=float, default=defaults.distill_temperature,
                        help="temperature that softens the teacher's probabilities (default %(default)s)")
    parser.add_argument("--balance", choices=BALANCE, default=defaults.balance,
                        help="class balancing: auto (plain cross-entropy, and also a class-weighted loss when the "
                        "largest class has 3 times the cells of the smallest or more; the validation cells choose "
                        "the training, then raw or prior-adjusted logits: a point more macro-F1 for at most 1 "
                        "point of accuracy), none, a class-weighted loss, or a weighted sampler "
                        "(default %(default)s)")
    parser.add_argument("--exclude", default=defaults.exclude,
                        help="crops left out of training, validation and test: data checks, comma-separated "
                        "(see 'xcyto data check --help'), 'none', or a CSV with a 'path' column "
                        "(default %(default)s)")
    parser.add_argument("--data-check", default=defaults.data_check,
                        help="auto (check every crop first; reused on resume), off, or a folder written by "
                        "'xcyto data check' (default %(default)s)")
    parser.add_argument("--rotation", choices=ROTATIONS, default=defaults.rotation,
                        help="training rotations: any angle, the 8 dihedral views (exact), or none")
    parser.add_argument("--stain-jitter", type=float, default=defaults.stain_jitter,
                        help="sigma of the random HED stain rescaling (default %(default)s)")
    parser.add_argument("--mixup", type=float, default=defaults.mixup, help="MixUp alpha (0: off)")
    parser.add_argument("--cutmix", type=float, default=defaults.cutmix, help="CutMix alpha (0: off)")
    parser.add_argument("--ema", type=float, default=defaults.ema,
                        help="decay of a moving average of the weights, e.g. 0.999 (0: off)")
    parser.add_argument("--tta", choices=TTA_MODES, default=defaults.tta,
                        help="test-time augmentation over the 8 dihedral views: auto (on when it does not "
                             "lower validation macro-F1), on or off")
    parser.add_argument("--patience", type=int, default=defaults.patience,
                        help="stop after this many epochs without a better validation macro-F1 (default 0: "
                             "never; the whole schedule runs and the best validation epoch is kept)")
    parser.add_argument("--device", default=defaults.device, help="auto (GPU if any), cpu, cuda, cuda:1 ...")
    parser.add_argument("--amp", default=defaults.amp, choices=("auto", "bf16", "fp16", "off"),
                        help="mixed precision on a GPU (auto: bf16 where supported, else fp16); CPU runs in float32")
    parser.add_argument("--num-workers", type=int, default=None, help="data-loading processes (default: from the CPUs)")
    parser.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (smoke tests)")
    parser.add_argument("--no-gallery", dest="gallery", action="store_false", help="do not store training embeddings")
    parser.add_argument("--no-fuse", dest="fuse", action="store_false",
                        help="do not read the network with the cells' measurements (by default the weight of the "
                        "measured model is chosen on the validation cells, 0 where it does not help; needs the gallery)")


def train_settings(args) -> dict:
    """The TrainConfig fields among parsed arguments (``--weights none`` -> ``None``)."""
    names = {f.name for f in fields(TrainConfig)}
    settings = {key: value for key, value in vars(args).items() if key in names}
    if isinstance(settings.get("weights"), str) and settings["weights"].lower() == "none":
        settings["weights"] = None
    if isinstance(settings.get("teacher"), list):  # one setting: the paths joined as in $PATH
        settings["teacher"] = os.pathsep.join(settings["teacher"])
    return settings


def run_train(args) -> int:
    from xcyto.training import train

    train(TrainConfig(**train_settings(args)), resume=args.resume)
    return 0


def run_evaluate(args) -> int:
    from xcyto.training import evaluate_command

    evaluate_command(args.bundle, args.data, split=args.split, scheme=args.scheme, out=args.out,
                     tta=tta_override(args))
    return 0


def run_predict(args) -> int:
    from xcyto.training import predict_command

    predict_command(args.bundle, args.images, out=args.out, tta=tta_override(args))
    return 0


def run_fuse(args) -> int:
    from xcyto.training import fuse_command

    fuse_command(args.bundle, data=args.data, scheme=args.scheme, write=not args.dry_run)
    return 0


def run_screen(args) -> int:
    from xcyto.training import screen_command

    screen_command(args.bundle, sensitivity=args.sensitivity, coverage=args.coverage, data=args.data,
                   scheme=args.scheme, write=not args.dry_run)
    return 0


def run_models(args) -> int:
    from xcyto.models import get_spec, list_models

    print(f"{'architecture':<20} {'input':>5}  {'weights (default first)':<28} description")
    for name in list_models():
        spec = get_spec(name)
        weights = [spec.default_weights or "none"] + [w for w in spec.weights if w != spec.default_weights]
        print(f"{name:<20} {spec.input_size:>5}  {', '.join(dict.fromkeys(weights)):<28} {spec.description}")
    return 0
