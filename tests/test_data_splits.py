"""Group-aware stratified splits, k-fold, manifests and the leakage check."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from fixtures import cell_image
from xcyto.data import (CellDataset, CellSample, DataWarning, Split, check_leakage, hold_out_calibration, kfold_split,
                        load_split_manifest, save_split_manifest, split_hash, train_val_test_split)
from xcyto.errors import DataError, LeakageError


def make_dataset(groups_per_class=(12, 10, 8), cells_per_group=(1, 4), seed=0) -> CellDataset:
    """Synthetic in-memory cells: each class has several groups of 1-4 distinct cells."""
    rng = np.random.default_rng(seed)
    classes = [f"class_{i}" for i in range(len(groups_per_class))]
    samples = []
    for label, n_groups in enumerate(groups_per_class):
        for group in range(n_groups):
            for cell in range(rng.integers(*cells_per_group, endpoint=True)):
                samples.append(CellSample(image=cell_image(8, rng), label=label, class_name=classes[label],
                                          cell_id=f"{classes[label]}/g{group}/c{cell}", group=f"{label}-{group}"))
    return CellDataset(samples=samples, classes=classes, name="toy")


def _groups_by_side(dataset, split):
    return {name: set(dataset.groups[indices]) for name, indices in split.indices.items()}


def test_split_is_deterministic_and_seed_dependent():
    dataset = make_dataset()
    first, again, other = (train_val_test_split(dataset, seed=seed) for seed in (0, 0, 1))
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(first[name], again[name])
    assert any(not np.array_equal(first[name], other[name]) for name in ("train", "val", "test"))


def test_split_keeps_groups_together_covers_all_cells_and_is_stratified():
    dataset = make_dataset(groups_per_class=(40, 30, 20))
    split = train_val_test_split(dataset, seed=3)
    sides = _groups_by_side(dataset, split)
    assert not (sides["train"] & sides["val"] or sides["train"] & sides["test"] or sides["val"] & sides["test"])
    everything = np.concatenate([split.train, split.val, split.test])
    assert sorted(everything) == list(range(len(dataset)))
    for label in range(3):
        in_class = (dataset.labels == label).sum()
        train_share = (dataset.labels[split.train] == label).sum() / in_class
        assert 0.6 < train_share < 0.8
        assert (dataset.labels[split.val] == label).any() and (dataset.labels[split.test] == label).any()


def test_split_fractions_are_respected():
    dataset = make_dataset(groups_per_class=(60, 60), cells_per_group=(1, 2))
    split = train_val_test_split(dataset, fractions=(0.5, 0.25, 0.25), seed=0)
    shares = np.array([len(split.train), len(split.val), len(split.test)]) / len(dataset)
    np.testing.assert_allclose(shares, [0.5, 0.25, 0.25], atol=0.04)
    with pytest.raises(DataError, match="summing to 1"):
        train_val_test_split(dataset, fractions=(0.5, 0.2, 0.2))


def test_too_few_groups_fails_clearly():
    dataset = make_dataset(groups_per_class=(10, 2))
    with pytest.raises(DataError, match="'class_1' has cells from only 2 source group"):
        train_val_test_split(dataset)
    with pytest.raises(DataError, match="5-fold"):
        kfold_split(make_dataset(groups_per_class=(10, 4)), k=5)


def test_kfold_assigns_every_cell_once_and_keeps_groups():
    dataset = make_dataset(groups_per_class=(15, 15, 10))
    split = kfold_split(dataset, k=5, seed=0)
    assert split.n_folds == 5 and (split.folds >= 0).all() and len(split.test) == 0
    for k in range(5):
        fold = split.fold(k)
        assert not set(dataset.groups[fold.train]) & set(dataset.groups[fold.val])
        assert len(fold.train) + len(fold.val) == len(dataset)
    np.testing.assert_array_equal(split.folds, kfold_split(dataset, k=5, seed=0).folds)
    assert not np.array_equal(split.folds, kfold_split(dataset, k=5, seed=1).folds)


def test_kfold_with_held_out_test():
    dataset = make_dataset(groups_per_class=(20, 20, 20))
    split = kfold_split(dataset, k=3, seed=0, test_fraction=0.2)
    assert (split.folds[split.test] == -1).all() and (split.folds[split.train] >= 0).all()
    assert not set(dataset.groups[split.test]) & set(dataset.groups[split.train])
    assert 0.1 < len(split.test) / len(dataset) < 0.3


def test_leakage_check_catches_group_overlap():
    dataset = make_dataset()
    two_of_one_group = np.flatnonzero(dataset.groups == dataset.groups[0])
    if len(two_of_one_group) < 2:
        dataset.samples[1].group = dataset.samples[0].group
        two_of_one_group = np.array([0, 1])
    split = Split(indices={"train": two_of_one_group[:1], "test": two_of_one_group[1:2]})
    with pytest.raises(LeakageError, match="share a group"):
        check_leakage(dataset, split)


def test_leakage_check_catches_duplicate_images_across_groups():
    dataset = make_dataset()
    split = train_val_test_split(dataset, seed=0)
    check_leakage(dataset, split)
    # Plant a byte-identical copy of a training cell's image in a test cell of another group.
    train_cell, test_cell = dataset[int(split.train[0])], dataset[int(split.test[0])]
    assert train_cell.group != test_cell.group
    test_cell.image = train_cell.image.copy()
    with pytest.raises(LeakageError, match="byte-identical image"):
        check_leakage(dataset, split)
    # The split functions merge such groups, so a fresh split is clean.
    fresh = train_val_test_split(dataset, seed=0)
    side = {name: set(indices.tolist()) for name, indices in fresh.indices.items()}
    index_train, index_test = int(split.train[0]), int(split.test[0])
    assert [name for name in side if index_train in side[name]] == [name for name in side if index_test in side[name]]


def test_leakage_check_catches_a_cell_in_two_splits():
    dataset = make_dataset()
    with pytest.raises(LeakageError, match="in two splits"):
        check_leakage(dataset, Split(indices={"train": np.array([0, 1]), "val": np.array([1])}))


def test_manifest_round_trip_and_hash(tmp_path):
    dataset = make_dataset()
    split = train_val_test_split(dataset, seed=0)
    digest = save_split_manifest(dataset, split, tmp_path / "split.csv")
    assert digest == split_hash(tmp_path / "split.csv") and len(digest) == 64
    header = (tmp_path / "split.csv").read_text().splitlines()[0]
    assert header == "cell_id,path,label,class_name,group,split"
    loaded = load_split_manifest(tmp_path / "split.csv", dataset)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(loaded[name], split[name])
    # Same split -> same bytes -> same hash; another seed -> another hash.
    assert save_split_manifest(dataset, split, tmp_path / "again.csv") == digest
    assert save_split_manifest(dataset, train_val_test_split(dataset, seed=1), tmp_path / "b.csv") != digest


def test_calibration_cells_come_out_of_training_as_whole_groups_and_survive_the_manifest(tmp_path):
    dataset = make_dataset(groups_per_class=(40, 30, 20))
    split = train_val_test_split(dataset, seed=0)
    held = hold_out_calibration(dataset, split, 0.2, seed=0)
    np.testing.assert_array_equal(held.val, split.val)
    np.testing.assert_array_equal(held.test, split.test)
    np.testing.assert_array_equal(np.sort(np.concatenate([held.train, held["calibration"]])), split.train)
    sides = _groups_by_side(dataset, held)
    assert not sides["calibration"] & (sides["train"] | sides["val"] | sides["test"])
    share = len(held["calibration"]) / len(split.train)
    assert 0.12 < share < 0.28
    for label in range(3):  # stratified: every class has calibration cells
        assert (dataset.labels[held["calibration"]] == label).any()
    save_split_manifest(dataset, held, tmp_path / "split.csv")
    np.testing.assert_array_equal(load_split_manifest(tmp_path / "split.csv", dataset)["calibration"], held["calibration"])
    with pytest.raises(DataError, match="calibration fraction"):
        hold_out_calibration(dataset, split, 1.5)


def test_manifest_maps_by_cell_id_not_position(tmp_path):
    dataset = make_dataset()
    split = train_val_test_split(dataset, seed=0)
    save_split_manifest(dataset, split, tmp_path / "split.csv")
    reordered = CellDataset(samples=dataset.samples[::-1], classes=dataset.classes)
    loaded = load_split_manifest(tmp_path / "split.csv", reordered)
    assert sorted(reordered.cell_ids[i] for i in loaded.test) == sorted(dataset.cell_ids[i] for i in split.test)


def test_kfold_manifest_round_trip(tmp_path):
    dataset = make_dataset(groups_per_class=(15, 15, 10))
    split = kfold_split(dataset, k=3, seed=0, test_fraction=0.2)
    save_split_manifest(dataset, split, tmp_path / "cv.csv")
    loaded = load_split_manifest(tmp_path / "cv.csv", dataset)
    np.testing.assert_array_equal(loaded.folds, split.folds)
    np.testing.assert_array_equal(loaded.test, split.test)
    np.testing.assert_array_equal(loaded.fold(1).val, split.fold(1).val)


def test_manifest_with_cells_missing_from_dataset_fails(tmp_path):
    dataset = make_dataset()
    split = train_val_test_split(dataset, seed=0)
    save_split_manifest(dataset, split, tmp_path / "split.csv")
    smaller = dataset.subset(range(5, len(dataset)))
    with pytest.raises(DataError, match="5 of .* cells in the manifest are not in the dataset"):
        load_split_manifest(tmp_path / "split.csv", smaller)
    with pytest.raises(DataError, match="not found"):
        load_split_manifest(tmp_path / "nothing.csv", dataset)
    (tmp_path / "wrong.csv").write_text("path,label\na.png,x\n")
    with pytest.raises(DataError, match="not a split manifest"):
        load_split_manifest(tmp_path / "wrong.csv", dataset)


def test_manifest_leaves_unlisted_cells_out_with_a_warning(tmp_path):
    dataset = make_dataset()
    split = train_val_test_split(dataset.subset(range(0, len(dataset) - 3)), seed=0)
    save_split_manifest(dataset.subset(range(0, len(dataset) - 3)), split, tmp_path / "split.csv")
    with pytest.warns(DataWarning, match="3 dataset cells are not in the manifest"):
        loaded = load_split_manifest(tmp_path / "split.csv", dataset)
    assert sum(len(indices) for indices in loaded.indices.values()) == len(dataset) - 3


def test_real_herlev_split_keeps_source_images_together(herlev_dataset, tmp_path):
    split = train_val_test_split(herlev_dataset, seed=0)
    sides = _groups_by_side(herlev_dataset, split)
    assert not (sides["train"] & sides["test"] or sides["train"] & sides["val"] or sides["val"] & sides["test"])
    assert 0.65 < len(split.train) / len(herlev_dataset) < 0.75
    digest = save_split_manifest(herlev_dataset, split, tmp_path / "herlev.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert save_split_manifest(herlev_dataset, train_val_test_split(herlev_dataset, seed=0),
                                   tmp_path / "again.csv") == digest
