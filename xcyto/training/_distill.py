"""Distillation: one network trained toward the probabilities of several (an ensemble's).

The teacher (a bundle, an ensemble bundle, or several bundles whose probabilities are
averaged) reads every training cell once, as it predicts (its own input size, calibration and
test-time augmentation). The student, an ordinary classifier, then learns from

    (1 - w) * loss(logits, label)  +  w * T^2 * KL(q_T || softmax(logits / T))

with ``q_T`` the teacher's probabilities softened by ``T`` (``q^(1/T)``, normalised), so the
student gets one model's explanation cost and, where it works, some of the ensemble's accuracy.

The teacher must have been trained on the student's split: one that had seen the student's
validation or test cells would carry their labels into it, and every figure measured on them
would flatter. A teacher from another split is refused; left unset, the student's split is the
teacher's.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from xcyto.atomic import write_bytes_atomic
from xcyto.bundle import CONFIG_FILE, SPLIT_FILE
from xcyto.errors import TrainingError, XcytoError

#: The teacher's probabilities of the run's training cells, kept so a resumed run reuses them.
TEACHER_FILE = "teacher.npz"


def teacher_paths(text: str) -> list[Path]:
    """The bundle folders named by ``teacher`` (paths joined by ``os.pathsep``; a run folder
    stands for its ``bundle/``)."""
    paths = []
    for part in filter(None, (piece.strip() for piece in str(text).split(os.pathsep))):
        path = Path(part)
        if not (path / CONFIG_FILE).is_file() and (path / "bundle" / CONFIG_FILE).is_file():
            path = path / "bundle"
        if not (path / CONFIG_FILE).is_file():
            raise TrainingError(f"teacher {part}: not a bundle or a run folder with a bundle/ "
                                f"(no {CONFIG_FILE})")
        paths.append(path)
    if not paths:
        raise TrainingError(f"teacher {text!r} names no bundle")
    return paths


def teacher_split(text: str) -> Path:
    """The split file of the first teacher: the student's split when none is given."""
    path = teacher_paths(text)[0] / SPLIT_FILE
    if not path.is_file():
        raise TrainingError(f"teacher {path.parent}: has no {SPLIT_FILE}, so the split it was trained on is "
                            "unknown; give the student's split with split_manifest")
    return path


def teacher_probabilities(text: str, data, run_dir: Path, device, write: bool = True) -> np.ndarray:
    """``(N, C)``: the teachers' mean probability of each of the run's training cells (kept in
    ``TEACHER_FILE`` when ``write``)."""
    from xcyto.loading import load

    teachers = []
    for path in teacher_paths(text):
        try:
            teacher = load(path, device=device)
        except XcytoError as error:
            raise TrainingError(f"teacher {path}: {error}") from None
        if list(teacher.classes) != data.classes:
            raise TrainingError(f"teacher {path} predicts {', '.join(teacher.classes)}, the run's cells are "
                                f"{', '.join(data.classes)}; a teacher must share the student's classes")
        trained_on = (teacher.config.get("data") or {}).get("split_sha256")
        if trained_on != data.split_sha256:
            raise TrainingError(f"teacher {path} was trained on another split (split sha256 {str(trained_on)[:12]}, "
                                f"this run's {data.split_sha256[:12]}): it may have seen this run's validation or "
                                "test cells. Train the student on the teacher's split (leave split_manifest unset, "
                                "or give the teacher's split.csv)")
        teachers.append(teacher)
    cells = data.train_dataset
    key = hashlib.sha256(json.dumps({"teachers": [t.sha256 for t in teachers], "split": data.split_sha256,
                                     "cells": list(cells.cell_ids)}).encode()).hexdigest()
    saved = run_dir / TEACHER_FILE
    if saved.is_file():
        kept = np.load(saved)
        if str(kept["key"]) == key:
            return kept["probabilities"]
    print(f"teacher: {len(teachers)} model{'s' if len(teachers) > 1 else ''} reading {len(cells)} training cells")
    probabilities = np.mean([teacher.predict_cells(cells.samples, progress=True).probabilities
                             for teacher in teachers], axis=0).astype(np.float32)
    agrees = float((probabilities.argmax(1) == cells.labels).mean())
    print(f"teacher: {agrees:.3f} of the training cells called right, mean top probability "
          f"{probabilities.max(1).mean():.3f}")
    if write:
        buffer = io.BytesIO()
        np.savez(buffer, probabilities=probabilities, key=np.array(key))
        write_bytes_atomic(saved, buffer.getvalue())
    return probabilities


class Positions(Dataset):
    """A training dataset that yields each cell's position instead of its label, so the loss
    can look up both the label and the teacher's probabilities of that cell."""

    def __init__(self, cells: Dataset):
        self.cells = cells

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, index: int):
        return self.cells[index][0], index


class DistillationLoss(nn.Module):
    """``(1 - weight) * criterion(logits, label) + weight * T^2 * KL(q_T || softmax(logits / T))``
    of the cells at ``positions`` (see :class:`Positions`)."""

    def __init__(self, criterion: nn.Module, labels: np.ndarray, teacher: np.ndarray, weight: float,
                 temperature: float):
        super().__init__()
        self.criterion = criterion
        self.weight, self.temperature = float(weight), float(temperature)
        softened = np.power(np.clip(teacher, 1e-12, 1.0), 1.0 / self.temperature)
        self.register_buffer("labels", torch.as_tensor(np.asarray(labels), dtype=torch.long))
        self.register_buffer("targets", torch.as_tensor(softened / softened.sum(1, keepdims=True),
                                                        dtype=torch.float32))

    def forward(self, logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hard = self.criterion(logits, self.labels[positions])
        log_student = (logits.float() / self.temperature).log_softmax(1)
        soft = nn.functional.kl_div(log_student, self.targets[positions], reduction="batchmean")
        return (1 - self.weight) * hard + self.weight * self.temperature ** 2 * soft
