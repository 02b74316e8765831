"""Explaining a plain bundle's predictions: one shared forward pass per batch, every
method's maps, the neighbours and the measured morphology (see :func:`explain_bundle`)."""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from xcyto import __version__
from xcyto.bundle import Bundle
from xcyto.data import view_box
from xcyto.errors import XcytoError
from xcyto.explain._batched import display_maps, explain_batch
from xcyto.explain._inputs import load_images, resolve_target
from xcyto.explain._render import model_view, overlay_batch
from xcyto.explain._result import Explanation, Heatmap
from xcyto.models import get_spec


def gallery_for(bundle: Bundle):
    """The bundle's gallery, or ``None`` when it has none or ``xcyto.embedding`` is missing.
    (``load_gallery`` caches per bundle and notices a rebuilt gallery.)"""
    try:
        from xcyto.embedding import load_gallery
    except ImportError:
        return None
    return load_gallery(bundle)


def explain_bundle(image, bundle: Bundle, methods, target=None, neighbours: int = 8, *, normalise: str = "individual",
                   batch_size: int = 32, morphology: bool = True, tta: bool | None = None, **method_options):
    """:func:`xcyto.explain` for a plain bundle (arguments checked by it; ``methods``
    resolved). ``tta``: the probabilities average the 8 dihedral views (default: the
    bundle's choice); the maps explain the cell as given."""
    started = time.perf_counter()
    use_tta = bundle.uses_tta(tta)
    arrays, names, single = load_images(image)
    targets = resolve_target(target, bundle.classes, len(arrays))
    spec = get_spec(bundle.architecture)
    mean, std = tuple(bundle.config["mean"]), tuple(bundle.config["std"])

    chunks, averaged = [], []
    for start in range(0, len(arrays), batch_size):
        batch = bundle.preprocess(arrays[start:start + batch_size])
        chunk_targets = None if targets is None else targets[start:start + batch_size]
        if use_tta:  # the prediction is the mean over 8 views; the maps explain this view of its class
            averaged.append(bundle.predict_probabilities(batch, tta=True).cpu())
            if chunk_targets is None:
                chunk_targets = averaged[-1].argmax(dim=1).tolist()
        result = explain_batch(bundle.model, batch, methods, chunk_targets, layer=spec.cam_layer(bundle.input_size),
                               embedding_layer=spec.embedding_layer, mean=mean, std=std, normalise=None,
                               options=method_options)
        chunks.append((result, model_view(batch, mean, std), batch.shape[0]))
    results = [chunk[0] for chunk in chunks]

    def gather(tensors):
        tensors = list(tensors)
        return tensors[0] if len(tensors) == 1 else torch.cat([t.cpu() for t in tensors])

    logits = gather(r.logits for r in results)
    probabilities = (torch.cat(averaged) if averaged else bundle.probabilities(logits)).cpu().numpy()
    chosen = gather(r.targets for r in results).cpu().numpy()
    views = gather(chunk[1] for chunk in chunks)
    embedding = None if results[0].embedding is None else gather(r.embedding for r in results)
    per_method = {}
    for method in methods:
        raw = gather(r.raw[method.name] for r in results)
        display, scale = display_maps(raw, normalise)
        overlay = overlay_batch(views.to(display.device), display)
        info = {key: gather(r.info[method.name][key] for r in results).cpu().numpy()
                for key in results[0].info.get(method.name, {})}
        per_method[method.name] = (raw.cpu().numpy(), display.cpu().numpy(), overlay.cpu().numpy(),
                                   scale.cpu().numpy(), info)
    views = views.cpu().numpy()

    neighbour_started = time.perf_counter()
    found, nearest, atypical_scores, atypical_flags = neighbours_of(bundle, embedding, int(neighbours), len(arrays))
    neighbour_seconds = time.perf_counter() - neighbour_started
    checks_started = time.perf_counter()
    issues = data_issues_of(bundle, arrays, names)
    checks_seconds = time.perf_counter() - checks_started
    morphology_started = time.perf_counter()
    morphologies = _morphologies(bundle, arrays) if morphology else [None] * len(arrays)
    for cell, cell_issues in zip(morphologies, issues):
        if cell is not None and any(issue.check == "no_nucleus" for issue in cell_issues):
            cell.without_nucleus()  # never show measurements of a nucleus that is not there
    fused = _fused_readings(bundle, probabilities, morphologies, issues)
    morphology_seconds = time.perf_counter() - morphology_started

    cells = len(arrays)
    timings = {"forward": sum(r.seconds["forward"] for r in results) / cells * 1000}
    for method in methods:
        timings[method.name] = sum(r.seconds[method.name] for r in results) / cells * 1000
    timings["neighbours"] = neighbour_seconds / cells * 1000
    timings["morphology"] = morphology_seconds / cells * 1000
    timings["data_checks"] = checks_seconds / cells * 1000
    timings["total"] = (time.perf_counter() - started) / cells * 1000
    timings = {key: round(value, 2) for key, value in timings.items()}

    classes = bundle.classes
    common = {
        "bundle_name": bundle.name, "bundle_sha256": bundle.sha256,
        "bundle_path": str(bundle.path) if bundle.path else None, "architecture": bundle.architecture,
        "temperature": bundle.temperature, "calibration": bundle.calibration.method,
        "input_size": bundle.input_size, "normalise": normalise,
        "display": "clip(max(raw, 0) / p99(|raw|), 0, 1)", "xcyto_version": __version__,
        "device": str(bundle.device), "seed": int(method_options.get("seed", 0)),
        "tta": "mean of the calibrated probabilities over the 8 dihedral views; the maps explain the view "
               "as given" if use_tta else None,
        "methods": results[0].settings,
    }
    recorded = _recorded_checks(bundle, results[0].settings)
    padded = bool(bundle.config.get("pad_to_square", True))
    view = bundle.config.get("view", "cell")
    sets, screen = bundle.prediction_sets, bundle.screen
    in_set = sets.predict(np.asarray(probabilities, dtype=np.float64)) if sets is not None else None
    if sets is not None:
        common.update(set_coverage=sets.coverage, sets=sets.describe())
    referred = None
    if screen is not None and screen.guaranteed:
        from xcyto.trust import p_abnormal

        referred = screen.refer(p_abnormal(np.asarray(probabilities, dtype=np.float64), classes))
        common.update(screen=screen.describe())
    explanations = []
    for index in range(cells):
        heatmaps = {}
        for method in methods:
            raw, display, overlay, scale, info = per_method[method.name]
            heatmaps[method.name] = Heatmap(
                method=method.name, raw=raw[index], display=display[index], overlay=overlay[index],
                scale=float(scale[index]), signed=method.signed, normalise=normalise,
                settings=dict(results[0].settings[method.name]),
                info={**{key: float(values[index]) for key, values in info.items()}, **recorded.get(method.name, {})},
                frame=(*arrays[index].shape[:2], padded, view_box(arrays[index], view)))
        target_index = int(chosen[index])
        predicted_index = int(probabilities[index].argmax())
        settings = dict(common, target_requested=targets is not None)
        explanations.append(Explanation(
            image=views[index], classes=classes,
            probabilities={name: float(p) for name, p in zip(classes, probabilities[index])},
            predicted=classes[predicted_index], target=classes[target_index], heatmaps=heatmaps,
            neighbours=found[index], nearest_per_class=nearest[index],
            atypicality=None if atypical_scores is None else float(atypical_scores[index]),
            atypical=None if atypical_flags is None else bool(atypical_flags[index]),
            settings=settings, source=names[index],
            embedding=None if embedding is None else embedding[index].cpu().numpy(),
            timings_ms=timings, original=arrays[index], morphology=morphologies[index], data_issues=issues[index],
            prediction_set=[] if in_set is None else [classes[c] for c in np.argsort(-probabilities[index])
                                                      if in_set[index, c]],
            screening=None if referred is None else ("refer" if referred[index] else "clear"),
            fused=fused[index]))
    return explanations[0] if single else explanations


def data_issues_of(bundle, arrays: list[np.ndarray], names=None) -> list[list]:
    """The data issues of each image (:func:`xcyto.data.health.check_image`), judged against the
    bundle's training cells where it recorded them (focus, size and aspect are relative)."""
    from xcyto.data.health import check_image

    reference = (bundle.config.get("data_health") or {}).get("reference") or None
    names = names or [""] * len(arrays)
    return [check_image(array, reference=reference, path=str(name or "")) for array, name in zip(arrays, names)]


def _recorded_checks(bundle, settings: dict) -> dict[str, dict[str, float]]:
    """The bundle's recorded randomisation check of each method, where it was made on the
    layer used now: ``{method: {"randomisation_rho", "randomisation_flagged"}}``."""
    checks = (bundle.config.get("explanation_checks") or {}).get("randomisation", {})
    return {name: {"randomisation_rho": float(check["rho"]), "randomisation_flagged": float(check["flagged"])}
            for name, check in checks.items()
            if name in settings and settings[name].get("layer") == check.get("layer")}


def _morphologies(bundle, arrays: list[np.ndarray]) -> list:
    """Each cell segmented and measured; its measurements placed among the training cells of
    each class when the bundle's gallery measured them."""
    from xcyto.morphology import analyse, preferred_segmenter

    try:
        gallery = gallery_for(bundle)
    except XcytoError:
        gallery = None
    measured = None if gallery is None else gallery.morphology
    method = (gallery.meta["morphology"]["segmenter"] if measured is not None else None) or preferred_segmenter()
    found = []
    for array in arrays:
        cell = analyse(array, method)
        if measured is not None:
            cell.place_among(np.asarray(measured[0]), measured[1], np.asarray(gallery.labels), gallery.classes)
        found.append(cell)
    return found


def _fused_readings(bundle, probabilities, morphologies: list, issues: list) -> list:
    """Each cell's fused reading where the bundle fuses its network with the measurements
    (``None`` without a fusion, without measurements, or for a crop without a nucleus)."""
    from xcyto.fusion import fused_reading, load_fusion

    measured = any(cell is not None for cell in morphologies)
    fusion = load_fusion(bundle) if measured and bundle.config.get("morphology_fusion") else None
    if fusion is None:
        return [None] * len(morphologies)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return [None if cell is None or any(issue.check == "no_nucleus" for issue in cell_issues)
            else fused_reading(fusion, probabilities[index], cell.features, bundle.classes)
            for index, (cell, cell_issues) in enumerate(zip(morphologies, issues))]


def neighbours_of(bundle, embedding, k: int, count: int):
    """``(neighbours, nearest per class, atypicality scores, flags)`` of ``count`` embedded cells."""
    empty = ([[] for _ in range(count)], [{} for _ in range(count)], None, None)
    if k == 0 or embedding is None:
        return empty
    try:
        gallery = gallery_for(bundle)
    except XcytoError as error:  # a stale or broken gallery must not hide the maps
        warnings.warn(f"neighbours left out: {error}", stacklevel=3)
        return empty
    if gallery is None:
        return empty
    query = embedding.detach().float().cpu()
    found = [list(row) for row in gallery.neighbours(query, k)]
    nearest = [dict(row) for row in gallery.nearest_per_class(query)]
    scores, flags = gallery.atypicality(query)
    return found, nearest, np.asarray(scores), np.asarray(flags)
