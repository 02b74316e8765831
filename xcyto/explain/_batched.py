"""Run explanation methods on a batch: one shared forward pass, maps kept on the device.

:func:`explain_batch` is the tensor-level engine under :func:`xcyto.explain`, the
faithfulness metrics and the benchmark. It takes a normalised batch and returns
tensors; :func:`display_maps` turns raw maps into display maps.

Display normalisation (documented once, used everywhere): ``display = clip(max(raw, 0)
/ scale, 0, 1)`` where ``scale`` is the 99th percentile of ``|raw|``, over each map
(``"individual"``) or over all maps of the same method in the batch (``"shared"``, so
two cells can be compared on one scale). A robust maximum rather than the maximum, so
one hot pixel does not wash out the rest; the positive part, because the display
shows evidence *for* the target (the raw map keeps the sign).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from xcyto.errors import ExplainError
from xcyto.explain import _cam as _cam  # noqa: F401  (registers the methods)
from xcyto.explain import _gradients as _gradients  # noqa: F401
from xcyto.explain import _perturbation as _perturbation  # noqa: F401
from xcyto.explain._context import Context, evaluating
from xcyto.explain._registry import Method, resolve_methods

DEFAULT_METHODS = ("gradcam", "integrated_gradients")
NORMALISE = ("individual", "shared")
ROBUST_QUANTILE = 0.99
#: Options every method accepts: the CAM layer, the seed, the memory budget (MiB), and
#: ``channels_last`` (default True: on CPU, many-pass methods run the model channels-last).
COMMON_OPTIONS = {"layer", "seed", "memory_mb", "channels_last"}


@dataclass
class BatchResult:
    """Tensors for one batch (all on the model's device).

    ``raw[m]``: ``(B, H, W)`` maps at input resolution; ``display[m]`` and ``scale[m]``
    (``(B,)``) as described in the module docstring (``None`` unless ``normalise`` was
    given); ``info[m]``: per-image diagnostics ``(B,)``; ``settings[m]``: the options
    used; ``seconds``: wall time of the shared forward pass and of each method.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    embedding: torch.Tensor | None
    raw: dict[str, torch.Tensor]
    display: dict[str, torch.Tensor] | None = None
    scale: dict[str, torch.Tensor] | None = None
    info: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def method_settings(methods: list[Method], options: dict | None) -> dict[str, dict]:
    """Each method's options (defaults updated by ``options``); unknown options are an error."""
    options = dict(options or {})
    known = set(COMMON_OPTIONS).union(*(m.options for m in methods))
    unknown = sorted(set(options) - known)
    if unknown:
        offered = ", ".join(sorted(known - COMMON_OPTIONS)) or "none"
        raise ExplainError(f"unknown option(s) {', '.join(unknown)} for methods "
                           f"{', '.join(m.name for m in methods)}; their options: {offered}")
    return {m.name: {key: options.get(key, default) for key, default in m.options.items()} for m in methods}


def options_for(methods, options: dict) -> dict:
    """The part of ``options`` that ``methods`` read (the rest would be refused as unknown)."""
    known = set(COMMON_OPTIONS).union(*(m.options for m in resolve_methods(methods)))
    return {key: value for key, value in options.items() if key in known}


def check_batch(batch) -> torch.Tensor:
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or batch.shape[1] != 3:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ExplainError(f"expected a normalised batch of shape (B, 3, H, W), got {shape}")
    if not batch.is_floating_point():
        raise ExplainError(f"expected a float batch, got {batch.dtype}")
    if min(batch.shape[-2:]) < 8:
        raise ExplainError(f"images of {batch.shape[-1]} x {batch.shape[-2]} pixels are too small (need >= 8)")
    if not torch.isfinite(batch).all():
        raise ExplainError("the input batch contains NaN or infinite values")
    return batch


def resolve_targets(targets, logits: torch.Tensor) -> torch.Tensor:
    """``None`` -> the predicted classes; an int or a sequence/tensor of ints -> ``(B,)`` long."""
    batch_size, num_classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    targets = torch.as_tensor(targets, device=logits.device).long().flatten()
    if targets.numel() == 1:
        targets = targets.expand(batch_size).clone()
    if targets.numel() != batch_size:
        raise ExplainError(f"{targets.numel()} targets for {batch_size} images")
    if (targets < 0).any() or (targets >= num_classes).any():
        raise ExplainError(f"target class index out of range 0..{num_classes - 1}: {targets.tolist()}")
    return targets


def explain_batch(model, batch: torch.Tensor, methods=DEFAULT_METHODS, targets=None, *,
                  layer: str | None = "backbone", embedding_layer: str | None = "pool",
                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), normalise: str | None = "individual",
                  options: dict | None = None) -> BatchResult:
    """Explain ``batch`` ``(B, 3, H, W)`` (normalised with ``mean``/``std``) with each method.

    ``targets``: ``None`` (predicted class), one class index, or one per image.
    ``layer``: CAM target layer (dotted name; ``options["layer"]`` overrides it).
    ``options``: method options (e.g. ``steps``, ``baseline``), checked against the
    methods' declared options, plus ``seed`` and ``memory_mb``.
    """
    methods = resolve_methods(methods)
    settings = method_settings(methods, options)
    options = dict(options or {})
    layer = options.get("layer") or layer
    if normalise is not None and normalise not in NORMALISE:
        raise ExplainError(f"normalise must be one of {', '.join(NORMALISE)}, got {normalise!r}")
    check_batch(batch)
    seconds: dict[str, float] = {}
    with torch.inference_mode(False), evaluating(model):
        if batch.is_inference():  # made under torch.inference_mode(): autograd cannot use it as is
            batch = batch.clone()
        context = Context(model, batch, layer=layer, embedding_layer=embedding_layer, mean=mean, std=std,
                          seed=int(options.get("seed", 0)), memory_mb=options.get("memory_mb"),
                          channels_last=bool(options.get("channels_last", True)))
        started = _now(batch)
        logits = context.forward()
        seconds["forward"] = _now(batch) - started
        targets = resolve_targets(targets, logits)
        raw: dict[str, torch.Tensor] = {}
        try:
            for method in methods:
                context.method, context.options = method.name, settings[method.name]
                if "layer" in settings[method.name]:
                    settings[method.name]["layer"] = layer
                started = _now(batch)
                maps = method.compute(model, batch, targets, context)
                raw[method.name] = upsample(maps, batch.shape[-2:]).detach()
                seconds[method.name] = _now(batch) - started
        finally:
            context.restore()
    embedding = F.normalize(context.embedding, dim=1) if context.embedding is not None else None
    result = BatchResult(logits=logits, targets=targets, embedding=embedding, raw=raw, info=context.info,
                         settings=settings, seconds=seconds)
    if normalise is not None:
        result.display, result.scale = {}, {}
        for name, maps in raw.items():
            result.display[name], result.scale[name] = display_maps(maps, normalise)
    return result


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """``(B, h, w)`` -> ``(B, H, W)``, bilinear (half-pixel centres, as cv2.resize), one call per batch."""
    if maps.dim() != 3:
        raise ExplainError(f"an explanation method returned maps of shape {tuple(maps.shape)}; expected (B, h, w)")
    maps = maps.float()
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def display_maps(raw: torch.Tensor, normalise: str = "individual",
                 quantile: float = ROBUST_QUANTILE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(display, scale)``: ``display = clip(max(raw, 0) / scale, 0, 1)``, ``scale`` the
    ``quantile`` of ``|raw|`` per map (``"individual"``) or over the batch (``"shared"``)."""
    if normalise not in NORMALISE:
        raise ExplainError(f"normalise must be one of {', '.join(NORMALISE)}, got {normalise!r}")
    magnitude = torch.nan_to_num(raw.float()).abs().flatten(1)
    if normalise == "individual":
        rank = max(1, math.ceil(quantile * magnitude.shape[1]))
        scale = magnitude.kthvalue(rank, dim=1).values
        peak = magnitude.amax(dim=1)
    else:
        flat = magnitude.flatten()
        scale = flat.kthvalue(max(1, math.ceil(quantile * flat.numel()))).values.expand(raw.shape[0]).clone()
        peak = flat.amax().expand(raw.shape[0])
    scale = torch.where(scale > 0, scale, peak)  # sparse maps: fall back to the maximum
    safe = torch.where(scale > 0, scale, torch.full_like(scale, float("inf")))
    display = (torch.nan_to_num(raw.float()).clamp(min=0) / safe[:, None, None]).clamp(max=1.0)
    return display, scale


def _now(batch: torch.Tensor) -> float:
    if batch.device.type == "cuda":
        torch.cuda.synchronize(batch.device)
    return time.perf_counter()
