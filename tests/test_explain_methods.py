"""Explanation methods on real (small, untrained) models: shapes, ranges, batching, and
agreement with the reference implementations in grad-cam and captum."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedGradCam, IntegratedGradients, Saliency
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from xcyto.errors import ExplainError
from xcyto.explain import (
    display_maps,
    explain_batch,
    get_method,
    list_methods,
    register_method,
    unregister_method,
)
from xcyto.explain import Context
from xcyto.models import create, get_layer

FAST = {"steps": 8, "samples": 4, "window": 8, "stride": 8}


def fast(*names):
    """The fast settings that apply to ``names`` (options no method uses are an error)."""
    used = set().union(*(get_method(name).options for name in names))
    return {key: value for key, value in FAST.items() if key in used}


@pytest.fixture(scope="module")
def small_cnn():
    torch.manual_seed(0)
    return create("small_cnn", num_classes=3, weights=None).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def all_maps(small_cnn, images):
    return explain_batch(small_cnn, images, list_methods(), options=FAST)


def test_every_method_gives_finite_maps_at_input_resolution(all_maps):
    assert set(all_maps.raw) == set(list_methods())
    for name, raw in all_maps.raw.items():
        method = get_method(name)
        assert raw.shape == (2, 32, 32), name
        assert torch.isfinite(raw).all(), name
        assert raw.abs().amax() > 0, f"{name} returned an all-zero map"
        if not method.signed:
            assert (raw >= 0).all(), f"{name} is declared unsigned but has negative values"


def test_display_maps_are_the_positive_part_over_the_robust_maximum(all_maps):
    raw = all_maps.raw["integrated_gradients"]
    display, scale = display_maps(raw, "individual")
    for index in range(raw.shape[0]):
        magnitude = raw[index].abs().flatten().numpy()
        assert scale[index].item() == pytest.approx(np.quantile(magnitude, 0.99, method="inverted_cdf"))
    expected = (raw.clamp(min=0) / scale[:, None, None]).clamp(max=1)
    torch.testing.assert_close(display, expected)
    assert display.min() >= 0 and display.max() == 1


def test_shared_normalisation_puts_the_batch_on_one_scale(all_maps):
    raw = all_maps.raw["gradcam"]
    raw = torch.cat([raw[:1], raw[:1] * 10])  # same map, ten times stronger
    individual, _ = display_maps(raw, "individual")
    shared, scale = display_maps(raw, "shared")
    torch.testing.assert_close(individual[0], individual[1])  # individual scaling hides the difference
    assert scale[0] == scale[1]
    assert shared[0].sum() < shared[1].sum()  # the shared scale shows it
    with pytest.raises(ExplainError, match="normalise"):
        display_maps(raw, "global")


@pytest.mark.parametrize("name", [m for m in list_methods() if m != "random"])
def test_a_batch_gives_the_same_maps_as_one_cell_at_a_time(small_cnn, images, all_maps, name):
    for index in range(images.shape[0]):
        alone = explain_batch(small_cnn, images[index:index + 1], [name], options=fast(name))
        assert alone.targets.item() == all_maps.targets[index].item()
        expected = all_maps.raw[name][index]
        torch.testing.assert_close(alone.raw[name][0], expected, atol=1e-5 * expected.abs().max().item() + 1e-9,
                                   rtol=1e-4)


def _minmax(maps):
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + 1e-7)


def _grad_cam_style(model, images, name, layer="backbone"):
    """Our map on the feature grid, post-processed as grad-cam does: ReLU, min-max, resize, min-max."""
    context = Context(model, images, layer=layer)
    context.method, context.options = name, {"layer": layer}
    targets = context.forward().argmax(dim=1)
    low = get_method(name).compute(model, images, targets, context).clamp(min=0)
    up = F.interpolate(_minmax(low)[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _minmax(up).numpy(), targets


@pytest.mark.parametrize("name, reference", [("gradcam", GradCAM), ("gradcampp", GradCAMPlusPlus),
                                             ("hirescam", HiResCAM), ("layercam", LayerCAM),
                                             ("scorecam", ScoreCAM)])
def test_cams_agree_with_grad_cam(small_cnn, images, name, reference):
    ours, targets = _grad_cam_style(small_cnn, images, name)
    with reference(model=small_cnn, target_layers=[small_cnn.backbone]) as cam:
        if name == "scorecam":
            cam.batch_size = 64
        theirs = cam(images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


def test_gradcam_agrees_with_grad_cam_on_resnet18_and_an_inner_layer():
    torch.manual_seed(0)
    model = create("resnet18", num_classes=4, weights=None).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for layer in ("backbone", "backbone.layer3"):
        ours, targets = _grad_cam_style(model, images, "gradcam", layer=layer)
        with GradCAM(model=model, target_layers=[get_layer(model, layer)]) as cam:
            theirs = cam(images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        np.testing.assert_allclose(ours, theirs, atol=2e-4)


def test_eigencam_is_grad_cams_projection_with_a_fixed_sign(small_cnn, images):
    for layer in ("backbone", "backbone.block1"):  # fewer positions than channels, and more
        context = Context(small_cnn, images, layer=layer)
        context.method = "eigencam"
        ours = get_method("eigencam").compute(small_cnn, images, context.forward().argmax(1), context)
        projection = torch.from_numpy(get_2d_projection(context.activations.numpy()))
        activity = context.activations.sum(dim=1)
        for mine, theirs, total in zip(ours, projection, activity):
            sign = 1.0 if (mine * theirs).sum() >= 0 else -1.0
            torch.testing.assert_close(mine, sign * theirs, atol=1e-4 * theirs.abs().max().item(), rtol=1e-3)
            assert (mine * (total - total.mean())).sum() >= 0  # the sign follows the activations
    with EigenCAM(model=small_cnn, target_layers=[small_cnn.backbone]) as cam:
        assert cam(images, targets=None).shape == (2, 32, 32)  # the reference runs on the same layer


def test_integrated_gradients_agrees_with_captum_and_is_complete(small_cnn, images):
    result = explain_batch(small_cnn, images, ["ig"], options={"steps": 16, "baseline": "black"})
    # mean 0 / std 1 here, so "black" is the zero image
    captum_ig = IntegratedGradients(small_cnn)
    theirs, delta = captum_ig.attribute(images, baselines=torch.zeros_like(images), target=result.targets,
                                        n_steps=16, return_convergence_delta=True)
    torch.testing.assert_close(result.raw["integrated_gradients"], theirs.sum(dim=1), atol=1e-6, rtol=1e-4)
    info = result.info["integrated_gradients"]
    torch.testing.assert_close(info["completeness_gap"], delta.float(), atol=1e-5, rtol=1e-3)
    total = result.raw["integrated_gradients"].sum(dim=(1, 2))
    torch.testing.assert_close(total - info["output_difference"], info["completeness_gap"], atol=1e-5, rtol=1e-4)


def test_integrated_gradients_chunks_give_the_same_result(small_cnn, images):
    whole = explain_batch(small_cnn, images, ["ig"], options={"steps": 4, "internal_batch_size": 24})
    tiny = explain_batch(small_cnn, images, ["ig"], options={"steps": 4, "memory_mb": 0.01})  # one row per pass
    odd = explain_batch(small_cnn, images, ["ig"], options={"steps": 4, "internal_batch_size": 3})
    for other in (tiny, odd):
        torch.testing.assert_close(other.raw["integrated_gradients"], whole.raw["integrated_gradients"],
                                   atol=1e-7, rtol=1e-4)


def test_integrated_gradients_baselines_are_in_pixel_units():
    torch.manual_seed(0)
    model = create("small_cnn", num_classes=2, weights=None).eval()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = torch.randn(1, 3, 32, 32)
    black = explain_batch(model, images, ["ig"], mean=mean, std=std, options={"steps": 4, "baseline": "black"})
    zero = explain_batch(model, images, ["ig"], mean=mean, std=std, options={"steps": 4, "baseline": 0.0})
    white = explain_batch(model, images, ["ig"], mean=mean, std=std, options={"steps": 4, "baseline": "white"})
    torch.testing.assert_close(black.raw["integrated_gradients"], zero.raw["integrated_gradients"])
    assert not torch.allclose(black.raw["integrated_gradients"], white.raw["integrated_gradients"])
    with pytest.raises(ExplainError, match="unknown baseline"):
        explain_batch(model, images, ["ig"], options={"baseline": "purple"})


def test_the_background_baseline_is_each_cells_border_colour(small_cnn, images):
    framed = images.clone()
    colours = torch.tensor([[0.9, 0.8, 0.7], [-0.5, 0.1, 0.3]])
    for index, colour in enumerate(colours):  # a uniform frame of a different colour per image
        framed[index, :, :2, :] = framed[index, :, -2:, :] = colour.view(3, 1, 1)
        framed[index, :, :, :2] = framed[index, :, :, -2:] = colour.view(3, 1, 1)
    background = explain_batch(small_cnn, framed, ["ig"], options={"steps": 4, "baseline": "background"})
    explicit = explain_batch(small_cnn, framed, ["ig"], options={"steps": 4, "baseline": colours.view(2, 3, 1, 1)})
    torch.testing.assert_close(background.raw["integrated_gradients"], explicit.raw["integrated_gradients"])
    for key in ("completeness_gap", "output_difference"):
        torch.testing.assert_close(background.info["integrated_gradients"][key],
                                   explicit.info["integrated_gradients"][key])


def test_saliency_and_smoothgrad_without_noise_agree_with_captum(small_cnn, images):
    result = explain_batch(small_cnn, images, ["saliency", "smoothgrad"], options={"samples": 2, "noise": 0.0})
    theirs = Saliency(small_cnn).attribute(images.clone().requires_grad_(True), target=result.targets, abs=True).amax(dim=1)
    torch.testing.assert_close(result.raw["saliency"], theirs)
    torch.testing.assert_close(result.raw["smoothgrad"], theirs)
    noisy = explain_batch(small_cnn, images, ["smoothgrad"], options={"samples": 4, "noise": 0.2})
    again = explain_batch(small_cnn, images, ["smoothgrad"], options={"samples": 4, "noise": 0.2})
    other_seed = explain_batch(small_cnn, images, ["smoothgrad"], options={"samples": 4, "noise": 0.2, "seed": 1})
    torch.testing.assert_close(noisy.raw["smoothgrad"], again.raw["smoothgrad"])  # seeded
    assert not torch.allclose(noisy.raw["smoothgrad"], other_seed.raw["smoothgrad"])
    assert not torch.allclose(noisy.raw["smoothgrad"], theirs)


def test_guided_gradcam_agrees_with_captum(small_cnn, images):
    result = explain_batch(small_cnn, images, ["guided_gradcam"], options={"interpolation": "nearest"})
    with pytest.warns(UserWarning, match="backward hooks on ReLU"):
        theirs = GuidedGradCam(small_cnn, small_cnn.backbone).attribute(images.clone().requires_grad_(True),
                                                                        target=result.targets)
    torch.testing.assert_close(result.raw["guided_gradcam"], theirs.abs().amax(dim=1), atol=1e-9, rtol=1e-4)


def test_occlusion_window_covering_everything_is_the_drop_of_the_logit(small_cnn, images):
    result = explain_batch(small_cnn, images, ["occlusion"], options={"window": 32, "baseline": "black"})
    logits = small_cnn(images).gather(1, result.targets[:, None]).squeeze(1)
    black = small_cnn(torch.zeros_like(images)).gather(1, result.targets[:, None]).squeeze(1)
    expected = (logits - black)[:, None, None].expand(-1, 32, 32)
    torch.testing.assert_close(result.raw["occlusion"], expected.detach(), atol=1e-5, rtol=1e-4)


def test_one_forward_pass_is_shared_and_gives_prediction_and_embedding(small_cnn, images):
    small_cnn.zero_grad(set_to_none=True)  # the grad-cam references above leave gradients
    calls = []
    handle = small_cnn.backbone.register_forward_hook(lambda *args: calls.append(1))
    try:
        result = explain_batch(small_cnn, images, ["gradcam", "gradcampp", "hirescam", "layercam", "eigencam"])
    finally:
        handle.remove()
    assert len(calls) == 1
    with torch.no_grad():
        torch.testing.assert_close(result.logits, small_cnn(images))
        torch.testing.assert_close(result.embedding, F.normalize(small_cnn.forward_embedding(images), dim=1))
    assert not any(p.grad is not None for p in small_cnn.parameters())  # no gradients left on the weights


def test_targets_can_be_any_class(small_cnn, images):
    for target in range(3):
        result = explain_batch(small_cnn, images, ["gradcam"], targets=target)
        assert result.targets.tolist() == [target] * 2
    per_image = explain_batch(small_cnn, images, ["gradcam"], targets=[0, 2])
    assert per_image.targets.tolist() == [0, 2]
    other = explain_batch(small_cnn, images, ["gradcam"], targets=[1, 2])
    assert not torch.allclose(per_image.raw["gradcam"][0], other.raw["gradcam"][0])
    with pytest.raises(ExplainError, match="out of range"):
        explain_batch(small_cnn, images, ["gradcam"], targets=3)
    with pytest.raises(ExplainError, match="targets"):
        explain_batch(small_cnn, images, ["gradcam"], targets=[0, 1, 2])


def test_a_new_method_is_one_registered_function(small_cnn, images):
    @register_method("test_brightness", family="baseline", signed=False, options={"power": 1}, target_dependent=False)
    def brightness(model, batch, targets, context):
        return batch.mean(dim=1).clamp(min=0) ** context.options["power"]

    try:
        result = explain_batch(small_cnn, images, ["gradcam", "test_brightness"], options={"power": 2})
        torch.testing.assert_close(result.raw["test_brightness"], images.mean(dim=1).clamp(min=0) ** 2)
        assert result.settings["test_brightness"] == {"power": 2}
        with pytest.raises(ExplainError, match="already registered"):
            register_method("test_brightness", family="baseline", signed=False)(brightness)
    finally:
        unregister_method("test_brightness")
    with pytest.raises(ExplainError, match="unknown explanation method"):
        get_method("test_brightness")


def test_names_options_and_inputs_are_checked(small_cnn, images):
    assert get_method("IG").name == "integrated_gradients"
    assert get_method("Grad-CAM++").name == "gradcampp"
    with pytest.raises(ExplainError, match="Did you mean 'gradcam'"):
        get_method("gradcma")
    with pytest.raises(ExplainError, match="stepz"):
        explain_batch(small_cnn, images, ["ig"], options={"stepz": 3})
    with pytest.raises(ExplainError, match="whole number >= 1, got 0"):
        explain_batch(small_cnn, images, ["ig"], options={"steps": 0})
    nan = images.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ExplainError, match="NaN"):
        explain_batch(small_cnn, nan, ["gradcam"])
    with pytest.raises(ExplainError, match="too small"):
        explain_batch(small_cnn, images[..., :4, :4], ["gradcam"])
    with pytest.raises(ExplainError, match=r"\(B, 3, H, W\)"):
        explain_batch(small_cnn, images[0], ["gradcam"])
    with pytest.raises(ExplainError, match="layer 'backbone.nope'|no layer"):
        explain_batch(small_cnn, images, ["gradcam"], options={"layer": "backbone.nope"})


def test_works_inside_inference_mode(small_cnn, images):
    expected = explain_batch(small_cnn, images, ["gradcam", "ig"], options={"steps": 4})
    with torch.inference_mode():
        inside = explain_batch(small_cnn, images.clone(), ["gradcam", "ig"], options={"steps": 4})
    for name in expected.raw:
        torch.testing.assert_close(inside.raw[name], expected.raw[name])


# -- integrated gradients with steps="auto" -------------------------------------------------------
def _ig_info(result):
    return {key: value.cpu() for key, value in result.info["integrated_gradients"].items()}


def test_auto_steps_that_add_up_at_once_are_captums_trapezoid_rule_on_33_points(small_cnn, images):
    result = explain_batch(small_cnn, images, ["ig"], options={"steps": "auto", "baseline": "black", "tolerance": 0.5})
    assert _ig_info(result)["steps"].tolist() == [33.0, 33.0]
    theirs = IntegratedGradients(small_cnn).attribute(images, baselines=torch.zeros_like(images), target=result.targets,
                                                      n_steps=33, method="riemann_trapezoid")
    # captum's trapezoid puts its points 1/(n-1) apart but weighs them by 1/n, so its weights
    # sum to (n-1)/n; ours sum to 1
    torch.testing.assert_close(result.raw["integrated_gradients"], theirs.sum(dim=1) * 33 / 32, atol=1e-6, rtol=1e-4)


def test_refined_auto_steps_converge_on_captums_many_step_map_and_report_the_cap(small_cnn, images):
    reference = IntegratedGradients(small_cnn).attribute(images, baselines=torch.zeros_like(images), target=[0, 1],
                                                         n_steps=512).sum(dim=1)
    refined = explain_batch(small_cnn, images, ["ig"], targets=[0, 1],
                            options={"steps": "auto", "baseline": "black", "tolerance": 2e-3})
    info = _ig_info(refined)
    assert info["converged"].tolist() == [1.0, 1.0] and (info["steps"] > 33).all()
    with torch.no_grad():  # the gap it records is the one a separate forward pass finds
        scores = small_cnn(torch.cat([images, torch.zeros_like(images[:1])]))
    output_difference = scores[:2].gather(1, torch.tensor([[0], [1]])).squeeze(1) - scores[2, [0, 1]]
    torch.testing.assert_close(info["output_difference"], output_difference, atol=1e-5, rtol=1e-4)
    maps = refined.raw["integrated_gradients"]
    torch.testing.assert_close(maps.sum(dim=(1, 2)) - output_difference, info["completeness_gap"], atol=1e-5, rtol=1e-4)
    error = (maps - reference).abs().sum(dim=(1, 2)) / reference.abs().sum(dim=(1, 2))
    assert (error < 0.02).all(), error

    capped = _ig_info(explain_batch(small_cnn, images, ["ig"], targets=[0, 1],
                                    options={"steps": "auto", "baseline": "black", "tolerance": 1e-6, "max_steps": 65}))
    assert capped["steps"].tolist() == [65.0, 65.0] and capped["converged"].tolist() == [0.0, 0.0]
    assert (capped["completeness_relative"] > 1e-6).all()


class _Linear(torch.nn.Module):
    """Logits linear in the image: IG is exact with any quadrature."""

    def __init__(self):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, images):
        return torch.einsum("bchw,kchw->bk", images, self.weights)


class _Step(torch.nn.Module):
    """A logit that jumps from 0 to 20 where the image's mean crosses ``edge``: the gradient
    along the path is a narrow spike that coarse steps miss."""

    def __init__(self, edge: float):
        super().__init__()
        self.edge = edge

    def forward(self, images):
        jump = 20 * torch.sigmoid(400 * (images.mean(dim=(1, 2, 3)) - self.edge))
        return torch.stack([jump, -jump], dim=1)


def test_auto_steps_stop_at_once_on_a_smooth_model_and_spend_their_points_where_a_sharp_one_turns():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) + 0.5
    smooth = _ig_info(explain_batch(_Linear(), images, ["ig"], layer=None, embedding_layer=None,
                                    options={"steps": "auto", "baseline": "black"}))
    assert smooth["steps"].tolist() == [33.0, 33.0] and smooth["converged"].tolist() == [1.0, 1.0]
    assert (smooth["completeness_relative"] < 1e-4).all()

    sharp_model = _Step(edge=0.37)  # the path from black crosses the edge a third of the way along
    capped = _ig_info(explain_batch(sharp_model, images, ["ig"], layer=None, embedding_layer=None, targets=0,
                                    options={"steps": "auto", "baseline": "black", "max_steps": 33}))
    assert capped["converged"].tolist() == [0.0, 0.0] and (capped["completeness_relative"] > 0.05).all()
    refined = _ig_info(explain_batch(sharp_model, images, ["ig"], layer=None, embedding_layer=None, targets=0,
                                     options={"steps": "auto", "baseline": "black", "max_steps": 1025}))
    assert refined["converged"].tolist() == [1.0, 1.0] and (refined["completeness_relative"] <= 0.05).all()
    assert (refined["steps"] > 33).all()
    # equal steps need many more points to add up: the first of 33, 65, 129, ... at which
    # captum's trapezoid rule does, for either image
    uniform = []
    for index in range(2):
        points = 33
        difference = float(sharp_model(images[index:index + 1])[0, 0] - sharp_model(torch.zeros_like(images[:1]))[0, 0])
        while True:
            attributions = IntegratedGradients(sharp_model).attribute(
                images[index:index + 1], baselines=torch.zeros_like(images[:1]), target=0, n_steps=points,
                method="riemann_trapezoid") * points / (points - 1)
            if abs(float(attributions.sum()) - difference) <= 0.05 * abs(difference) or points > 4096:
                break
            points = 2 * points - 1
        uniform.append(points)
    assert (refined["steps"] < torch.tensor(uniform, dtype=torch.float32)).all(), (refined["steps"], uniform)


def test_completeness_error_is_judged_against_a_floor_when_the_output_barely_moves():
    from xcyto.explain._gradients import OUTPUT_FLOOR, relative_completeness_error

    errors = relative_completeness_error(np.array([0.148, 0.1]), np.array([0.002, 2.0]))
    np.testing.assert_allclose(errors, [0.148 / OUTPUT_FLOOR, 0.05])


def test_folded_copy_matches_the_model_and_follows_its_weights(small_cnn, images):
    from xcyto.models._fold import fold_batch_norms, pass_model

    folded, count = fold_batch_norms(small_cnn)
    assert count == 4 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    fast = pass_model(small_cnn, images)
    assert fast is not small_cnn and pass_model(small_cnn, images) is fast  # made once
    with torch.no_grad():
        torch.testing.assert_close(fast(images), small_cnn(images), atol=1e-5, rtol=1e-5)
        model = create("small_cnn", num_classes=3, weights=None).eval()
        before = pass_model(model, images)
        model.classifier.weight.mul_(2)  # changed in place: the copy is made again
        after = pass_model(model, images)
        assert after is not before
        torch.testing.assert_close(after(images), model(images), atol=1e-5, rtol=1e-5)
