"""Input-gradient methods: integrated gradients, saliency, SmoothGrad, guided Grad-CAM.

Integrated gradients, SmoothGrad and guided backprop are computed here rather than
through captum's classes so that all steps (or noise samples) of all images run as
a few large chunks sized to the memory budget, without the user choosing
``internal_batch_size``; the tests check them against captum's
``IntegratedGradients``, ``Saliency`` and ``GuidedGradCam``. Saliency is captum's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from captum.attr import Saliency
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from xcyto.errors import ExplainError
from xcyto.explain.cam import gradcam
from xcyto.explain.registry import register_method


def _target_scores(model, inputs, targets):
    return model(inputs).gather(1, targets.view(-1, 1)).squeeze(1)


def _chunked_input_gradients(model, make_rows, targets, total_rows, batch_size, chunk, accumulate):
    """Run ``total_rows`` rows (row r is image ``r % batch_size``) in chunks of ``chunk``;
    ``make_rows(rows, images)`` builds the inputs, ``accumulate(gradient, rows, images)``
    folds each chunk's input gradient into the result."""
    for start in range(0, total_rows, chunk):
        rows = torch.arange(start, min(total_rows, start + chunk), device=targets.device)
        images = rows % batch_size
        inputs = make_rows(rows, images).requires_grad_(True)
        with torch.enable_grad():
            score = _target_scores(model, inputs, targets[images]).sum()
            (gradient,) = torch.autograd.grad(score, inputs)
        accumulate(gradient, rows, images)


@register_method(
    "integrated_gradients", family="gradient", signed=True,
    options={"steps": 32, "baseline": "background", "approximation": "gausslegendre", "internal_batch_size": None},
    passes="`steps` forward+backward per image",
    reference="Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks (arXiv:1703.01365)")
def integrated_gradients(model, batch, targets, context):
    """Integrated gradients of the target logit, summed over colour channels (signed).

    The path integral uses captum's quadrature (``approximation``, Gauss-Legendre by
    default) over ``steps`` points; all steps of all images run in chunks of
    ``internal_batch_size`` images (default: as many as the memory budget allows).
    Records per image ``completeness_gap`` = sum(attributions) - (f(x) - f(baseline)),
    ``output_difference`` = f(x) - f(baseline) (f: the target logit) and their ratio
    ``completeness_relative``; when it is large, raise ``steps``.

    The default baseline is ``"background"``, an empty slide (each image's border colour):
    on brightfield images a black baseline makes the bright background the largest
    difference from the baseline, and IG's maps follow it (on the demo bundle the share of
    attribution on the nucleus was 0.5 % from black and 15 % from the background).
    """
    options = context.options
    steps = int(options["steps"])
    if steps < 1:
        raise ExplainError(f"integrated_gradients needs steps >= 1, got {steps}")
    try:
        sizes_of, alphas_of = approximation_parameters(options["approximation"])
    except (ValueError, AssertionError):
        raise ExplainError(f"unknown IG approximation {options['approximation']!r}: use gausslegendre, "
                           "riemann_left, riemann_right, riemann_middle or riemann_trapezoid") from None
    step_sizes = torch.tensor(sizes_of(steps), dtype=batch.dtype, device=batch.device)
    alphas = torch.tensor(alphas_of(steps), dtype=batch.dtype, device=batch.device)
    baseline = context.baseline(options["baseline"])
    difference = batch - baseline
    batch_size = batch.shape[0]
    per_image_baseline = baseline.dim() == 4 and baseline.shape[0] == batch_size and batch_size > 1
    total = torch.zeros_like(batch)

    def make_rows(rows, images):
        start = baseline[images] if per_image_baseline else baseline
        return start + alphas[rows // batch_size].view(-1, 1, 1, 1) * difference[images]

    def accumulate(gradient, rows, images):
        total.index_add_(0, images, gradient * step_sizes[rows // batch_size].view(-1, 1, 1, 1))

    chunk = int(options["internal_batch_size"] or context.rows_per_chunk(backward=True))
    context.many_passes()
    _chunked_input_gradients(model, make_rows, targets, steps * batch_size, batch_size, chunk, accumulate)
    attributions = total * difference

    with torch.no_grad():
        if per_image_baseline:
            baseline_scores = _target_scores(model, baseline.expand_as(batch), targets)
        else:  # one constant baseline: one forward pass serves every image
            constant = baseline.expand(1, *batch.shape[1:])
            baseline_scores = model(constant)[0].gather(0, targets)
    input_scores = context.forward().gather(1, targets.view(-1, 1)).squeeze(1)
    output_difference = input_scores - baseline_scores
    gap = attributions.sum(dim=(1, 2, 3)) - output_difference
    context.record("completeness_gap", gap)
    context.record("output_difference", output_difference)
    context.record("completeness_relative", gap.abs() / output_difference.abs().clamp(min=1e-6))
    return attributions.sum(dim=1)


@register_method("saliency", family="gradient", signed=False, options={},
                 passes="1 forward+backward",
                 reference="Simonyan et al. 2014, Deep Inside Convolutional Networks (arXiv:1312.6034)")
def saliency(model, batch, targets, context):
    """Saliency (captum): largest absolute input gradient over colour channels."""
    with torch.enable_grad():
        gradients = Saliency(model).attribute(batch.detach().clone().requires_grad_(True), target=targets, abs=True)
    return gradients.amax(dim=1)


@register_method("smoothgrad", family="gradient", signed=False, options={"samples": 16, "noise": 0.15, "seed": 0},
                 passes="`samples` forward+backward per image",
                 reference="Smilkov et al. 2017, SmoothGrad (arXiv:1706.03825)")
def smoothgrad(model, batch, targets, context):
    """SmoothGrad: mean absolute input gradient over noisy copies, largest over colour channels.

    Noise is Gaussian with sigma = ``noise`` x the pixel range (0..1, expressed in the
    normalised units of each channel), the same ``samples`` draws for every image of
    the batch (seeded), so a cell gets the same map alone or in a batch.
    """
    options = context.options
    samples = int(options["samples"])
    if samples < 1:
        raise ExplainError(f"smoothgrad needs samples >= 1, got {samples}")
    sigma = float(options["noise"]) / context.std  # (1, 3, 1, 1)
    generator = torch.Generator(device=batch.device).manual_seed(int(options["seed"]))
    noise = torch.randn((samples, *batch.shape[1:]), generator=generator, device=batch.device, dtype=batch.dtype)
    noise = noise * sigma
    batch_size = batch.shape[0]
    total = torch.zeros_like(batch)

    def make_rows(rows, images):
        return batch[images] + noise[rows // batch_size]

    def accumulate(gradient, rows, images):
        total.index_add_(0, images, gradient.abs())

    context.many_passes()
    _chunked_input_gradients(model, make_rows, targets, samples * batch_size, batch_size,
                             context.rows_per_chunk(backward=True), accumulate)
    return (total / samples).amax(dim=1)


#: Activations whose backward pass guided backpropagation modifies.
GUIDED_ACTIVATIONS = (nn.ReLU, nn.ReLU6)


def guided_backprop(model, batch, targets) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): input gradient ``(B, 3, H, W)`` with
    negative gradients stopped at every ReLU/ReLU6 module (captum's hooks only catch ReLU)."""
    def hook(module, inputs, output):
        if output.requires_grad:
            output.register_hook(lambda gradient: gradient.clamp(min=0))

    handles = [module.register_forward_hook(hook) for module in model.modules()
               if isinstance(module, GUIDED_ACTIVATIONS)]
    try:
        inputs = batch.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(_target_scores(model, inputs, targets).sum(), inputs)
    finally:
        for handle in handles:
            handle.remove()
    return gradient


@register_method("guided_gradcam", family="gradient", signed=False, options={"layer": None, "interpolation": "bilinear"},
                 passes="shared forward + head backward, then 1 forward+backward",
                 reference="Selvaraju et al. 2017, Grad-CAM (arXiv:1610.02391), section 3.2")
def guided_gradcam(model, batch, targets, context):
    """Guided Grad-CAM: guided backprop times the (ReLU'd, upsampled) Grad-CAM map;
    largest absolute value over colour channels."""
    mode = context.options["interpolation"]
    if mode not in ("nearest", "bilinear"):
        raise ExplainError(f"guided_gradcam interpolation must be 'nearest' or 'bilinear', got {mode!r}")
    cam = gradcam(model, batch, targets, context).clamp(min=0).unsqueeze(1)
    cam = F.interpolate(cam, size=batch.shape[-2:], mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
    return (guided_backprop(model, batch, targets) * cam).abs().amax(dim=1)
