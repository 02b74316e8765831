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
``bundle.probabilities(bundle.predict_logits(batch))`` is the mixture itself and every
caller of a plain bundle (``evaluate``, ``predict``, the audit, the demo) works unchanged.

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
from xcyto.bundle import CONFIG_FILE, ENSEMBLE_FORMAT, GALLERY_DIR, SPLIT_FILE, Bundle, load
from xcyto.errors import BundleError, DataError
from xcyto.explain.result import Explanation

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

    def forward_embedding(self, packed: torch.Tensor) -> torch.Tensor:
        """``(B, sum D_i)``: each member's pooled features of its own view of the cells."""
        if packed.dim() != 4 or packed.shape[1] != 3 * len(self.members):
            raise BundleError(f"an ensemble of {len(self.members)} members takes batches of "
                              f"{3 * len(self.members)} channels (from its preprocess or transform), "
                              f"got shape {tuple(packed.shape)}")
        return torch.cat([model.forward_embedding(packed[:, 3 * index:3 * index + 3, :size, :size])
                          for index, (model, size) in enumerate(zip(self.members, self.input_sizes))], dim=1)

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
        from xcyto.data.io import to_rgb_uint8

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
            split = _shared_split(self.members)
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
    members = [bundle if isinstance(bundle, Bundle) else load(bundle) for bundle in bundles]
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
    """Load an ensemble folder (called by :func:`xcyto.bundle.load` for its format)."""
    entries = config.get("members")
    if not isinstance(entries, list) or len(entries) < 2 or not all(isinstance(e, dict) for e in entries):
        raise BundleError(f"{path / CONFIG_FILE}: an ensemble needs a list of at least two members")
    members = []
    for entry in entries:
        member_path = path / str(entry.get("path", ""))
        if not member_path.resolve().is_relative_to(path.resolve()) or not member_path.is_dir():
            raise BundleError(f"{path}: member {entry.get('name')!r} is missing ({member_path}); "
                              f"an ensemble folder must hold its members (rebuild it with 'xcyto ensemble')")
        member = load(member_path, device=device)
        if isinstance(member, EnsembleBundle):
            raise BundleError(f"{member_path}: ensembles of ensembles are not supported")
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


def _shared_split(members: list[Bundle]) -> Path | None:
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
    from xcyto.training.evaluate import bundle_logits

    return np.stack([member.calibration.probabilities(bundle_logits(member, samples)) for member in ensemble.members])


def ensemble_command(bundles, out, weights=None, fit: bool = False, data=None, scheme=None) -> EnsembleBundle:
    """``xcyto ensemble``: build, optionally fit weights on validation, test, save, report."""
    from xcyto.training.evaluate import evaluate_bundle, select_split
    from xcyto.training.metrics import headline_metrics

    if fit and weights is not None:
        raise BundleError("give either weights or --fit-weights, not both")
    ensemble = make_ensemble(bundles, weights)
    reference = ensemble.members[0]  # select_split reads the manifest beside a bundle; the members share it
    dataset = None
    if fit or _shared_split(ensemble.members) is not None:
        data = data or ensemble.config["data"].get("source")
        if _shared_split(ensemble.members) is None or not data:
            raise BundleError("fitting weights needs members that share a split (trained on the same split.csv, "
                              "e.g. one fold of 'xcyto compare') and their data (--data)")
        from xcyto.data import load_dataset

        label_scheme = ensemble.config.get("label_scheme", "default")
        dataset = load_dataset(data, scheme=scheme or (None if label_scheme == "default" else label_scheme))
    if fit:
        val = select_split(reference, dataset, "val")
        ensemble.set_weights(fit_weights(member_probabilities_on(ensemble, val.samples), val.labels))
        ensemble.config["weights_fitted_on"] = f"val ({len(val)} cells, negative log-likelihood)"
    if dataset is not None:
        cells = select_split(reference, dataset, "test")
        evaluated_on = "test" if len(cells) else "val"
        if not len(cells):
            cells = select_split(reference, dataset, "val")
        metrics = evaluate_bundle(ensemble, cells)
        ensemble.config["metrics"] = {"test": headline_metrics(metrics), "evaluated_on": evaluated_on}
    ensemble.save(out)
    summary = ", ".join(f"{name} {weight:.2f}" for name, weight in zip(ensemble.member_names, ensemble.weights))
    print(f"ensemble of {len(ensemble.members)} bundles ({summary}) -> {out}")
    test = ensemble.config["metrics"].get("test")
    if test:
        line = (f"{ensemble.config['metrics']['evaluated_on']} ({test['n']} cells): accuracy {test['accuracy']:.3f}, "
                f"macro-F1 {test['macro_f1']:.3f}, ECE {test['ece']:.3f}")
        if "binary_accuracy" in test:
            line += f", normal/abnormal accuracy {test['binary_accuracy']:.3f}"
        print(line)
    return ensemble


# -- explanations -------------------------------------------------------------------------------
@dataclass(repr=False)  # keep Explanation's short repr
class EnsembleExplanation(Explanation):
    """An :class:`Explanation` of an ensemble's prediction; ``members`` keeps each member's own
    explanation (maps of the same target class), by member name."""

    members: dict = field(default_factory=dict)

    def to_dict(self, arrays: bool = False) -> dict:
        out = super().to_dict(arrays)
        out["members"] = {name: member.to_dict(arrays) for name, member in self.members.items()}
        return out


def explain_ensemble(image, bundle: EnsembleBundle, methods, target=None, neighbours: int = 8, *,
                     normalise: str = "individual", batch_size: int = 32, device=None, **method_options):
    """:func:`xcyto.explain` for an ensemble: each member explains the ensemble's target class,
    and the maps are combined weighted by ``w_i * p_i(target)`` (see :func:`combine_maps`).

    Neighbours and atypicality come from the ensemble's own gallery when it has one, else
    from the member with the largest weight (``settings["neighbours_from"]`` says which).
    Each member's own explanation stays in ``explanation.members``.
    """
    from xcyto.explain.api import _neighbours, explain, load_images, resolve_target

    if device is not None:
        bundle.to(device)
    arrays, names, single = load_images(image)
    probabilities, embeddings = _forward(bundle, arrays, batch_size)
    targets = resolve_target(target, bundle.classes, len(arrays))
    targets = probabilities.argmax(axis=1).tolist() if targets is None else targets
    lead = bundle.lead
    own_gallery = _own_gallery(bundle) if neighbours else None
    member_results = [explain(arrays, bundle=member, methods=methods, target=targets,
                              neighbours=neighbours if index == lead and own_gallery is None else 0,
                              normalise=normalise, batch_size=batch_size, **method_options)
                      for index, member in enumerate(bundle.members)]
    views, heatmaps = combine_maps(bundle, member_results, targets, normalise)
    if own_gallery is not None:
        found, nearest, scores, flags = _neighbours(bundle, embeddings, int(neighbours), len(arrays))
        source = "the ensemble's own gallery"
    else:
        leads = member_results[lead]
        found, nearest = [e.neighbours for e in leads], [e.nearest_per_class for e in leads]
        scores, flags = [e.atypicality for e in leads], [e.atypical for e in leads]
        embeddings = [e.embedding for e in leads]
        source = f"{bundle.member_names[lead]} (the member with the largest weight)"
    common = {
        "bundle_name": bundle.name, "bundle_sha256": bundle.sha256,
        "bundle_path": str(bundle.path) if bundle.path else None, "architecture": "ensemble",
        "temperature": 1.0, "input_size": bundle.input_size, "normalise": normalise,
        "display": member_results[lead][0].settings.get("display"), "xcyto_version": __version__,
        "device": str(bundle.device), "seed": int(method_options.get("seed", 0)),
        "methods": member_results[lead][0].settings.get("methods"), "combination": COMBINATION,
        "members": [{"name": name, "architecture": member.architecture, "weight": float(weight),
                     "sha256": member.sha256}
                    for name, member, weight in zip(bundle.member_names, bundle.members, bundle.weights)],
        "neighbours_from": source, "target_requested": target is not None,
    }
    explanations = []
    for index in range(len(arrays)):
        timings = {}
        for results in member_results:
            for key, value in results[index].timings_ms.items():
                timings[key] = round(timings.get(key, 0.0) + value, 2)
        explanations.append(EnsembleExplanation(
            image=views[index], classes=bundle.classes,
            probabilities={name: float(p) for name, p in zip(bundle.classes, probabilities[index])},
            predicted=bundle.classes[int(probabilities[index].argmax())], target=bundle.classes[targets[index]],
            heatmaps=heatmaps[index], neighbours=list(found[index]), nearest_per_class=dict(nearest[index]),
            atypicality=None if scores is None or scores[index] is None else float(scores[index]),
            atypical=None if flags is None or flags[index] is None else bool(flags[index]),
            settings=dict(common), source=names[index],
            embedding=None if embeddings[index] is None else np.asarray(embeddings[index]), timings_ms=timings,
            members={name: results[index] for name, results in zip(bundle.member_names, member_results)}))
    return explanations[0] if single else explanations


@torch.no_grad()
def _forward(bundle: EnsembleBundle, arrays, batch_size: int) -> tuple[np.ndarray, torch.Tensor]:
    """One pass: the ensemble's probabilities ``(N, C)`` and unit-norm embeddings ``(N, D)``."""
    bundle.model.eval()
    probabilities, embeddings = [], []
    for start in range(0, len(arrays), batch_size):
        features = bundle.model.forward_embedding(bundle.preprocess(arrays[start:start + batch_size]))
        probabilities.append(bundle.probabilities(bundle.model.forward_head(features)).cpu())
        embeddings.append(torch.nn.functional.normalize(features.float(), dim=1).cpu())
    return torch.cat(probabilities).numpy(), torch.cat(embeddings)


def combine_maps(bundle: EnsembleBundle, member_results: list[list[Explanation]], targets: list[int],
                 normalise: str) -> tuple[np.ndarray, list[dict]]:
    """The cells as the widest member saw them ``(N, S, S, 3)``, and per cell the combined
    :class:`~xcyto.explain.result.Heatmap` of every method.

    Each member's raw map is divided by its own scale (the 99th percentile of ``|raw|``, per
    cell or shared as ``normalise`` says), so no member dominates by the size of its
    gradients, resized to the largest input size, and weighted by ``w_i * p_i(target)``
    normalised over the members (``heatmap.info["share_<member>"]``).
    """
    from xcyto.explain.batched import display_maps, upsample
    from xcyto.explain.render import overlay_batch
    from xcyto.explain.result import Heatmap

    size = bundle.input_size
    widest = [member.input_size for member in bundle.members].index(size)
    views = torch.from_numpy(np.stack([e.image for e in member_results[widest]]))
    contributions = np.stack([weight * np.array([e.probabilities[bundle.classes[t]] for e, t in zip(results, targets)])
                              for weight, results in zip(bundle.weights, member_results)])  # (M, N)
    shares = contributions / np.maximum(contributions.sum(axis=0, keepdims=True), 1e-12)
    heatmaps = [{} for _ in targets]
    for method, first in member_results[0][0].heatmaps.items():
        combined = torch.zeros(len(targets), size, size)
        for share, results in zip(shares, member_results):
            raw = upsample(torch.from_numpy(np.stack([e.heatmaps[method].raw for e in results])), (size, size))
            scale = torch.tensor([e.heatmaps[method].scale for e in results], dtype=torch.float32).clamp_min(1e-12)
            combined += torch.from_numpy(share).float()[:, None, None] * raw / scale[:, None, None]
        display, scale = display_maps(combined, normalise)
        overlay = overlay_batch(views, display)
        for index, cell_heatmaps in enumerate(heatmaps):
            cell_heatmaps[method] = Heatmap(
                method=method, raw=combined[index].numpy(), display=display[index].numpy(),
                overlay=overlay[index].numpy(), scale=float(scale[index]), signed=first.signed, normalise=normalise,
                settings={**first.settings, "combination": COMBINATION},
                info={f"share_{name}": float(shares[m, index]) for m, name in enumerate(bundle.member_names)})
    return views.numpy(), heatmaps


def _own_gallery(bundle: EnsembleBundle):
    """The ensemble's own gallery, or ``None`` (none built, or unusable: then warned)."""
    import warnings

    from xcyto.errors import XcytoError
    from xcyto.explain.api import gallery_for

    try:
        return gallery_for(bundle)
    except XcytoError as error:
        warnings.warn(f"the ensemble's gallery is unusable, neighbours come from a member: {error}", stacklevel=3)
        return None
