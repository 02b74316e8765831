"""Training on synthetic cells: the loss falls, runs resume exactly, DDP ranks agree."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import xcyto
from xcyto.errors import DataError, TrainingError
from xcyto.training import _loop as loop
from tests.tiny import TINY_SETTINGS

REPO = Path(__file__).resolve().parents[1]


def test_training_lowers_the_loss_and_writes_the_run_folder(tiny_run):
    """The session's tiny run (tests/conftest.py: TINY_SETTINGS, trained once for every test)."""
    settings = json.loads((tiny_run / "settings.json").read_text())["config"]
    assert {key: settings[key] for key in TINY_SETTINGS} == TINY_SETTINGS
    history = json.loads((tiny_run / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == list(range(1, TINY_SETTINGS["epochs"] + 1))
    losses = [entry["train_loss"] for entry in history]
    assert losses[-1] < losses[0]
    for name in ("split.csv", "settings.json", "checkpoint.pt", "best.safetensors", "metrics.json",
                 "history.json", "confusion_matrix.png", "learning_curves.png", "bundle/bundle.json",
                 "bundle/model.safetensors", "bundle/split.csv"):
        assert (tiny_run / name).is_file(), name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["accuracy"] > 1 / 5 + 0.15  # well above chance on 5 classes
    assert {"accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class", "ece", "ece_calibrated",
            "binary"} <= set(metrics["test"])
    bundle = xcyto.load(tiny_run / "bundle")
    assert bundle.config["data"]["split_sha256"] and bundle.config["training"]["seed"] == 0
    assert bundle.config["metrics"]["test"]["accuracy"] == pytest.approx(test["accuracy"])
    balance = bundle.config["balance"]  # balance="auto": both options measured on validation, one applied
    assert balance["mode"] == "auto" and set(balance["validation"]) == {"raw", "tau 0.5", "tau 1"}
    assert (bundle.calibration.prior is None) == (balance["chosen"] == "raw")


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    settings = {**TINY_SETTINGS, "epochs": 3, "synthetic_n": 150, "gallery": False}
    xcyto.train(**settings, out=str(tmp_path / "straight"))

    real_epoch = loop._train_epoch
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-epoch
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        xcyto.train(**settings, out=str(tmp_path / "resumed"))
    monkeypatch.setattr(loop, "_train_epoch", real_epoch)
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1  # the finished epoch survived the crash
    xcyto.train(out=str(tmp_path / "resumed"), resume=True)

    straight = load_file(tmp_path / "straight" / "bundle" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "bundle" / "model.safetensors")
    for name in straight:
        assert torch.allclose(straight[name], resumed[name], atol=1e-6), name
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3]


def test_the_same_settings_train_the_same_weights_twice_in_one_process(tmp_path):
    """seed=0 means one model: the first run in a process (which loads the data check's segmenter)
    and the next one (which finds it loaded) start from the same weights and end the same."""
    from xcyto.data.health import _cells

    _cells._shipped_segmenter.cache_clear()  # as in a fresh process
    settings = {**TINY_SETTINGS, "epochs": 1, "max_steps_per_epoch": 2, "synthetic_n": 60, "gallery": False,
                "tta": "off"}
    first = xcyto.train(**settings, out=str(tmp_path / "first"))
    second = xcyto.train(**settings, out=str(tmp_path / "second"))
    assert first.bundle.sha256 == second.bundle.sha256


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        xcyto.train(out=str(tmp_path / "none"), resume=True)


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(TrainingError, match="epochs must be >= 1"):
        xcyto.train(**{**TINY_SETTINGS, "epochs": 0, "out": str(tmp_path)})
    with pytest.raises(TrainingError, match="balance must be one of"):
        xcyto.train(**{**TINY_SETTINGS, "balance": "magic", "out": str(tmp_path)})


def test_freezing_keeps_the_backbone_fixed_and_balancing_runs(tmp_path):
    from xcyto import models

    settings = {**TINY_SETTINGS, "epochs": 1, "freeze_epochs": 1, "balance": "sampler", "synthetic_n": 100,
                "gallery": False, "out": str(tmp_path)}
    result = xcyto.train(**settings)
    torch.manual_seed(settings["seed"])
    initial = models.create("small_cnn", 5, weights=None)
    trained = result.bundle.model
    assert torch.equal(initial.backbone.block1[0].weight, trained.backbone.block1[0].weight)
    assert not torch.equal(initial.classifier.weight, trained.classifier.weight)


def test_two_process_ddp_on_cpu_agrees_on_the_weights(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
               "-m", "xcyto", "train", "--data", "synthetic", "--synthetic-n", "100", "--synthetic-size", "48",
               "--model", "small_cnn", "--image-size", "32", "--epochs", "2", "--batch-size", "16",
               "--device", "cpu", "--num-workers", "0", "--no-gallery", "--out", str(out)]
    # TMPDIR: torch.distributed.run makes a torchelastic_* folder there and leaves it behind
    (tmp_path / "tmp").mkdir()
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    finished = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    checksums = metrics["distributed"]["weights_checksums"]
    assert metrics["distributed"]["world_size"] == 2 and len(checksums) == 2
    assert checksums[0] == checksums[1]
    assert xcyto.load(out / "bundle").classes


def test_early_stopping_stops_and_the_bundle_holds_the_best_epoch(tmp_path):
    # a learning rate so small that validation macro-F1 cannot beat epoch 1: stale from epoch 2 on
    settings = {**TINY_SETTINGS, "epochs": 6, "patience": 2, "lr": 1e-7, "synthetic_n": 150, "gallery": False}
    result = xcyto.train(**settings, out=str(tmp_path))
    scores = [entry["val_macro_f1"] for entry in result.history]
    best_epoch = result.metrics["best_epoch"]
    assert best_epoch == 1 + scores.index(max(scores))
    assert result.metrics["epochs_run"] == len(result.history) == best_epoch + 2 < 6
    bundle_weights = load_file(tmp_path / "bundle" / "model.safetensors")
    best = load_file(tmp_path / "best.safetensors")
    last = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(bundle_weights[name], best[name]) for name in best)
    assert any(not torch.equal(bundle_weights[name], last[name]) for name in best)  # not the last epoch's


def test_early_stopping_keeps_a_best_epoch_from_the_middle_of_training(tmp_path, monkeypatch):
    """Validation improves, then worsens (tests/tiny.py: make_peaking_cells): the bundle holds
    the weights of the best epoch, neither the first nor the last one."""
    from sklearn.metrics import f1_score

    from tests.tiny import PEAKING_SETTINGS, make_peaking_cells

    cells, manifest = make_peaking_cells(tmp_path / "data")
    real_epoch, weights = loop._train_epoch, []

    def keep_weights(model, *args, **kwargs):  # the model's weights after every epoch
        finished = real_epoch(model, *args, **kwargs)
        weights.append({name: value.detach().clone() for name, value in model.state_dict().items()})
        return finished

    monkeypatch.setattr(loop, "_train_epoch", keep_weights)
    result = xcyto.train(**PEAKING_SETTINGS, data=str(cells), split_manifest=str(manifest), out=str(tmp_path / "run"))
    scores = [entry["val_macro_f1"] for entry in result.history]
    best_epoch, last_epoch = result.metrics["best_epoch"], result.metrics["epochs_run"]
    assert [entry["epoch"] for entry in result.history] == list(range(1, last_epoch + 1)) and len(weights) == last_epoch
    assert 1 < best_epoch < last_epoch, scores
    assert scores[best_epoch - 1] == max(scores) and best_epoch == 1 + scores.index(max(scores))
    assert scores[0] < max(scores) and scores[-1] < max(scores), scores  # improved, then worsened
    assert last_epoch == best_epoch + PEAKING_SETTINGS["patience"] < PEAKING_SETTINGS["epochs"]  # stopped early
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_epoch"] == best_epoch
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == result.history

    # the bundle holds that epoch's weights, not the last ones (which the checkpoint holds)
    bundle_weights = load_file(tmp_path / "run" / "bundle" / "model.safetensors")
    last = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(bundle_weights[name], weights[best_epoch - 1][name]) for name in bundle_weights)
    assert all(torch.equal(last[name], weights[-1][name]) for name in last)
    assert any(not torch.equal(bundle_weights[name], last[name]) for name in bundle_weights)
    # and scores the best validation macro-F1 again, computed here from its own predictions
    bundle = xcyto.load(tmp_path / "run" / "bundle")
    validation = [line.split(",") for line in manifest.read_text().splitlines()[1:] if line.endswith(",val")]
    images = [np.asarray(Image.open(cells / row[1])) for row in validation]
    with torch.no_grad():
        predicted = bundle.model.eval()(bundle.preprocess(images)).argmax(1).numpy()
    labels = [int(row[2]) for row in validation]
    again = f1_score(labels, predicted, labels=range(len(bundle.classes)), average="macro", zero_division=0)
    assert again == pytest.approx(max(scores))


def test_a_hand_edited_leaky_split_manifest_is_refused(tmp_path):
    settings = {**TINY_SETTINGS, "epochs": 1, "synthetic_n": 80, "gallery": False}
    xcyto.train(**settings, out=str(tmp_path / "first"))
    lines = (tmp_path / "first" / "split.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
    split = header.index("split")
    moved = next(row for row in rows if row[split] != "train")
    moved[split] = "train"  # one cell moved to training, its source image's other cells still held out
    leaky = tmp_path / "leaky.csv"
    leaky.write_text("\n".join([lines[0]] + [",".join(row) for row in rows]) + "\n")
    with pytest.raises(DataError, match="share a group with a cell in another split"):
        xcyto.train(**settings, split_manifest=str(leaky), out=str(tmp_path / "second"))
    assert not (tmp_path / "second" / "checkpoint.pt").exists()


def test_resume_is_exact_with_mixup_cutmix_and_a_moving_average(tmp_path, monkeypatch):
    settings = {**TINY_SETTINGS, "epochs": 2, "synthetic_n": 120, "gallery": False, "mixup": 0.4, "cutmix": 1.0,
                "ema": 0.9, "rotation": "dihedral", "tta": "on"}
    straight = xcyto.train(**settings, out=str(tmp_path / "straight"))
    assert all(torch.isfinite(torch.tensor(entry["train_loss"])) for entry in straight.history)
    real_epoch = loop._train_epoch
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        xcyto.train(**settings, out=str(tmp_path / "resumed"))
    monkeypatch.setattr(loop, "_train_epoch", real_epoch)
    assert "ema" in torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    xcyto.train(out=str(tmp_path / "resumed"), resume=True)
    a = load_file(tmp_path / "straight" / "bundle" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "bundle" / "model.safetensors")
    assert all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)
    # the bundle holds the moving average, not the last raw weights
    raw = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    assert any(not torch.allclose(a[name], raw[name]) for name in a if a[name].is_floating_point())
    bundle = xcyto.load(tmp_path / "straight" / "bundle")
    assert bundle.tta and bundle.config["tta"]["chosen_because"] == "tta=on"


def _synthetic(n: int, size: int, drop_class: int | None = None, keep: int = 0):
    from xcyto.data import load_dataset

    dataset = load_dataset(f"synthetic:n={n},size={size},seed=0")
    if drop_class is None:
        return dataset
    labels = dataset.labels
    rows = [i for i in range(len(dataset)) if labels[i] != drop_class] + \
        [i for i in range(len(dataset)) if labels[i] == drop_class][:keep]
    return dataset.subset(sorted(rows))


def test_input_size_and_balancing_come_from_the_training_cells():
    import warnings

    from xcyto.data import train_val_test_split
    from xcyto.training import TrainConfig
    from xcyto.training._data import data_defaults

    for size, model, expected in ((64, "efficientnet_lite0", 128), (150, "efficientnet_lite0", 160),
                                  (140, "efficientnet_lite0", 128), (200, "efficientnet_lite0", 160),
                                  (200, "small_cnn", 128), (256, "efficientnet_lite2", 160)):
        dataset = _synthetic(60, size)
        split = train_val_test_split(dataset, seed=0)
        image_size, balance, notes = data_defaults(TrainConfig(model=model), dataset, split)
        assert image_size == expected, (size, model)
        assert balance == "none" and any(f"median longer side is {size} px" in note for note in notes)
    assert data_defaults(TrainConfig(image_size=96), dataset, split)[0] == 96  # asked for: kept

    uneven = _synthetic(300, 32, drop_class=2, keep=12)  # 60 cells of four classes, 12 of one
    split = train_val_test_split(uneven, seed=0)
    counts = np.bincount(uneven.labels[split.train])
    assert counts.max() / counts[counts > 0].min() >= 3
    with pytest.warns(UserWarning, match=r"few training cells in Metaplastic \(\d+\)"):
        image_size, balance, notes = data_defaults(TrainConfig(), uneven, split)
    # auto trains with plain cross-entropy however uneven the classes: the validation cells decide later
    assert balance == "none" and any("balance=auto: plain cross-entropy" in note for note in notes)
    assert data_defaults(TrainConfig(balance="loss"), uneven, split)[1] == "loss"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an even dataset warns of nothing
        assert data_defaults(TrainConfig(balance="none"), _synthetic(300, 32), train_val_test_split(_synthetic(300, 32), seed=0))[1] == "none"


def test_auto_on_uneven_classes_trains_a_weighted_loss_too_and_validation_chooses(tmp_path):
    from PIL import Image

    from xcyto.training._balance import choose_training

    uneven = _synthetic(160, 48, drop_class=2, keep=10)  # 32 cells of four classes, 10 of one
    for index, sample in enumerate(uneven.samples):
        folder = tmp_path / "cells" / sample.class_name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image).save(folder / f"cell-{index}.png")
    out = tmp_path / "run"
    with pytest.warns(UserWarning):
        result = xcyto.train(**{**TINY_SETTINGS, "data": str(tmp_path / "cells"), "epochs": 2, "gallery": False,
                                "data_check": "off", "exclude": "none", "out": str(out)})
    weighted_dir = out / loop.WEIGHTED_RUN
    plain = json.loads((weighted_dir.parent / "bundle" / "bundle.json").read_text())
    weighted = json.loads((weighted_dir / "metrics.json").read_text())
    assert (weighted_dir / "split.csv").read_text() == (out / "split.csv").read_text()  # same cells on each side
    assert weighted["balance"]["mode"] == "loss"
    balance = result.metrics["balance"]
    training = balance["training"]
    assert set(training["validation"]) == {"cross-entropy", "class-weighted loss"}
    assert training["validation"]["class-weighted loss"] == {k: weighted["val"][k] for k in ("accuracy", "macro_f1")}
    keep, _ = choose_training(training["validation"]["cross-entropy"], training["validation"]["class-weighted loss"])
    assert training["chosen"] == ("class-weighted loss" if keep else "cross-entropy")
    # the run's bundle and metrics hold the chosen training, and say so
    assert plain["balance"] == balance == json.loads((out / "metrics.json").read_text())["balance"]
    shipped = json.loads((weighted_dir / "bundle" / "bundle.json").read_text())["weights_sha256"]
    assert (plain["weights_sha256"] == shipped) == keep
    assert set(balance["test_by_training"]) == {"cross-entropy", "class-weighted loss"}
    assert "test_if_balance_none" in balance
