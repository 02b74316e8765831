"""Grade-aware training: the loss recomputed by hand, and a tiny real training with it."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import xcyto
from xcyto.card import render_card
from xcyto.errors import TrainingError
from xcyto.training import GradeAwareLoss, grade_costs
from tests.tiny import TINY_SETTINGS

HERLEV = ["carcinoma_in_situ", "light_dysplastic", "moderate_dysplastic", "normal_columnar",
          "normal_intermediate", "normal_superficiel", "severe_dysplastic"]
GRADES = np.array([4, 1, 2, 0, 0, 0, 3])


def test_costs_are_grade_distances_and_the_loss_adds_their_expectation():
    costs = grade_costs(HERLEV)
    assert np.array_equal(costs, np.abs(GRADES[:, None] - GRADES[None, :]))
    loss = GradeAwareLoss(torch.nn.CrossEntropyLoss(label_smoothing=0.1), costs, weight=0.5)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=generator)
    target = torch.tensor([0, 1, 2, 3, 6, 4])
    p = logits.softmax(1).numpy()
    by_hand = sum(p[i] @ np.abs(GRADES - GRADES[t]) for i, t in enumerate(target.tolist())) / len(target)
    expected = F.cross_entropy(logits, target, label_smoothing=0.1).item() + 0.5 * by_hand
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # soft targets (MixUp, CutMix): the cost term mixes as the shares do
    shares = torch.zeros(6, 7)
    shares[torch.arange(6), target] = 0.7
    shares[torch.arange(6), 5] += 0.3
    soft = sum(p[i] @ (0.7 * np.abs(GRADES - GRADES[t]) + 0.3 * np.abs(GRADES - 0))
               for i, t in enumerate(target.tolist())) / len(target)
    assert loss(logits, shares).item() == pytest.approx(
        F.cross_entropy(logits, shares, label_smoothing=0.1).item() + 0.5 * soft, rel=1e-6)


def test_a_far_miss_costs_more_than_a_near_one_with_the_same_cross_entropy():
    loss = GradeAwareLoss(torch.nn.CrossEntropyLoss(), grade_costs(HERLEV), weight=1.0)
    near, far = torch.zeros(1, 7), torch.zeros(1, 7)
    near[0, 6] = 3.0  # carcinoma in situ leaning to severe dysplasia
    far[0, 5] = 3.0  # ... and to normal superficial: the same cross-entropy
    target = torch.tensor([0])
    assert F.cross_entropy(near, target).item() == pytest.approx(F.cross_entropy(far, target).item())
    assert loss(far, target).item() > loss(near, target).item() + 0.5
    # normal classes share one grade: leaning to another normal class adds cross-entropy only
    def grade_term(logits, target):
        return loss(logits, target).item() - F.cross_entropy(logits, target).item()

    right, other_normal = torch.zeros(1, 7), torch.zeros(1, 7)
    right[0, 3], other_normal[0, 4] = 3.0, 3.0
    normal_columnar = torch.tensor([3])
    assert grade_term(other_normal, normal_columnar) == pytest.approx(grade_term(right, normal_columnar), abs=1e-6)
    assert F.cross_entropy(other_normal, normal_columnar) > F.cross_entropy(right, normal_columnar) + 1


def test_classes_without_an_order_are_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="graded classes"):
        grade_costs(["cats", "dogs", "birds"])
    with pytest.raises(TrainingError, match="grade_loss must be >= 0"):
        xcyto.train(**{**TINY_SETTINGS, "grade_loss": -1.0, "out": str(tmp_path)})


def test_a_grade_aware_training_runs_and_says_so(tmp_path):
    settings = {**TINY_SETTINGS, "epochs": 2, "synthetic_n": 100, "gallery": False, "grade_loss": 0.5,
                "out": str(tmp_path)}
    result = xcyto.train(**settings)
    assert result.bundle.config["training"]["grade_loss"] == 0.5
    assert np.isfinite([entry["train_loss"] for entry in result.history]).all()
    assert "grade-aware loss 0.5" in render_card(result.bundle)
