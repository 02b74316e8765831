"""The train / evaluate / predict commands end to end, and their errors."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xcyto
from xcyto.cli import main


def test_train_command_writes_a_loadable_bundle(tmp_path, capsys):
    code = main(["train", "--data", "synthetic", "--synthetic-n", "100", "--synthetic-size", "48", "--model",
                 "small_cnn", "--image-size", "32", "--epochs", "1", "--num-workers", "0", "--no-gallery",
                 "--weights", "none", "--out", str(tmp_path)])
    assert code == 0
    assert "bundle:" in capsys.readouterr().out
    config = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert config["architecture"] == "small_cnn" and config["input_size"] == 32
    assert config["training"]["epochs"] == 1


def test_evaluate_on_the_bundles_own_data_and_test_split(tiny_run, tmp_path, capsys):
    code = main(["evaluate", "--bundle", str(tiny_run / "bundle"), "--split", "test", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert metrics["split"] == "test" and metrics["data"].startswith("synthetic:n=250")
    assert metrics["n"] == trained["n"]
    assert metrics["accuracy"] == pytest.approx(trained["accuracy"])  # the very same cells and model
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_predict_writes_probabilities_and_reports_unreadable_files(tiny_bundle, tmp_path):
    from xcyto.data import make_dataset

    cells = make_dataset(3, seed=11, size=64)
    paths = []
    for index, cell in enumerate(cells.samples):
        paths.append(tmp_path / f"cell{index}.png")
        Image.fromarray(cell.image).save(paths[-1])
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(tmp_path / "speck.png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--bundle", str(tiny_bundle.path), str(tmp_path), "--out", str(out)]) == 0
    rows = {Path(row["path"]).name: row for row in csv.DictReader(out.read_text().splitlines())}
    assert len(rows) == 6
    for name in ("cell0.png", "cell1.png", "cell2.png", "noise.png"):
        row = rows[name]
        assert not row["error"]
        probabilities = np.array([float(row[f"p_{name}"]) for name in tiny_bundle.classes])
        assert abs(probabilities.sum() - 1) < 1e-3
        assert row["predicted"] == tiny_bundle.classes[int(probabilities.argmax())]
        assert 0 <= float(row["atypicality"]) <= 100 and row["atypical"] in ("0", "1")
    # the same atypicality as explain() gives, from the same gallery
    explained = xcyto.explain(str(tmp_path / "noise.png"), tiny_bundle, methods=["gradcam"], neighbours=1)
    assert float(rows["noise.png"]["atypicality"]) == pytest.approx(explained.atypicality, abs=0.1)
    assert rows["noise.png"]["atypical"] == str(int(explained.atypical))
    assert "not a readable image" in rows["notes.png"]["error"] and not rows["notes.png"]["predicted"]
    assert "1 x 1 pixels is too small" in rows["speck.png"]["error"] and not rows["speck.png"]["predicted"]


@pytest.mark.parametrize("arguments, message", [
    (["train", "--data", "/no/such/folder", "--out", "{tmp}"], "/no/such/folder"),
    (["train", "--data", "synthetic", "--model", "resnet9000", "--out", "{tmp}"], "unknown architecture"),
    (["evaluate", "--bundle", "{tmp}", "--data", "synthetic"], "not a bundle"),
    (["predict", "--bundle", "{tmp}", "nothing.png"], "not a bundle"),
])
def test_user_errors_are_one_line_not_a_traceback(arguments, message, tmp_path, capsys):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in arguments])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error and "Traceback" not in error


def test_every_command_has_help_with_examples(capsys):
    for command in ("train", "evaluate", "predict"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_tta_can_be_switched_on_or_off_for_one_run(tiny_bundle, tmp_path):
    from xcyto.data import make_dataset

    image = make_dataset(1, seed=12, size=64).samples[0].image
    Image.fromarray(image).save(tmp_path / "cell.png")
    rows = {}
    for mode in ("on", "off", "bundle"):
        out = tmp_path / f"{mode}.csv"
        assert main(["predict", "--bundle", str(tiny_bundle.path), str(tmp_path / "cell.png"), "--tta", mode,
                     "--out", str(out)]) == 0
        rows[mode] = next(csv.DictReader(out.read_text().splitlines()))
    batch = tiny_bundle.preprocess(image)
    for mode, tta in (("on", True), ("off", False), ("bundle", tiny_bundle.tta)):
        assert rows[mode]["tta"] == str(int(tta))
        expected = tiny_bundle.predict_probabilities(batch, tta=tta)[0].numpy()
        found = np.array([float(rows[mode][f"p_{name}"]) for name in tiny_bundle.classes])
        np.testing.assert_allclose(found, expected, atol=1e-4)
    assert rows["on"]["p_" + tiny_bundle.classes[0]] != rows["off"]["p_" + tiny_bundle.classes[0]]


def test_models_lists_every_registered_architecture(capsys):
    from xcyto.models import get_spec, list_models

    assert main(["models"]) == 0
    printed = capsys.readouterr().out
    for name in list_models():
        assert any(line.split()[:2] == [name, str(get_spec(name).input_size)] for line in printed.splitlines())


def test_a_bundle_made_elsewhere_finds_its_data_under_xcyto_data(tiny_bundle, tmp_path, monkeypatch):
    from xcyto.data import write_sipakmed_layout
    from xcyto.errors import DataError
    from xcyto.training import training_data

    moved = tiny_bundle.config["data"]
    elsewhere = dict(tiny_bundle.config, data={**moved, "source": "/nowhere/on/this/machine/cells"})
    bundle = type(tiny_bundle)(model=tiny_bundle.model, config=elsewhere, path=tiny_bundle.path)
    monkeypatch.delenv("XCYTO_DATA", raising=False)
    with pytest.raises(DataError, match="not on this machine; pass --data, or set XCYTO_DATA"):
        training_data(bundle)
    write_sipakmed_layout(tmp_path / "cells", n=10, seed=3, size=48)
    monkeypatch.setenv("XCYTO_DATA", str(tmp_path))
    assert training_data(bundle) == str(tmp_path / "cells")
    assert training_data(tiny_bundle) == moved["source"]  # a source that is here, or synthetic, stays
