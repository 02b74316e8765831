"""``xcyto.explain(image)``: the one entry point the demo, notebooks, audit and CLI share."""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import xcyto
from xcyto import __version__
from xcyto.bundle import Bundle, load
from xcyto.data.io import check_cell_size, read_image, to_rgb_uint8
from xcyto.errors import ExplainError, ImageError, XcytoError
from xcyto.explain.batched import DEFAULT_METHODS, NORMALISE, display_maps, explain_batch, method_settings
from xcyto.explain.registry import get_method, resolve_methods
from xcyto.explain.render import model_view, overlay_batch
from xcyto.explain.result import Explanation, Heatmap
from xcyto.models import get_spec

BUNDLE_ENV = "XCYTO_BUNDLE"
#: Images per forward pass when a list is explained (memory-heavy methods chunk further).
BATCH_SIZE = 32

_BUNDLES: dict[str, tuple[int, Bundle]] = {}


def default_bundle_path() -> Path:
    """The demo bundle shipped with the repository (built by ``make artifacts``)."""
    return Path(xcyto.__file__).parents[1] / "artifacts" / "demo-bundle"


def resolve_bundle(bundle=None) -> Bundle:
    """A :class:`Bundle` as is; a path loaded once and cached (reloaded when its weights change);
    ``None``: ``$XCYTO_BUNDLE``, else the shipped demo bundle."""
    if isinstance(bundle, Bundle):
        return bundle
    if bundle is None:
        if os.environ.get(BUNDLE_ENV):
            path = Path(os.environ[BUNDLE_ENV])
        else:
            path = default_bundle_path()
            if not path.is_dir():
                raise ExplainError(
                    f"no bundle given, ${BUNDLE_ENV} is not set and there is no demo bundle at {path}; "
                    f"pass bundle=PATH (a folder written by 'xcyto train'), set {BUNDLE_ENV}, "
                    "or build the demo bundle with 'make artifacts'")
    elif isinstance(bundle, (str, os.PathLike)):
        path = Path(bundle)
    else:
        raise ExplainError(f"bundle must be a Bundle or a path, got {type(bundle).__name__}")
    key = str(path.expanduser().resolve())
    stamp = _stamp(path)
    cached = _BUNDLES.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    loaded = load(path)
    _BUNDLES[key] = (stamp, loaded)
    return loaded


def _stamp(path: Path) -> int:
    """Changes when the bundle is rewritten (an ensemble has only ``bundle.json``)."""
    stamps = []
    for name in ("model.safetensors", "bundle.json"):
        try:
            stamps.append((path / name).stat().st_mtime_ns)
        except OSError:
            pass
    return max(stamps, default=-1)


def load_images(image) -> tuple[list[np.ndarray], list[str], bool]:
    """``(RGB uint8 arrays, names, single)`` from one image or a list of them.

    Paths and bytes go through :func:`xcyto.data.io.read_image` (which refuses huge
    images from the header, before decoding); PIL images, arrays and tensors through
    :func:`~xcyto.data.io.to_rgb_uint8`. A 4-D array or tensor is a batch.
    """
    single = not isinstance(image, (list, tuple))
    items = [image] if single else list(image)
    if single and _is_batch_array(image):
        items, single = list(image), False
    if not items:
        raise ImageError("no images given")
    arrays, names = [], []
    for index, item in enumerate(items):
        name = str(item) if isinstance(item, (str, os.PathLike)) else f"image {index}"
        if isinstance(item, (str, os.PathLike, bytes, bytearray)):
            array = read_image(item)
        else:
            try:
                array = to_rgb_uint8(item)
            except ImageError as error:
                raise ImageError(f"{name}: {error}") from None
        arrays.append(check_cell_size(array, name))
        names.append(name)
    return arrays, names, single


def _is_batch_array(image) -> bool:
    return isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 4


def resolve_target(target, classes: list[str], count: int) -> list[int] | None:
    """``None`` (explain the prediction), a class index or name, or one per image -> indices."""
    if target is None:
        return None
    if isinstance(target, (list, tuple, np.ndarray, torch.Tensor)) and not isinstance(target, str):
        targets = list(target.tolist() if hasattr(target, "tolist") else target)
        if len(targets) != count:
            raise ExplainError(f"{len(targets)} targets given for {count} images")
        return [_class_index(t, classes) for t in targets]
    return [_class_index(target, classes)] * count


def _class_index(target, classes: list[str]) -> int:
    if isinstance(target, (bool, np.bool_)):
        raise ExplainError(f"target must be a class name or index, got {target!r}")
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < len(classes):
            raise ExplainError(f"target class index {target} out of range 0..{len(classes) - 1} ({', '.join(classes)})")
        return int(target)
    if isinstance(target, str):
        wanted = target.strip().lower()
        for index, name in enumerate(classes):
            if name.lower() == wanted:
                return index
        if wanted.isdigit():
            return _class_index(int(wanted), classes)
        raise ExplainError(f"unknown class {target!r}; this bundle's classes are: {', '.join(classes)}")
    raise ExplainError(f"target must be a class name or index, got {type(target).__name__}")


def gallery_for(bundle: Bundle):
    """The bundle's gallery, or ``None`` when it has none or ``xcyto.embedding`` is missing.
    (``load_gallery`` caches per bundle and notices a rebuilt gallery.)"""
    try:
        from xcyto.embedding import load_gallery
    except ImportError:
        return None
    return load_gallery(bundle)


def explain(image, bundle=None, methods=DEFAULT_METHODS, target=None, neighbours: int = 8, *,
            normalise: str = "individual", batch_size: int = BATCH_SIZE, device=None, morphology: bool = True,
            **method_options):
    """Explain the classification of one cell (or a list of cells, run as batches).

    ``image``: a path, PIL image, NumPy array (HWC, uint8/16-bit/float), tensor, or a
    list of them (or a 4-D array/tensor) -> a list of :class:`Explanation`.
    ``bundle``: a :class:`~xcyto.bundle.Bundle` or a bundle folder; default
    ``$XCYTO_BUNDLE``, else ``artifacts/demo-bundle``. Loaded bundles are cached by path.
    ``methods``: names or a comma-separated string (``xcyto.explain.list_methods()``).
    ``target``: class name or index to explain (default: the predicted class), or one
    per image: ``target="Koilocytotic"`` answers "why (not) koilocytotic?".
    ``neighbours``: how many nearest gallery cells to attach (0: skip the gallery).
    ``normalise``: ``"individual"`` (each map on its own scale) or ``"shared"`` (one
    scale per method across all cells given, so cells can be compared).
    ``morphology``: segment and measure the cell (:mod:`xcyto.morphology`) and place each
    measurement among the training cells of every class (``explanation.morphology``).
    ``method_options``: e.g. ``steps=64``, ``baseline="white"``, ``samples=32``,
    ``layer="backbone.layer3"``, ``seed=1``, ``memory_mb=2048``.

    Example::

        >>> e = xcyto.explain("cell.bmp", methods=["gradcam", "ig"], target="Koilocytotic")
        >>> e.predicted, e.probabilities, e.heatmap("gradcam").display.shape
        >>> e.plot(); e.save("out/")
    """
    started = time.perf_counter()
    bundle = resolve_bundle(bundle)
    if getattr(bundle, "is_ensemble", False):  # members explained one by one, maps combined
        from xcyto.explain.members import explain_ensemble

        return explain_ensemble(image, bundle, methods, target, neighbours, normalise=normalise,
                                batch_size=batch_size, device=device, morphology=morphology, **method_options)
    if device is not None:
        bundle.to(device)
    methods = resolve_methods(methods)
    method_settings(methods, method_options)  # fail early on unknown options
    if int(neighbours) < 0:
        raise ExplainError(f"neighbours must be >= 0, got {neighbours}")
    if normalise not in NORMALISE:
        raise ExplainError(f"normalise must be one of {', '.join(NORMALISE)}, got {normalise!r}")
    if int(batch_size) < 1:
        raise ExplainError(f"batch_size must be >= 1, got {batch_size}")
    arrays, names, single = load_images(image)
    targets = resolve_target(target, bundle.classes, len(arrays))
    spec = get_spec(bundle.architecture)
    mean, std = tuple(bundle.config["mean"]), tuple(bundle.config["std"])

    chunks, averaged = [], []
    for start in range(0, len(arrays), batch_size):
        batch = bundle.preprocess(arrays[start:start + batch_size])
        chunk_targets = None if targets is None else targets[start:start + batch_size]
        if bundle.tta:  # the prediction is the mean over 8 views; the maps explain this view of its class
            averaged.append(bundle.predict_probabilities(batch).cpu())
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
    found, nearest, atypical_scores, atypical_flags = _neighbours(bundle, embedding, int(neighbours), len(arrays))
    neighbour_seconds = time.perf_counter() - neighbour_started
    morphology_started = time.perf_counter()
    morphologies = _morphologies(bundle, arrays) if morphology else [None] * len(arrays)
    morphology_seconds = time.perf_counter() - morphology_started

    cells = len(arrays)
    timings = {"forward": sum(r.seconds["forward"] for r in results) / cells * 1000}
    for method in methods:
        timings[method.name] = sum(r.seconds[method.name] for r in results) / cells * 1000
    timings["neighbours"] = neighbour_seconds / cells * 1000
    timings["morphology"] = morphology_seconds / cells * 1000
    timings["total"] = (time.perf_counter() - started) / cells * 1000
    timings = {key: round(value, 2) for key, value in timings.items()}

    classes = bundle.classes
    common = {
        "bundle_name": bundle.name, "bundle_sha256": bundle.sha256,
        "bundle_path": str(bundle.path) if bundle.path else None, "architecture": bundle.architecture,
        "temperature": bundle.temperature, "input_size": bundle.input_size, "normalise": normalise,
        "display": "clip(max(raw, 0) / p99(|raw|), 0, 1)", "xcyto_version": __version__,
        "device": str(bundle.device), "seed": int(method_options.get("seed", 0)),
        "tta": "mean of the calibrated probabilities over the 8 dihedral views; the maps explain the view "
               "as given" if bundle.tta else None,
        "methods": results[0].settings,
    }
    recorded = _recorded_checks(bundle, results[0].settings)
    padded = bool(bundle.config.get("pad_to_square", True))
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
                frame=(*arrays[index].shape[:2], padded))
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
            timings_ms=timings, original=arrays[index], morphology=morphologies[index]))
    return explanations[0] if single else explanations


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
    from xcyto.morphology import analyse
    from xcyto.morphology.learned import preferred_segmenter

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


def _neighbours(bundle, embedding, k: int, count: int):
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


__all__ = ["explain", "resolve_bundle", "default_bundle_path", "load_images", "resolve_target", "get_method"]
