"""``xcyto.explain(image)``: the one entry point the demo, notebooks, audit and CLI share."""
from __future__ import annotations

import os
from pathlib import Path

import xcyto
from xcyto.bundle import Bundle
from xcyto.ensemble import EnsembleBundle
from xcyto.errors import BundleError, ExplainError
from xcyto.explain._batched import DEFAULT_METHODS, NORMALISE, method_settings
from xcyto.explain._inputs import load_images, resolve_target
from xcyto.explain._members import explain_ensemble
from xcyto.explain._plain import explain_bundle
from xcyto.explain._registry import get_method, resolve_methods
from xcyto.loading import load
from xcyto.shipped import bundle_path, shipped_path

BUNDLE_ENV = "XCYTO_BUNDLE"
#: Images per forward pass when a list is explained (memory-heavy methods chunk further).
BATCH_SIZE = 32

_BUNDLES: dict[str, tuple[int, Bundle]] = {}


def default_bundle_path() -> Path:
    """The shipped demo bundle (:mod:`xcyto.shipped`; a clear error when it is not on this machine)."""
    return shipped_path("demo")


def resolve_bundle(bundle=None) -> Bundle:
    """A :class:`Bundle` as is; a path loaded once and cached (reloaded when its weights change);
    ``None``: ``$XCYTO_BUNDLE``, else the shipped demo bundle."""
    if isinstance(bundle, Bundle):
        return bundle
    if bundle is None:
        if os.environ.get(BUNDLE_ENV):
            path = Path(os.environ[BUNDLE_ENV])
        else:
            try:
                path = default_bundle_path()
                missing = None if path.is_dir() else f"no folder {path}"
            except BundleError as error:
                missing = str(error)
            if missing:
                raise ExplainError(
                    f"no bundle given, ${BUNDLE_ENV} is not set and the shipped demo bundle is not here ({missing}); "
                    f"pass bundle=PATH (a folder written by 'xcyto train') or a shipped name ('herlev'), set "
                    f"{BUNDLE_ENV}, or build the shipped bundles with 'make artifacts'")
    elif isinstance(bundle, (str, os.PathLike)):
        path = bundle_path(bundle)
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


def explain(image, bundle=None, methods=DEFAULT_METHODS, target=None, neighbours: int = 8, *,
            normalise: str = "individual", batch_size: int = BATCH_SIZE, device=None, morphology: bool = True,
            tta: bool | None = None, **method_options):
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
    ``tta``: the probabilities average the 8 dihedral views (default: the bundle's choice,
    ``settings["tta"]`` says so); the maps explain the cell as given.
    ``method_options``: e.g. ``steps=64``, ``baseline="white"``, ``samples=32``,
    ``layer="backbone.layer3"``, ``seed=1``, ``memory_mb=2048``.

    Example::

        >>> e = xcyto.explain("cell.bmp", methods=["gradcam", "ig"], target="Koilocytotic")
        >>> e.predicted, e.probabilities, e.heatmap("gradcam").display.shape
        >>> e.plot(); e.save("out/")
    """
    methods = resolve_methods(methods)
    method_settings(methods, method_options)  # fail early on unknown options
    if int(neighbours) < 0:
        raise ExplainError(f"neighbours must be >= 0, got {neighbours}")
    if normalise not in NORMALISE:
        raise ExplainError(f"normalise must be one of {', '.join(NORMALISE)}, got {normalise!r}")
    if int(batch_size) < 1:
        raise ExplainError(f"batch_size must be >= 1, got {batch_size}")
    bundle = resolve_bundle(bundle)
    if device is not None:
        bundle.to(device)
    # an ensemble's members explain one by one and their maps are combined
    explainer = explain_ensemble if isinstance(bundle, EnsembleBundle) else explain_bundle
    return explainer(image, bundle, methods, target, int(neighbours), normalise=normalise, batch_size=int(batch_size),
                     morphology=morphology, tta=tta, **method_options)


__all__ = ["explain", "resolve_bundle", "default_bundle_path", "load_images", "resolve_target", "get_method"]
