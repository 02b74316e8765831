"""Grade-aware training: cross-entropy plus the expected grade distance of the prediction.

Cross-entropy counts calling carcinoma in situ "normal" the same as calling it "severe
dysplasia". Adding ``weight * sum_k p_k * |grade(k) - grade(y)|`` (the expected cost of the
prediction, with the grades of :func:`xcyto.trust.grade_scale`) makes far misses cost more
than near ones, while the head stays an ordinary softmax over the classes, so every
explanation, calibration and prediction set works on it unchanged. Classes of one grade
(Herlev's three normal classes) cost nothing to confuse here: cross-entropy still tells them
apart. A class outside the scale costs nothing either way.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xcyto.errors import TrainingError


def grade_costs(classes: list[str]) -> np.ndarray:
    """``costs[true, predicted]``: the grade distance between two classes (0 off the scale)."""
    from xcyto.trust import grade_scale

    scale = grade_scale(classes)
    if scale is None:
        raise TrainingError(f"grade-aware training needs graded classes, and {', '.join(classes)} have no "
                            "known order (register one with xcyto.trust.register_scale)")
    grades = scale.array(classes)
    costs = np.abs(grades[:, None] - grades[None, :]).astype(np.float32)
    costs[(grades < 0)[:, None] | (grades < 0)[None, :]] = 0.0
    return costs


class GradeAwareLoss(nn.Module):
    """``cross_entropy(logits, target) + weight * E_p[cost(target, .)]``. ``target``: class
    indices, or a row of class shares per image (MixUp, CutMix), whose costs mix the same way."""

    def __init__(self, cross_entropy: nn.Module, costs: np.ndarray, weight: float):
        super().__init__()
        self.cross_entropy = cross_entropy
        self.weight = float(weight)
        self.register_buffer("costs", torch.as_tensor(costs, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        rows = self.costs[target] if target.ndim == 1 else target.float() @ self.costs
        expected = (logits.float().softmax(1) * rows).sum(1).mean()
        return self.cross_entropy(logits, target) + self.weight * expected
