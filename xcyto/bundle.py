"""A trained model as a folder that needs nothing else: weights, metadata, gallery.

Layout (in the spirit of MONAI bundles)::

    bundle/
      bundle.json          architecture, classes, input size, normalisation, calibration,
                           training settings, data source and split hash, metrics
      model.safetensors    weights (safe to load: no pickle)
      gallery/             embeddings and thumbnails of the training cells (optional)

Saving writes a sibling temporary folder and renames it into place, so a crash never
leaves half a bundle behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xcyto import __version__
from xcyto.atomic import atomic_dir, recover_dir, write_json_atomic
from xcyto.calibration import Calibration
from xcyto.errors import BundleError, ModelError
from xcyto.models import CellClassifier, create, evaluating, get_spec, pass_model

FORMAT = "xcyto-bundle"
FORMAT_VERSION = 1
ENSEMBLE_FORMAT = "xcyto-ensemble"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "bundle.json"
GALLERY_DIR = "gallery"
SPLIT_FILE = "split.csv"
REQUIRED_KEYS = ("architecture", "classes", "input_size", "mean", "std")


def dihedral_views(batch: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of the square of a ``(B, C, S, S)`` batch: 4 quarter turns, each
    also mirrored (the identity first). Exact: no interpolation."""
    turns = [batch.rot90(k, dims=(-2, -1)) for k in range(4)]
    return turns + [view.flip(-1) for view in turns]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Predictions(NamedTuple):
    """What a bundle says about cells, row by row (tensors for a batch, arrays for cells)."""

    logits: torch.Tensor | np.ndarray  # (N, C) raw logits of each cell as given
    probabilities: torch.Tensor | np.ndarray  # (N, C) calibrated; the mean over the 8 views under TTA
    embeddings: torch.Tensor | np.ndarray  # (N, D) unit-norm pooled features (the gallery's space)


@dataclass
class Bundle:
    """A model and everything needed to use it: classes, preprocessing, calibration.

    ``config`` is the content of ``bundle.json``; the properties below read from it.
    """

    model: CellClassifier
    config: dict
    path: Path | None = None
    _weights_sha256: str | None = field(default=None, repr=False)

    # -- what the bundle describes ------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def architecture(self) -> str:
        return self.config["architecture"]

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    @property
    def calibration(self) -> Calibration:
        """How logits become probabilities (``none``, ``temperature`` or ``vector`` scaling)."""
        return Calibration.from_config(self.config)

    @property
    def prediction_sets(self):
        """Conformal prediction sets fitted on the validation cells
        (:class:`xcyto.trust.PredictionSets`); ``None`` for a bundle made without them."""
        from xcyto.trust import PredictionSets

        record = self.config.get("conformal")
        return PredictionSets.from_dict(record) if record else None

    @property
    def screen(self):
        """The chosen screening threshold (:class:`xcyto.trust.Screen`; ``xcyto screen``), or ``None``."""
        from xcyto.trust import Screen

        record = self.config.get("screen")
        return Screen.from_dict(record) if record else None

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def name(self) -> str:
        return self.config.get("name") or (self.path.name if self.path else self.architecture)

    @property
    def sha256(self) -> str | None:
        """Hash of the weights file: names exactly which model produced a result."""
        return self._weights_sha256

    @property
    def gallery_dir(self) -> Path | None:
        return self.path / GALLERY_DIR if self.path else None

    # -- using it -----------------------------------------------------------------
    def transform(self):
        """The evaluation transform (numpy RGB uint8 -> normalised CHW tensor)."""
        from xcyto.data import eval_transform

        return eval_transform(
            size=self.input_size,
            mean=tuple(self.config["mean"]),
            std=tuple(self.config["std"]),
            pad_to_square=bool(self.config.get("pad_to_square", True)),
            preprocessing=self.config.get("preprocessing", "none"),
            view=self.config.get("view", "cell"),
        )

    def preprocess(self, images) -> torch.Tensor:
        """Images (paths, PIL, arrays, or a list of them) -> a normalised ``(B, 3, S, S)`` batch."""
        from xcyto.data import to_rgb_uint8

        if not isinstance(images, (list, tuple)):
            images = [images]
        transform = self.transform()
        return torch.stack([transform(to_rgb_uint8(image)) for image in images]).to(self.device)

    @torch.no_grad()
    def predict_logits(self, batch: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Logits of a preprocessed batch; on CPU through the model's batch-norm-folded copy
        (:func:`xcyto.models.pass_model`, checked against the model), a third faster."""
        with evaluating(self.model) as model:
            fast = pass_model(model, batch)
            return torch.cat([fast(chunk) for chunk in batch.split(batch_size)])

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities (see :attr:`calibration`) of one view's logits."""
        return self.calibration.probabilities(logits)

    @property
    def tta(self) -> bool:
        """Whether predictions average the 8 dihedral views (chosen at training, ``bundle.json``)."""
        return bool((self.config.get("tta") or {}).get("enabled", False))

    def uses_tta(self, tta: bool | None = None) -> bool:
        """``tta`` when given (an override for one call), else the bundle's own choice."""
        return self.tta if tta is None else bool(tta)

    def describe_tta(self, tta: bool | None = None) -> str:
        """Where the probabilities come from, in words (for reports and logs)."""
        return "the mean over the 8 dihedral views" if self.uses_tta(tta) else "one view of each cell"

    @torch.no_grad()
    def predict_batch(self, batch: torch.Tensor, *, tta: bool | None = None, batch_size: int = 64) -> Predictions:
        """The one prediction interface: ``(logits, probabilities, embeddings)`` of a
        preprocessed batch. ``logits``: raw, of the cell as given; ``probabilities``: what
        the bundle predicts (calibrated; the mean over the 8 dihedral views when it uses
        test-time augmentation, or as ``tta`` overrides); ``embeddings``: unit-norm pooled
        features of the cell as given (the gallery's space)."""
        if len(batch) == 0:
            classes = len(self.classes)
            return Predictions(batch.new_zeros(0, classes), batch.new_zeros(0, classes),
                               batch.new_zeros(0, self.model.embedding_dim))
        logits, features = [], []
        with evaluating(self.model) as model:
            fast = pass_model(model, batch)  # on CPU: the batch-norm-folded copy, a third faster
            for chunk in batch.split(batch_size):
                features.append(fast.forward_embedding(chunk))
                logits.append(fast.forward_head(features[-1]).float())
            logits, features = torch.cat(logits), torch.cat(features)
            probabilities = (self.predict_probabilities(batch, tta=tta, batch_size=batch_size) if self.uses_tta(tta)
                             else self.probabilities(logits))
        return Predictions(logits, probabilities, torch.nn.functional.normalize(features.float(), dim=1))

    @torch.no_grad()
    def predict_cells(self, samples, batch_size: int = 64, progress: bool = False, *,
                      tta: bool | None = None) -> Predictions:
        """:meth:`predict_batch` over cells (``CellSample``s or anything with ``.image``), as
        NumPy arrays ``(logits, probabilities, embeddings)``."""
        transform = self.transform()
        starts = range(0, len(samples), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="predicting", unit="batch", leave=False)
        parts = []
        for start in starts:
            batch = torch.stack([transform(sample.image) for sample in samples[start:start + batch_size]])
            parts.append([part.cpu() for part in self.predict_batch(batch.to(self.device), tta=tta,
                                                                    batch_size=batch_size)])
        if not parts:
            return Predictions(*(part.numpy() for part in self.predict_batch(torch.zeros(0), tta=tta)))
        return Predictions(*(torch.cat(column).numpy() for column in zip(*parts)))

    @torch.no_grad()
    def predict_probabilities(self, batch: torch.Tensor, tta: bool | None = None, batch_size: int = 64) -> torch.Tensor:
        """Calibrated probabilities ``(B, C)`` of a preprocessed batch: with test-time
        augmentation (``tta``, default the bundle's choice) the mean of the calibrated
        probabilities over the 8 dihedral views of each cell."""
        views = dihedral_views(batch) if self.uses_tta(tta) else [batch]
        return torch.stack([self.probabilities(self.predict_logits(view, batch_size)) for view in views]).mean(0)

    def to(self, device) -> "Bundle":
        self.model.to(device)
        return self

    # -- saving -------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the bundle to ``path`` atomically (a gallery or split already there is kept)."""
        path = Path(path)
        with atomic_dir(path) as staging:
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, staging / WEIGHTS_FILE)
            config = dict(self.config)
            config.update(format=FORMAT, format_version=FORMAT_VERSION, xcyto_version=__version__)
            config["weights_sha256"] = file_sha256(staging / WEIGHTS_FILE)
            write_json_atomic(staging / CONFIG_FILE, config)
            for kept in (GALLERY_DIR, SPLIT_FILE):
                if (path / kept).is_dir():
                    shutil.copytree(path / kept, staging / kept)
                elif (path / kept).is_file():
                    shutil.copyfile(path / kept, staging / kept)
        self.config, self.path, self._weights_sha256 = config, path, config["weights_sha256"]
        return path


def read_config(path: Path) -> dict:
    """The ``bundle.json`` of a bundle folder as a dict, or a clear ``BundleError``."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise BundleError(f"{path}: not a bundle (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{config_path}: corrupt JSON ({error})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{config_path}: not an xcyto bundle (format must be {FORMAT!r})")
    return config


def record_in_config(path: str | os.PathLike, records: dict) -> dict:
    """Add (or replace) top-level records of a bundle folder's ``bundle.json``, atomically, and
    return the new content. The weights, and so the bundle's sha256, are left as they are."""
    path = Path(path)
    config = {**read_config(path), **records}
    write_json_atomic(path / CONFIG_FILE, config)
    return config


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> Bundle:
    """Load and validate a plain bundle folder; refuse corrupt or inconsistent ones clearly.
    (:func:`xcyto.load` also loads ensembles.)"""
    path = Path(path)
    config_path = path / CONFIG_FILE
    weights_path = path / WEIGHTS_FILE
    recover_dir(path)  # a save killed half-way through its swap is finished here, with a warning
    recover_dir(path / GALLERY_DIR)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    config = read_config(path)
    if config.get("format") == ENSEMBLE_FORMAT:
        raise BundleError(f"{path}: is an ensemble, not a single model: xcyto.load loads it, and an ensemble "
                          "is built from plain bundles only (no ensembles of ensembles)")
    if not weights_path.is_file():
        raise BundleError(f"{path}: not a bundle (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    if config.get("format") != FORMAT:
        raise BundleError(f"{config_path}: not an xcyto bundle (format must be {FORMAT!r})")
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise BundleError(f"{config_path}: missing {', '.join(missing)}")
    weights_sha256 = file_sha256(weights_path)
    expected = config.get("weights_sha256")
    if expected and expected != weights_sha256:
        raise BundleError(f"{weights_path}: checksum does not match bundle.json (file corrupt or replaced)")
    try:
        get_spec(config["architecture"])
        model = create(config["architecture"], num_classes=len(config["classes"]), weights=None,
                       head=config.get("head", "linear"))
    except ModelError as error:
        raise BundleError(f"{path}: {error}") from None
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError) as error:
        raise BundleError(f"{weights_path}: unreadable weights ({error})") from None
    expected_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found_shapes = {k: tuple(v.shape) for k, v in state.items()}
    if expected_shapes != found_shapes:
        head = found_shapes.get("classifier.weight")
        detail = (
            f"classifier has {head[0]} outputs but bundle.json lists {len(config['classes'])} classes"
            if head and head[0] != len(config["classes"])
            else "tensor names or shapes differ from the architecture"
        )
        raise BundleError(f"{weights_path}: weights do not match {config['architecture']}: {detail}")
    model.load_state_dict(state)
    model.eval().to(device)
    return Bundle(model=model, config=config, path=path, _weights_sha256=weights_sha256)
