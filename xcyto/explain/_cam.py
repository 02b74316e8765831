"""The class-activation-map family, computed on the device from the shared forward pass.

Each function follows the formula of the matching class in ``pytorch_grad_cam``
(grad-cam 1.5) and is tested against it; the differences are only where the work
happens: activations and gradients stay tensors on the device, the whole batch is
one tensor operation, and the map returned is the raw weighted sum *before* the ReLU
and min-max scaling that grad-cam applies (``raw`` keeps the sign; the runner makes
the display map). Maps are returned on the feature-map grid ``(B, h, w)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from xcyto.explain._registry import register_method

_CAM_OPTIONS = {"layer": None}  # None: the architecture's CAM layer for the input size (model registry)


@register_method("gradcam", family="cam", signed=True, options=_CAM_OPTIONS,
                 passes="shared forward + backward through the head",
                 reference="Selvaraju et al. 2017, Grad-CAM (arXiv:1610.02391)")
def gradcam(model, batch, targets, context):
    """Grad-CAM: channels weighted by their spatially averaged gradient."""
    activations = context.activations
    weights = context.activation_gradient(targets).mean(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


@register_method("gradcampp", family="cam", signed=True, options=_CAM_OPTIONS,
                 passes="shared forward + backward through the head",
                 reference="Chattopadhyay et al. 2018, Grad-CAM++ (arXiv:1710.11063), eq. 19")
def gradcampp(model, batch, targets, context):
    """Grad-CAM++: positive gradients weighted per position by second/third-order terms."""
    activations = context.activations
    gradient = context.activation_gradient(targets)
    gradient_2 = gradient.pow(2)
    gradient_3 = gradient_2 * gradient
    sum_activations = activations.sum(dim=(2, 3), keepdim=True)
    alpha = gradient_2 / (2 * gradient_2 + sum_activations * gradient_3 + 1e-6)
    alpha = torch.where(gradient != 0, alpha, torch.zeros_like(alpha))
    weights = (gradient.clamp(min=0) * alpha).sum(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


@register_method("hirescam", family="cam", signed=True, options=_CAM_OPTIONS,
                 passes="shared forward + backward through the head",
                 reference="Draelos & Carin 2020, HiResCAM (arXiv:2011.08891)")
def hirescam(model, batch, targets, context):
    """HiResCAM: gradient times activation, element-wise, summed over channels."""
    return (context.activation_gradient(targets) * context.activations).sum(dim=1)


@register_method("layercam", family="cam", signed=True, options=_CAM_OPTIONS,
                 passes="shared forward + backward through the head",
                 reference="Jiang et al. 2021, LayerCAM (IEEE TIP 30:5875)")
def layercam(model, batch, targets, context):
    """LayerCAM: positive gradient times activation, element-wise, summed over channels."""
    return (context.activation_gradient(targets).clamp(min=0) * context.activations).sum(dim=1)


@register_method("eigencam", family="cam", signed=True, options=_CAM_OPTIONS, target_dependent=False,
                 passes="shared forward only",
                 reference="Muhammad & Yeasin 2020, Eigen-CAM (arXiv:2008.00299)")
def eigencam(model, batch, targets, context):
    """Eigen-CAM: projection on the first principal component of the activations (class-agnostic).

    The component comes from the eigen-decomposition of the small Gram matrix (positions
    x positions, or channels x channels), which equals grad-cam's SVD projection and
    avoids LAPACK's batched SVD (seconds on CPU). Its sign is arbitrary; it is fixed so
    that the map correlates positively with the summed activations.
    """
    activations = context.activations
    batch_size, channels, height, width = activations.shape
    features = activations.flatten(2).transpose(1, 2).double()  # (B, hw, C)
    features = features - features.mean(dim=1, keepdim=True)
    if height * width <= channels:
        values, vectors = torch.linalg.eigh(features @ features.transpose(1, 2))
        projection = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()  # X v = s u
    else:
        _, vectors = torch.linalg.eigh(features.transpose(1, 2) @ features)
        projection = (features @ vectors[..., -1:]).squeeze(-1)
    activity = activations.sum(dim=1).flatten(1).double()
    activity = activity - activity.mean(dim=1, keepdim=True)
    sign = torch.where((projection * activity).sum(dim=1) < 0, -1.0, 1.0).to(projection.dtype)
    return (projection * sign[:, None]).view(batch_size, height, width).to(activations.dtype)


@register_method("scorecam", family="cam", signed=True, options=_CAM_OPTIONS, slow=True,
                 passes="shared forward + one forward per feature channel",
                 reference="Wang et al. 2020, Score-CAM (arXiv:1910.01279)")
def scorecam(model, batch, targets, context):
    """Score-CAM: channels weighted by the softmax of the target logit of the image masked by each.

    As in grad-cam: masks are the bilinearly upsampled (align_corners) activations,
    min-max scaled per channel; the softmax runs over channels of the raw logits.
    Masked images run in chunks sized to the memory budget, all images at once.
    """
    activations = context.activations
    batch_size, channels = activations.shape[:2]
    rows = context.rows_per_chunk(backward=False)
    image_chunk = min(batch_size, rows)
    channel_chunk = max(1, rows // image_chunk)
    scores = torch.empty(batch_size, channels, device=batch.device, dtype=torch.float32)
    context.many_passes()
    with torch.no_grad():
        for start in range(0, batch_size, image_chunk):
            images = batch[start:start + image_chunk]
            chunk_targets = targets[start:start + image_chunk]
            for first in range(0, channels, channel_chunk):
                maps = activations[start:start + image_chunk, first:first + channel_chunk]
                masks = F.interpolate(maps, size=batch.shape[-2:], mode="bilinear", align_corners=True)
                low = masks.amin(dim=(2, 3), keepdim=True)
                high = masks.amax(dim=(2, 3), keepdim=True)
                masks = (masks - low) / (high - low + 1e-8)
                masked = (images[:, None] * masks[:, :, None]).flatten(0, 1)
                logits = model(masked).view(images.shape[0], maps.shape[1], -1)
                index = chunk_targets.view(-1, 1, 1).expand(-1, maps.shape[1], 1)
                scores[start:start + image_chunk, first:first + channel_chunk] = logits.gather(2, index).squeeze(2)
    weights = torch.softmax(scores, dim=1).to(activations.dtype)
    return (weights[:, :, None, None] * activations).sum(dim=1)
