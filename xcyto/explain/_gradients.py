"""Input-gradient methods: integrated gradients, saliency, SmoothGrad, guided Grad-CAM.

Integrated gradients, SmoothGrad and guided backprop are computed here rather than
through captum's classes so that all steps (or noise samples) of all images run as
a few large chunks sized to the memory budget, without the user choosing
``internal_batch_size``; the tests check them against captum's
``IntegratedGradients``, ``Saliency`` and ``GuidedGradCam``. Saliency is captum's.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from xcyto.errors import ExplainError
from xcyto.explain._cam import gradcam
from xcyto.explain._registry import register_method


#: Relative completeness error below which adaptive IG stops (``tolerance``), and the
#: output change under which the error is judged against this many logits instead (a cell
#: whose output barely moves from the baseline has almost nothing to attribute).
COMPLETENESS_TOLERANCE = 0.05
OUTPUT_FLOOR = 0.1
#: ``steps="auto"``: points of the first pass along the path (32 intervals, the trapezoid
#: rule); cells still short of ``tolerance`` get midpoints where their map changes most.
AUTO_FIRST_STEPS = 33


def relative_completeness_error(gap, output_difference):
    """``|gap| / max(|f(x) - f(baseline)|, OUTPUT_FLOOR)``, per image (tensor or array)."""
    if isinstance(gap, torch.Tensor):
        return gap.abs() / output_difference.abs().clamp(min=OUTPUT_FLOOR)
    return np.abs(gap) / np.maximum(np.abs(output_difference), OUTPUT_FLOOR)


def _target_scores(model, inputs, targets):
    return model(inputs).gather(1, targets.view(-1, 1)).squeeze(1)


def _chunked_input_gradients(model, make_rows, targets, row_images, chunk, accumulate):
    """Run one input gradient per row (row ``r`` belongs to image ``row_images[r]``) in chunks
    of ``chunk``; ``make_rows(rows, images)`` builds the inputs, ``accumulate(gradient, rows,
    images, scores)`` takes each chunk's input gradient and target scores."""
    for start in range(0, len(row_images), chunk):
        rows = torch.arange(start, min(len(row_images), start + chunk), device=targets.device)
        images = row_images[rows]
        inputs = make_rows(rows, images).requires_grad_(True)
        with torch.enable_grad():
            scores = _target_scores(model, inputs, targets[images])
            (gradient,) = torch.autograd.grad(scores.sum(), inputs)
        accumulate(gradient, rows, images, scores.detach())


def _repeat_images(batch_size: int, passes: int, device) -> torch.Tensor:
    """Row -> image for ``passes`` passes over every image: ``0, 1, ..., B-1, 0, 1, ...``."""
    return torch.arange(batch_size, device=device).repeat(passes)


@register_method(
    "integrated_gradients", family="gradient", signed=True,
    options={"steps": "auto", "tolerance": COMPLETENESS_TOLERANCE, "max_steps": 257, "baseline": "background",
             "approximation": "gausslegendre", "internal_batch_size": None},
    passes="`steps` forward+backward per image (auto: as many as completeness needs, up to `max_steps`)",
    reference="Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks (arXiv:1703.01365)")
def integrated_gradients(model, batch, targets, context):
    """Integrated gradients of the target logit, summed over colour channels (signed).

    ``steps="auto"`` (default): the trapezoid rule on 32 equal intervals of the path (33
    gradients), then, for the cells whose attributions miss f(x) - f(baseline) by more than
    ``tolerance`` (relative, see :func:`relative_completeness_error`), the intervals across
    which the map changes most are halved, round after round (the earlier points reused),
    until they add up or ``max_steps`` points are spent (see :func:`_adaptive_paths`). An
    integer ``steps``: captum's quadrature (``approximation``, Gauss-Legendre by default) with
    that many points. All passes of all images run in chunks of ``internal_batch_size``
    (default: as many as the memory budget allows).

    Records per image ``completeness_gap`` = sum(attributions) - (f(x) - f(baseline)),
    ``output_difference``, ``completeness_relative``, ``steps`` (gradients spent) and
    ``converged`` (1 when within ``tolerance``).

    The default baseline is ``"background"``, an empty slide (each image's border colour):
    on brightfield images a black baseline makes the bright background the largest
    difference from the baseline, and IG's maps follow it (on the demo bundle the share of
    attribution on the nucleus was 0.5 % from black and 15 % from the background).
    """
    options = context.options
    baseline = context.baseline(options["baseline"])
    per_image_baseline = baseline.dim() == 4 and baseline.shape[0] == batch.shape[0] > 1
    start = baseline.expand_as(batch)
    difference = batch - start
    chunk = int(options["internal_batch_size"] or context.rows_per_chunk(backward=True))
    fast = context.pass_model()
    if options["steps"] == "auto":  # the passes at the path's ends give f(baseline) and f(x)
        attributions, (baseline_scores, input_scores), steps = _adaptive_paths(
            fast, start, difference, targets, chunk, float(options["tolerance"]), int(options["max_steps"]))
    else:
        attributions = _fixed_paths(fast, start, difference, targets, chunk, options)
        steps = torch.full((batch.shape[0],), float(options["steps"]), device=batch.device)
        with torch.no_grad():
            if per_image_baseline:
                baseline_scores = _target_scores(model, start, targets)
            else:  # one constant baseline: one forward pass serves every image
                baseline_scores = model(start[:1])[0].gather(0, targets)
        input_scores = context.forward().gather(1, targets.view(-1, 1)).squeeze(1)
    output_difference = input_scores - baseline_scores
    gap = attributions.sum(dim=(1, 2)) - output_difference
    relative = relative_completeness_error(gap, output_difference)
    context.record("completeness_gap", gap)
    context.record("output_difference", output_difference)
    context.record("completeness_relative", relative)
    context.record("steps", steps)
    context.record("converged", (relative <= float(options["tolerance"])).float())
    return attributions


def _fixed_paths(model, start, difference, targets, chunk, options):
    """IG maps with ``steps`` quadrature points (captum's ``approximation``)."""
    steps = options["steps"]
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ExplainError(f"integrated_gradients needs steps='auto' or a whole number >= 1, got {steps!r}")
    try:
        sizes_of, alphas_of = approximation_parameters(options["approximation"])
    except (ValueError, AssertionError):
        raise ExplainError(f"unknown IG approximation {options['approximation']!r}: use gausslegendre, "
                           "riemann_left, riemann_right, riemann_middle or riemann_trapezoid") from None
    step_sizes = torch.tensor(sizes_of(int(steps)), dtype=start.dtype, device=start.device)
    alphas = torch.tensor(alphas_of(int(steps)), dtype=start.dtype, device=start.device)
    batch_size = start.shape[0]
    total = torch.zeros_like(start)

    def make_rows(rows, images):
        return start[images] + alphas[rows // batch_size].view(-1, 1, 1, 1) * difference[images]

    def accumulate(gradient, rows, images, scores):
        total.index_add_(0, images, gradient * step_sizes[rows // batch_size].view(-1, 1, 1, 1))

    _chunked_input_gradients(model, make_rows, targets, _repeat_images(batch_size, int(steps), start.device),
                             chunk, accumulate)
    return (total * difference).sum(dim=1)


def _adaptive_paths(model, start, difference, targets, chunk, tolerance, max_steps):
    """IG by the trapezoid rule on 32 equal intervals of the path; for the cells whose
    attributions still miss ``tolerance``, the quarter of their intervals (at least 8) across
    which the map changes most are halved, round after round, until they add up or
    ``max_steps`` points are spent. Returns ``(maps, (f(baseline), f(x)), points per image)``.

    The intervals to halve are chosen by ``width x sum|map(b) - map(a)|``, the trapezoid's
    error indicator for the whole map, not by how much they would close the gap: refining
    where the map moves keeps its accuracy in step with its completeness (on the Herlev
    bundle's example cells: 37 points at the median instead of 49 for halving every
    interval, map error against 257 equal steps 0.045 instead of 0.043). Each point's
    contribution ``gradient . (x - baseline)`` (an H x W map) is kept until its cell is done.
    """
    if not 0 < tolerance < 1:
        raise ExplainError(f"integrated_gradients tolerance must be in (0, 1), got {tolerance}")
    if max_steps < AUTO_FIRST_STEPS:
        raise ExplainError(f"integrated_gradients max_steps must be >= {AUTO_FIRST_STEPS}, got {max_steps}")
    batch_size, device = start.shape[0], start.device
    alphas = [torch.linspace(0, 1, AUTO_FIRST_STEPS, dtype=torch.float64) for _ in range(batch_size)]
    points = [torch.empty(0, *start.shape[-2:], dtype=start.dtype, device=device) for _ in range(batch_size)]
    maps = torch.zeros(batch_size, *start.shape[-2:], dtype=start.dtype, device=device)
    scores = torch.zeros(2, batch_size, dtype=start.dtype, device=device)  # f(baseline), f(x)
    steps = torch.zeros(batch_size, device=device)
    new = {image: alphas[image] for image in range(batch_size)}  # image -> the points to run now
    while new:
        row_images = torch.cat([torch.full((len(a),), image, device=device) for image, a in new.items()])
        row_alphas = torch.cat(list(new.values())).to(start.dtype).to(device)
        contributions = torch.empty(len(row_images), *start.shape[-2:], dtype=start.dtype, device=device)

        def make_rows(rows, images):
            return start[images] + row_alphas[rows].view(-1, 1, 1, 1) * difference[images]

        def accumulate(gradient, rows, images, row_scores):
            contributions[rows] = (gradient * difference[images]).sum(dim=1)
            for end in (0, 1):
                chosen = row_alphas[rows] == end
                scores[end, images[chosen]] = row_scores[chosen]

        _chunked_input_gradients(model, make_rows, targets, row_images, chunk, accumulate)
        following = {}
        for image in new:
            order = torch.argsort(alphas[image])
            alphas[image] = alphas[image][order]
            points[image] = torch.cat([points[image], contributions[row_images == image]])[order.to(device)]
            widths = alphas[image].diff().to(start.dtype).to(device)
            maps[image] = _trapezoid(points[image], widths)
            steps[image] = len(alphas[image])
            output_difference = scores[1, image] - scores[0, image]
            error = relative_completeness_error(maps[image].sum() - output_difference, output_difference)
            room = max_steps - len(alphas[image])
            if error <= tolerance or room <= 0:
                points[image] = None  # done: free its points
                continue
            change = widths * (points[image][1:] - points[image][:-1]).abs().sum(dim=(1, 2))
            count = min(room, max(8, len(widths) // 4), len(widths))
            chosen = torch.topk(change, count).indices.cpu()
            midpoints = (alphas[image][chosen] + alphas[image][chosen + 1]) / 2
            following[image] = midpoints
            alphas[image] = torch.cat([alphas[image], midpoints])
        new = following
    return maps, scores, steps


def _trapezoid(points, widths):
    """The trapezoid rule over points ``(P, H, W)`` separated by ``widths`` ``(P - 1,)``."""
    return ((points[1:] + points[:-1]) * (widths / 2).view(-1, 1, 1)).sum(dim=0)


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

    def accumulate(gradient, rows, images, scores):
        total.index_add_(0, images, gradient.abs())

    _chunked_input_gradients(context.pass_model(), make_rows, targets, _repeat_images(batch_size, samples, batch.device),
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
