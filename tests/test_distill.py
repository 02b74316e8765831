"""Distillation: the loss recomputed by hand, a tiny real training from two teachers, and the
refusal of a teacher trained on another split."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import xcyto
from xcyto.card import render_card
from xcyto.errors import TrainingError
from xcyto.training import DistillationLoss
from xcyto.training._distill import TEACHER_FILE
from tests.tiny import PAIR_DATA, tiny_pair

STUDENT = dict(data=PAIR_DATA, model="small_cnn", image_size=32, epochs=2, batch_size=16, lr=3e-3,
               backbone_lr_mult=1.0, num_workers=0, seed=0, gallery=False, fuse=False, tta="off")


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """The ensemble tests' tiny pair (made once per session, read-only here)."""
    return tiny_pair(tmp_path_factory.getbasetemp() / "tiny-pair")


def test_the_loss_mixes_the_label_and_the_softened_teacher():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=generator)
    labels = np.array([0, 1, 2, 3, 1, 0])
    teacher = torch.softmax(torch.randn(6, 4, generator=generator) * 3, 1).numpy()
    positions = torch.tensor([5, 0, 2, 3, 1])
    loss = DistillationLoss(torch.nn.CrossEntropyLoss(label_smoothing=0.1), labels, teacher, weight=0.3,
                            temperature=2.0)
    softened = teacher[positions.numpy()] ** 0.5
    softened /= softened.sum(1, keepdims=True)
    student = F.log_softmax(logits / 2.0, 1).numpy()
    kl = float((softened * (np.log(softened) - student)).sum(1).mean())
    hard = F.cross_entropy(logits, torch.as_tensor(labels[positions.numpy()]), label_smoothing=0.1).item()
    assert loss(logits, positions).item() == pytest.approx(0.7 * hard + 0.3 * 4.0 * kl, rel=1e-5)
    # a student that already reads as the teacher does (at the temperature) owes it nothing
    matching = torch.as_tensor(2.0 * np.log(softened), dtype=torch.float32)
    only_teacher = DistillationLoss(torch.nn.CrossEntropyLoss(), labels, teacher, weight=1.0, temperature=2.0)
    assert only_teacher(matching, positions).item() == pytest.approx(0.0, abs=1e-5)
    assert only_teacher(logits, positions).item() > 0.01


def test_a_student_learns_from_two_teachers_on_their_split(teachers, tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    result = xcyto.train(**STUDENT, teacher=os.pathsep.join(str(path.parent) for path in teachers),
                         distill=0.5, out=str(out))
    # the split is the teachers' own, and the teachers' mean reading of each training cell is kept
    assert (out / "split.csv").read_bytes() == (teachers[0] / "split.csv").read_bytes()
    kept = np.load(out / TEACHER_FILE)["probabilities"]
    cells = _training_cells(out)
    assert kept.shape == (len(cells), len(result.bundle.classes))
    means = [xcyto.load(path).predict_cells(cells).probabilities for path in teachers]
    assert np.allclose(kept, np.mean(means, axis=0), atol=1e-5)
    assert np.isfinite([entry["train_loss"] for entry in result.history]).all()
    assert "distilled from 2 teachers (share 0.5, temperature 2.0)" in render_card(result.bundle)


def _training_cells(run_dir):
    from xcyto.data import load_dataset, load_split_manifest

    dataset = load_dataset(PAIR_DATA)
    return dataset.subset(load_split_manifest(run_dir / "split.csv", dataset).train).samples


def test_a_teacher_from_another_split_or_with_mixup_is_refused(teachers, tmp_path_factory):
    teacher = teachers[0]
    rows = (teacher / "split.csv").read_text().splitlines()
    moved = [rows[0]] + [row.replace(",test", ",train") if row.endswith(",test") else
                         row.replace(",train", ",test") if row.endswith(",train") else row for row in rows[1:]]
    other = tmp_path_factory.mktemp("split") / "split.csv"
    other.write_text("\n".join(moved) + "\n")
    with pytest.raises(TrainingError, match="trained on another split"):
        xcyto.train(**STUDENT, teacher=str(teacher), split_manifest=str(other),
                    out=str(tmp_path_factory.mktemp("refused")))
    with pytest.raises(TrainingError, match="MixUp"):
        xcyto.train(**STUDENT, teacher=str(teacher), mixup=0.2, out=str(tmp_path_factory.mktemp("mixup")))
    with pytest.raises(TrainingError, match="not a bundle"):
        xcyto.train(**STUDENT, teacher=str(tmp_path_factory.mktemp("empty")), out=str(tmp_path_factory.mktemp("x")))


def test_compare_gives_each_fold_its_own_teacher(tmp_path):
    from xcyto.training import compare

    settings = dict(folds=2, ensemble=False, val_fraction=0.4, image_size=32, epochs=1, batch_size=16, lr=3e-3,
                    backbone_lr_mult=1.0, num_workers=0, gallery=False, fuse=False, tta="off", data_check="off",
                    exclude="none")
    compare("synthetic:n=80,size=32,seed=0", "small_cnn", out=tmp_path / "teachers", **settings)
    compare("synthetic:n=80,size=32,seed=0", f"small_cnn[teacher={tmp_path / 'teachers'}/small_cnn/fold-{{fold}}]",
            out=tmp_path / "students", **settings)
    for k in range(2):
        config = json.loads((tmp_path / "students" / "small_cnn" / f"fold-{k}" / "settings.json").read_text())["config"]
        assert config["teacher"] == str(tmp_path / "teachers" / "small_cnn" / f"fold-{k}")
        assert (tmp_path / "students" / "small_cnn" / f"fold-{k}" / TEACHER_FILE).is_file()
