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

from xcyto.explain.batched import DEFAULT_METHODS, BatchResult, display_maps, explain_batch
from xcyto.explain.registry import (
    Method,
    describe_methods,
    get_method,
    list_methods,
    register_method,
    unregister_method,
)
from xcyto.explain.result import Explanation, Heatmap
from xcyto.explain.api import default_bundle_path, explain, resolve_bundle  # noqa: E402



class _CallableModule(types.ModuleType):
    """``xcyto.explain(image)`` must work whether ``xcyto.explain`` resolves to this package
    (bound by any ``import xcyto.explain...``) or to the function (``xcyto``'s lazy export)."""

    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "DEFAULT_METHODS",
    "BatchResult",
    "Explanation",
    "Heatmap",
    "Method",
    "default_bundle_path",
    "describe_methods",
    "display_maps",
    "explain",
    "explain_batch",
    "get_method",
    "list_methods",
    "register_method",
    "resolve_bundle",
    "unregister_method",
]
