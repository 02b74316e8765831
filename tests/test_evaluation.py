"""Faithfulness metrics: deletion/insertion, randomisation, localisation, IG completeness, the report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

import xcyto
from xcyto.evaluation import (
    bootstrap_interval,
    cascade_layers,
    completeness_error,
    completeness_ok,
    deletion_insertion,
    evaluate_explanations,
    localisation,
    pixel_ranks,
    randomisation_check,
    randomise_,
    spearman,
)
from xcyto.explain import explain_batch, register_method, unregister_method
from xcyto.models import create

from tests.test_explain_support import cell, cells_dataset, tiny_bundle_path, untrained_bundle_path


class CornerModel(nn.Module):
    """A real (hand-set) classifier: class 1's logit is 4 x the mean of the top-left quadrant."""

    def forward(self, images):
        height, width = images.shape[-2:]
        corner = images[:, :, : height // 2, : width // 2].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(corner), 4 * corner], dim=1)


def _quadrant_map(scores, size: int = 16) -> torch.Tensor:
    """A map with one value per quadrant, ``scores = ((top-left, top-right), (bottom-left, bottom-right))``."""
    half = size // 2
    maps = torch.tensor(scores, dtype=torch.float32).repeat_interleave(half, 0).repeat_interleave(half, 1)
    return maps[None]


def test_deletion_and_insertion_reward_the_map_that_points_at_the_evidence():
    model, images, target = CornerModel(), torch.ones(1, 3, 16, 16), torch.tensor([1])
    right = deletion_insertion(model, images, _quadrant_map(((4, 3), (2, 1))), target, steps=8,
                               deletion_baseline="black", insertion_baseline="black")
    wrong = deletion_insertion(model, images, _quadrant_map(((1, 2), (3, 4))), target, steps=8,
                               deletion_baseline="black", insertion_baseline="black")
    full, empty = torch.sigmoid(torch.tensor(4.0)).item(), 0.5
    for curves in (right, wrong):
        assert curves.deletion[0, 0].item() == pytest.approx(full) and curves.deletion[0, -1].item() == pytest.approx(empty)
        assert curves.insertion[0, 0].item() == pytest.approx(empty) and curves.insertion[0, -1].item() == pytest.approx(full)
    # the right map removes the whole corner within the first quarter of pixels
    assert right.deletion[0, 2].item() == pytest.approx(empty)
    assert wrong.deletion[0, 6].item() == pytest.approx(full)  # the corner goes last
    assert right.deletion_auc.item() < wrong.deletion_auc.item() - 0.2
    assert right.insertion_auc.item() > wrong.insertion_auc.item() + 0.2
    torch.testing.assert_close(right.fractions, torch.linspace(0, 1, 9))


def test_pixel_ranks_put_the_largest_value_first():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert pixel_ranks(maps).tolist() == [[3, 0, 1, 2]]
    squares = torch.zeros(1, 4, 4)
    squares[0, 2:, 2:] = torch.tensor([[0.2, 0.0], [0.0, 0.1]])  # weak pixels, strongest square
    squares[0, 0, 0] = 0.25  # the strongest pixel, in a weaker square
    ranks = pixel_ranks(squares, block=2).view(4, 4)
    assert sorted(ranks[2:, 2:].flatten().tolist()) == [0, 1, 2, 3]  # the square goes first, whole
    assert sorted(ranks[:2, :2].flatten().tolist()) == [4, 5, 6, 7]


def test_localisation_share_and_pointing_game():
    maps = torch.zeros(2, 8, 8)
    maps[0, 1, 1], maps[0, 6, 6] = 3.0, 1.0
    maps[1, 6, 6] = 2.0
    maps[1, 1, 2] = -5.0  # negative attribution does not count
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, :4, :4] = True
    found = localisation(maps, mask)
    torch.testing.assert_close(found["share"], torch.tensor([0.75, 0.0]))
    assert found["hit"].tolist() == [1.0, 0.0]
    assert found["area"].tolist() == [0.25, 0.25]
    assert localisation(maps, mask, tolerance=3)["hit"].tolist() == [1.0, 1.0]  # (6, 6) is 3 px from the mask


def test_spearman_matches_scipy():
    generator = torch.Generator().manual_seed(0)
    first, second = torch.rand(3, 100, generator=generator), torch.rand(3, 100, generator=generator)
    second[0] = first[0] * 2 + 1
    ours = spearman(first, second)
    for index in range(3):
        assert ours[index].item() == pytest.approx(spearmanr(first[index], second[index]).statistic, abs=1e-5)
    assert ours[0].item() == pytest.approx(1.0)


def test_cascades_go_from_the_classifier_down_through_the_blocks():
    assert cascade_layers(create("small_cnn", 2, weights=None)) == [
        "classifier", "backbone.block4", "backbone.block3", "backbone.block2", "backbone.block1"]
    resnet = cascade_layers(create("resnet18", 2, weights=None))
    assert resnet[:3] == ["classifier", "backbone.layer4.1", "backbone.layer4.0"]
    assert resnet[-2:] == ["backbone.bn1", "backbone.conv1"] and len(resnet) == 11
    lite = cascade_layers(create("efficientnet_lite0", 2, weights=None))
    assert lite[:4] == ["classifier", "backbone.bn2", "backbone.conv_head", "backbone.blocks.6"]
    assert lite[-3:] == ["backbone.blocks.0", "backbone.bn1", "backbone.conv_stem"]


def test_randomise_reinitialises_weights_but_keeps_normalisation_statistics():
    model = create("small_cnn", 2, weights=None)
    block = model.backbone.block2
    block[1].running_mean.fill_(0.3)
    block[1].weight.data.fill_(2.0)
    before = block[0].weight.detach().clone()
    torch.manual_seed(5)
    randomise_(block)
    assert not torch.allclose(before, block[0].weight)
    assert torch.all(block[1].weight == 1) and torch.all(block[1].running_mean == 0.3)


def _sobel(model, batch, targets, context):
    """An edge detector: a map that never looks at the model."""
    gray = batch.mean(dim=1, keepdim=True)
    kernel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=batch.device)
    gx = F.conv2d(gray, kernel.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(gray, kernel.t().reshape(1, 1, 3, 3), padding=1)
    return (gx.pow(2) + gy.pow(2)).sqrt()[:, 0]


def test_randomisation_flags_a_map_that_ignores_the_model():
    bundle = xcyto.load(untrained_bundle_path())
    batch = bundle.preprocess([cell(seed) for seed in range(4)])
    before = {name: tensor.clone() for name, tensor in bundle.model.state_dict().items()}
    register_method("test_edges", family="baseline", signed=False, target_dependent=False)(_sobel)
    try:
        result = randomisation_check(bundle.model, batch, ["gradcam", "test_edges"], seed=0,
                                     mean=bundle.config["mean"], std=bundle.config["std"])
    finally:
        unregister_method("test_edges")
    assert result.layers == cascade_layers(bundle.model)
    assert result.correlations["test_edges"].shape == (len(result.layers), 4)
    np.testing.assert_allclose(result.correlations["test_edges"], 1.0, atol=1e-6)
    assert result.flagged("test_edges")
    assert not result.flagged("gradcam")
    assert result.mean("gradcam")[-1] < 0.5
    summary = result.summary()
    assert summary["test_edges"]["flagged"] and not summary["gradcam"]["flagged"]
    # the model itself was not touched
    after = {name: tensor.clone() for name, tensor in bundle.model.state_dict().items()}
    assert before.keys() == after.keys() and all(torch.equal(before[name], after[name]) for name in before)


def test_integrated_gradients_attributions_add_up_to_the_output_difference():
    bundle = xcyto.load(untrained_bundle_path())
    batch = bundle.preprocess([cell(seed) for seed in range(3)])
    common = dict(mean=bundle.config["mean"], std=bundle.config["std"])
    for baseline in ("black", "white", "blur", "background"):
        result = explain_batch(bundle.model, batch, ["ig"], options={"steps": 32, "baseline": baseline}, **common)
        info = result.info["integrated_gradients"]
        total = result.raw["integrated_gradients"].sum(dim=(1, 2))
        torch.testing.assert_close(total - info["output_difference"], info["completeness_gap"], atol=1e-5, rtol=1e-4)
        assert completeness_ok(info["completeness_gap"], info["output_difference"]).all(), baseline
    # the untrained model's output barely moves, so the gap is judged against the 0.1 floor
    assert (info["output_difference"].abs() < 0.1).all()
    doubled = total * 2 - info["output_difference"]
    assert completeness_ok(doubled, info["output_difference"]).all()
    # and the check can fail: on a trained model, a map scaled by 2 no longer adds up
    trained = xcyto.load(tiny_bundle_path())
    batch = trained.preprocess([cell(seed) for seed in range(3)])
    result = explain_batch(trained.model, batch, ["ig"], options={"baseline": "background"}, **common)
    info = result.info["integrated_gradients"]
    assert completeness_ok(info["completeness_gap"], info["output_difference"]).all()
    assert (info["output_difference"].abs() > 0.2).all()  # above the floor: judged against itself
    doubled = result.raw["integrated_gradients"].sum(dim=(1, 2)) * 2 - info["output_difference"]
    assert not completeness_ok(doubled, info["output_difference"]).any()
    assert completeness_error(doubled, info["output_difference"]).min() > 0.5


def test_bootstrap_interval_brackets_the_mean():
    mean, low, high = bootstrap_interval(np.arange(100.0), resamples=500, seed=0)
    assert mean == 49.5 and 43 < low < mean < high < 56
    assert bootstrap_interval([3.0]) == (3.0, 3.0, 3.0)
    assert np.isnan(bootstrap_interval([])[0])


def _captum_completeness_error(bundle, dataset, n: int, steps: int, seed: int = 0) -> float:
    """Mean |sum(IG) - (f(x) - f(baseline))| / max(|f(x) - f(baseline)|, 0.1) over the ``n`` cells
    :func:`evaluate_explanations` draws (seeded), with captum's IG of the predicted class."""
    from captum.attr import IntegratedGradients

    from xcyto.data import CellTorchDataset

    chosen = np.sort(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False))
    cells = CellTorchDataset([dataset.samples[i] for i in chosen], bundle.transform())
    batch = torch.stack([cells[i][0] for i in range(len(cells))])
    model = bundle.model.eval()
    with torch.no_grad():
        targets = model(batch).argmax(1)
    border = torch.cat([batch[..., 0, :], batch[..., -1, :], batch[..., :, 0], batch[..., :, -1]], dim=-1)
    baseline = border.median(dim=-1).values[..., None, None].expand_as(batch).contiguous()
    _, delta = IntegratedGradients(model).attribute(batch, baselines=baseline, target=targets, n_steps=steps,
                                                    method="gausslegendre", return_convergence_delta=True)
    with torch.no_grad():
        moved = (model(batch) - model(baseline)).gather(1, targets[:, None])[:, 0]
    return float((delta.abs() / moved.abs().clamp(min=0.1)).mean())


def test_evaluation_report_lists_every_method_and_metric(tmp_path):
    bundle = xcyto.load(untrained_bundle_path())
    report = evaluate_explanations(bundle, cells_dataset(8), n=6, methods="gradcam,ig,random", steps=4,
                                   randomisation_cells=2, batch_size=4, bootstrap=200, options={"steps": 4})
    methods = {row["method"] for row in report.rows}
    assert methods == {"gradcam", "integrated_gradients", "random", "chance (mask area)"}
    for row in report.rows:
        assert row["ci_low"] <= row["mean"] + 1e-12 and row["mean"] <= row["ci_high"] + 1e-12, row
    metrics = {row["metric"] for row in report.rows if row["method"] == "gradcam"}
    assert {"deletion_auc", "insertion_auc", "nucleus_share", "nucleus_hit", "cell_share", "cell_hit",
            "randomisation_rho", "ms_per_cell"} <= metrics
    assert "evidence_share" not in metrics  # these cells have no evidence masks
    # IG's completeness error, derived independently: captum's IntegratedGradients (4 Gauss-Legendre
    # points, the background baseline = each image's median border colour) on the same 6 cells
    assert report.row("integrated_gradients", "completeness_error")["n"] == 6
    assert report.mean("integrated_gradients", "completeness_error") == pytest.approx(
        _captum_completeness_error(bundle, cells_dataset(8), n=6, steps=4), rel=1e-3, abs=1e-6)
    assert report.row("gradcam", "completeness_error") is None
    assert report.row("gradcam", "deletion_auc")["n"] == 6
    assert "random" in report.flagged()  # a seeded random map does not depend on the weights
    markdown = report.to_markdown()
    assert "| gradcam |" in markdown and "random ⚠" in markdown and "deletion_auc ↓" in markdown
    paths = report.save(tmp_path / "eval")
    assert {p.name for p in paths.values()} == {"explanation_metrics.md", "explanation_metrics.csv",
                                                "explanation_metrics.png", "explanation_metrics.json"}
    csv_lines = paths["csv"].read_text().splitlines()
    assert csv_lines[0] == "method,metric,mean,ci_low,ci_high,n" and len(csv_lines) == len(report.rows) + 1
    assert json.loads(paths["json"].read_text())["settings"]["cells"] == 6


def test_gradcam_of_a_trained_model_points_at_the_evidence_more_than_chance():
    trained = xcyto.load(tiny_bundle_path())
    # the 48 px tiny model's last map is 6 x 6, so the default layer would be an early block;
    # its last block is where a model trained for seconds has learnt the classes
    report = evaluate_explanations(trained, "synthetic", n=48, methods=["gradcam", "random"], steps=4,
                                   randomisation_cells=0, bootstrap=200, options={"layer": "backbone"})
    gradcam, random = report.row("gradcam", "evidence_share"), report.row("random", "evidence_share")
    chance = report.row("chance (mask area)", "evidence_share")
    assert random["mean"] == pytest.approx(chance["mean"], abs=0.05)  # a random map scores the area share
    assert gradcam["ci_low"] > random["ci_high"], report.to_markdown()
    assert report.mean("gradcam", "deletion_auc") < report.mean("random", "deletion_auc")


def test_a_signed_map_is_checked_signed_and_its_magnitude_kept_beside():
    """A signed map whose sign follows the model but whose size follows the image: the flag
    reads the sign; |map| is reported, and stays like the image's."""
    bundle = xcyto.load(untrained_bundle_path())
    batch = bundle.preprocess([cell(seed) for seed in range(4)])

    def signed_edges(model, batch, targets, context):
        with torch.enable_grad():
            inputs = batch.detach().clone().requires_grad_(True)
            model(inputs).gather(1, targets.view(-1, 1)).sum().backward()
        sign = torch.sign(inputs.grad.sum(dim=1))
        return sign * _sobel(model, batch, targets, context).clamp(min=1e-3)

    register_method("test_signed_edges", family="baseline", signed=True)(signed_edges)
    try:
        result = randomisation_check(bundle.model, batch, ["test_signed_edges"], seed=0,
                                     mean=bundle.config["mean"], std=bundle.config["std"])
    finally:
        unregister_method("test_signed_edges")
    assert result.final_magnitude("test_signed_edges") > 0.99  # the edges did not move
    assert not result.flagged("test_signed_edges")  # the signs did
    assert result.summary()["test_signed_edges"]["final_rho_magnitude"] > 0.99
