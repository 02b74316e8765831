"""The nucleus view: the square around the segmented nucleus, cut from image and masks alike,
read by a tiny real model whose explanations map back onto the crop as given."""
import numpy as np
import pytest

import xcyto
from xcyto.card import render_card
from xcyto.data import eval_transform, generate_cell, view_box
from xcyto.data import NUCLEUS_VIEW_SCALE
from xcyto.errors import DataError, TrainingError
from tests.tiny import TINY_SETTINGS


def _off_centre_cell(seed: int = 3):
    """A synthetic cell pasted into the top-left corner of a larger crop of its background."""
    sample = generate_cell("Parabasal", seed, size=128)
    canvas = np.empty((200, 260, 3), dtype=np.uint8)
    canvas[:] = np.median(np.concatenate([sample.image[0], sample.image[-1]]), axis=0).astype(np.uint8)
    canvas[10:138, 20:148] = sample.image
    nucleus = np.zeros(canvas.shape[:2], dtype=bool)
    nucleus[10:138, 20:148] = sample.nucleus_mask
    cell = np.zeros_like(nucleus)
    cell[10:138, 20:148] = sample.cytoplasm_mask
    return canvas, nucleus, cell


def test_the_nucleus_view_is_a_square_around_the_nucleus():
    image, nucleus, _ = _off_centre_cell()
    left, top, width, height = view_box(image, "nucleus")
    assert width == height and 0 <= left <= image.shape[1] - width and 0 <= top <= image.shape[0] - height
    rows, columns = np.nonzero(nucleus)
    diameter = 2 * np.sqrt(nucleus.sum() / np.pi)
    assert width == pytest.approx(NUCLEUS_VIEW_SCALE * diameter, rel=0.3)
    assert abs(left + width / 2 - columns.mean()) < 0.15 * width
    assert abs(top + height / 2 - rows.mean()) < 0.15 * height
    assert view_box(image, "cell") == (0, 0, 260, 200)
    with pytest.raises(DataError, match="unknown view"):
        view_box(image, "cytoplasm")


def test_the_view_cuts_image_and_masks_alike():
    image, nucleus, cell = _off_centre_cell()
    whole = eval_transform(64)(image, np.stack([nucleus, cell]))[1]
    near = eval_transform(64, view="nucleus")(image, np.stack([nucleus, cell]))[1]
    # the nucleus fills far more of the nucleus view, and stays in its middle
    assert near[0].float().mean() > 3 * whole[0].float().mean()
    rows, columns = np.nonzero(near[0].numpy())
    assert abs(rows.mean() - 32) < 8 and abs(columns.mean() - 32) < 8


def test_a_nucleus_view_model_trains_records_its_view_and_explains_on_the_crop(tmp_path):
    with pytest.raises(TrainingError, match="view must be one of"):
        xcyto.train(**{**TINY_SETTINGS, "view": "cytoplasm", "out": str(tmp_path / "refused")})
    result = xcyto.train(**{**TINY_SETTINGS, "epochs": 1, "synthetic_n": 60, "view": "nucleus", "gallery": False,
                            "fuse": False, "out": str(tmp_path / "run")})
    bundle = xcyto.load(tmp_path / "run" / "bundle")
    assert bundle.config["view"] == "nucleus" and bundle.transform().view == "nucleus"
    assert "the square around the nucleus" in render_card(bundle)
    image, _, _ = _off_centre_cell()
    left, top, width, height = view_box(image, "nucleus")
    explanation = xcyto.explain(image, bundle, methods=["gradcam"], neighbours=0, morphology=False)
    on_image = explanation.heatmap("gradcam").on_image()
    assert on_image.shape == image.shape[:2]
    outside = np.ones(image.shape[:2], dtype=bool)
    outside[top:top + height, left:left + width] = False
    assert not on_image[outside].any() and on_image[~outside].max() > 0
    assert result.bundle.config["view"] == "nucleus"


def test_an_ensemble_of_two_views_predicts_but_refuses_to_average_their_maps(tmp_path):
    from xcyto.ensemble import make_ensemble
    from xcyto.errors import XcytoError

    settings = {**TINY_SETTINGS, "epochs": 1, "synthetic_n": 60, "gallery": False, "fuse": False, "tta": "off",
                "data_check": "off", "exclude": "none"}
    for view in ("cell", "nucleus"):
        xcyto.train(**settings, view=view, out=str(tmp_path / view))
    members = [xcyto.load(tmp_path / view / "bundle") for view in ("cell", "nucleus")]
    image, _, _ = _off_centre_cell()
    pair = make_ensemble(members)
    mixture = pair.predict_batch(pair.preprocess(image)).probabilities
    alone = [member.predict_batch(member.preprocess(image)).probabilities for member in members]
    assert np.allclose(mixture.numpy(), (alone[0] + alone[1]).numpy() / 2, atol=1e-5)
    with pytest.raises(XcytoError, match="different views"):
        xcyto.explain(image, pair, methods=["gradcam"], neighbours=0, morphology=False)
