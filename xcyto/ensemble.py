"""Soft-voting ensembles: several bundles behind one folder that loads like any bundle.

Layout::

    ensemble/
      bundle.json        format "xcyto-ensemble": classes, members and their weights,
                         data provenance, test metrics
      members/<name>/    each member bundle copied whole (weights, gallery, split.csv),
                         so the folder needs nothing else
      split.csv          the members' split, when they all share one

The ensemble's probability of class ``c`` is ``sum_i w_i * softmax(z_i / T_i)[c]``: each
member with its own preprocessing, input size and calibration, weights summing to one
(equal, given, or fitted on validation cells by :func:`fit_weights`).
``predict_logits`` returns the log of that mixture and the temperature is 1, so
``bundle.probabilities(bundle.predict_logits(batch))`` is the mixture itself, and
:meth:`Bundle.predict_batch`, the one prediction interface of ``evaluate``, ``predict``, the
audit and the ensemble's explanations, works unchanged. Test-time augmentation is each
member's own (:meth:`EnsembleBundle.predict_probabilities`).

Members may differ in input size: a batch from :meth:`EnsembleBundle.preprocess` stacks
every member's own view of the cell along the channel axis (``3 x M`` channels), each
padded with zeros to the largest size, and each member reads back its own slice.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xcyto import __version__
from xcyto.atomic import atomic_dir, write_json_atomic
from xcyto.bundle import CONFIG_FILE, ENSEMBLE_FORMAT, GALLERY_DIR, SPLIT_FILE, Bundle, load_bundle
from xcyto.errors import BundleError, DataError

FORMAT_VERSION = 1
MEMBERS_DIR = "members"
COMBINATION = "sum_i w_i p_i(target) raw_i / scale_i, divided by sum_i w_i p_i(target)"


class EnsembleModule(nn.Module):
    """The members' models as one module: packed batch -> log of the weighted mean probability.

    Like a :class:`~xcyto.models.CellClassifier` it splits into ``forward_embedding`` (the
    members' pooled features, concatenated: the ensemble's embedding space) and
    ``forward_head`` (each member's head on its part, its calibration, weighted mixture, log).
    """

    def __init__(self, models: list[nn.Module], input_sizes: list[int], calibrations: list,
                 weights: np.ndarray) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.input_sizes = [int(size) for size in input_sizes]
        self.embedding_dims = [int(model.embedding_dim) for model in models]
        self.embedding_dim = sum(self.embedding_dims)
        # each member's calibration as an affine map of its logits: z * scale + bias
        vectors = [calibration.vectors(model.num_classes) for calibration, model in zip(calibrations, models)]
        self.register_buffer("scales", torch.tensor(np.stack([scale for scale, _ in vectors])))
        self.register_buffer("biases", torch.tensor(np.stack([bias for _, bias in vectors])))
        self.register_buffer("weights", torch.as_tensor(np.asarray(weights), dtype=torch.float32))

    def member_batches(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """Each member's own view ``(B, 3, S_i, S_i)`` of a packed batch."""
        if packed.dim() != 4 or packed.shape[1] != 3 * len(self.members):
            raise BundleError(f"an ensemble of {len(self.members)} members takes batches of "
                              f"{3 * len(self.members)} channels (from its preprocess or transform), "
                              f"got shape {tuple(packed.shape)}")
        return [packed[:, 3 * index:3 * index + 3, :size, :size] for index, size in enumerate(self.input_sizes)]

    def forward_embedding(self, packed: torch.Tensor) -> torch.Tensor:
        """``(B, sum D_i)``: each member's pooled features of its own view of the cells."""
        return torch.cat([model.forward_embedding(batch)
                          for model, batch in zip(self.members, self.member_batches(packed))], dim=1)

    def member_probabilities(self, embedding: torch.Tensor) -> torch.Tensor:
        """``(M, B, C)``: each member's calibrated probabilities from its part of the embedding."""
        parts = embedding.split(self.embedding_dims, dim=1)
        return torch.stack([torch.softmax(model.forward_head(part).float() * self.scales[index] + self.biases[index],
                                          dim=-1)
                            for index, (model, part) in enumerate(zip(self.members, parts))])

    def forward_head(self, embedding: torch.Tensor) -> torch.Tensor:
        mixture = torch.einsum("m,mbc->bc", self.weights, self.member_probabilities(embedding))
        return mixture.clamp_min(torch.finfo(mixture.dtype).tiny).log()

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_embedding(packed))


@dataclass
class PackedTransform:
    """Cell image -> ``(3M, S, S)``: every member's evaluation transform, zero-padded to ``S``."""

    transforms: list
    size: int

    def __call__(self, image) -> torch.Tensor:
        from xcyto.data import to_rgb_uint8

        image = to_rgb_uint8(image)
        packed = torch.zeros(3 * len(self.transforms), self.size, self.size)
        for index, transform in enumerate(self.transforms):
            view = transform(image)
            packed[3 * index:3 * index + 3, :view.shape[1], :view.shape[2]] = view
        return packed


@dataclass
class EnsembleBundle(Bundle):
    """A soft-voting ensemble that answers to everything a :class:`Bundle` does.

    ``members``: the member bundles, in order; ``model`` an :class:`EnsembleModule`
    holding their models (so ``to(device)`` moves them all). ``weights``: one per member,
    summing to one. Its embedding is the members' pooled features side by side; a gallery
    in that space can be built like any bundle's (``xcyto gallery build``). Without one,
    :func:`explain_ensemble` takes neighbours from the member with the largest weight.
    """

    members: list[Bundle] = field(default_factory=list)

    is_ensemble = True

    @property
    def architecture(self) -> str:
        return "ensemble"

    @property
    def input_size(self) -> int:
        return max(member.input_size for member in self.members)

    @property
    def temperature(self) -> float:
        return 1.0  # the members' calibrations are applied inside the mixture

    @property
    def tta(self) -> bool:
        """Whether any member averages the 8 dihedral views (each keeps its own choice)."""
        return any(member.tta for member in self.members)

    def describe_tta(self, tta: bool | None = None) -> str:
        with_views = [name for name, member in zip(self.member_names, self.members) if member.uses_tta(tta)]
        if len(with_views) in (0, len(self.members)):
            return super().describe_tta(tta)
        return f"the mean over the 8 dihedral views for {', '.join(with_views)}, one view for the other members"

    @torch.no_grad()
    def predict_probabilities(self, batch: torch.Tensor, tta: bool | None = None, batch_size: int = 64) -> torch.Tensor:
        """The weighted mixture of the members' calibrated probabilities, each member on its
        own view of the cells and with its own test-time augmentation (or as ``tta`` says
        for all of them). Each member turns its own view, never the packed batch."""
        parts = self.model.member_batches(batch)
        return sum(float(weight) * member.predict_probabilities(part, tta=tta, batch_size=batch_size)
                   for weight, member, part in zip(self.weights, self.members, parts))

    @property
    def member_names(self) -> list[str]:
        return [entry["name"] for entry in self.config["members"]]

    @property
    def weights(self) -> np.ndarray:
        return np.array([entry["weight"] for entry in self.config["members"]], dtype=np.float64)

    @property
    def lead(self) -> int:
        """Index of the member with the largest weight (the first on ties)."""
        return int(np.argmax(self.weights))

    def transform(self) -> PackedTransform:
        return PackedTransform([member.transform() for member in self.members], self.input_size)

    def set_weights(self, weights) -> None:
        weights = check_weights(weights, len(self.members))
        for entry, weight in zip(self.config["members"], weights):
            entry["weight"] = float(weight)
        self.model.weights.copy_(torch.as_tensor(weights, dtype=torch.float32))
        self._weights_sha256 = self.config["weights_sha256"] = members_sha256(self.members, weights)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ensemble with a copy of every member, atomically."""
        path = Path(path)
        with atomic_dir(path) as staging:
            for member, name in zip(self.members, self.member_names):
                target = staging / MEMBERS_DIR / name
                if member.path is not None and (member.path / CONFIG_FILE).is_file():
                    shutil.copytree(member.path, target)
                else:
                    member.save(target)
            config = dict(self.config)
            config.update(format=ENSEMBLE_FORMAT, format_version=FORMAT_VERSION, xcyto_version=__version__)
            write_json_atomic(staging / CONFIG_FILE, config)
            split = shared_split(self.members)
            if split is not None:
                shutil.copyfile(split, staging / SPLIT_FILE)
            if (path / GALLERY_DIR).is_dir():  # kept, as Bundle.save keeps it (refused if stale)
                shutil.copytree(path / GALLERY_DIR, staging / GALLERY_DIR)
        self.config, self.path = config, path
        for member, name in zip(self.members, self.member_names):
            member.path = path / MEMBERS_DIR / name  # the copies inside, so the ensemble stands alone
        return path


def check_weights(weights, count: int) -> np.ndarray:
    """Non-negative weights, one per member, normalised to sum to one."""
    if weights is None:
        return np.full(count, 1.0 / count)
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if len(weights) != count or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise BundleError(f"ensemble weights must be {count} non-negative numbers, not all zero; got {weights.tolist()}")
    return weights / weights.sum()


def members_sha256(members: list[Bundle], weights: np.ndarray) -> str:
    """Hash of the members' weights files and the ensemble weights: names the exact ensemble."""
    record = [[member.sha256, round(float(weight), 12)] for member, weight in zip(members, weights)]
    return hashlib.sha256(json.dumps(record).encode("utf-8")).hexdigest()


def make_ensemble(bundles, weights=None, name: str | None = None) -> EnsembleBundle:
    """An ensemble (in memory) of bundles or bundle folders; ``save`` it to keep it.

    The members must share their classes; their input sizes, normalisation and
    architectures may differ. ``weights``: one per member (normalised), default equal.
    """
    members = [bundle if isinstance(bundle, Bundle) else load_bundle(bundle) for bundle in bundles]
    if len(members) < 2:
        raise BundleError(f"an ensemble needs at least two bundles, got {len(members)}")
    for member in members:
        if isinstance(member, EnsembleBundle):
            raise BundleError(f"{member.path}: is an ensemble; build one ensemble of the plain bundles instead")
        if member.classes != members[0].classes:
            raise BundleError(f"the bundles have different classes: {members[0].name} has {members[0].classes}, "
                              f"{member.name} has {member.classes}; ensemble bundles of one label scheme")
    weights = check_weights(weights, len(members))
    device = members[0].device
    names = _unique_names([member.name for member in members])
    config = {
        "name": name or "ensemble-" + "+".join(names),
        "architecture": "ensemble",
        "classes": members[0].classes,
        "label_scheme": members[0].config.get("label_scheme", "default"),
        "input_size": max(member.input_size for member in members),
        "temperature": 1.0,
        "members": [{"name": member_name, "path": f"{MEMBERS_DIR}/{member_name}", "architecture": member.architecture,
                     "weights_sha256": member.sha256, "input_size": member.input_size,
                     "temperature": member.temperature, "calibration": member.calibration.method,
                     "weight": float(weight)}
                    for member_name, member, weight in zip(names, members, weights)],
        "weights_fitted_on": None,
        "data": _shared_data(members),
        "metrics": {},
        "weights_sha256": members_sha256(members, weights),
    }
    module = EnsembleModule([member.model.to(device) for member in members],
                            [member.input_size for member in members],
                            [member.calibration for member in members], weights).to(device)
    return EnsembleBundle(model=module, config=config, members=members, _weights_sha256=config["weights_sha256"])


def load_ensemble(path: Path, config: dict, device="cpu") -> EnsembleBundle:
    """Load an ensemble folder (:func:`xcyto.load` hands it here for its format)."""
    entries = config.get("members")
    if not isinstance(entries, list) or len(entries) < 2 or not all(isinstance(e, dict) for e in entries):
        raise BundleError(f"{path / CONFIG_FILE}: an ensemble needs a list of at least two members")
    members = []
    for entry in entries:
        member_path = path / str(entry.get("path", ""))
        if not member_path.resolve().is_relative_to(path.resolve()) or not member_path.is_dir():
            raise BundleError(f"{path}: member {entry.get('name')!r} is missing ({member_path}); "
                              f"an ensemble folder must hold its members (rebuild it with 'xcyto ensemble')")
        member = load_bundle(member_path, device=device)  # refuses an ensemble inside an ensemble
        if entry.get("weights_sha256") and entry["weights_sha256"] != member.sha256:
            raise BundleError(f"{member_path}: weights differ from those the ensemble was built with")
        members.append(member)
    try:
        weights = check_weights([entry.get("weight", 1.0) for entry in entries], len(entries))
    except BundleError as error:
        raise BundleError(f"{path / CONFIG_FILE}: {error}") from None
    ensemble = make_ensemble(members, weights, name=config.get("name"))
    if config.get("weights_sha256") not in (None, ensemble.sha256):
        raise BundleError(f"{path / CONFIG_FILE}: members or weights do not match the recorded checksum")
    ensemble.config = {**config, "members": ensemble.config["members"]}
    ensemble.path = path
    return ensemble


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "member"
        seen[safe] = seen.get(safe, 0) + 1
        unique.append(safe if seen[safe] == 1 else f"{safe}-{seen[safe]}")
    return unique


def _shared_data(members: list[Bundle]) -> dict:
    """The members' data provenance when they share data and split; else what differs."""
    records = [member.config.get("data") or {} for member in members]
    first = records[0]
    if all(r.get("source") == first.get("source") and r.get("split_sha256") == first.get("split_sha256")
           and r.get("scheme") == first.get("scheme") for r in records) and first.get("source"):
        return dict(first)
    return {"sources": sorted({str(r.get("source")) for r in records}),
            "note": "the members were trained on different data or splits"}


def shared_split(members: list[Bundle]) -> Path | None:
    """The split.csv all members share byte for byte, if any."""
    paths = [member.path / SPLIT_FILE if member.path else None for member in members]
    if any(p is None or not p.is_file() for p in paths):
        return None
    contents = {p.read_bytes() for p in paths}
    return paths[0] if len(contents) == 1 else None


# -- fitting and evaluating --------------------------------------------------------------------
def fit_weights(member_probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Weights minimising the negative log-likelihood of the mixture on labelled cells.

    ``member_probabilities``: ``(M, N, C)`` calibrated probabilities. Weights are the
    softmax of free parameters (so they stay on the simplex), fitted by L-BFGS.
    """
    probabilities = torch.as_tensor(np.asarray(member_probabilities), dtype=torch.float64)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if probabilities.dim() != 3 or probabilities.shape[1] != len(labels_t) or len(labels_t) == 0:
        raise DataError("fit_weights needs (members, cells, classes) probabilities and one label per cell")
    chosen = probabilities[:, torch.arange(len(labels_t)), labels_t]  # (M, N): each member's p(true class)
    parameters = torch.zeros(probabilities.shape[0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([parameters], lr=0.5, max_iter=200)

    def closure():
        optimizer.zero_grad()
        mixture = torch.softmax(parameters, 0) @ chosen
        loss = -mixture.clamp_min(1e-12).log().mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.softmax(parameters.detach(), 0).numpy()


def member_probabilities_on(ensemble: EnsembleBundle, samples) -> np.ndarray:
    """``(M, N, C)`` calibrated probabilities of each member on cells, each with its own transform."""
    return np.stack([member.predict_cells(samples).probabilities for member in ensemble.members])
