"""Atomic writes: a file or folder appears whole or not at all.

Everything xcyto writes that a user keeps (checkpoints, bundles, galleries, reports,
figures, manifests) goes through here, so a crash or Ctrl-C mid-write never leaves a
truncated file in place of the last good one.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from xcyto.errors import XcytoError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes files private; keep the usual mode
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield an empty staging folder beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_UMASK)
        replace_dir(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _beside(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}")


def replace_dir(staging: Path, target: Path) -> None:
    """Put the complete folder ``staging`` at ``target``, replacing the folder there, so that a
    kill at any moment leaves ``target`` whole, or recoverable by :func:`recover_dir` (which
    loading a bundle runs). The steps, each one rename: ``staging`` -> ``.NAME.swap-new``;
    ``target`` -> ``.NAME.swap-old``; ``.NAME.swap-new`` -> ``target``; then the old is removed."""
    staging, target = Path(staging), Path(target)
    recover_dir(target)  # an earlier swap killed half-way is finished first
    new, old = _beside(target, "swap-new"), _beside(target, "swap-old")
    os.replace(staging, new)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(target: str | os.PathLike) -> str | None:
    """Finish a :func:`replace_dir` that was killed: if ``target`` is missing, the new folder
    (complete before the swap began) or else the old one is put back, and what was done is
    returned (and warned about); leftovers beside a ``target`` that is whole are removed.
    ``None`` when there was nothing to recover."""
    target = Path(target)
    new, old = _beside(target, "swap-new"), _beside(target, "swap-old")
    if target.exists():
        for leftover in (new, old):  # killed before the swap began, or while removing the old
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
        return None
    retired = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if new.is_dir():
        source, message = new, f"{target}: finished a replacement that was interrupted (the new folder is in place)"
    elif old.is_dir() or retired:
        source = old if old.is_dir() else retired[-1]
        message = f"{target}: restored the previous folder from {source.name} (a replacement was interrupted)"
    else:
        return None
    try:
        os.replace(source, target)
    except OSError as error:
        raise XcytoError(f"{target} is missing after an interrupted replacement and {source} could not be "
                         f"moved back ({error}): move it to {target.name} by hand") from error
    shutil.rmtree(old, ignore_errors=True)
    warnings.warn(message, RecoveredWarning, stacklevel=2)
    return message


class RecoveredWarning(UserWarning):
    """A folder that an interrupted write had left half-swapped was put back together."""


def write_bytes_atomic(path, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts as CSV text (``None`` -> empty). Columns: ``columns``, else those of the
    first row; with ``columns`` the header is written even when there are no rows."""
    buffer = io.StringIO()
    fieldnames = list(columns) if columns is not None else list(rows[0]) if rows else None
    if fieldnames is not None:
        writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: ("" if value is None else value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def write_csv_atomic(path, rows: list[dict], columns: list[str] | None = None) -> Path:
    return write_text_atomic(path, csv_text(rows, columns))


def write_json_atomic(path, payload) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
