"""xcyto: train, explain and audit cervical cytology (Pap smear) cell classifiers.

The public surface is small::

    import xcyto
    bundle = xcyto.load("artifacts/demo-bundle")         # a trained model as a folder
    explanation = xcyto.explain("cell.bmp")             # heatmaps, neighbours, probabilities
    result = xcyto.train(data="../shared/data/herlev", out="runs/herlev")

Everything else lives in sub-packages: ``xcyto.data``, ``xcyto.models``,
``xcyto.explain``, ``xcyto.evaluation``, ``xcyto.embedding``.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Bundle", "Explanation", "explain", "load", "train", "__version__"]

_LAZY = {
    "Bundle": ("xcyto.bundle", "Bundle"),
    "load": ("xcyto.loading", "load"),
    "train": ("xcyto.training", "train"),
    "explain": ("xcyto.explain", "explain"),
    "Explanation": ("xcyto.explain", "Explanation"),
}


def __getattr__(name: str):
    # Imported on first use, so `xcyto --help` does not pay for torch.
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xcyto' has no attribute {name!r}")
