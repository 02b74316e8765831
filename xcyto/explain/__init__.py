"""Explanations of cell classifications: ``explain(image)`` -> :class:`Explanation`.

>>> from xcyto.explain import explain, list_methods
>>> e = explain("cell.bmp", methods="gradcam,integrated_gradients", target="Koilocytotic")
>>> e.plot()

Methods live in one registry (``list_methods()``, ``register_method``), each a function
``compute(model, batch, targets, context) -> (B, h, w)`` maps; :func:`explain_batch`
runs them on a normalised batch with one shared forward pass and returns tensors.
"""
import sys
import types

from xcyto.explain._batched import DEFAULT_METHODS, BatchResult, display_maps, explain_batch, options_for
from xcyto.explain._context import Context
from xcyto.explain._gradients import COMPLETENESS_TOLERANCE, relative_completeness_error
from xcyto.explain._registry import (
    Method,
    describe_methods,
    get_method,
    list_methods,
    register_method,
    resolve_methods,
    unregister_method,
)
from xcyto.explain._render import OVERLAY_OPACITY, figure_png, overlay_batch, png_bytes
from xcyto.explain._result import Explanation, Heatmap
from xcyto.explain._api import default_bundle_path, explain, resolve_bundle  # noqa: E402
from xcyto.explain._plain import gallery_for  # noqa: E402



class _CallableModule(types.ModuleType):
    """``xcyto.explain(image)`` must work whether ``xcyto.explain`` resolves to this package
    (bound by any ``import xcyto.explain...``) or to the function (``xcyto``'s lazy export)."""

    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "COMPLETENESS_TOLERANCE",
    "Context",
    "DEFAULT_METHODS",
    "BatchResult",
    "OVERLAY_OPACITY",
    "Explanation",
    "Heatmap",
    "Method",
    "default_bundle_path",
    "describe_methods",
    "display_maps",
    "explain",
    "explain_batch",
    "figure_png",
    "gallery_for",
    "get_method",
    "list_methods",
    "options_for",
    "overlay_batch",
    "png_bytes",
    "register_method",
    "relative_completeness_error",
    "resolve_bundle",
    "resolve_methods",
    "unregister_method",
]
