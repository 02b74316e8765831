"""Data health (``xcyto.data.check``): each check finds its planted problem and leaves clean cells alone."""
import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from xcyto.data import CellDataset, CellSample
from xcyto.data.health import check, check_image, load_check
from xcyto.data.health import BLOCKING, CHECKS
from xcyto.data._synthetic import CLASSES, generate_cell, make_dataset
from xcyto.errors import DataError
from tools.dirty_herlev import drawn_background, side_by_side

SIZE = 128


def _sample(image, label=0, name=None, group=None, classes=("A", "B")):
    name = name or f"crop-{np.random.default_rng().integers(1e9)}"
    return CellSample(image=np.ascontiguousarray(image), label=label, class_name=classes[label], cell_id=name,
                      group=group or name)


def _dataset(samples, classes=("A", "B")):
    return CellDataset(samples=list(samples), classes=list(classes), name="planted")


def _cells(n, seed=0, size=SIZE):
    """Synthetic cells of two classes with small, central nuclei (Parabasal and Metaplastic)."""
    rng = np.random.default_rng(seed)
    return [generate_cell(("Parabasal", "Metaplastic")[i % 2], rng, size=size) for i in range(n)]


def _flagged(result, name):
    return {result.paths[i.index] for i in result.issues if i.check == name}


def test_empty_crops_are_found_and_real_cells_are_not():
    rng = np.random.default_rng(1)
    cells = [_sample(cell.image, i % 2, f"cell-{i}") for i, cell in enumerate(_cells(24))]
    empty = [_sample(drawn_background(rng, SIZE)[0], i % 2, f"empty-{i}") for i in range(8)]
    result = check(_dataset(cells + empty), checks=["no_nucleus"])
    found = _flagged(result, "no_nucleus")
    assert found <= {sample.cell_id for sample in empty} and len(found) >= 7  # no cell flagged; 95 % recall measured
    issue = next(i for i in result.issues if i.check == "no_nucleus")
    assert issue.blocking and "no cell nucleus found" in issue.reason and issue.score < issue.threshold
    assert "no_nucleus" in BLOCKING


def test_a_nucleus_moved_to_the_border_or_a_corner_is_flagged():
    cells = _cells(16, seed=2)
    crops, cut, corner = [], set(), set()
    for index, cell in enumerate(cells):
        rows, cols = np.nonzero(cell.nucleus_mask)
        image = cell.image
        if index % 4 == 1:  # shift so the left border runs through the nucleus's middle
            dx = -int((cols.min() + cols.max()) / 2)
            image = _shift(image, dx, 0)
            cut.add(f"cell-{index}")
        elif index % 4 == 3:  # nucleus wholly inside, pushed to the top-left corner
            image = _shift(image, 3 - int(cols.min()), 3 - int(rows.min()))
            corner.add(f"cell-{index}")
        crops.append(_sample(image, index % 2, f"cell-{index}"))
    result = check(_dataset(crops), checks=["nucleus_cut_by_border", "nucleus_off_centre"])
    assert _flagged(result, "nucleus_cut_by_border") == cut
    assert _flagged(result, "nucleus_off_centre") == corner


def _shift(image, dx, dy):
    light = np.percentile(image.reshape(-1, 3), 98, axis=0)
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1],
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in light))


def test_two_cells_side_by_side_are_several_cells():
    cells = _cells(24, seed=3)
    singles = [_sample(cell.image, i % 2, f"single-{i}") for i, cell in enumerate(cells[:12])]
    pairs = [_sample(side_by_side([cells[12 + i].image, cells[12 + (i + 1) % 12].image], SIZE), i % 2, f"pair-{i}")
             for i in range(6)]
    result = check(_dataset(singles + pairs), checks=["several_nuclei"])
    found = _flagged(result, "several_nuclei")
    assert found <= {sample.cell_id for sample in pairs} and len(found) >= 5
    assert "several" in next(i.reason for i in result.issues if i.check == "several_nuclei")


def test_a_second_look_beyond_the_main_nucleus_finds_the_neighbour(herlev_dataset):
    """The segmenter, taught on one-cell crops, marks one nucleus of two cells side by side; the
    part of the crop beyond it, segmented on its own, shows the other."""
    from xcyto.data.health._cells import find_nuclei
    from xcyto.data.health._registry import other_nuclei

    cells = [herlev_dataset[i].image for i in range(0, len(herlev_dataset), 37)][:24]
    pairs = [side_by_side([cells[i], cells[i + 12]], 160) for i in range(12)]
    once = find_nuclei(pairs, second_look=False)
    twice = find_nuclei(pairs)
    assert all(not finding.beside for finding in once)
    seen_once = sum(bool(other_nuclei(f.nuclei, f.main)) for f in once)
    seen_twice = sum(bool(other_nuclei(f.nuclei + f.beside, f.main)) for f in twice)
    assert seen_twice >= seen_once + 2
    for finding in twice:  # the second look adds nuclei beside the main one, never in its place
        assert finding.main is None or all(abs(n.centre[1] - finding.main.centre[1]) > finding.main.extent[1]
                                           for n in finding.beside)


def test_exposure_focus_and_size_problems():
    cells = _cells(30, seed=4)
    crops = [_sample(cell.image, i % 2, f"cell-{i}") for i, cell in enumerate(cells[:20])]
    planted = {
        "too_dark": [(cell.image * 0.2).astype(np.uint8) for cell in cells[20:22]],
        "too_light": [(cell.image * 0.12 + 255 * 0.88).astype(np.uint8) for cell in cells[22:24]],
        "out_of_focus": [cv2.GaussianBlur(cell.image, (0, 0), 4.0) for cell in cells[24:26]],
        "odd_size": [cv2.resize(cell.image, (24, 24), interpolation=cv2.INTER_AREA) for cell in cells[26:28]],
        "odd_aspect": [cell.image[48:80] for cell in cells[28:30]],
    }
    for name, images in planted.items():
        crops += [_sample(image, 0, f"{name}-{i}") for i, image in enumerate(images)]
    result = check(_dataset(crops), checks=list(planted))
    for name in planted:
        assert _flagged(result, name) == {f"{name}-0", f"{name}-1"}, name


def test_flipped_rescaled_reencoded_copies_are_near_duplicates():
    cells = _cells(20, seed=5)
    crops = [_sample(cell.image, i % 2, f"cell-{i}") for i, cell in enumerate(cells)]
    copy = cv2.resize(np.rot90(cells[3].image)[:, ::-1], (150, 150), interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(copy)).save(buffer, format="JPEG", quality=70)
    reencoded = np.asarray(Image.open(buffer).convert("RGB"))
    crops += [_sample(reencoded, 1, "near-copy"), _sample(cells[7].image.copy(), 1, "exact-copy")]
    result = check(_dataset(crops), checks=["near_duplicate", "exact_duplicate"])
    assert _flagged(result, "near_duplicate") == {"near-copy"}
    assert _flagged(result, "exact_duplicate") == {"exact-copy"}
    near = next(i for i in result.issues if i.check == "near_duplicate")
    assert "cell-3" in near.reason
    # a split that puts the copy on another side than its original is leakage the groups cannot see
    index = {path: i for i, path in enumerate(result.paths)}
    leaks = result.leaks({index["cell-3"]: "train", index["near-copy"]: "test", index["cell-7"]: "train",
                          index["exact-copy"]: "train"})
    assert [(result.paths[pair.first], result.paths[pair.second]) for pair, _, _ in leaks] == [("cell-3", "near-copy")]


def test_a_cell_far_from_its_class_morphology_is_found():
    # Parabasal: large nucleus for its cell; Superficial-Intermediate: a small pyknotic one
    dataset = make_dataset(n=60, seed=6, size=SIZE, classes=["Parabasal", "Superficial-Intermediate"])
    parabasal = [i for i, s in enumerate(dataset.samples) if s.class_name == "Parabasal"][:3]
    for i in parabasal:  # three parabasal cells labelled superficial
        dataset.samples[i].label, dataset.samples[i].class_name = 1, "Superficial-Intermediate"
    result = check(dataset, checks=["far_from_class"])
    found = {result.paths.index(path) for path in _flagged(result, "far_from_class")}
    assert set(parabasal) <= found and len(found - set(parabasal)) <= 1
    assert "N/C ratio" in next(i.reason for i in result.issues if i.check == "far_from_class")


def test_outputs_are_written_whole_and_read_back(tmp_path):
    rng = np.random.default_rng(7)
    cells = [_sample(cell.image, i % 2, f"cell-{i}") for i, cell in enumerate(_cells(12, seed=7))]
    cells.append(_sample(drawn_background(rng, SIZE)[0], 0, "empty"))
    result = check(_dataset(cells))
    result.save(tmp_path / "out", images=[sample.image for sample in cells])
    with open(tmp_path / "out" / "issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "check", "score", "threshold", "reason"]
    assert [(r["path"], r["check"]) for r in rows] == [(i.path, i.check) for i in result.issues]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"] == result.counts() and summary["counts"]["no_nucleus"] == 1
    assert summary["crops"] == 13 and set(summary["counts"]) == set(CHECKS)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/jpeg;base64," in page and "http://" not in page and "https://" not in page
    assert "id='no_nucleus'" in page
    again = load_check(tmp_path / "out")
    assert again.paths == result.paths and [(i.path, i.check) for i in again.issues] == [
        (i.path, i.check) for i in result.issues]
    np.testing.assert_allclose(again.scores["out_of_focus"], result.scores["out_of_focus"], rtol=1e-5)


def test_no_issues_still_writes_headers(tmp_path):
    result = check(_dataset([_sample(cell.image, i % 2, f"cell-{i}") for i, cell in enumerate(_cells(4))]),
                   checks=["too_dark"])
    result.save(tmp_path / "clean", report=False)
    assert (tmp_path / "clean" / "issues.csv").read_text().strip() == "path,check,score,threshold,reason"
    assert "no issues" in result.health_line()


def test_one_image_and_bad_requests():
    rng = np.random.default_rng(8)
    issues = check_image(drawn_background(rng, SIZE)[0])
    assert issues[0].check == "no_nucleus"
    assert not [i for i in check_image(_cells(1, seed=8)[0].image) if i.check == "no_nucleus"]
    with pytest.raises(DataError, match="unknown data checks: blurry"):
        check(_dataset([_sample(_cells(1)[0].image)]), checks=["blurry"])
    with pytest.raises(DataError, match="no crops to check"):
        check(_dataset([]))


def test_the_data_check_command_writes_its_folder(tmp_path, capsys):
    from xcyto.cli import main

    rng = np.random.default_rng(9)
    root = tmp_path / "cells"
    for index, cell in enumerate(_cells(10, seed=9)):
        folder = root / ("A" if index % 2 else "B")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(cell.image).save(folder / f"cell-{index}.png")
    Image.fromarray(drawn_background(rng, SIZE)[0]).save(root / "A" / "empty.png")
    assert main(["data", "check", str(root), "--out", str(tmp_path / "check")]) == 0
    printed = capsys.readouterr().out
    assert "no_nucleus" in printed and "1 no nucleus" in printed
    rows = list(csv.DictReader(open(tmp_path / "check" / "issues.csv", newline="")))
    assert {"A/empty.png"} == {r["path"] for r in rows if r["check"] == "no_nucleus"}
    assert main(["data", "summary", str(root)]) == 0
    assert "data health: " in capsys.readouterr().out


def test_planted_herlev_problems_are_found(herlev_dataset, tmp_path):
    """The small version of the README's table: a dirty copy of 120 Herlev cells with a few of
    each planted kind (tools/dirty_herlev.py), scored as the full one is."""
    from tools.dirty_herlev import plant, score
    from xcyto.data import load_dataset

    subset = herlev_dataset.subset(range(0, len(herlev_dataset), 7))  # 131 cells of every class
    counts = {"background": 12, "off_centre": 6, "cut_by_border": 6, "several_cells": 6, "blurred": 6, "dark": 3,
              "light": 3, "odd_size": 3, "odd_aspect": 3, "exact_duplicate": 4, "near_duplicate": 6,
              "far_from_class": 0}
    rows = plant(subset, tmp_path / "dirty", seed=0, counts=counts, rare_class=None)
    result = check(load_dataset(tmp_path / "dirty" / "cells.csv"))
    table = {row["check"]: row for row in score(result, rows, tmp_path / "dirty")}
    for name in ("no_nucleus", "nucleus_cut_by_border", "out_of_focus", "too_dark", "too_light", "odd_size",
                 "odd_aspect", "exact_duplicate", "near_duplicate"):
        assert table[name]["recall"] >= 0.8, (name, table[name])
        assert table[name]["precision"] >= 0.8, (name, table[name])
    assert sum(row["clean_flagged"] for row in table.values() if row["check"] == "no_nucleus") <= 1


def test_embeddings_add_duplicates_the_pixels_miss():
    from xcyto.data.health._duplicates import MIN_EMBEDDING_COSINE, find_pairs

    rng = np.random.default_rng(10)
    embeddings = rng.normal(size=(5, 16))
    embeddings[4] = embeddings[1] * 3.0 + 1e-4 * rng.normal(size=16)  # same direction: the same cell to the model
    hashes = rng.integers(0, 2**63, size=(5, 8), dtype=np.int64).astype(np.uint64)  # pixels far apart
    thumbs = np.zeros((5, 8, 4), np.float32)
    pairs = find_pairs([f"md5-{i}" for i in range(5)], hashes, thumbs, embeddings)
    assert [(p.first, p.second, p.kind) for p in pairs] == [(1, 4, "embedding")]
    assert pairs[0].similarity >= MIN_EMBEDDING_COSINE
    assert find_pairs([f"md5-{i}" for i in range(5)], hashes, thumbs) == []
