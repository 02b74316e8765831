"""``xcyto.explain()``: inputs, targets, bundles, the Explanation and how it renders."""
from __future__ import annotations

import json
import struct
import zlib

import matplotlib.figure
import numpy as np
import pytest
import torch
from PIL import Image

import xcyto
from xcyto.embedding import load_gallery
from xcyto.errors import ExplainError, ImageError
from xcyto.explain import Explanation, explain
from xcyto.explain import _api as api

from tests.test_explain_support import CLASSES, cell, tiny_bundle_path, untrained_bundle_path

QUICK = {"steps": 4}


@pytest.fixture(scope="module")
def bundle():
    return xcyto.load(untrained_bundle_path())


@pytest.fixture(scope="module")
def one(bundle):
    return explain(cell(0), bundle, methods=["gradcam", "integrated_gradients"], **QUICK)


def test_one_cell_gives_prediction_maps_and_settings(bundle, one):
    assert isinstance(one, Explanation)
    assert list(one.probabilities) == CLASSES
    assert sum(one.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert one.predicted == max(one.probabilities, key=one.probabilities.get)
    assert one.target == one.predicted and one.confidence == one.probabilities[one.predicted]
    with torch.no_grad():
        logits = bundle.model(bundle.preprocess(cell(0)))
    calibrated = torch.softmax(logits / 1.5, dim=1)[0].numpy()  # the bundle's temperature
    np.testing.assert_allclose(list(one.probabilities.values()), calibrated, atol=1e-5)
    assert one.image.shape == (48, 48, 3) and one.image.dtype == np.uint8
    for name in ("gradcam", "integrated_gradients"):
        heatmap = one.heatmaps[name]
        assert heatmap.raw.shape == heatmap.display.shape == (48, 48)
        assert heatmap.overlay.shape == (48, 48, 3) and heatmap.overlay.dtype == np.uint8
        assert 0 <= heatmap.display.min() and heatmap.display.max() <= 1
        assert heatmap.scale > 0
    assert one.heatmap("ig") is one.heatmaps["integrated_gradients"]
    assert one.heatmaps["integrated_gradients"].settings == {
        "steps": 4, "tolerance": 0.05, "max_steps": 257, "baseline": "background", "approximation": "gausslegendre",
        "internal_batch_size": None}
    assert one.heatmaps["gradcam"].settings == {"layer": "backbone.block2"}  # 48 px: the 6 x 6 last map is too coarse
    assert set(one.heatmaps["integrated_gradients"].info) == {"completeness_gap", "output_difference",
                                                              "completeness_relative", "steps", "converged"}
    assert one.heatmaps["integrated_gradients"].info["steps"] == 4
    assert one.settings["bundle_sha256"] == bundle.sha256
    assert one.settings["bundle_name"] == "untrained-small-cnn"
    assert one.settings["xcyto_version"] == xcyto.__version__
    assert np.linalg.norm(one.embedding) == pytest.approx(1.0, abs=1e-5)
    assert one.neighbours == [] and one.atypicality is None  # this bundle has no gallery


def test_every_kind_of_image_gives_the_same_answer(bundle, one, tmp_path):
    rgb = cell(0)
    path = tmp_path / "cell.png"
    Image.fromarray(rgb).save(path)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    variants = {
        "path": str(path), "pathlib": path, "pil": Image.fromarray(rgb), "float": rgb / 255.0,
        "16-bit": rgb.astype(np.uint16) * 257, "rgba": rgba, "tensor": torch.from_numpy(rgb).permute(2, 0, 1) / 255.0,
    }
    for name, variant in variants.items():
        other = explain(variant, bundle, methods="gradcam")
        assert other.probabilities == pytest.approx(one.probabilities, abs=1e-5), name
        np.testing.assert_allclose(other.heatmaps["gradcam"].raw, one.heatmaps["gradcam"].raw, atol=1e-5, err_msg=name)
    gray = explain(rgb.mean(axis=2).astype(np.uint8), bundle, methods="gradcam")
    assert gray.image.shape == (48, 48, 3) and np.ptp(gray.image.astype(int), axis=2).max() <= 1


def test_a_list_runs_as_a_batch_and_matches_single_cells(bundle):
    cells = [cell(seed) for seed in range(3)]
    many = explain(cells, bundle, methods=["gradcam", "ig"], batch_size=2, **QUICK)  # two batches
    assert isinstance(many, list) and len(many) == 3
    for index, image in enumerate(cells):
        alone = explain(image, bundle, methods=["gradcam", "ig"], **QUICK)
        assert alone.probabilities == pytest.approx(many[index].probabilities, abs=1e-6)
        for name in ("gradcam", "integrated_gradients"):
            np.testing.assert_allclose(alone.heatmaps[name].raw, many[index].heatmaps[name].raw, rtol=1e-4,
                                       atol=1e-6 * np.abs(alone.heatmaps[name].raw).max())
            np.testing.assert_allclose(alone.heatmaps[name].display, many[index].heatmaps[name].display, atol=1e-5)
    batch = np.stack(cells)  # a 4-D array is a batch too
    assert len(explain(batch, bundle, methods="gradcam")) == 3


def test_shared_normalisation_uses_one_scale_across_all_cells(bundle):
    cells = [cell(seed) for seed in range(3)]
    shared = explain(cells, bundle, methods="gradcam", normalise="shared", batch_size=2)
    individual = explain(cells, bundle, methods="gradcam")
    assert len({e.heatmaps["gradcam"].scale for e in shared}) == 1
    assert len({e.heatmaps["gradcam"].scale for e in individual}) == 3
    for e in shared:
        heatmap = e.heatmaps["gradcam"]
        expected = np.clip(np.maximum(heatmap.raw, 0) / heatmap.scale, 0, 1)
        np.testing.assert_allclose(heatmap.display, expected, atol=1e-6)
        assert heatmap.normalise == "shared"


def test_any_class_can_be_explained_by_name_or_index(bundle, one):
    why_not = explain(cell(0), bundle, methods="gradcam", target="koilocytotic")
    assert why_not.target == "Koilocytotic" and why_not.predicted == one.predicted
    by_index = explain(cell(0), bundle, methods="gradcam", target=1)
    np.testing.assert_allclose(by_index.heatmaps["gradcam"].raw, why_not.heatmaps["gradcam"].raw)
    other = next(name for name in CLASSES if name != "Koilocytotic")
    assert not np.allclose(explain(cell(0), bundle, methods="gradcam", target=other).heatmaps["gradcam"].raw,
                           why_not.heatmaps["gradcam"].raw)
    pair = explain([cell(0), cell(1)], bundle, methods="gradcam", target=["Parabasal", 0])
    assert [e.target for e in pair] == ["Parabasal", "Dyskeratotic"]
    with pytest.raises(ExplainError, match="unknown class 'Normal'.*Koilocytotic"):
        explain(cell(0), bundle, target="Normal")
    with pytest.raises(ExplainError, match="out of range"):
        explain(cell(0), bundle, target=7)


def test_the_bundle_comes_from_the_argument_the_environment_or_the_demo(bundle, monkeypatch, tmp_path):
    path = untrained_bundle_path()
    assert api.resolve_bundle(path) is api.resolve_bundle(str(path))  # cached by path
    monkeypatch.setenv("XCYTO_BUNDLE", str(path))
    assert explain(cell(0), methods="gradcam").settings["bundle_sha256"] == bundle.sha256
    monkeypatch.delenv("XCYTO_BUNDLE")
    monkeypatch.setattr(api, "default_bundle_path", lambda: tmp_path / "no-demo-bundle")
    with pytest.raises(ExplainError, match="XCYTO_BUNDLE.*make artifacts"):
        explain(cell(0))


def test_xcyto_explain_is_callable_even_after_the_subpackage_is_imported(bundle):
    import xcyto.explain as package  # binds the sub-package as the attribute xcyto.explain

    assert xcyto.explain is package or xcyto.explain is explain
    result = xcyto.explain(cell(0), bundle, methods="gradcam")
    assert isinstance(result, xcyto.Explanation) and package.Explanation is xcyto.Explanation


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels and holds none."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_bad_inputs_are_refused_with_errors_that_name_the_problem(bundle, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png.*not a readable image"):
        explain(text, bundle)
    good = tmp_path / "good.png"
    Image.fromarray(cell(0, (200, 200))).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="truncated.png"):
        explain(truncated, bundle)
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(8000, 8000))
    with pytest.raises(ImageError, match="huge.png.*above the limit"):
        explain(huge, bundle)
    with pytest.raises(ImageError, match="missing.png.*not found"):
        explain(tmp_path / "missing.png", bundle)
    with pytest.raises(ImageError, match="5 x 4 pixels is too small"):
        explain(np.zeros((4, 5, 3), np.uint8), bundle)
    nan = torch.rand(3, 32, 32)
    nan[0, 3, 3] = float("nan")
    with pytest.raises(ImageError, match="NaN"):
        explain(nan, bundle)
    with pytest.raises(ImageError, match="dict"):
        explain({"image": 1}, bundle)
    with pytest.raises(ImageError, match="shape"):
        explain(np.zeros((8, 8, 8, 8, 2)), bundle)
    with pytest.raises(ExplainError, match="unknown explanation method 'gradcamm'"):
        explain(cell(0), bundle, methods="gradcamm")
    with pytest.raises(ExplainError, match="unknown option.*step"):
        explain(cell(0), bundle, methods="ig", step=3)
    with pytest.raises(ExplainError, match="neighbours"):
        explain(cell(0), bundle, neighbours=-1)


def test_explanation_renders_saves_and_serialises(one, tmp_path):
    figure = one.plot()
    assert isinstance(figure, matplotlib.figure.Figure)
    titles = [axis.get_title() for axis in figure.axes]
    assert any("gradcam" in t for t in titles) and any("integrated_gradients" in t for t in titles)
    html = one._repr_html_()
    assert html.startswith("<div") and "data:image/png;base64," in html and "Koilocytotic" in html

    summary = one.to_dict()
    text = json.dumps(summary)
    assert len(text) < 10_000  # no maps unless asked
    assert summary["predicted"] == one.predicted and summary["target"] == one.target
    assert summary["heatmaps"]["integrated_gradients"]["settings"]["steps"] == 4
    full = one.to_dict(arrays=True)
    assert np.asarray(full["heatmaps"]["gradcam"]["raw"]).shape == (48, 48)
    json.dumps(full)

    paths = one.save(tmp_path / "out", name="cell-1", arrays=True)
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == sorted(["cell-1.png", "cell-1.json", "cell-1_cell.png", "cell-1_gradcam.png",
                            "cell-1_integrated_gradients.png", "cell-1_gradcam.npy",
                            "cell-1_integrated_gradients.npy"])  # no temporary files left
    assert json.loads(paths["json"].read_text())["probabilities"] == pytest.approx(one.probabilities)
    assert np.array_equal(np.asarray(Image.open(paths["gradcam"])), one.overlay_on_image("gradcam"))
    assert np.asarray(Image.open(paths["gradcam"])).shape == (60, 52, 3)  # the image as given, not the model's view
    assert np.array_equal(np.asarray(Image.open(paths["cell"])), cell(0))
    np.testing.assert_array_equal(np.load(paths["integrated_gradients_raw"]), one.heatmaps["integrated_gradients"].raw)


def test_overlay_blends_the_colormap_in_proportion_to_the_display_value(one):
    from xcyto.explain._render import OVERLAY_OPACITY, colormap_table, overlay_batch

    image = torch.from_numpy(one.image)[None]
    display = torch.zeros(1, 48, 48)
    display[0, :24] = 1.0
    overlay = overlay_batch(image, display)[0].numpy().astype(float)
    np.testing.assert_array_equal(overlay[24:], one.image[24:])  # no attribution: the cell as it was
    hottest = colormap_table()[255].numpy()
    expected = one.image[:24] * (1 - OVERLAY_OPACITY) + hottest * OVERLAY_OPACITY
    np.testing.assert_allclose(overlay[:24], expected, atol=0.51)
    heatmap = one.heatmaps["gradcam"]
    again = overlay_batch(image, torch.from_numpy(heatmap.display)[None])[0].numpy()
    np.testing.assert_array_equal(again, heatmap.overlay)


def test_neighbours_and_atypicality_come_from_the_gallery():
    trained = xcyto.load(tiny_bundle_path())
    explanation = explain(cell(3), trained, methods="gradcam", neighbours=5)
    assert len(explanation.neighbours) == 5
    similarities = [n.similarity for n in explanation.neighbours]
    assert similarities == sorted(similarities, reverse=True)
    assert set(explanation.nearest_per_class) <= set(trained.classes)
    scores, flags = load_gallery(trained).atypicality(torch.from_numpy(explanation.embedding[None]))
    assert explanation.atypicality == pytest.approx(float(scores[0])) and explanation.atypical == bool(flags[0])
    assert 0 <= explanation.atypicality <= 100
    assert explanation.neighbours[0].thumbnail.ndim == 3
    figure = explanation.plot()
    assert sum("sim" in axis.get_title() for axis in figure.axes) == 5
    none = explain(cell(3), trained, methods="gradcam", neighbours=0)
    assert none.neighbours == [] and none.atypicality is None
    assert json.dumps(explanation.to_dict())


@pytest.mark.parametrize("height, width", [(60, 52), (30, 90), (48, 48)])
def test_maps_on_the_image_as_given_drop_the_padding(bundle, height, width):
    from xcyto.data import fit_box

    image = cell(1, size=(height, width))
    one = explain(image, bundle, methods=["gradcam", "integrated_gradients"], **QUICK)
    for heatmap in one.heatmaps.values():
        on_image = heatmap.on_image()
        assert on_image.shape == (height, width) and 0 <= on_image.min() and on_image.max() <= 1
        assert heatmap.on_image("raw").shape == (height, width)
        # the part of the model's map inside the image box, resized: its mean survives
        left, top, box_width, box_height = fit_box(height, width, 48)
        inside = heatmap.display[top:top + box_height, left:left + box_width]
        assert on_image.mean() == pytest.approx(inside.mean(), abs=0.03)
    assert one.overlay_on_image("gradcam").shape == (height, width, 3)
    if height != width:  # a padded band of the model's map is not part of the image
        assert (left, top) != (0, 0)


def test_explaining_a_tta_bundle_reports_the_8_view_prediction_and_says_so(tmp_path):
    bundle = xcyto.load(untrained_bundle_path())
    bundle.config["tta"] = {"enabled": True, "views": "dihedral-8"}
    bundle.save(tmp_path / "tta")
    tta = xcyto.load(tmp_path / "tta")
    images = [cell(seed) for seed in range(3)]
    explained = explain(images, tta, methods="gradcam")
    expected = tta.predict_probabilities(tta.preprocess(images)).numpy()
    for one, row in zip(explained, expected):
        np.testing.assert_allclose(list(one.probabilities.values()), row, atol=1e-5)
        assert one.target == one.predicted == tta.classes[int(row.argmax())]
        assert "8 dihedral views" in one.settings["tta"]
    assert explain(images[0], xcyto.load(untrained_bundle_path()), methods="gradcam").settings["tta"] is None
