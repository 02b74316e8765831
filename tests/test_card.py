"""Model cards: what a bundle is, what it learnt from, how well it does, what it is not for."""
import json
import shutil

import pytest

import xcyto
from xcyto.card import render_card
from xcyto.cli import main
from xcyto.ensemble import make_ensemble
from tests.tiny import PAIR_DATA, tiny_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return tiny_pair(tmp_path_factory.getbasetemp() / "tiny-pair")


def test_card_of_a_trained_bundle_has_every_section(pair, tmp_path, capsys):
    bundle_dir = pair[1]
    assert main(["card", str(bundle_dir), "--out", str(tmp_path / "card.md")]) == 0
    card = (tmp_path / "card.md").read_text()
    assert card == capsys.readouterr().out.split("\nwrote ")[0]
    for heading in ("# Model card: small_cnn-synthetic", "## Model", "## Data and split", "## Performance",
                    "## Calibration", "## Intended use", "## Limits"):
        assert heading in card, heading
    config = json.loads((bundle_dir / "bundle.json").read_text())
    assert f"`{PAIR_DATA}`" in card and "group-aware" in card and "40 px" in card
    assert f"{config['metrics']['test']['accuracy']:.3f}" in card
    for name in config["classes"]:  # per-class rows, as recorded at training
        assert f"| {name} | " in card
    assert "synthetic cells: a demonstration model" in card and "Not a medical device" in card


def test_card_computes_metrics_on_data_and_writes_into_the_bundle(pair, tmp_path):
    shutil.copytree(pair[0], tmp_path / "b")  # a copy: no run folder's metrics.json above it
    config = json.loads((tmp_path / "b" / "bundle.json").read_text())
    del config["metrics"]["test"]["per_class"]  # as in bundles trained before it was recorded
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(config))
    bundle = xcyto.load(tmp_path / "b")
    assert "Per-class metrics were not recorded" in render_card(bundle)
    assert main(["card", str(tmp_path / "b"), "--data", PAIR_DATA, "--split", "test"]) == 0
    card = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert "computed by 'xcyto card'" in card and "| Dyskeratotic | " in card
    assert xcyto.load(tmp_path / "b").sha256 == bundle.sha256  # the card does not disturb the bundle


def test_card_of_an_ensemble_lists_its_members(pair, tmp_path):
    make_ensemble(pair, weights=[1, 3]).save(tmp_path / "e")
    assert main(["card", str(tmp_path / "e"), "--data", PAIR_DATA]) == 0
    card = (tmp_path / "e" / "MODEL_CARD.md").read_text()
    assert "soft-voting ensemble of 2 classifiers" in card and "Members:" in card
    assert "| 0.250 |" in card and "| 0.750 |" in card
    assert "ensemble's probabilities" in card


def test_card_of_a_missing_bundle_is_a_clear_error(tmp_path, capsys):
    assert main(["card", str(tmp_path / "nothing")]) == 2
    assert "no such bundle folder" in capsys.readouterr().err
