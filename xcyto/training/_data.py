"""What a training run reads: the dataset, its split, and the loaders over it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import warnings

import numpy as np
from torch.utils.data import DataLoader

from xcyto.atomic import write_json_atomic
from xcyto.bundle import SPLIT_FILE
from xcyto.data import CellDataset, DataWarning, load_dataset, synthetic_spec
from xcyto.data import Split, hold_out_calibration, load_split_manifest, manifest_text, save_split_manifest, train_val_test_split
from xcyto.data import CellTorchDataset, eval_transform, train_transform
from xcyto.errors import TrainingError
from xcyto.models import get_spec
from xcyto.training._balance import worth_weighting
from xcyto.training._config import TrainConfig
from xcyto.training._health import check_run_data

#: With ``image_size=None`` the input side follows the training cells: their median longer
#: side, rounded to a multiple of 32, at least ``MIN_AUTO_SIZE`` and at most ``MAX_AUTO_SIZE``
#: or the architecture's own input size, whichever is smaller. Larger cells are shrunk: on
#: 224 px crops, 160 px scored higher than 224 px on every cross-validation fold in half the time.
MIN_AUTO_SIZE = 128
MAX_AUTO_SIZE = 160
#: Classes with fewer training cells than this get a warning: their metrics are noise.
FEW_CELLS = 20

@dataclass
class RunData:
    """The dataset of a run, its split and the transforms the model sees."""

    dataset: CellDataset
    split: Split
    config: TrainConfig
    image_size: int
    split_sha256: str
    balance: str = "none"
    notes: tuple[str, ...] = ()
    health: dict = field(default_factory=dict)  # the data check: counts, what was left out, reference

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def train_indices(self) -> np.ndarray:
        return self.split.train

    @property
    def train_dataset(self) -> CellDataset:
        return self.dataset.subset(self.split.train)

    @property
    def train_labels(self) -> np.ndarray:
        return self.dataset.labels[self.split.train]

    @property
    def train_torch(self) -> CellTorchDataset:
        spec = get_spec(self.config.model)
        transform = train_transform(self.image_size, mean=spec.mean, std=spec.std,
                                    preprocessing=self.config.preprocessing, pad_to_square=self.config.pad_to_square,
                                    rotation=self.config.rotation, stain_jitter=self.config.stain_jitter,
                                    view=self.config.view)
        return CellTorchDataset(self.train_dataset, transform)

    def _loader(self, indices: np.ndarray, device) -> DataLoader | None:
        if len(indices) == 0:
            return None
        spec = get_spec(self.config.model)
        transform = eval_transform(self.image_size, mean=spec.mean, std=spec.std,
                                   preprocessing=self.config.preprocessing, pad_to_square=self.config.pad_to_square,
                                   view=self.config.view)
        return DataLoader(CellTorchDataset(self.dataset.subset(indices), transform),
                          batch_size=max(64, self.config.batch_size), pin_memory=device.type == "cuda")

    def val_loader(self, device) -> DataLoader:
        return self._loader(self.split.val, device)

    def test_loader(self, device) -> DataLoader | None:
        return self._loader(self.split.test, device)

    def calibration_loader(self, device) -> DataLoader | None:
        """The held-out calibration cells (``calibration_fraction``), or ``None``."""
        return self._loader(self.split["calibration"], device)

    def provenance(self) -> dict:
        """Where the cells came from and how they were split: recorded in the bundle."""
        return {
            "source": data_source(self.config),
            "name": self.dataset.name,
            "layout": self.dataset.layout,
            "scheme": self.config.scheme or "default",
            "n_cells": len(self.dataset),
            "n_train": int(len(self.split.train)),
            "n_val": int(len(self.split.val)),
            "n_test": int(len(self.split.test)),
            "n_calibration": int(len(self.split["calibration"])),
            "split_seed": self.config.seed,
            "split_sha256": self.split_sha256,
            "n_excluded": len(self.health.get("excluded", [])),
        }

def data_source(config: TrainConfig) -> str:
    """The data source as a string that loads exactly these cells again."""
    if str(config.data) == "synthetic":
        return synthetic_spec(n=config.synthetic_n, size=config.synthetic_size, seed=config.seed)
    return str(config.data)

def load_run_dataset(config: TrainConfig) -> CellDataset:
    return load_dataset(data_source(config), scheme=config.scheme)

def prepare_data(config: TrainConfig, run_dir: Path, reuse_split: bool, write: bool) -> RunData:
    """Load the data and draw (or reuse) the split; the main process writes ``split.csv``."""
    dataset = load_run_dataset(config)
    manifest = run_dir / SPLIT_FILE
    if reuse_split and manifest.is_file():
        split = load_split_manifest(manifest, dataset)
    elif config.split_manifest:
        split = load_split_manifest(config.split_manifest, dataset)
    else:
        fractions = (1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction)
        split = train_val_test_split(dataset, fractions=fractions, seed=config.seed)
    if config.calibration_fraction > 0 and len(split["calibration"]) == 0:
        split = hold_out_calibration(dataset, split, config.calibration_fraction, seed=config.seed)
    # Every process derives the same hash from the same split (as drawn); only the main one writes.
    sha = hashlib.sha256(manifest_text(dataset, split).encode("utf-8")).hexdigest()
    if write and not (reuse_split and manifest.is_file()):
        save_split_manifest(dataset, split, manifest)
    health = check_run_data(config, dataset, split, run_dir, write)
    split = health.apply(split)
    if len(split.train) == 0 or len(split.val) == 0:
        raise TrainingError(f"the split of {config.data} leaves no training or no validation cells"
                            + (f" once {len(health.excluded)} crops with data issues are left out (--exclude)"
                               if health.excluded else ""))
    image_size, balance, notes = data_defaults(config, dataset, split)
    notes = [*health.notes, *notes]
    if write:
        write_json_atomic(run_dir / "settings.json", {"config": config.to_dict(), "split_sha256": sha,
                                                      "from_the_data": {"image_size": image_size, "balance": balance,
                                                                        "notes": list(notes)}})
    return RunData(dataset=dataset, split=split, config=config, image_size=image_size, split_sha256=sha,
                   balance=balance, notes=tuple(notes), health=health.record)

def data_defaults(config: TrainConfig, dataset: CellDataset, split: Split) -> tuple[int, str, list[str]]:
    """``(image_size, balance, notes)``: the settings left to the data, decided from the
    training cells (never from their names or the collection they come from), and warnings."""
    notes = []
    native = get_spec(config.model).input_size
    if config.image_size:
        image_size = int(config.image_size)
    else:
        sides = np.array([max(dataset.samples[i].image.shape[:2]) for i in split.train])
        ceiling = min(native, MAX_AUTO_SIZE)
        image_size = int(min(ceiling, max(MIN_AUTO_SIZE, 32 * round(float(np.median(sides)) / 32))))
        notes.append(f"input {image_size} px: the training cells' median longer side is {np.median(sides):.0f} px "
                     f"(rounded to 32, within {min(MIN_AUTO_SIZE, ceiling)}..{ceiling})")
    counts = np.bincount(dataset.labels[split.train], minlength=len(dataset.classes))
    ratio = counts.max() / max(counts.min(), 1)
    balance = config.balance
    if balance == "auto":
        # plain cross-entropy; the validation cells then choose whether to adjust the logits
        # for the class shares (xcyto.training._balance)
        balance = "none"
        if worth_weighting(counts):
            notes.append(f"balance=auto: plain cross-entropy, then the same run with a class-weighted loss (largest "
                         f"class {ratio:.1f} times the smallest); the validation cells choose between the two "
                         "trainings, and between raw logits and logits adjusted for the class shares")
        else:
            notes.append(f"balance=auto: plain cross-entropy (largest class {ratio:.1f} times the smallest); the "
                         "validation cells then choose between raw logits and logits adjusted for the class shares")
    few = [f"{name} ({count})" for name, count in zip(dataset.classes, counts) if count < FEW_CELLS]
    if few:
        message = (f"few training cells in {', '.join(few)}: fewer than {FEW_CELLS}, so the model learns little "
                   "about these classes and their test metrics rest on a handful of cells")
        warnings.warn(message, DataWarning, stacklevel=3)
        notes.append(message)
    return image_size, balance, notes
