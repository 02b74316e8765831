"""Cell datasets: loading (any layout), splitting without leakage, and model input.

``load_dataset(path_or_name)`` returns a :class:`CellDataset` of :class:`CellSample`;
``check(dataset)`` finds what is wrong with its crops (:mod:`xcyto.data.health`);
``train_val_test_split`` / ``kfold_split`` assign whole source groups; transforms turn
a cell into the tensor a model reads. The transforms (and torch) are imported only
when first used, so ``xcyto data summary`` starts fast.
"""
from __future__ import annotations

from xcyto.data.io import MAX_PIXELS, DataWarning, read_image, to_rgb_uint8
from xcyto.data.records import MASK_NAMES, CellDataset, CellSample
from xcyto.data.registry import LAYOUTS, detect_layout, list_layouts, load_dataset
from xcyto.data.splits import (
    Split,
    check_leakage,
    kfold_split,
    load_split_manifest,
    save_split_manifest,
    split_hash,
    train_val_test_split,
)
from xcyto.data.summary import DatasetSummary, format_summary, summarize
from xcyto.data.health import DataCheck, Issue, check, check_image, load_check

_TRANSFORM_NAMES = ("CellTorchDataset", "CellTransform", "PREPROCESSING", "eval_transform", "preprocess",
                    "train_transform", "IMAGENET_MEAN", "IMAGENET_STD")

__all__ = [
    "MAX_PIXELS", "DataWarning", "read_image", "to_rgb_uint8",
    "MASK_NAMES", "CellDataset", "CellSample",
    "LAYOUTS", "detect_layout", "list_layouts", "load_dataset",
    "Split", "check_leakage", "kfold_split", "load_split_manifest", "save_split_manifest", "split_hash",
    "train_val_test_split",
    "DatasetSummary", "format_summary", "summarize",
    "DataCheck", "Issue", "check", "check_image", "load_check",
    *_TRANSFORM_NAMES,
]


def __getattr__(name: str):
    if name in _TRANSFORM_NAMES:
        from xcyto.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'xcyto.data' has no attribute {name!r}")
