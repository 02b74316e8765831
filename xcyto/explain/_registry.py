"""One registry of explanation methods, one calling convention.

Every method is a function ``compute(model, batch, targets, context) -> maps``:

- ``model``: the classifier, in eval mode;
- ``batch``: the normalised input ``(B, 3, H, W)`` on the model's device;
- ``targets``: class indices ``(B,)`` (long tensor, same device);
- ``context``: a :class:`~xcyto.explain.Context` holding what methods share
  (the one forward pass, the target layer's activations and their gradient, the
  method's options in ``context.options``, memory-aware chunk sizes, the seed);
- returns raw maps ``(B, h, w)``, a tensor on the device. ``h, w`` may be smaller
  than the input (CAMs return the feature-map grid); the batched runner upsamples
  every map to ``H x W`` in one ``F.interpolate`` call.

Adding a method is one decorated function::

    @register_method("my_method", family="gradient", signed=False, options={"steps": 8})
    def my_method(model, batch, targets, context):
        ...
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

from xcyto.errors import ExplainError

Compute = Callable[..., "object"]

FAMILIES = ("cam", "gradient", "perturbation", "baseline")


@dataclass(frozen=True)
class Method:
    """A registered explanation method.

    ``signed``: whether raw maps can be negative (evidence against the target).
    ``options``: the options the method reads from ``context.options``, with defaults;
    they are recorded in every explanation's settings.
    ``passes``: the forward/backward passes it needs, as the benchmark's floor counts them.
    ``slow``: left out of the defaults of ``evaluate-explanations`` (Score-CAM, occlusion).
    """

    name: str
    compute: Compute
    family: str
    signed: bool
    options: dict = field(default_factory=dict)
    passes: str = ""
    reference: str = ""
    slow: bool = False
    target_dependent: bool = True
    description: str = ""


_METHODS: dict[str, Method] = {}

#: Other spellings users type, mapped to the registered name.
ALIASES = {
    "grad-cam": "gradcam",
    "grad_cam": "gradcam",
    "gradcam++": "gradcampp",
    "grad-cam++": "gradcampp",
    "gradcamplusplus": "gradcampp",
    "grad_cam_plus_plus": "gradcampp",
    "hires_cam": "hirescam",
    "layer_cam": "layercam",
    "eigen_cam": "eigencam",
    "score_cam": "scorecam",
    "ig": "integrated_gradients",
    "integratedgradients": "integrated_gradients",
    "smooth_grad": "smoothgrad",
    "guided-gradcam": "guided_gradcam",
    "guidedgradcam": "guided_gradcam",
}


def register_method(name: str, *, family: str, signed: bool, options: dict | None = None, passes: str = "",
                    reference: str = "", slow: bool = False, target_dependent: bool = True,
                    description: str = "", replace: bool = False) -> Callable[[Compute], Compute]:
    """Decorator: register ``compute`` as method ``name`` (see the module docstring)."""
    if family not in FAMILIES:
        raise ExplainError(f"unknown method family {family!r}; choose one of {', '.join(FAMILIES)}")

    def decorate(compute: Compute) -> Compute:
        if name in _METHODS and not replace:
            raise ExplainError(f"an explanation method named {name!r} is already registered (pass replace=True)")
        _METHODS[name] = Method(name=name, compute=compute, family=family, signed=signed,
                                options=dict(options or {}), passes=passes, reference=reference, slow=slow,
                                target_dependent=target_dependent,
                                description=description or (compute.__doc__ or "").strip().split("\n")[0])
        return compute

    return decorate


def unregister_method(name: str) -> None:
    """Remove a method (for methods registered temporarily, e.g. in tests)."""
    _METHODS.pop(name, None)


def list_methods() -> list[str]:
    """Registered method names, in registration order (CAMs, gradients, perturbation, baselines)."""
    return list(_METHODS)


def get_method(name: str) -> Method:
    """The method registered as ``name`` (or one of its aliases), with a clear error otherwise."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key in _METHODS:
        return _METHODS[key]
    close = difflib.get_close_matches(key, list(_METHODS) + list(ALIASES), n=3)
    hint = f" Did you mean {', '.join(repr(ALIASES.get(c, c)) for c in close)}?" if close else ""
    raise ExplainError(f"unknown explanation method {name!r}.{hint} Known methods: {', '.join(_METHODS)}")


def resolve_methods(methods) -> list[Method]:
    """``"gradcam,ig"``, a list of names, or Method objects -> a list of distinct methods."""
    if methods is None:
        raise ExplainError("no explanation methods given")
    if isinstance(methods, (str, Method)):
        methods = [methods]
    resolved: list[Method] = []
    for entry in methods:
        names = entry.split(",") if isinstance(entry, str) else [entry]
        for item in names:
            method = item if isinstance(item, Method) else get_method(item)
            if method.name not in {m.name for m in resolved}:
                resolved.append(method)
    if not resolved:
        raise ExplainError("no explanation methods given")
    return resolved


def describe_methods() -> str:
    """A plain-text table of the registered methods (for ``xcyto explain --list-methods``)."""
    rows = [("method", "family", "signed", "passes", "options")]
    for method in _METHODS.values():
        options = ", ".join(f"{key}={value!r}" for key, value in method.options.items()) or "-"
        rows.append((method.name + (" (slow)" if method.slow else ""), method.family,
                     "yes" if method.signed else "no", method.passes or "-", options))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    aliases = ", ".join(f"{alias} -> {name}" for alias, name in ALIASES.items())
    return ("\n".join(lines) + "\n\nlayer=None: the architecture's CAM layer from the model registry."
            + f"\naliases: {aliases}")
