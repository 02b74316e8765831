"""Deletion and insertion curves (Petsiuk et al. 2018, RISE, arXiv:1806.07421), batched on the device.

Pixels are ranked by the raw map (most evidence for the target first). Deletion
replaces the top ``k/steps`` of them with the deletion baseline and records the
target's calibrated probability; insertion starts from the insertion baseline and
puts the top pixels back. A faithful map makes the deletion curve fall fast (low
AUC) and the insertion curve rise fast (high AUC).

Pixels are removed in ``block x block`` squares (default: 1/16 of the image side, 14 px
at 224 px), ranked by the map's mean over each square: removing scattered single pixels
makes a salt-and-pepper image unlike any cell, which a random order exploits, and
squares compare pixel-level and coarse (CAM) maps at the same granularity.

Baselines differ from RISE (deletion to black, insertion from a blurred copy): on
brightfield cytology a black pixel is far from anything the model has seen, so the
prediction collapses after the first step whatever the order, and a blur of a small
cell image keeps the class. Both curves here use an *empty slide*: each image's own
background colour (median of its border). Other baselines can be chosen.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xcyto.calibration import Calibration
from xcyto.errors import ExplainError
from xcyto.explain import Context
from xcyto.models import evaluating


@dataclass
class PerturbationCurves:
    """``fractions`` ``(S+1,)``; ``deletion``/``insertion`` ``(B, S+1)`` target probabilities;
    ``deletion_auc``/``insertion_auc`` ``(B,)`` (trapezoid over the fraction of pixels)."""

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor


def pixel_ranks(maps: torch.Tensor, block: int = 1) -> torch.Tensor:
    """Rank of each pixel ``(B, H*W)``: 0 for the largest value of its map.

    With ``block > 1`` the map is first averaged over ``block x block`` squares and
    every pixel takes its square's value, so squares are removed whole.
    """
    if block > 1:
        height, width = maps.shape[-2:]
        pooled = F.avg_pool2d(maps[:, None].float(), block, ceil_mode=True)
        maps = F.interpolate(pooled, scale_factor=block, mode="nearest")[:, 0, :height, :width]
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def deletion_insertion(model, batch: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *, steps: int = 20,
                       deletion_baseline="background", insertion_baseline="background", mean=(0.0, 0.0, 0.0),
                       std=(1.0, 1.0, 1.0), calibration: Calibration | None = None, memory_mb: float | None = None,
                       block: int | None = None, context: Context | None = None) -> PerturbationCurves:
    """Deletion and insertion curves of ``maps`` ``(B, H, W)`` for ``batch`` ``(B, 3, H, W)``.

    ``steps``: the curves have ``steps + 1`` points (0 %, 1/steps, ..., 100 % of pixels).
    ``block``: side of the squares removed together (default ``round(side / 16)``; 1: pixels).
    Baselines as in :meth:`xcyto.explain.Context.baseline`. All perturbed
    images run in inference mode, in chunks sized to the memory budget. The curves follow
    the ``calibration``'s probability of the target (default: plain softmax).
    """
    calibration = calibration or Calibration()
    if steps < 1:
        raise ExplainError(f"deletion/insertion needs steps >= 1, got {steps}")
    if maps.shape != (batch.shape[0], *batch.shape[-2:]):
        raise ExplainError(f"maps of shape {tuple(maps.shape)} do not match the batch {tuple(batch.shape)}")
    batch_size, pixels = batch.shape[0], batch.shape[-2] * batch.shape[-1]
    with evaluating(model):
        context = context or Context(model, batch, layer=None, embedding_layer=None, mean=mean, std=std,
                                     memory_mb=memory_mb)
        removed = context.baseline(deletion_baseline).expand_as(batch)
        start = context.baseline(insertion_baseline).expand_as(batch)
        block = max(1, round(batch.shape[-1] / 16)) if block is None else int(block)
        ranks = pixel_ranks(maps.to(batch.device), block).view(batch_size, 1, *batch.shape[-2:])
        counts = torch.round(torch.linspace(0, pixels, steps + 1, device=batch.device)).long()
        # rows: (curve, step, image) flattened; curve 0 = deletion, 1 = insertion
        total = 2 * (steps + 1) * batch_size
        chunk = context.rows_per_chunk(backward=False)
        scores = torch.empty(total, device=batch.device)
        context.many_passes()
        with torch.no_grad():
            for first in range(0, total, chunk):
                rows = torch.arange(first, min(total, first + chunk), device=batch.device)
                images = rows % batch_size
                step = (rows // batch_size) % (steps + 1)
                insertion = (rows // (batch_size * (steps + 1))) == 1
                chosen = ranks[images] < counts[step].view(-1, 1, 1, 1)  # top-ranked pixels
                deleted = torch.where(chosen, removed[images], batch[images])
                inserted = torch.where(chosen, batch[images], start[images])
                inputs = torch.where(insertion.view(-1, 1, 1, 1), inserted, deleted)
                probabilities = calibration.probabilities(model(inputs))
                scores[first:first + len(rows)] = probabilities.gather(1, targets[images].view(-1, 1)).squeeze(1)
        context.restore()
    curves = scores.view(2, steps + 1, batch_size).permute(0, 2, 1)
    fractions = counts.float() / pixels
    return PerturbationCurves(
        fractions=fractions, deletion=curves[0], insertion=curves[1],
        deletion_auc=torch.trapezoid(curves[0], fractions, dim=1),
        insertion_auc=torch.trapezoid(curves[1], fractions, dim=1))
