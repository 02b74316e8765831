"""Training: ``xcyto.train`` and what it stands on: the settings, the split of the cells, the
metrics, the choice of class balance, the grade-aware and distillation losses, evaluation and
prediction of a trained bundle, and the cross-validated comparison of models.

>>> result = train(TrainConfig(data="../shared/data/herlev", out="runs/herlev"))   # = xcyto.train
>>> evaluate_bundle(xcyto.load("runs/herlev/bundle"), test_cells)                # metrics on any cells
>>> compare("../shared/data/herlev", ["efficientnet_lite0", "resnet18"], out="runs/cv", folds=5)

Calibration of the probabilities lives in :mod:`xcyto.calibration`.
"""
from xcyto.training._config import BALANCE, ROTATIONS, SCHEDULES, TTA_MODES, VIEWS, TrainConfig

#: Imported on first use: all of these pull in torch, and the command line's argument parser
#: needs only the settings.
_LAZY = {
    "train": "_loop", "TrainResult": "_loop",
    "classification_metrics": "_metrics", "headline_metrics": "_metrics",
    "describe_balance": "_balance",
    "cells_in_split": "_evaluate", "collect_images": "_evaluate", "evaluate_bundle": "_evaluate",
    "evaluate_command": "_evaluate", "find_manifest": "_evaluate", "predict_command": "_evaluate",
    "screen_command": "_evaluate", "select_split": "_evaluate", "training_data": "_evaluate",
    "compare": "_compare",
    "fuse_bundle": "_fuse", "fuse_command": "_fuse",
    "GradeAwareLoss": "_losses", "grade_costs": "_losses",
    "DistillationLoss": "_distill",
}

__all__ = ["BALANCE", "ROTATIONS", "SCHEDULES", "TTA_MODES", "VIEWS", "TrainConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"xcyto.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'xcyto.training' has no attribute {name!r}")
