"""One record per cell, the unit every loader returns and every later stage reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MASK_NAMES = ("nucleus", "cytoplasm", "evidence")


@dataclass
class CellSample:
    """A single cell: RGB image, label, identity, source group and optional masks.

    ``image`` is ``H x W x 3`` uint8 RGB. Masks are ``H x W`` bool arrays aligned
    pixel for pixel with ``image`` (``None`` where the source has none).
    ``cytoplasm_mask`` is the whole cell, nucleus included ("inside the cell");
    cytoplasm alone is ``cytoplasm_mask & ~nucleus_mask``. ``evidence_mask`` (synthetic
    cells) marks the region that defines the class.
    ``group`` names the slide or cluster image the cell was cropped from: splits keep
    a group on one side so near-duplicates cannot leak from train to test.
    """

    image: np.ndarray
    label: int
    class_name: str
    cell_id: str
    group: str
    path: Path | None = None
    nucleus_mask: np.ndarray | None = None
    cytoplasm_mask: np.ndarray | None = None
    evidence_mask: np.ndarray | None = None

    def masks(self) -> dict[str, np.ndarray]:
        """The masks this cell has, by name (subset of ``MASK_NAMES``)."""
        found = {name: getattr(self, f"{name}_mask") for name in MASK_NAMES}
        return {name: mask for name, mask in found.items() if mask is not None}


@dataclass
class CellDataset:
    """An ordered list of cells and the ordered class names their labels index."""

    samples: list[CellSample]
    classes: list[str]
    name: str = "cells"
    root: Path | None = None
    layout: str = "unknown"
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> CellSample:
        return self.samples[index]

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        return np.array([s.group for s in self.samples])

    @property
    def cell_ids(self) -> list[str]:
        return [s.cell_id for s in self.samples]

    def subset(self, indices) -> "CellDataset":
        """The cells at ``indices``, same classes (so labels keep their meaning)."""
        return CellDataset(
            samples=[self.samples[i] for i in indices],
            classes=list(self.classes),
            name=self.name,
            root=self.root,
            layout=self.layout,
            warnings=list(self.warnings),
        )
