"""Perturbation methods (occlusion, via captum) and the random-map baseline."""
from __future__ import annotations

import torch
from captum.attr import Occlusion

from xcyto.errors import ExplainError
from xcyto.explain._registry import register_method


@register_method("occlusion", family="perturbation", signed=True, slow=True,
                 options={"window": None, "stride": None, "baseline": "background"},
                 passes="1 forward per window position",
                 reference="Zeiler & Fergus 2014, Visualizing and Understanding CNNs (arXiv:1311.2901)")
def occlusion(model, batch, targets, context):
    """Occlusion (captum): drop of the target logit when a square window is replaced by the baseline.

    ``window`` defaults to 1/8 of the input side, ``stride`` to half the window; each
    pixel gets the mean drop over the windows covering it. The default baseline is the
    image's background colour (an empty slide), not black. Window positions of all
    images run together, as many per pass as the memory budget allows.
    """
    options = context.options
    side = batch.shape[-1]
    window = int(options["window"] or max(2, side // 8))
    stride = int(options["stride"] or max(1, window // 2))
    if not 1 <= window <= min(batch.shape[-2:]) or stride < 1:
        raise ExplainError(f"occlusion needs 1 <= window <= {min(batch.shape[-2:])} and stride >= 1, "
                           f"got window={window}, stride={stride}")
    baseline = context.baseline(options["baseline"]).expand_as(batch).contiguous()
    per_eval = max(1, context.rows_per_chunk(backward=False) // batch.shape[0])
    context.many_passes()
    with torch.no_grad():
        attributions = Occlusion(model).attribute(
            batch, sliding_window_shapes=(batch.shape[1], window, window), strides=(batch.shape[1], stride, stride),
            baselines=baseline, target=targets, perturbations_per_eval=per_eval)
    return attributions.mean(dim=1)


@register_method("random", family="baseline", signed=False, options={"seed": 0}, target_dependent=False,
                 passes="none",
                 reference="a chance-level reference for the faithfulness metrics")
def random_map(model, batch, targets, context):
    """Uniform random noise: what a map that knows nothing scores on each metric."""
    generator = torch.Generator(device=batch.device).manual_seed(int(context.options["seed"]))
    return torch.rand((batch.shape[0], *batch.shape[-2:]), generator=generator, device=batch.device)
