"""Atomic checkpoints: a crash mid-write never destroys the last good one."""
from __future__ import annotations

from pathlib import Path

import torch

from xcyto.atomic import atomic_path
from xcyto.errors import TrainingError


def save_atomic(payload: dict, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_atomic` (tensors and plain values only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"{path}: no checkpoint to resume from") from None
    except Exception as error:  # torch raises several types for corrupt files
        raise TrainingError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None
