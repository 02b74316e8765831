"""Does the map point at the cell, the nucleus, the evidence? (where masks exist)

For each map and mask: ``share`` = positive attribution inside the mask / all positive
attribution (a map that knows nothing scores the mask's ``area`` share on average);
``hit`` = the map's maximum lies inside the mask, dilated by ``tolerance`` pixels (the
pointing game, Zhang et al. 2016, arXiv:1608.00507).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def localisation(maps: torch.Tensor, mask: torch.Tensor, tolerance: int = 0) -> dict[str, torch.Tensor]:
    """``maps`` ``(B, H, W)``, ``mask`` ``(B, H, W)`` bool -> per image ``share``, ``hit``, ``area``."""
    mask = mask.to(maps.device).bool()
    positive = maps.float().clamp(min=0)
    total = positive.sum(dim=(1, 2))
    inside = (positive * mask).sum(dim=(1, 2))
    share = torch.where(total > 0, inside / total.clamp(min=1e-30), torch.zeros_like(total))
    target_area = mask
    if tolerance > 0:
        size = 2 * tolerance + 1
        target_area = F.max_pool2d(mask.float()[:, None], size, stride=1, padding=tolerance)[:, 0] > 0
    peak = maps.float().flatten(1).argmax(dim=1, keepdim=True)
    hit = target_area.flatten(1).gather(1, peak).squeeze(1).float()
    return {"share": share, "hit": hit, "area": mask.float().mean(dim=(1, 2))}
