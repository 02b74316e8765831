"""Cell datasets: loading (any layout), splitting without leakage, and model input.

``load_dataset(path_or_name)`` returns a :class:`CellDataset` of :class:`CellSample`;
:mod:`xcyto.data.health` finds what is wrong with its crops (it sits above the models, which
read cells through this package, so it is a package of its own);
``train_val_test_split`` / ``kfold_split`` assign whole source groups; transforms turn
a cell into the tensor a model reads. The transforms (and torch) are imported only
when first used, so ``xcyto data summary`` starts fast.
"""
from __future__ import annotations

from xcyto.data._match import match_copies, transfer_masks
from xcyto.data._io import MAX_PIXELS, DataWarning, check_cell_size, is_image_file, read_image, to_rgb_uint8
from xcyto.data._records import MASK_NAMES, CellDataset, CellSample
from xcyto.data._registry import LAYOUTS, detect_layout, list_layouts, load_dataset, synthetic_spec
from xcyto.data._schemes import abnormal_flags, class_key
from xcyto.data._splits import (
    Split,
    check_leakage,
    cross_validation_fold,
    hold_out_calibration,
    kfold_split,
    load_split_manifest,
    manifest_cell_ids,
    manifest_text,
    save_split_manifest,
    split_hash,
    train_val_test_split,
)
from xcyto.data._summary import DatasetSummary, format_summary, summarize

#: Imported on first use: the transforms pull in torch, the generator of synthetic cells OpenCV.
_LAZY = {name: "xcyto.data._transforms" for name in (
    "CellTorchDataset", "CellTransform", "PREPROCESSING", "eval_transform", "preprocess", "train_transform",
    "IMAGENET_MEAN", "IMAGENET_STD", "background_colour", "fit_box")}
_LAZY.update({name: "xcyto.data._views" for name in ("NUCLEUS_VIEW_SCALE", "VIEWS", "view_box")})
_LAZY.update({name: "xcyto.data._synthetic" for name in ("generate_cell", "make_dataset", "write_sipakmed_layout")})

__all__ = [
    "MAX_PIXELS", "DataWarning", "check_cell_size", "is_image_file", "read_image", "to_rgb_uint8",
    "MASK_NAMES", "CellDataset", "CellSample",
    "match_copies", "transfer_masks",
    "LAYOUTS", "detect_layout", "list_layouts", "load_dataset", "synthetic_spec",
    "abnormal_flags", "class_key",
    "Split", "check_leakage", "cross_validation_fold", "hold_out_calibration", "kfold_split", "load_split_manifest", "manifest_cell_ids",
    "manifest_text", "save_split_manifest", "split_hash", "train_val_test_split",
    "DatasetSummary", "format_summary", "summarize",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xcyto.data' has no attribute {name!r}")
