"""Data issues where they matter: training leaves out crops with no nucleus, and explain, predict,
the audit and the demo say plainly when an image holds no nucleus."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xcyto
from xcyto.data import generate_cell
from xcyto.errors import TrainingError
from tools.dirty_herlev import drawn_background

QUICK = dict(model="small_cnn", image_size=48, epochs=1, batch_size=16, lr=3e-3, num_workers=0, seed=0,
             gallery=False)


@pytest.fixture(scope="module")
def cells_with_empty_crops(tmp_path_factory) -> Path:
    """A CSV of 60 synthetic cells of two classes and 8 crops of bare slide with debris."""
    root = tmp_path_factory.mktemp("cells")
    rng = np.random.default_rng(0)
    rows = []
    for index in range(60):
        name = ("Parabasal", "Metaplastic")[index % 2]
        Image.fromarray(generate_cell(name, rng, size=96).image).save(root / f"cell-{index}.png")
        rows.append({"path": f"cell-{index}.png", "label": name, "group": f"g{index}"})
    for index in range(8):
        Image.fromarray(drawn_background(rng, 96)[0]).save(root / f"empty-{index}.png")
        rows.append({"path": f"empty-{index}.png", "label": ("Parabasal", "Metaplastic")[index % 2],
                     "group": f"e{index}"})
    with open(root / "cells.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_training_leaves_out_crops_with_no_nucleus(cells_with_empty_crops, tmp_path, capsys):
    data = str(cells_with_empty_crops / "cells.csv")
    result = xcyto.train(data=data, out=str(tmp_path / "run"), **QUICK)
    printed = capsys.readouterr().out
    assert "data health:" in printed and "left out" in printed
    health = result.bundle.config["data_health"]
    left_out = {entry["path"] for entry in health["excluded"]}
    flagged = {row["path"] for row in csv.DictReader(open(tmp_path / "run" / "data-check" / "issues.csv"))
               if row["check"] == "no_nucleus"}
    assert left_out == flagged and left_out <= {f"empty-{i}.png" for i in range(8)} and len(left_out) >= 7
    assert all(entry["checks"] == ["no_nucleus"] for entry in health["excluded"])
    provenance = result.bundle.config["data"]
    assert provenance["n_train"] + provenance["n_val"] + provenance["n_test"] == 68 - len(left_out)
    from xcyto.card import render_card

    card = render_card(result.bundle)
    assert f"| left out | {len(left_out)} crops, exclude `no_nucleus`" in card and "| data health | data health:" in card
    # the split as drawn keeps every crop; the test cells evaluated later leave the same crops out
    with open(tmp_path / "run" / "split.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 68
    from xcyto.data import load_dataset
    from xcyto.training import cells_in_split

    everything = load_dataset(data)
    test, note = cells_in_split(result.bundle, everything, "test")
    assert not set(test.cell_ids) & left_out and len(test) == provenance["n_test"]

    kept = xcyto.train(data=data, out=str(tmp_path / "keep"), exclude="none", **QUICK)
    assert kept.bundle.config["data_health"]["excluded"] == []
    assert kept.bundle.config["data"]["n_train"] > provenance["n_train"]

    listed = tmp_path / "exclude.csv"
    listed.write_text("path\ncell-0.png\ncell-1.png\n")
    by_list = xcyto.train(data=data, out=str(tmp_path / "listed"), exclude=str(listed),
                          data_check=str(tmp_path / "run" / "data-check"), **QUICK)
    assert {e["path"] for e in by_list.bundle.config["data_health"]["excluded"]} == {"cell-0.png", "cell-1.png"}


def test_bad_exclusions_are_refused_before_any_work(tmp_path):
    with pytest.raises(TrainingError, match="unknown checks nucleus_missing"):
        xcyto.train(data="synthetic", out=str(tmp_path / "a"), exclude="nucleus_missing", **QUICK)
    with pytest.raises(TrainingError, match="exclude needs the data checks"):
        xcyto.train(data="synthetic", out=str(tmp_path / "b"), data_check="off", **QUICK)


def test_explain_predict_and_the_demo_say_no_nucleus(tiny_bundle, tmp_path):
    from xcyto.demo import _views as views
    from xcyto.training import predict_command

    rng = np.random.default_rng(3)
    empty = drawn_background(rng, 96)[0]
    cell = generate_cell("Parabasal", rng, size=96).image
    explained_empty, explained_cell = xcyto.explain([empty, cell], tiny_bundle, methods=["gradcam"])
    assert explained_empty.no_nucleus and explained_empty.data_warning == "no cell nucleus found in this image"
    assert not explained_cell.no_nucleus
    # never a measurement of a nucleus that is not there
    measured = explained_empty.morphology
    assert not measured.nucleus_found and not measured.masks.nucleus.any()
    assert np.isnan(measured.features["nc_ratio"]) and np.isnan(measured.features["nucleus_area"])
    assert not [row for row in measured.key_rows(tiny_bundle.classes) if row[0] in ("nc_ratio", "nucleus_area")]
    record = json.loads(json.dumps(explained_empty.to_dict()))
    assert record["no_nucleus"] and record["data_issues"][0]["check"] == "no_nucleus"
    assert "No cell nucleus found in this image" in views.verdict_html(explained_empty)
    assert "No cell nucleus found" not in views.verdict_html(explained_cell)
    assert "No nucleus found" in views.morphology_markdown(measured, explained_empty.predicted)
    assert "NO CELL NUCLEUS FOUND" in explained_empty.plot().texts[0].get_text()

    Image.fromarray(empty).save(tmp_path / "empty.png")
    Image.fromarray(cell).save(tmp_path / "cell.png")
    rows = predict_command(tiny_bundle.path, [tmp_path / "empty.png", tmp_path / "cell.png"], out=tmp_path / "p.csv")
    by_file = {Path(row["path"]).name: row for row in csv.DictReader(open(tmp_path / "p.csv"))}
    assert by_file["empty.png"]["data_issues"].split(";")[0] == "no_nucleus"
    assert "no_nucleus" not in by_file["cell.png"]["data_issues"]
    assert len(rows) == 2


def test_the_audit_reads_a_crop_with_no_nucleus_as_a_data_issue(tiny_bundle, tmp_path):
    from xcyto.audit import audit
    from xcyto.data import CellDataset, CellSample

    rng = np.random.default_rng(4)
    classes = tiny_bundle.classes
    samples = [CellSample(image=generate_cell(classes[i % len(classes)], rng, size=64).image, label=i % len(classes),
                          class_name=classes[i % len(classes)], cell_id=f"cell-{i}", group=f"cell-{i}")
               for i in range(20)]
    samples += [CellSample(image=drawn_background(rng, 64)[0], label=i, class_name=classes[i], cell_id=f"empty-{i}",
                           group=f"empty-{i}") for i in range(3)]
    dataset = CellDataset(samples=samples, classes=list(classes), name="with empty crops")
    result = audit(tiny_bundle, dataset, methods=["gradcam"], confidence=1.0, map_method=None)
    empty_cases = [case for case in result.cases if case.cell_id.startswith("empty")]
    flagged = {i.path for i in result.data_check.issues if i.check == "no_nucleus"}
    assert {case.cell_id for case in empty_cases} == {f"empty-{i}" for i in range(3)}  # confidence 1: all are cases
    read = [(case.kind, case.reading.split(":")[0]) for case in empty_cases if case.cell_id in flagged]
    assert read and set(read) == {("data_issue", "no nucleus in this crop")}
    assert len(flagged & {f"empty-{i}" for i in range(3)}) >= 2
    summary = result.settings["data_issues"]
    assert summary["blocking"] == len(flagged) and summary["cases"] >= len(flagged)
    assert result.metrics_without_data_issues["n"] == len(dataset) - summary["crops"]
    written = result.save(tmp_path / "audit")
    assert "read as data issues, not model errors" in written["report"].read_text()
    rows = list(csv.DictReader(open(written["cases"])))
    assert {row["cell_id"] for row in rows if row["data_issues"].startswith("no_nucleus")} == flagged


def test_a_bundle_adds_its_embeddings_to_the_duplicate_search(tiny_bundle):
    from xcyto.data.health import check
    from xcyto.data import make_dataset

    dataset = make_dataset(n=12, seed=11, size=64)
    dataset.samples.append(type(dataset.samples[0])(**{**dataset.samples[2].__dict__, "cell_id": "copy"}))
    result = check(dataset, bundle=tiny_bundle, checks=["exact_duplicate", "near_duplicate"])
    assert result.settings["bundle"] == str(tiny_bundle.path)
    assert {(result.paths[p.first], result.paths[p.second], p.kind) for p in result.pairs if p.second == 12} == {
        (dataset.samples[2].cell_id, "copy", "exact")}
