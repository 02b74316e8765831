"""Soft-voting ensembles: the weighted mean of calibrated probabilities, saved and loaded like a bundle."""
import json
import shutil

import numpy as np
import pytest
import torch

import xcyto
from xcyto.cli import main
from xcyto.data import load_dataset
from xcyto.ensemble import EnsembleBundle, fit_weights, make_ensemble
from xcyto.errors import BundleError
from tests.tiny import PAIR_DATA, tiny_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return tiny_pair(tmp_path_factory.getbasetemp() / "tiny-pair")


@pytest.fixture(scope="module")
def cells():
    return [sample.image for sample in load_dataset(PAIR_DATA).samples[:6]]


def calibrated(bundle, images):
    return bundle.probabilities(bundle.predict_logits(bundle.preprocess(images)))


def test_probabilities_are_the_weighted_mean_of_the_members(pair, cells):
    members = [xcyto.load(path) for path in pair]
    assert members[0].input_size != members[1].input_size  # each member sees the cell at its own size
    ensemble = make_ensemble(members, weights=[1, 3])
    probabilities = calibrated(ensemble, cells)
    expected = 0.25 * calibrated(members[0], cells) + 0.75 * calibrated(members[1], cells)
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert torch.allclose(probabilities.sum(-1), torch.ones(len(cells)))
    assert ensemble.classes == members[0].classes and ensemble.input_size == 40


def test_save_and_load_round_trip_is_self_contained(pair, cells, tmp_path):
    ensemble = make_ensemble(pair, weights=[2, 1])
    ensemble.save(tmp_path / "e")
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "e", moved)  # the folder carries its members
    loaded = xcyto.load(moved)
    assert isinstance(loaded, EnsembleBundle) and isinstance(loaded, xcyto.Bundle)
    assert loaded.config["format"] == "xcyto-ensemble" and loaded.sha256 == ensemble.sha256
    assert np.allclose(loaded.weights, [2 / 3, 1 / 3])
    assert torch.allclose(calibrated(loaded, cells), calibrated(ensemble, cells), atol=1e-6)
    assert (moved / "split.csv").is_file()  # the members share their split

    # a member changed behind the ensemble's back is refused
    member = json.loads((moved / "members" / loaded.member_names[0] / "bundle.json").read_text())
    weights_file = moved / "members" / loaded.member_names[0] / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BundleError):
        xcyto.load(moved)
    assert member["format"] == "xcyto-bundle"


def test_refuses_members_with_other_classes_and_bad_weights(pair, tmp_path):
    other = xcyto.load(pair[0])
    other.config = {**other.config, "classes": list(reversed(other.classes))}
    with pytest.raises(BundleError, match="different classes"):
        make_ensemble([pair[0], other])
    with pytest.raises(BundleError, match="non-negative"):
        make_ensemble(pair, weights=[1, -1])
    with pytest.raises(BundleError, match="at least two"):
        make_ensemble(pair[:1])


def test_fitted_weights_favour_the_better_member():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    good = np.full((200, 3), 0.1)
    good[np.arange(200), labels] = 0.8
    noise = rng.dirichlet(np.ones(3), 200)
    weights = fit_weights(np.stack([noise, good]), labels)
    assert weights.sum() == pytest.approx(1.0) and weights[1] > 0.9


def test_explanation_combines_member_maps_and_keeps_them(pair, cells):
    ensemble = make_ensemble(pair, weights=[1, 3])
    explanations = xcyto.explain(cells[:2], bundle=ensemble, methods="gradcam", neighbours=3)
    first = explanations[0]
    assert isinstance(first, xcyto.Explanation)
    assert set(first.members) == set(ensemble.member_names)
    for member in first.members.values():
        assert member.target == first.target  # every member explains the ensemble's class
    assert first.heatmap("gradcam").raw.shape == (40, 40)
    shares = first.heatmap("gradcam").info
    assert sum(shares.values()) == pytest.approx(1.0)
    assert len(first.neighbours) == 3 and "largest weight" in first.settings["neighbours_from"]
    probabilities = ensemble.predict_batch(ensemble.preprocess(cells[:1])).probabilities[0]
    assert first.probabilities[first.predicted] == pytest.approx(float(probabilities.max()), abs=1e-6)
    assert (first.settings["tta"] is not None) == ensemble.tta
    assert "members" in first.to_dict()


def square(image: np.ndarray) -> np.ndarray:
    side = min(image.shape[:2])
    return np.ascontiguousarray(image[:side, :side])


def test_test_time_augmentation_is_each_members_own(pair, cells):
    members = [xcyto.load(path) for path in pair]
    members[0].config["tta"], members[1].config["tta"] = {"enabled": True}, {"enabled": False}
    ensemble = make_ensemble(members, weights=[1, 3])
    assert ensemble.tta  # one member averages the 8 views
    images = [square(cell) for cell in cells[:3]]
    expected = (0.25 * members[0].predict_probabilities(members[0].preprocess(images))
                + 0.75 * members[1].predict_probabilities(members[1].preprocess(images)))
    predicted = ensemble.predict_batch(ensemble.preprocess(images))
    torch.testing.assert_close(predicted.probabilities, expected, atol=1e-6, rtol=1e-5)
    single = ensemble.predict_batch(ensemble.preprocess(images), tta=False)
    torch.testing.assert_close(single.probabilities, calibrated(ensemble, images), atol=1e-6, rtol=1e-5)

    # with every member averaging the views, a turned or mirrored cell gets the same answer,
    # although the members see it at different sizes
    assert members[0].input_size != members[1].input_size
    everything = ensemble.predict_probabilities(ensemble.preprocess(images), tta=True)
    for turned in ([np.rot90(image) for image in images], [image[:, ::-1] for image in images]):
        again = ensemble.predict_probabilities(ensemble.preprocess([np.ascontiguousarray(i) for i in turned]), tta=True)
        torch.testing.assert_close(again, everything, atol=1e-3, rtol=0)  # resizing a turned cell: ~5e-5
    assert not torch.allclose(everything, single.probabilities)

    cell_predictions = ensemble.predict_cells([type("Cell", (), {"image": image})() for image in images])
    np.testing.assert_allclose(cell_predictions.probabilities, expected.numpy(), atol=1e-6)
    assert cell_predictions.embeddings.shape == (3, ensemble.model.embedding_dim)


def test_ensemble_command_fits_weights_evaluates_and_serves_evaluate(pair, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["ensemble", *map(str, pair), "--fit-weights", "--out", str(out)]) == 0
    config = json.loads((out / "bundle.json").read_text())
    assert config["weights_fitted_on"].startswith("val")
    assert config["metrics"]["evaluated_on"] == "test" and config["metrics"]["test"]["n"] > 0
    capsys.readouterr()
    assert main(["evaluate", "--bundle", str(out), "--split", "test"]) == 0
    test = config["metrics"]["test"]
    assert f"(test, {test['n']} cells): accuracy {test['accuracy']:.3f}" in capsys.readouterr().out
    assert main(["ensemble", str(pair[0]), "--out", str(tmp_path / "x")]) == 2
    assert "at least two" in capsys.readouterr().err


def test_embedding_space_serves_the_audit_and_a_gallery_of_its_own(pair, cells, tmp_path):
    from xcyto.embedding import build_gallery, embed_cells

    make_ensemble(pair, weights=[1, 3]).save(tmp_path / "e")
    ensemble = xcyto.load(tmp_path / "e")
    dataset = load_dataset(PAIR_DATA)
    # what the audit does: one pass gives embeddings and the logits of the ensemble
    embeddings, logits = embed_cells(ensemble, dataset.samples[:6], with_logits=True)
    assert embeddings.shape == (6, ensemble.model.embedding_dim)
    assert torch.allclose(ensemble.probabilities(torch.from_numpy(logits)), calibrated(ensemble, cells), atol=1e-5)

    build_gallery(ensemble, dataset.subset(range(40)))
    ensemble.save(tmp_path / "e")  # saving again keeps the gallery
    explanation = xcyto.explain(cells[0], bundle=xcyto.load(tmp_path / "e"), methods="gradcam", neighbours=2)
    assert explanation.settings["neighbours_from"] == "the ensemble's own gallery"
    assert len(explanation.neighbours) == 2 and explanation.embedding.shape == (ensemble.model.embedding_dim,)


def test_demo_accepts_an_ensemble(pair, cells, tmp_path):
    from PIL import Image

    from xcyto.demo import Demo

    make_ensemble(pair).save(tmp_path / "e")
    demo = Demo(tmp_path / "e", fit_map_in_background=False)
    try:
        Image.fromarray(cells[0]).save(tmp_path / "cell.png")
        outputs = demo.explain_cell(str(tmp_path / "cell.png"), methods=["gradcam"])
        assert outputs[-1].predicted in demo.bundle.classes
    finally:
        demo.close()


def test_the_ensemble_needs_nothing_from_the_layers_that_use_it():
    """An ensemble is a bundle: explain, evaluate and the CLI call it, never the reverse."""
    import ast
    from pathlib import Path

    import xcyto.ensemble

    tree = ast.parse(Path(xcyto.ensemble.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    upward = sorted(name for name in imported
                    if name.startswith(("xcyto.explain", "xcyto.training", "xcyto.audit", "xcyto.cli", "xcyto.demo")))
    assert upward == [], upward
