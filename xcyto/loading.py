"""``xcyto.load``: any bundle folder (a model, or an ensemble of models) -> one :class:`Bundle`.

Sits above :mod:`xcyto.bundle` and :mod:`xcyto.ensemble`, so neither imports the other back.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from xcyto.atomic import recover_dir
from xcyto.bundle import ENSEMBLE_FORMAT, Bundle, load_bundle, read_config
from xcyto.ensemble import load_ensemble
from xcyto.shipped import bundle_path


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Bundle:
    """Load and validate a bundle folder (``xcyto train``), an ensemble folder (``xcyto
    ensemble``, an :class:`xcyto.ensemble.EnsembleBundle`) or a shipped bundle by name
    (``"herlev"``, ``"demo"``: :mod:`xcyto.shipped`); corrupt or
    inconsistent folders are refused with a clear :class:`~xcyto.errors.BundleError`."""
    path = bundle_path(path)
    recover_dir(path)  # a save killed half-way through its swap
    if path.is_dir():
        config = read_config(path)
        if config.get("format") == ENSEMBLE_FORMAT:
            return load_ensemble(path, config, device=device)
    return load_bundle(path, device=device)


__all__ = ["load"]
