"""``xcyto data ...`` end to end through ``xcyto.cli.main``."""
from __future__ import annotations

import pytest

from fixtures import make_class_tree, make_herlev_tree, make_sipakmed_tree
from xcyto.cli import main
from xcyto.data import load_dataset, load_split_manifest, split_hash


def test_summary_of_a_sipakmed_tree(tmp_path, capsys):
    root = make_sipakmed_tree(tmp_path / "sipak", n_per_class=3, clusters_per_class=3)
    (root / "im_Koilocytotic" / "im_Koilocytotic" / "CROPPED" / "001_01_nuc.dat").unlink()
    assert main(["data", "summary", str(root)]) == 0
    out = capsys.readouterr().out
    assert "layout:  sipakmed" in out and "15 in 5 classes, 15 groups" in out
    assert "Superficial-Intermediate" in out and "nucleus 14, cytoplasm 15 of 15 cells" in out
    assert "warnings (1)" in out and "001_01_nuc.dat" in out


def test_summary_reports_skipped_files(tmp_path, capsys):
    root = make_class_tree(tmp_path / "cells", n_per_class=2)
    (root / "cat_a" / "broken.png").write_bytes(b"\x89PNG garbage")
    assert main(["data", "summary", str(root)]) == 0
    out = capsys.readouterr().out
    assert "layout:  folder" in out and "4 in 2 classes" in out and "broken.png" in out
    assert "masks:   none" in out


def test_summary_binary_scheme(tmp_path, capsys):
    root = make_herlev_tree(tmp_path / "h", n_per_class=2)
    assert main(["data", "summary", str(root), "--scheme", "binary"]) == 0
    out = capsys.readouterr().out
    assert "8 in 2 classes" in out and "normal" in out and "abnormal" in out


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["data", "summary", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xcyto: error:") and "no such file or folder" in err and "Traceback" not in err
    root = make_class_tree(tmp_path / "cells", n_per_class=2)
    assert main(["data", "summary", str(root), "--scheme", "binary"]) == 2
    assert "'binary' is not available" in capsys.readouterr().err


def test_split_command_writes_a_reproducible_manifest(tmp_path, capsys):
    root = make_herlev_tree(tmp_path / "h", n_per_class=12, groups_per_class=6)
    out_csv = tmp_path / "split.csv"
    assert main(["data", "split", str(root), "--out", str(out_csv), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {split_hash(out_csv)}" in out
    split = load_split_manifest(out_csv, load_dataset(root))
    assert sum(len(indices) for indices in split.indices.values()) == 48
    assert main(["data", "split", str(root), "--out", str(tmp_path / "cv.csv"), "--folds", "3"]) == 0
    assert "fold 2:" in capsys.readouterr().out


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "xcyto data summary ../shared/data/herlev" in out and "synth" in out
    with pytest.raises(SystemExit):
        main(["data", "synth", "--help"])
    assert "--size" in capsys.readouterr().out
    assert main(["data"]) == 1  # no action: prints help


def test_summary_of_real_herlev(herlev_root, capsys):
    assert main(["data", "summary", str(herlev_root)]) == 0
    out = capsys.readouterr().out
    assert "917 in 7 classes, 538 groups" in out and "warnings: none" in out
    assert "carcinoma_in_situ" in out and "height 200/224/224" in out


def test_summary_of_real_herlev_40px_masks(herlev_masks_root, capsys):
    assert main(["data", "summary", str(herlev_masks_root)]) == 0
    out = capsys.readouterr().out
    assert "917 in 7 classes" in out and "nucleus 917, cytoplasm 917 of 917 cells" in out
    assert "groups are unknown" in out


def test_synth_then_summary(tmp_path, capsys):
    out_dir = tmp_path / "synthetic-cells"
    assert main(["data", "synth", "--n", "20", "--size", "32", "--seed", "0", "--out", str(out_dir)]) == 0
    assert str(out_dir) in capsys.readouterr().out
    dataset = load_dataset(out_dir)
    assert dataset.layout == "sipakmed" and len(dataset) == 20
    assert main(["data", "summary", "synthetic"]) == 0
    assert "cells:" in capsys.readouterr().out
