"""Explaining an ensemble: each member explains the ensemble's target class with its own
model and preprocessing, and the maps are combined (:func:`combine_maps`).

:func:`xcyto.explain` hands an ensemble here; this module calls only the explanation
engine below it, so an ensemble (``xcyto.ensemble``) needs nothing from the explain layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from xcyto import __version__
from xcyto.ensemble import COMBINATION, EnsembleBundle
from xcyto.errors import XcytoError
from xcyto.explain._batched import display_maps, upsample
from xcyto.explain._inputs import load_images, resolve_target
from xcyto.explain._plain import explain_bundle, gallery_for, neighbours_of
from xcyto.explain._render import overlay_batch
from xcyto.explain._result import Explanation, Heatmap

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
                     normalise: str = "individual", batch_size: int = 32, morphology: bool = True,
                     tta: bool | None = None, **method_options):
    """:func:`xcyto.explain` for an ensemble: each member explains the ensemble's target class,
    and the maps are combined weighted by ``w_i * p_i(target)`` (see :func:`combine_maps`).

    Neighbours and atypicality come from the ensemble's own gallery when it has one, else
    from the member with the largest weight (``settings["neighbours_from"]`` says which).
    Each member's own explanation stays in ``explanation.members``; ``tta`` applies to the
    ensemble's probabilities and the members' (default: each member's own choice).
    """
    read = sorted({member.config.get("view", "cell") for member in bundle.members})
    if len(read) > 1:  # the maps would be averaged across frames that do not line up
        raise XcytoError(f"the ensemble's members read different views of a crop ({', '.join(read)}), so their "
                         "maps cannot be combined; explain each member bundle on its own")
    arrays, names, single = load_images(image)
    probabilities, embeddings = _forward(bundle, arrays, batch_size, tta)
    targets = resolve_target(target, bundle.classes, len(arrays))
    targets = probabilities.argmax(axis=1).tolist() if targets is None else targets
    lead = bundle.lead
    own_gallery = _own_gallery(bundle) if neighbours else None
    member_results = [explain_bundle(arrays, member, methods, target=targets,
                                     neighbours=neighbours if index == lead and own_gallery is None else 0,
                                     normalise=normalise, batch_size=batch_size,
                                     morphology=morphology and index == lead, tta=tta, **method_options)
                      for index, member in enumerate(bundle.members)]
    views, heatmaps = combine_maps(bundle, member_results, targets, normalise)
    if own_gallery is not None:
        found, nearest, scores, flags = neighbours_of(bundle, embeddings, int(neighbours), len(arrays))
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
        "tta": (f"probabilities: {bundle.describe_tta(tta)}; the maps explain the view as given"
                if bundle.uses_tta(tta) else None),
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
            original=member_results[lead][index].original, morphology=member_results[lead][index].morphology,
            data_issues=list(member_results[lead][index].data_issues),
            members={name: results[index] for name, results in zip(bundle.member_names, member_results)}))
    return explanations[0] if single else explanations


def _forward(bundle: EnsembleBundle, arrays, batch_size: int, tta) -> tuple[np.ndarray, torch.Tensor]:
    """The ensemble's probabilities ``(N, C)`` and unit-norm embeddings ``(N, D)``."""
    probabilities, embeddings = [], []
    for start in range(0, len(arrays), batch_size):
        predicted = bundle.predict_batch(bundle.preprocess(arrays[start:start + batch_size]), tta=tta)
        probabilities.append(predicted.probabilities.cpu())
        embeddings.append(predicted.embeddings.cpu())
    return torch.cat(probabilities).numpy(), torch.cat(embeddings)


def combine_maps(bundle: EnsembleBundle, member_results: list[list[Explanation]], targets: list[int],
                 normalise: str) -> tuple[np.ndarray, list[dict]]:
    """The cells as the widest member saw them ``(N, S, S, 3)``, and per cell the combined
    :class:`~xcyto.explain.Heatmap` of every method.

    Each member's raw map is divided by its own scale (the 99th percentile of ``|raw|``, per
    cell or shared as ``normalise`` says), so no member dominates by the size of its
    gradients, resized to the largest input size, and weighted by ``w_i * p_i(target)``
    normalised over the members (``heatmap.info["share_<member>"]``).
    """
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

    try:
        return gallery_for(bundle)
    except XcytoError as error:
        warnings.warn(f"the ensemble's gallery is unusable, neighbours come from a member: {error}", stacklevel=3)
        return None
