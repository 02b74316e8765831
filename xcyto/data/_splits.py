"""Stratified, group-aware splits and k-fold, their manifests, and the leakage check.

Cells of one source image (``CellSample.group``) are near-duplicates: a split that
puts them on both sides inflates test accuracy. So whole groups are assigned, and
groups whose cells have byte-identical pixels are merged first (a duplicated file
under two names is one group). Every split is checked by :func:`check_leakage`
before it is returned or loaded.

A split is saved as a manifest CSV (``cell_id, path, label, class_name, group,
split[, fold]``) so a run can be reproduced exactly; :func:`split_hash` of that file
is the provenance to record.
"""
from __future__ import annotations

import csv
import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xcyto.atomic import write_text_atomic
from xcyto.data._io import DataWarning
from xcyto.data._records import CellDataset
from xcyto.errors import DataError, LeakageError

#: ``calibration``: cells held out of training and of every choice made on validation, kept
#: for the conformal sets and the screening threshold alone (see :func:`hold_out_calibration`).
SPLIT_NAMES = ("train", "val", "test", "calibration")
MANIFEST_COLUMNS = ("cell_id", "path", "label", "class_name", "group", "split", "fold")


@dataclass(frozen=True)
class Split:
    """Sorted cell indices by split name; for k-fold also each cell's fold.

    ``folds[i]`` is the fold in which cell ``i`` is held out, -1 for cells outside
    the folds (the test set). :meth:`fold` turns fold ``k`` into train/val/test.
    """

    indices: dict[str, np.ndarray]
    folds: np.ndarray | None = None
    seed: int | None = None
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.indices.get(name, np.array([], dtype=np.int64))

    @property
    def train(self) -> np.ndarray:
        return self["train"]

    @property
    def val(self) -> np.ndarray:
        return self["val"]

    @property
    def test(self) -> np.ndarray:
        return self["test"]

    @property
    def n_folds(self) -> int:
        return 0 if self.folds is None else int(self.folds.max(initial=-1)) + 1

    def fold(self, k: int) -> "Split":
        """Fold ``k`` as a plain split: val = fold ``k``, train = the other folds, test kept."""
        if not 0 <= k < self.n_folds:
            raise DataError(f"fold {k} does not exist; this split has {self.n_folds} folds")
        in_folds = self.folds >= 0
        return Split(
            indices={"train": np.flatnonzero(in_folds & (self.folds != k)),
                     "val": np.flatnonzero(self.folds == k), "test": self.test},
            seed=self.seed,
        )

    def assignment(self, n_cells: int) -> list[str]:
        """Split name of each of ``n_cells`` cells ("" where unassigned)."""
        names = [""] * n_cells
        for name, indices in self.indices.items():
            for index in indices:
                names[index] = name
        return names


def train_val_test_split(dataset: CellDataset, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> Split:
    """Stratified group split into train/val/test with the given fractions.

    Groups are assigned whole, largest first, each to the split whose per-class
    counts are furthest below target (the idea of scikit-learn's
    StratifiedGroupKFold, with unequal sizes). Deterministic for a seed.
    """
    fractions = _check_fractions(fractions)
    names = [name for name, fraction in zip(SPLIT_NAMES, fractions) if fraction > 0]
    active = np.array([fraction for fraction in fractions if fraction > 0])
    hashes = _image_hashes(dataset)
    group_ids = effective_groups(dataset, hashes)
    _require_groups_per_class(dataset, group_ids, len(names), "train/val/test split")
    side = _allocate(group_ids, dataset.labels, len(dataset.classes), active, np.random.default_rng(seed))
    split = Split(indices={name: np.flatnonzero(side == position) for position, name in enumerate(names)}, seed=seed)
    _warn_missing_classes(dataset, split)
    check_leakage(dataset, split, hashes)
    return split


def kfold_split(dataset: CellDataset, k: int = 5, seed: int = 0, test_fraction: float = 0.0) -> Split:
    """Stratified group k-fold (scikit-learn's StratifiedGroupKFold, seeded).

    With ``test_fraction`` > 0 a test set is held out first (whole groups, stratified)
    and the folds cover the rest. Use ``split.fold(i)`` for the i-th train/val pair.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise DataError(f"k-fold needs k >= 2, got {k}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    hashes = _image_hashes(dataset)
    group_ids = effective_groups(dataset, hashes)
    labels = dataset.labels
    rng = np.random.default_rng(seed)
    in_folds = np.ones(len(dataset), dtype=bool)
    if test_fraction > 0:
        _require_groups_per_class(dataset, group_ids, 2, "test hold-out")
        side = _allocate(group_ids, labels, len(dataset.classes), np.array([1 - test_fraction, test_fraction]), rng)
        in_folds = side == 0
    fold_cells = np.flatnonzero(in_folds)
    _require_groups_per_class(dataset.subset(fold_cells), group_ids[fold_cells], k, f"{k}-fold split")
    folds = np.full(len(dataset), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" is checked above, clearly
        for fold, (_, held_out) in enumerate(splitter.split(fold_cells, labels[fold_cells], group_ids[fold_cells])):
            folds[fold_cells[held_out]] = fold
    split = Split(indices={"train": fold_cells, "test": np.flatnonzero(~in_folds)}, folds=folds, seed=seed)
    check_leakage(dataset, split, hashes)
    return split


def hold_out_calibration(dataset: CellDataset, split: Split, fraction: float, seed: int = 0) -> Split:
    """``split`` with ``fraction`` of its training cells moved to a ``calibration`` split
    (whole groups, stratified): cells no training step, early stopping, calibration or
    test-time-augmentation choice sees, so the conformal guarantee holds on them as stated."""
    if not 0 < fraction < 1:
        raise DataError(f"calibration fraction must be in (0, 1), got {fraction}")
    train = split.train
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        inner = train_val_test_split(dataset.subset(train), fractions=(1 - fraction, fraction, 0.0), seed=seed + 7919)
    notes = [note.replace("val split", "calibration split") for note in inner.notes]
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    if len(inner.val) == 0:
        raise DataError(f"too few source groups among the training cells to hold {fraction:.0%} of them out "
                        "for calibration; lower the calibration fraction")
    indices = {**split.indices, "train": np.sort(train[inner.train]), "calibration": np.sort(train[inner.val])}
    held = Split(indices=indices, folds=split.folds, seed=split.seed, notes=[*split.notes, *notes])
    check_leakage(dataset, held)
    return held


def cross_validation_fold(dataset: CellDataset, split: Split, k: int, val_fraction: float = 0.15,
                          seed: int = 0) -> Split:
    """Fold ``k`` of a k-fold ``split`` for cross-validation: test = fold ``k``, and the
    other folds divided into train and validation (whole groups, stratified).

    Unlike :meth:`Split.fold`, the held-out fold is never seen while training, early
    stopping or calibrating, so each cell is tested exactly once over the folds.
    ``val_fraction`` is the share of the training folds kept for validation.
    """
    if split.folds is None:
        raise DataError("cross_validation_fold needs a k-fold split (see kfold_split)")
    if not 0 <= k < split.n_folds:
        raise DataError(f"fold {k} does not exist; this split has {split.n_folds} folds")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rest = np.flatnonzero((split.folds >= 0) & (split.folds != k))
    inner = train_val_test_split(dataset.subset(rest), fractions=(1 - val_fraction, val_fraction, 0.0),
                                 seed=seed + k)
    if len(inner.val) == 0:
        raise DataError(f"fold {k}: the other folds have too few source groups to keep {val_fraction:.0%} of them "
                        "for validation; raise the validation share or use fewer folds")
    fold = Split(indices={"train": np.sort(rest[inner.train]), "val": np.sort(rest[inner.val]),
                          "test": np.flatnonzero(split.folds == k)}, seed=seed)
    check_leakage(dataset, fold)
    return fold


def check_leakage(dataset: CellDataset, split: Split, hashes: list[str] | None = None) -> None:
    """Raise LeakageError if a cell, a group or byte-identical pixels sit on two sides.

    Sides are train/val/test, or for k-fold each fold and the test set. ``hashes``
    (:func:`image_hash` of each cell) may be passed to avoid hashing twice.
    """
    hashes = _image_hashes(dataset) if hashes is None else hashes
    side_of = np.full(len(dataset), -1, dtype=np.int64)
    side_names = []
    for name, indices in _sides(split):
        position = len(side_names)
        side_names.append(name)
        taken = indices[side_of[indices] >= 0]
        if len(taken):
            cell = dataset[int(taken[0])].cell_id
            raise LeakageError(f"{len(taken)} cells are in two splits, e.g. {cell!r} in "
                               f"{side_names[side_of[taken[0]]]} and {name}")
        side_of[indices] = position
    assigned = np.flatnonzero(side_of >= 0)
    _raise_if_shared(dataset, assigned, side_of, side_names, [dataset[i].group for i in assigned], "group")
    _raise_if_shared(dataset, assigned, side_of, side_names, [hashes[i] for i in assigned], "byte-identical image")


def effective_groups(dataset: CellDataset, hashes: list[str] | None = None) -> np.ndarray:
    """Integer group of each cell, with groups sharing an identical image merged."""
    hashes = _image_hashes(dataset) if hashes is None else hashes
    parent: dict[str, str] = {}

    def root(group: str) -> str:
        while parent.setdefault(group, group) != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    first_group_of_hash: dict[str, str] = {}
    for sample, digest in zip(dataset.samples, hashes):
        other = first_group_of_hash.setdefault(digest, sample.group)
        parent[root(sample.group)] = root(other)
    roots = [root(sample.group) for sample in dataset.samples]
    _, ids = np.unique(np.array(roots, dtype=object).astype(str), return_inverse=True)
    return ids.astype(np.int64)


def image_hash(image: np.ndarray) -> str:
    """Hash of an image's shape and pixel bytes: equal for byte-identical pixels."""
    digest = hashlib.blake2b(repr(image.shape).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def _image_hashes(dataset: CellDataset) -> list[str]:
    return [image_hash(sample.image) for sample in dataset.samples]


def manifest_text(dataset: CellDataset, split: Split) -> str:
    """The manifest CSV of ``split`` over ``dataset`` (rows in dataset order)."""
    with_folds = split.folds is not None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS if with_folds else MANIFEST_COLUMNS[:-1])
    for index, (sample, split_name) in enumerate(zip(dataset.samples, split.assignment(len(dataset)))):
        row = [sample.cell_id, _relative_path(sample.path, dataset.root), sample.label,
               sample.class_name, sample.group, split_name]
        if with_folds:
            row.append(int(split.folds[index]) if split.folds[index] >= 0 else "")
        writer.writerow(row)
    return buffer.getvalue()


def save_split_manifest(dataset: CellDataset, split: Split, path) -> str:
    """Write the manifest CSV; return its :func:`split_hash`."""
    text = manifest_text(dataset, split)
    write_text_atomic(path, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_hash(path) -> str:
    """SHA-256 of a manifest file's bytes: two runs with the same hash used the same split."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise DataError(f"{path}: cannot read split manifest ({error.strerror or error})") from None


def manifest_cell_ids(path) -> set[str]:
    """The cell ids a split manifest lists."""
    return {row["cell_id"] for row in _read_manifest(Path(path))}


def load_split_manifest(path, dataset: CellDataset) -> Split:
    """The split a manifest describes, as indices into ``dataset`` (matched by cell_id).

    Fails if the manifest names cells the dataset lacks or gives them another class;
    dataset cells the manifest does not list are left out of every split (warned).
    """
    rows = _read_manifest(Path(path))
    index_of = {cell_id: index for index, cell_id in enumerate(dataset.cell_ids)}
    missing = [row["cell_id"] for row in rows if row["cell_id"] not in index_of]
    if missing:
        raise DataError(f"{path}: {len(missing)} of {len(rows)} cells in the manifest are not in the dataset "
                        f"(e.g. {', '.join(missing[:3])}); is it the same dataset and label scheme?")
    by_split: dict[str, list[int]] = {}
    folds = np.full(len(dataset), -1, dtype=np.int64)
    has_folds = "fold" in rows[0] if rows else False
    for row in rows:
        index = index_of[row["cell_id"]]
        sample = dataset[index]
        if row.get("class_name") and row["class_name"] != sample.class_name:
            raise DataError(f"{path}: cell {sample.cell_id!r} is {row['class_name']!r} in the manifest but "
                            f"{sample.class_name!r} in the dataset; was it made with another label scheme?")
        if row["split"]:
            by_split.setdefault(row["split"], []).append(index)
        if has_folds and row["fold"].strip():
            folds[index] = _parse_int(row["fold"], path, "fold")
    unknown = sorted(set(by_split) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"{path}: unknown split name(s) {', '.join(unknown)}; expected {', '.join(SPLIT_NAMES)}")
    unlisted = len(dataset) - len(rows)
    if unlisted > 0:
        warnings.warn(f"{path}: {unlisted} dataset cells are not in the manifest and are in no split",
                      DataWarning, stacklevel=2)
    split = Split(indices={name: np.array(sorted(by_split[name]), dtype=np.int64)
                           for name in SPLIT_NAMES if name in by_split},
                  folds=folds if (folds >= 0).any() else None)
    check_leakage(dataset, split)
    return split


def _allocate(group_ids: np.ndarray, labels: np.ndarray, n_classes: int, fractions: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Side of each cell: groups placed largest first where they cut the class deficit most."""
    n_groups = int(group_ids.max()) + 1
    group_counts = np.zeros((n_groups, n_classes))
    np.add.at(group_counts, (group_ids, labels), 1)
    targets = fractions[:, None] * group_counts.sum(axis=0)[None, :]
    scale = np.maximum(group_counts.sum(axis=0), 1.0)
    counts = np.zeros_like(targets)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-group_counts[order].sum(axis=1), kind="stable")]
    side_of_group = np.empty(n_groups, dtype=np.int64)
    for group in order:
        # Change in squared relative error of each side if the group went there.
        added = group_counts[group][None, :]
        cost = (((counts + added - targets) ** 2 - (counts - targets) ** 2) / scale**2).sum(axis=1)
        side = int(np.argmin(cost))
        side_of_group[group] = side
        counts[side] += group_counts[group]
    return side_of_group[group_ids]


def _require_groups_per_class(dataset: CellDataset, group_ids: np.ndarray, needed: int, what: str) -> None:
    labels = dataset.labels
    for label, class_name in enumerate(dataset.classes):
        n_groups = len(np.unique(group_ids[labels == label]))
        if 0 < n_groups < needed:
            raise DataError(
                f"class {class_name!r} has cells from only {n_groups} source group(s); a stratified {what} "
                f"needs at least {needed}. Use fewer splits or folds, merge or drop the class, or add data"
            )


def _warn_missing_classes(dataset: CellDataset, split: Split) -> None:
    present = set(np.unique(dataset.labels))
    for name, indices in split.indices.items():
        absent = present - set(np.unique(dataset.labels[indices]))
        if absent:
            message = (f"{name} split has no cells of class(es) "
                       f"{', '.join(dataset.classes[i] for i in sorted(absent))} (too few groups to spread)")
            split.notes.append(message)
            warnings.warn(message, DataWarning, stacklevel=3)


def _sides(split: Split) -> list[tuple[str, np.ndarray]]:
    if split.folds is None:
        return [(name, np.asarray(indices, dtype=np.int64)) for name, indices in split.indices.items()]
    sides = [(f"fold {k}", np.flatnonzero(split.folds == k)) for k in range(split.n_folds)]
    return sides + [("test", np.asarray(split.test, dtype=np.int64))]


def _raise_if_shared(dataset, assigned, side_of, side_names, keys, what: str) -> None:
    first_side: dict[str, tuple[int, int]] = {}
    clashes = []
    for index, key in zip(assigned, keys):
        side = int(side_of[index])
        seen_side, seen_index = first_side.setdefault(key, (side, int(index)))
        if seen_side != side:
            clashes.append(f"{dataset[seen_index].cell_id!r} ({side_names[seen_side]}) and "
                           f"{dataset[int(index)].cell_id!r} ({side_names[side]})")
    if clashes:
        raise LeakageError(f"{len(clashes)} cells share a {what} with a cell in another split, e.g. "
                           f"{'; '.join(clashes[:3])}. Split by group so they stay together")


def _check_fractions(fractions) -> tuple[float, float, float]:
    values = tuple(float(value) for value in fractions)
    if len(values) != 3 or min(values) < 0 or values[0] <= 0 or abs(sum(values) - 1.0) > 1e-6:
        raise DataError(f"fractions must be three non-negative numbers (train, val, test) summing to 1 "
                        f"with train > 0, got {fractions}")
    return values


def _relative_path(path: Path | None, root: Path | None) -> str:
    if path is None:
        return ""
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return Path(path).as_posix()


def _read_manifest(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [name for name in ("cell_id", "split") if name not in header]
            if missing:
                raise DataError(f"{path}: not a split manifest; missing column(s) {', '.join(missing)} "
                                f"(expected {', '.join(MANIFEST_COLUMNS)})")
            unknown = [name for name in header if name not in MANIFEST_COLUMNS]
            if unknown:
                raise DataError(f"{path}: unknown column(s) {', '.join(unknown)} in split manifest")
            rows = [{key: (value or "").strip() for key, value in row.items() if key is not None} for row in reader]
    except FileNotFoundError:
        raise DataError(f"{path}: split manifest not found") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: unreadable split manifest ({error})") from None
    if not rows:
        raise DataError(f"{path}: split manifest lists no cells")
    seen = set()
    for row in rows:
        if row["cell_id"] in seen:
            raise DataError(f"{path}: cell {row['cell_id']!r} is listed twice")
        seen.add(row["cell_id"])
    return rows


def _parse_int(text: str, path, column: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}: {column} {text!r} is not a whole number") from None
