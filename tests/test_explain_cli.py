"""``xcyto explain`` and ``xcyto evaluate-explanations`` end to end."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from xcyto.cli import main

from tests.test_explain_support import cell, tiny_bundle_path, untrained_bundle_path


@pytest.fixture()
def images(tmp_path):
    paths = []
    for index in range(2):
        path = tmp_path / "cells" / f"cell{index}.bmp"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(cell(index)).save(path)
        paths.append(path)
    return paths


def test_explain_writes_a_figure_and_json_per_cell(images, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", *map(str, images), "--bundle", str(untrained_bundle_path()),
                 "--methods", "gradcam,ig", "--target", "Koilocytotic", "--option", "steps=4", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "cell0.bmp: predicted" in printed and "explained Koilocytotic" in printed
    for path in images:
        record = json.loads((out / f"{path.stem}.json").read_text())
        assert record["target"] == "Koilocytotic" and record["source"] == str(path)
        assert set(record["heatmaps"]) == {"gradcam", "integrated_gradients"}
        assert record["heatmaps"]["integrated_gradients"]["settings"]["steps"] == 4
        for suffix in ("", "_cell", "_gradcam", "_integrated_gradients"):
            with Image.open(out / f"{path.stem}{suffix}.png") as picture:
                assert picture.size[0] > 0


def test_explain_accepts_a_folder_and_lists_methods(images, tmp_path, capsys):
    assert main(["explain", "--list-methods"]) == 0
    listing = capsys.readouterr().out
    for name in ("gradcam", "gradcampp", "hirescam", "layercam", "eigencam", "scorecam", "integrated_gradients",
                 "smoothgrad", "occlusion", "saliency", "guided_gradcam"):
        assert name in listing
    out = tmp_path / "folder-out"
    assert main(["explain", str(images[0].parent), "--bundle", str(untrained_bundle_path()),
                 "--methods", "gradcam", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["cell0.json", "cell1.json"]


def test_explain_errors_are_one_line_without_traceback(images, tmp_path, capsys):
    bundle = str(untrained_bundle_path())
    assert main(["explain", str(images[0]), "--bundle", bundle, "--methods", "gradcan"]) == 2
    assert "unknown explanation method 'gradcan'" in capsys.readouterr().err
    assert main(["explain", str(images[0]), "--bundle", bundle, "--target", "Normal"]) == 2
    assert "unknown class 'Normal'" in capsys.readouterr().err
    broken = tmp_path / "broken.bmp"
    broken.write_bytes(b"BM not really")
    assert main(["explain", str(broken), "--bundle", bundle]) == 2
    assert "broken.bmp" in capsys.readouterr().err
    assert main(["explain", "--bundle", bundle]) == 2
    assert "no images given" in capsys.readouterr().err
    assert main(["explain", str(images[0]), "--bundle", bundle, "--option", "steps"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_help_shows_examples(capsys):
    for command in ("explain", "evaluate-explanations"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text and f"xcyto {command}" in text


def test_evaluate_explanations_writes_table_and_figure(tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate-explanations", "--bundle", str(tiny_bundle_path()), "--data", "synthetic", "--n", "6",
                 "--methods", "gradcam,ig,random", "--option", "steps=4", "--steps", "4",
                 "--randomisation-cells", "2", "--out", str(out)])
    assert code == 0
    assert "| gradcam |" in capsys.readouterr().out
    table = (out / "explanation_metrics.md").read_text()
    assert "evidence_share" in table and "nucleus_share" in table
    assert (out / "explanation_metrics.png").stat().st_size > 0
    assert (out / "explanation_metrics.csv").read_text().startswith("method,metric,mean,ci_low,ci_high,n")
