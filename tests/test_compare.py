"""Cross-validated comparison: folds keep groups apart, runs resume, the leaderboard is written."""
import csv
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from xcyto.data import abnormal_flags, load_dataset
from xcyto.data import check_leakage, cross_validation_fold, kfold_split
from xcyto.errors import TrainingError
from xcyto.morphology import fit_baseline
from xcyto.training import _loop as loop
from xcyto.training._compare import compare, leaderboard, parse_models

DATA = "synthetic:n=80,size=32,seed=0"  # 4 source groups per class
SETTINGS = dict(val_fraction=0.4, image_size=32, epochs=2, batch_size=16, lr=3e-3, backbone_lr_mult=1.0, patience=0,
                num_workers=0, gallery=False)


def test_folds_keep_every_group_in_one_fold_and_test_each_cell_once():
    dataset = load_dataset("synthetic:n=100,size=32,seed=0")
    split = kfold_split(dataset, k=5, seed=0)
    groups = np.array([sample.group for sample in dataset.samples])
    for group in np.unique(groups):
        assert len(np.unique(split.folds[groups == group])) == 1, group  # no group in two folds
    tested = []
    for k in range(5):
        fold = cross_validation_fold(dataset, split, k, val_fraction=0.25, seed=0)
        sides = [set(groups[fold[name]]) for name in ("train", "val", "test")]
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(dataset)
        assert len(fold.val) > 0 and set(dataset.labels[fold.test]) == set(range(5))
        check_leakage(dataset, fold)
        tested.extend(fold.test.tolist())
    assert sorted(tested) == list(range(len(dataset)))  # every cell tested exactly once


def test_model_list_with_per_model_settings():
    entries = parse_models("efficientnet_lite0, resnet18[weights=none,lr=2e-3], small_cnn[patience=0]")
    assert [e.label for e in entries] == ["efficientnet_lite0", "resnet18", "small_cnn"]
    assert entries[1].overrides == {"weights": None, "lr": 2e-3}
    twice = parse_models("small_cnn,small_cnn[lr=3e-3]")
    assert [e.label for e in twice] == ["small_cnn", "small_cnn_lr-0.003"]
    for bad, message in (("nonsense_net", "unknown architecture"), ("small_cnn[colour=red]", "per-model"),
                         ("small_cnn[lr=fast]", "expected"), ("small_cnn,small_cnn", "twice")):
        with pytest.raises(Exception, match=message):
            parse_models(bad)


def test_compare_resumes_an_interrupted_run_and_writes_the_leaderboard(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    models = "small_cnn,small_cnn[lr=1e-3]"
    real_epoch = loop._train_epoch
    calls = []

    def crash_in_third_epoch(*args, **kwargs):  # the second model's second epoch on fold 1
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        compare(DATA, models, out, folds=2, **SETTINGS)
    monkeypatch.setattr(loop, "_train_epoch", real_epoch)
    first = out / "small_cnn" / "fold-0" / "metrics.json"
    finished_at = first.stat().st_mtime_ns
    assert (out / "small_cnn_lr-0.001" / "fold-0" / "checkpoint.pt").is_file()
    assert not (out / "small_cnn_lr-0.001" / "fold-0" / "metrics.json").exists()
    capsys.readouterr()

    result = compare(DATA, models, out, folds=2, **SETTINGS)
    printed = capsys.readouterr().out
    assert "small_cnn, fold 1/2: done already" in printed
    assert "resuming" in printed and "resuming" in printed.split("small_cnn_lr-0.001, fold 1/2")[1]
    assert first.stat().st_mtime_ns == finished_at  # the finished run was not trained again
    history = json.loads((out / "small_cnn_lr-0.001" / "fold-0" / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]

    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert {(row["model"], row["fold"]) for row in rows} >= {("small_cnn", "0"), ("small_cnn", "1"),
                                                              ("ensemble (equal)", "1")}
    assert sum(int(row["n_test"]) for row in rows if row["model"] == "small_cnn") == 80  # each cell once
    board = {entry["model"]: entry for entry in result.leaderboard}
    assert set(board) == {"small_cnn", "small_cnn_lr-0.001", "ensemble (equal)", "ensemble (fitted)"}
    small = [row for row in rows if row["model"] == "small_cnn"]
    accuracies = [float(row["accuracy"]) for row in small]
    assert board["small_cnn"]["folds"] == 2
    assert board["small_cnn"]["accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert board["small_cnn"]["accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))
    markdown = (out / "leaderboard.md").read_text()
    assert ("| model | folds | accuracy ↑ | macro-F1 ↑ | 2-class accuracy ↑ | abnormal sensitivity ↑ | "
            "abnormal specificity ↑ | ECE ↓ | mean grade error ↓ | serious misses ↓ | set coverage (target 0.90) ↑ | "
            "mean set size ↓ | coverage at 0.90 accuracy ↑ | training time (s) ↓") in markdown
    for row in small:  # the grade and set columns are the fold's own test metrics
        test = json.loads((out / "small_cnn" / f"fold-{row['fold']}" / "metrics.json").read_text())["test"]
        assert float(row["serious_misses"]) == test["grades"]["serious_misses"]
        assert float(row["set_coverage"]) == pytest.approx(test["conformal"]["coverage"])
        saved = np.load(out / "small_cnn" / f"fold-{row['fold']}" / "predictions.npz")  # kept for later pairing
        assert len(saved["test_labels"]) == int(row["n_test"])
        assert (saved["test_probabilities"].argmax(1) == saved["test_labels"]).mean() == pytest.approx(float(row["accuracy"]))
    assert (out / "risk_coverage.png").stat().st_size > 0
    abnormal = abnormal_flags(load_dataset(DATA).classes)
    for row in small:  # the row's numbers, derived again from the run's confusion matrices
        metrics = json.loads((out / "small_cnn" / f"fold-{row['fold']}" / "metrics.json").read_text())
        assert float(row["val_macro_f1"]) == pytest.approx(_macro_f1(metrics["val"]["confusion_matrix"]))
        test = np.array(metrics["test"]["confusion_matrix"])
        assert int(row["n_test"]) == test.sum() and float(row["accuracy"]) == pytest.approx(np.trace(test) / test.sum())
        assert float(row["sensitivity"]) == pytest.approx(test[abnormal][:, abnormal].sum() / test[abnormal].sum())
        assert float(row["specificity"]) == pytest.approx(test[~abnormal][:, ~abnormal].sum() / test[~abnormal].sum())
    assert (out / "leaderboard.png").stat().st_size > 0 and (out / "leaderboard.csv").is_file()

    with pytest.raises(TrainingError, match="other settings"):
        compare(DATA, models, out, folds=2, **{**SETTINGS, "epochs": 3})
    with pytest.raises(TrainingError, match="other folds"):
        compare(DATA, models, out, folds=3, **SETTINGS)


def _macro_f1(confusion) -> float:
    """Macro-F1 from a confusion matrix (rows: true class), 0 for a class never seen nor predicted."""
    confusion = np.asarray(confusion, dtype=float)
    hits = np.diag(confusion)
    denominators = confusion.sum(axis=0) + confusion.sum(axis=1)
    return float(np.mean(np.divide(2 * hits, denominators, out=np.zeros_like(hits), where=denominators > 0)))


def test_leaderboard_means_and_spreads():
    rows = [{"model": "a", "fold": k, "n_test": 10, "accuracy": acc, "macro_f1": acc, "binary_accuracy": None,
             "ece": 0.1, "train_seconds": 5.0, "parameters": 100} for k, acc in enumerate((0.5, 0.7))]
    rows.append({**rows[0], "model": "b", "accuracy": 0.9, "macro_f1": 0.9})
    board = leaderboard(rows)
    assert [entry["model"] for entry in board] == ["b", "a"]
    assert board[1]["accuracy_mean"] == pytest.approx(0.6) and board[1]["accuracy_std"] == pytest.approx(0.1414, abs=1e-3)
    assert board[1]["binary_accuracy_mean"] is None and board[0]["accuracy_std"] is None


def test_compare_command_help_and_bad_models(capsys):
    from xcyto.cli import main

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "examples:" in capsys.readouterr().out
    assert main(["compare", "--data", DATA, "--models", "no_such_net", "--out", "/nonexistent/x"]) == 2
    assert "unknown architecture" in capsys.readouterr().err


def test_only_some_folds_train_first_and_the_rest_later(tmp_path):
    first = compare(DATA, "small_cnn", tmp_path, folds=2, ensemble=False, only_folds=[1], **SETTINGS)
    assert [row["fold"] for row in first.results] == [1]
    assert not (tmp_path / "small_cnn" / "fold-0").exists()
    trained = (tmp_path / "small_cnn" / "fold-1" / "metrics.json").stat().st_mtime_ns
    both = compare(DATA, "small_cnn", tmp_path, folds=2, ensemble=False, **SETTINGS)
    assert sorted(row["fold"] for row in both.results) == [0, 1]
    assert (tmp_path / "small_cnn" / "fold-1" / "metrics.json").stat().st_mtime_ns == trained  # not trained again
    with pytest.raises(TrainingError, match="folds to run"):
        compare(DATA, "small_cnn", tmp_path, folds=2, ensemble=False, only_folds=[2], **SETTINGS)


def test_the_morphometric_baseline_joins_the_leaderboard(tmp_path):
    from xcyto.training._compare import MORPHOMETRY

    result = compare(DATA, "small_cnn", tmp_path, folds=2, ensemble=False, morphometry=True, only_folds=[0],
                     **SETTINGS)
    rows = {row["model"]: row for row in result.results}
    assert set(rows) == {"small_cnn", MORPHOMETRY}
    cached = np.load(tmp_path / "morphometry" / "features.npz")
    assert cached["features"].shape[0] == 80 and len(cached["names"]) == cached["features"].shape[1]
    # the baseline's accuracy, derived again: its trees fitted on fold 0's training cells (the
    # manifest), scored with scikit-learn on the fold's test cells
    manifest = list(csv.DictReader((tmp_path / "splits" / "fold-0.csv").read_text().splitlines()))
    row_of = {cell_id: index for index, cell_id in enumerate(cached["cell_ids"])}
    features = cached["features"][[row_of[row["cell_id"]] for row in manifest]]
    labels = np.array([int(row["label"]) for row in manifest])
    side = np.array([row["split"] for row in manifest])
    trees = fit_baseline(features[side == "train"], labels[side == "train"], seed=0)
    expected = accuracy_score(labels[side == "test"], trees.predict(features[side == "test"]))
    assert rows[MORPHOMETRY]["n_test"] == rows["small_cnn"]["n_test"] == (side == "test").sum()
    assert rows[MORPHOMETRY]["accuracy"] == pytest.approx(expected)
    assert MORPHOMETRY in (tmp_path / "leaderboard.md").read_text()


def test_the_same_folder_by_another_path_continues_the_comparison(tmp_path, monkeypatch):
    from fixtures import make_herlev_tree

    make_herlev_tree(tmp_path / "cells", n_per_class=6, groups_per_class=6, size=32)
    monkeypatch.chdir(tmp_path)
    first = compare("cells", "small_cnn", tmp_path / "cv", folds=2, ensemble=False, **SETTINGS)
    trained = (tmp_path / "cv" / "small_cnn" / "fold-0" / "metrics.json").stat().st_mtime_ns
    again = compare(str(tmp_path / "cells"), "small_cnn", tmp_path / "cv", folds=2, ensemble=False, **SETTINGS)
    assert [row["accuracy"] for row in again.results] == [row["accuracy"] for row in first.results]
    assert (tmp_path / "cv" / "small_cnn" / "fold-0" / "metrics.json").stat().st_mtime_ns == trained
    make_herlev_tree(tmp_path / "other", n_per_class=6, groups_per_class=6, size=32)
    with pytest.raises(TrainingError, match="other data"):
        compare("other", "small_cnn", tmp_path / "cv", folds=2, ensemble=False, **SETTINGS)


def test_a_model_read_with_its_measurements_joins_the_leaderboard_paired_with_it(tmp_path):
    import xcyto
    from xcyto.fusion import fusion_inputs, load_fusion
    from xcyto.training import cells_in_split
    from xcyto.training._compare import FUSED_SUFFIX

    result = compare(DATA, "small_cnn", tmp_path, folds=2, ensemble=False, only_folds=[0],
                     **{**SETTINGS, "gallery": True})  # fuse: on by default
    rows = {row["model"]: row for row in result.results}
    assert set(rows) == {"small_cnn", f"small_cnn{FUSED_SUFFIX}"}
    fused_row = rows[f"small_cnn{FUSED_SUFFIX}"]
    assert fused_row["n_test"] == rows["small_cnn"]["n_test"]
    metrics = json.loads((tmp_path / f"small_cnn{FUSED_SUFFIX}" / "fold-0" / "metrics.json").read_text())
    assert metrics["network"]["accuracy"] == pytest.approx(rows["small_cnn"]["accuracy"])
    # the fused accuracy, derived again from the weight the fold's bundle now records
    bundle = xcyto.load(tmp_path / "small_cnn" / "fold-0" / "bundle")
    test, _ = cells_in_split(bundle, load_dataset(DATA), "test")
    probabilities, features = fusion_inputs(bundle, test.samples)
    fused = load_fusion(bundle).fuse(probabilities, features)
    assert fused_row["accuracy"] == pytest.approx(accuracy_score(test.labels, fused.argmax(1)))
    assert f"small_cnn{FUSED_SUFFIX}" in (tmp_path / "leaderboard.md").read_text()
