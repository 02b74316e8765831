"""Fusion of the network with the cells' measurements: the formula, the weight's choice, the
refit from the gallery, and contributions that move the output by what they say."""
from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pytest


@pytest.fixture(scope="module")
def fused_bundle(tiny_run, tmp_path_factory):
    """A copy of the session's tiny bundle with a fusion chosen by ``xcyto fuse``."""
    import xcyto
    from xcyto.training import fuse_command

    folder = tmp_path_factory.mktemp("fused") / "bundle"
    shutil.copytree(tiny_run / "bundle", folder)
    record = fuse_command(folder)
    return xcyto.load(folder), record


@pytest.fixture(scope="module")
def validation(fused_bundle):
    """The tiny bundle's validation cells: probabilities, measurements, labels."""
    from xcyto.data import load_dataset
    from xcyto.fusion import fusion_inputs
    from xcyto.training import cells_in_split, training_data

    bundle, _ = fused_bundle
    cells, _ = cells_in_split(bundle, load_dataset(training_data(bundle)), "val")
    probabilities, features = fusion_inputs(bundle, cells.samples)
    return probabilities, features, cells.labels


def fused_by_hand(fusion, probabilities, features) -> np.ndarray:
    """p_network * p_measured ** weight, renormalised, with scikit-learn's own probabilities;
    the network's alone where no nucleus was measured."""
    measured = np.full((len(features), fusion.num_classes), 1e-6)
    measured[:, fusion.model.classes_] = fusion.model.predict_proba(features)
    measured /= measured.sum(1, keepdims=True)
    product = probabilities * measured ** fusion.weight
    product /= product.sum(1, keepdims=True)
    no_nucleus = ~np.isfinite(features[:, fusion.features.index("nucleus_area")])
    product[no_nucleus] = probabilities[no_nucleus] / probabilities[no_nucleus].sum(1, keepdims=True)
    return product


def test_fuse_adds_the_weighted_log_probabilities_of_the_measured_model(fused_bundle, validation):
    from xcyto.fusion import load_fusion

    bundle, _ = fused_bundle
    probabilities, features, _ = validation
    for weight in (0.0, 0.35, 1.0):
        fusion = replace(load_fusion(bundle), weight=weight)
        np.testing.assert_allclose(fusion.fuse(probabilities, features),
                                   fused_by_hand(fusion, probabilities, features), rtol=1e-6, atol=1e-9)


def test_the_weight_is_the_one_with_the_lowest_validation_log_loss(fused_bundle, validation):
    from xcyto.fusion import WEIGHTS, load_fusion

    bundle, record = fused_bundle
    probabilities, features, labels = validation
    fusion = load_fusion(bundle)
    losses = []
    for weight in WEIGHTS:
        mixed = np.log(probabilities) + weight * fusion.measured_log_probabilities(features)
        mixed -= np.log(np.exp(mixed).sum(1, keepdims=True))
        losses.append(-mixed[np.arange(len(labels)), labels].mean())
    assert record["weight"] == WEIGHTS[int(np.argmin(losses))]
    assert record["validation_cells"] == len(labels)
    assert set(record["test"]) >= {"network", "fused", "cells"}


def test_contributions_are_what_setting_the_feature_to_its_median_takes_away(fused_bundle, validation):
    from xcyto.fusion import load_fusion

    bundle, _ = fused_bundle
    probabilities, features, _ = validation
    fusion = replace(load_fusion(bundle), weight=0.8)  # large enough for the measurements to move every class
    moved = fusion.contributions(probabilities[:5], features[:5])
    for cell in range(5):
        for j in np.flatnonzero(np.isfinite(features[cell]))[:6]:
            typical = features[cell:cell + 1].copy()
            typical[0, j] = fusion.reference[j]
            before = fused_by_hand(fusion, probabilities[cell:cell + 1], features[cell:cell + 1])[0]
            after = fused_by_hand(fusion, probabilities[cell:cell + 1], typical)[0]
            odds = np.log(before / (1 - before)) - np.log(after / (1 - after))
            np.testing.assert_allclose(moved[cell, j], odds, rtol=1e-6, atol=1e-9)


def test_the_measured_model_is_refitted_from_the_gallery_and_a_changed_one_is_warned_of(fused_bundle, tmp_path):
    import xcyto
    from xcyto.fusion import FusionWarning, load_fusion

    bundle, record = fused_bundle
    shutil.copytree(bundle.path, tmp_path / "bundle")
    again = load_fusion(xcyto.load(tmp_path / "bundle"))
    features = np.asarray(load_fusion(bundle).features)
    assert list(features) == again.features and again.weight == record["weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionWarning)
        load_fusion(xcyto.load(tmp_path / "bundle"))
    config = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    config["morphology_fusion"]["checksum"] += 50.0
    (tmp_path / "bundle" / "bundle.json").write_text(json.dumps(config))
    with pytest.warns(FusionWarning, match="answers differently"):
        load_fusion(xcyto.load(tmp_path / "bundle"))


def test_explain_shows_the_fused_reading_beside_the_network(fused_bundle, validation):
    import xcyto
    from xcyto.data import load_dataset
    from xcyto.fusion import load_fusion
    from xcyto.training import cells_in_split, training_data

    bundle, _ = fused_bundle
    cells, _ = cells_in_split(bundle, load_dataset(training_data(bundle)), "val")
    e = xcyto.explain(cells.samples[0].image, bundle=bundle, methods=["gradcam"], neighbours=0)
    assert e.morphology is not None and np.isfinite(e.morphology.features["nucleus_area"])
    assert e.fused is not None and not e.no_nucleus
    fusion = load_fusion(bundle)
    row = np.array([[e.morphology.features.get(name, np.nan) for name in fusion.features]])
    network = np.array([[e.probabilities[name] for name in bundle.classes]])
    expected = fusion.fuse(network, row)[0]
    assert e.fused.predicted == bundle.classes[int(expected.argmax())]
    np.testing.assert_allclose([e.fused.probabilities[name] for name in bundle.classes], expected, atol=1e-4)
    assert e.to_dict()["fused"]["weight"] == fusion.weight


def test_a_cells_reading_lists_each_measured_features_change_and_what_they_add_up_to(fused_bundle, validation):
    from xcyto.fusion import NEGLIGIBLE, fused_reading, load_fusion

    bundle, _ = fused_bundle
    probabilities, features, _ = validation
    fusion = replace(load_fusion(bundle), weight=0.8)
    cell = int(np.flatnonzero(np.isfinite(features).all(1))[0])
    row = features[cell].copy()
    row[fusion.features.index("perinuclear_halo")] = np.nan  # one feature not measured on this cell
    reading = fused_reading(fusion, probabilities[cell], dict(zip(fusion.features, row)), bundle.classes)
    target = bundle.classes.index(reading.target)

    def odds(values):
        p = fused_by_hand(fusion, probabilities[cell:cell + 1], values[None])[0, target]
        return np.log(p / (1 - p))

    listed = {name: change for name, _, _, change in reading.contributions}
    assert "perinuclear_halo" not in listed and len(listed) == len(fusion.features) - 1
    for name, change in listed.items():
        typical = row.copy()
        typical[fusion.features.index(name)] = fusion.reference[fusion.features.index(name)]
        assert change == pytest.approx(odds(row) - odds(typical), abs=1e-6)
    measured = np.isfinite(row)
    everything = row.copy()
    everything[measured] = fusion.reference[measured]
    total = odds(row) - odds(everything)
    if abs(total) >= NEGLIGIBLE:
        assert reading.completeness == pytest.approx(sum(listed.values()) / total, rel=1e-6)
    else:
        assert reading.completeness is None
    assert reading.describe().count("toward") == 5


def test_a_crop_without_a_nucleus_keeps_the_networks_reading(fused_bundle, validation):
    from xcyto.fusion import load_fusion

    bundle, _ = fused_bundle
    probabilities, features, _ = validation
    fusion = replace(load_fusion(bundle), weight=0.8)
    empty = features[:3].copy()
    empty[:, fusion.features.index("nucleus_area")] = np.nan
    np.testing.assert_allclose(fusion.fuse(probabilities[:3], empty), probabilities[:3], rtol=1e-5)
    assert not np.allclose(fusion.fuse(probabilities[:3], features[:3]), probabilities[:3])


def test_a_fused_bundle_without_its_gallery_is_read_as_the_network_alone(fused_bundle, tmp_path):
    import xcyto
    from xcyto.fusion import FusionWarning

    bundle, _ = fused_bundle
    shutil.copytree(bundle.path, tmp_path / "bundle", ignore=shutil.ignore_patterns("gallery"))
    image = _a_cell(bundle)
    with pytest.warns(FusionWarning, match="network alone"):
        e = xcyto.explain(image, bundle=xcyto.load(tmp_path / "bundle"), methods=["gradcam"], neighbours=0)
    assert e.fused is None and e.predicted in bundle.classes


def _a_cell(bundle) -> np.ndarray:
    from xcyto.data import load_dataset
    from xcyto.training import training_data

    return load_dataset(training_data(bundle)).samples[0].image


def test_fuse_says_plainly_when_the_gallery_lacks_the_measurements(tiny_run, tmp_path):
    import xcyto
    from xcyto.errors import XcytoError
    from xcyto.fusion import fit_fusion

    shutil.copytree(tiny_run / "bundle", tmp_path / "bundle", ignore=shutil.ignore_patterns("gallery"))
    bundle = xcyto.load(tmp_path / "bundle")
    with pytest.raises(XcytoError, match="measurements"):
        fit_fusion(bundle, np.full((3, len(bundle.classes)), 1 / len(bundle.classes)), np.zeros((3, 22)), [0, 1, 0])


def test_the_model_card_says_what_the_measurements_did_on_the_test_cells(fused_bundle):
    from xcyto.card import render_card

    bundle, record = fused_bundle
    card = render_card(bundle)
    assert "read with its measurements" in card
    assert f"{record['test']['fused']['accuracy']:.3f} with the measurements" in card


def test_training_reads_the_network_with_the_measurements_by_default(tiny_bundle):
    from xcyto.fusion import WEIGHTS

    record = tiny_bundle.config["morphology_fusion"]
    assert record["weight"] in WEIGHTS and {"network", "fused"} <= set(record["test"])


def test_evaluate_and_predict_report_the_fused_reading(fused_bundle, tmp_path):
    import csv

    from PIL import Image

    from xcyto.data import load_dataset
    from xcyto.fusion import fusion_inputs, load_fusion
    from xcyto.training import cells_in_split, evaluate_bundle, predict_command, training_data

    bundle, _ = fused_bundle
    test, _ = cells_in_split(bundle, load_dataset(training_data(bundle)), "test")
    metrics = evaluate_bundle(bundle, test)
    probabilities, features = fusion_inputs(bundle, test.samples)
    fused = load_fusion(bundle).fuse(probabilities, features)
    assert metrics["fused"]["accuracy"] == pytest.approx(float((fused.argmax(1) == test.labels).mean()))
    paths = []
    for index, sample in enumerate(test.samples[:3]):
        paths.append(tmp_path / f"cell{index}.png")
        Image.fromarray(sample.image).save(paths[-1])
    predict_command(bundle.path, paths, out=tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["fused_predicted"] for row in rows] == [bundle.classes[int(c)] for c in fused[:3].argmax(1)]
