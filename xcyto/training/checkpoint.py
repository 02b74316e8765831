"""Atomic checkpoints: a crash mid-write never destroys the last good one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from xcyto.errors import TrainingError


def save_atomic(payload: dict, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_atomic` (tensors and plain values only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"{path}: no checkpoint to resume from") from None
    except Exception as error:  # torch raises several types for corrupt files
        raise TrainingError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None
