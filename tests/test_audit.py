"""The audit: signals, ranking of planted label errors, the report files, the CLI, the browser."""
from __future__ import annotations

import csv
import dataclasses
import re

import numpy as np
import pytest
import torch

import xcyto
from xcyto.audit import audit
from xcyto.audit import _scores as S
from xcyto.cli import main as cli_main
from xcyto.data import load_dataset
from xcyto.errors import DataError

FAST = {"steps": 4}


def with_labels(dataset, changes: dict[int, int]):
    """A copy of ``dataset`` with the labels of some cells changed (planted label errors)."""
    samples = list(dataset.samples)
    for index, label in changes.items():
        samples[index] = dataclasses.replace(samples[index], label=label, class_name=dataset.classes[label])
    return dataclasses.replace(dataset, samples=samples)


@pytest.fixture(scope="module")
def demo_bundle():
    from xcyto.explain import default_bundle_path

    path = default_bundle_path()
    assert (path / "bundle.json").is_file(), f"no shipped demo bundle at {path} (build it with 'make artifacts')"
    return xcyto.load(path)


@pytest.fixture(scope="module")
def planted(demo_bundle):
    """Held-out synthetic cells at the demo bundle's size, three of them given a wrong label."""
    size = demo_bundle.config["training"]["synthetic_size"]
    cells = load_dataset(f"synthetic:n=60,size={size},seed=11")
    wrong = {}
    for index in (3, 17, 42):
        true = int(cells.labels[index])
        wrong[index] = (true + 2) % len(cells.classes)
    return cells, with_labels(cells, wrong), wrong


@pytest.fixture(scope="module")
def planted_audit(demo_bundle, planted):
    _, relabelled, _ = planted
    return audit(demo_bundle, relabelled, map_method="pca", **FAST)


# -- signals ----------------------------------------------------------------------------------------
def test_label_issue_score_is_one_minus_the_given_labels_probability_and_flags_confident_others():
    probabilities = np.array([[0.9, 0.05, 0.05]] * 6 + [[0.05, 0.9, 0.05]] * 6 + [[0.05, 0.05, 0.9]] * 6)
    labels = np.repeat([0, 1, 2], 6)
    labels[2] = 1  # looks like class 0, labelled 1
    score, flags, thresholds = S.label_issue_scores(labels, probabilities)
    np.testing.assert_allclose(score, 1 - probabilities[np.arange(18), labels])
    assert flags[2] and flags.sum() == 1
    np.testing.assert_allclose(thresholds[0], 0.9)


def test_label_issue_scores_cope_with_classes_absent_from_the_split():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    score, flags, thresholds = S.label_issue_scores(np.array([0, 1, 0, 1]), probabilities)
    assert score.shape == (4,) and flags.dtype == bool and np.isnan(thresholds[2])


def test_neighbour_disagreement_and_map_agreement():
    np.testing.assert_allclose(S.neighbour_disagreement(np.array([[0, 0, 1, 2], [1, 1, 1, 1]]), np.array([0, 1])),
                               [0.5, 0.0])
    rng = np.random.default_rng(0)
    maps = rng.random((3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(S.map_agreement(maps, maps), 1.0, atol=1e-5)
    np.testing.assert_allclose(S.map_agreement(maps, -maps), -1.0, atol=1e-5)


def test_reading_names_the_kind_of_case():
    common = dict(given="a", predicted="b", runner_up="c", p_given=0.01, p_predicted=0.97, label_error=True,
                  atypical=False)
    assert S.classify_case(**common, neighbour_classes=["b"] * 8 + ["a"] * 2)[0] == "label_error"
    kind, reading = S.classify_case(**common, neighbour_classes=["b"] * 8 + ["a"] * 2, reading_precision=0.31)
    assert kind == "disagreement" and "model and label disagree" in reading and "31%" in reading
    kind, reading = S.classify_case(**common, neighbour_classes=["b"] * 8, reading_precision=0.9)
    assert kind == "label_error" and "90%" in reading
    assert S.classify_case(**{**common, "label_error": False}, neighbour_classes=["a"] * 8 + ["b"] * 2)[0] == "confusion"
    assert S.classify_case(**{**common, "label_error": False, "atypical": True},
                           neighbour_classes=["a"] * 10)[0] == "atypical"
    kind, reading = S.classify_case(**{**common, "label_error": False, "predicted": "a", "p_predicted": 0.5},
                                    neighbour_classes=[])
    assert kind == "doubtful" and "runner-up c" in reading


def test_label_error_rule_needs_the_model_the_flag_and_the_neighbours():
    probabilities = np.array([[0.97, 0.02, 0.01], [0.97, 0.02, 0.01], [0.5, 0.45, 0.05], [0.97, 0.02, 0.01]])
    labels = np.array([1, 1, 1, 0])
    flags = np.array([False, False, False, False])  # p_given 0.02 < 0.05 makes cells 0 and 1 implausible
    neighbours = np.array([[0] * 6 + [1] * 4, [1] * 6 + [0] * 4, [0] * 10, [0] * 10])
    assert S.label_error_readings(labels, probabilities, neighbours, flags).tolist() == [True, False, False, False]
    # without a gallery, cleanlab's flag alone decides
    no_neighbours = np.zeros((4, 0), int)
    assert S.label_error_readings(labels, probabilities, no_neighbours, flags).tolist() == [False] * 4
    assert S.label_error_readings(labels, probabilities, no_neighbours, np.array([1, 0, 1, 0], bool)).tolist() == \
        [True, False, True, False]


def test_neighbours_in_class_are_the_most_similar_cells_of_that_class(demo_bundle):
    from xcyto.embedding import load_gallery

    gallery = load_gallery(demo_bundle)
    queries = torch.nn.functional.normalize(torch.from_numpy(np.asarray(gallery.embeddings[:4], np.float32)), dim=1)
    wanted = [0, 1, 2, 1]
    found = gallery.neighbours_in_class(queries, wanted, k=3)
    matrix = torch.nn.functional.normalize(torch.from_numpy(np.asarray(gallery.embeddings, np.float32)), dim=1)
    for query, label, neighbours in zip(queries, wanted, found):
        members = np.flatnonzero(np.asarray(gallery.labels) == label)
        similarities = (matrix[members] @ query).numpy()
        best = [gallery.cell_ids[i] for i in members[np.argsort(-similarities)[:3]]]
        assert [n.cell_id for n in neighbours] == best
        assert all(n.label == label for n in neighbours)


def test_search_class_reads_only_that_class_and_copes_with_an_empty_one():
    from xcyto.embedding import NeighbourIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.arange(40) % 3  # class 3 has no cells
    index = NeighbourIndex(vectors, labels, n_classes=4)
    queries = torch.from_numpy(vectors[:3])
    found = index.search_class(queries, [1, 2, 3], k=5)
    for (rows, similarities), label, query in zip(found[:2], [1, 2], vectors[:3]):
        members = np.flatnonzero(labels == label)
        expected = members[np.argsort(-(vectors[members] @ query))[:5]]
        assert rows == expected.tolist() and similarities == sorted(similarities, reverse=True)
    assert found[2] == ([], [])


# -- the audit ------------------------------------------------------------------------------------
def test_planted_label_errors_rank_first(planted_audit, planted):
    _, relabelled, wrong = planted
    planted_ids = {relabelled.samples[i].cell_id for i in wrong}
    top = [case.cell_id for case in planted_audit.cases[:len(wrong)]]
    assert set(top) == planted_ids, [(c.rank, c.cell_id, round(c.suspicion, 3)) for c in planted_audit.cases]
    for case in planted_audit.cases[:len(wrong)]:
        assert case.kind == "label_error" and case.misclassified
        assert case.given in case.reading and case.predicted in case.reading
        assert case.signals["label_issue"] > 0.5 and case.signals["neighbour_disagreement"] > 0.5
    assert [c.rank for c in planted_audit.cases] == list(range(1, len(planted_audit.cases) + 1))
    suspicion = [c.suspicion for c in planted_audit.cases]
    assert suspicion == sorted(suspicion, reverse=True)


def test_each_case_has_maps_for_both_classes_and_neighbours_of_both(planted_audit):
    case = planted_audit.cases[0]
    assert case.other == case.given  # misclassified: the maps explain the predicted and the given class
    # every method for the predicted class; the CAMs (not the costly IG) for the given one
    assert set(case.overlays) == {("gradcam", case.predicted), ("integrated_gradients", case.predicted),
                                  ("gradcam", case.given)}
    size = case.image.shape[0]
    for overlay in case.overlays.values():
        assert overlay.shape == (size, size, 3) and overlay.dtype == np.uint8
    assert set(case.neighbours) == {case.predicted, case.given}
    for class_name, found in case.neighbours.items():
        assert len(found) == 3 and all(n.class_name == class_name for n in found)
    assert -1e-6 <= case.signals["method_disagreement"] <= 1 + 1e-6


def test_clean_labels_give_no_label_errors(demo_bundle, planted):
    cells, _, _ = planted
    result = audit(demo_bundle, cells, map_method=None, methods="gradcam", confidence=0.0)
    assert not any(case.kind == "label_error" for case in result.cases)
    assert len(result.cases) == int((result.predictions != result.labels).sum())


def test_saved_audit_has_report_csvs_and_settings(planted_audit, tmp_path):
    written = planted_audit.save(tmp_path / "audit")
    with open(written["cases"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(planted_audit.cases)
    for column in ("rank", "cell_id", "given", "predicted", "confidence", "p_given", "suspicion", "label_issue",
                   "label_issue_flag", "neighbour_disagreement", "atypicality", "atypicality_percentile",
                   "method_disagreement", "kind", "reading"):
        assert column in rows[0], column
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    with open(written["cells"], newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(planted_audit.cell_ids)
    page = written["report"].read_text()
    assert page.count('<article class="card') == len(planted_audit.cases)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    assert 'id="pair-filter"' in page and planted_audit.cases[0].cell_id in page
    import json

    summary = json.loads(written["summary"].read_text())
    assert summary["settings"]["bundle_sha256"] == planted_audit.settings["bundle_sha256"]
    assert summary["settings"]["method_options"] == FAST
    assert {p.name for p in written["figures"].iterdir()} >= {"confusion_matrix.png", "map.png", "signals.png"}
    assert len(list(written["images"].glob("0001_*.png"))) >= 5
    check = summary["readings"]["label_error"]
    assert check == pytest.approx(planted_audit.readings["label_error"])
    assert f"estimated precision {check['precision']:.2f}" in page
    ig_checks = [passed for case in planted_audit.cases for (method, _), (passed, _) in case.checks.items()
                 if method == "integrated_gradients"]
    assert len(ig_checks) == len(planted_audit.cases)  # the predicted class of every case
    assert f"added up within tolerance in {sum(ig_checks)} of {len(ig_checks)} maps" in page
    assert page.count('<span class="check') == sum(passed is not None for case in planted_audit.cases
                                                   for passed, _ in case.checks.values())


def _neighbour_labels(bundle, cells, k=10):
    from xcyto.embedding import embed_cells, load_gallery

    embeddings = embed_cells(bundle, cells.samples)
    found = load_gallery(bundle).lookup(torch.from_numpy(embeddings), k=k).neighbours
    return np.array([[neighbour.label for neighbour in row] for row in found])


@pytest.fixture(scope="module")
def weak_bundle(tmp_path_factory):
    """A small CNN trained for two short epochs: right on about half the synthetic cells."""
    from tests.tiny import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("weak"), epochs=2)


def test_an_audit_without_cases_still_writes_the_header_of_cases_csv(planted_audit, tmp_path):
    import dataclasses

    import pandas as pd

    empty = dataclasses.replace(planted_audit, cases=[])
    written = empty.save(tmp_path / "audit")
    frame = pd.read_csv(written["cases"])
    assert len(frame) == 0
    full = pd.read_csv(planted_audit.save(tmp_path / "full")["cases"])
    assert list(frame.columns) == list(full.columns) == list(planted_audit.to_frame().columns)
    assert list(empty.to_frame().columns) == list(frame.columns)


@pytest.mark.parametrize("model", ["good", "weak"])
def test_planted_flip_estimate_of_precision_matches_the_truth(model, demo_bundle, weak_bundle):
    """The audit's estimate (its own flips, drawn from the confusion matrix) against the real
    precision of "likely label error" when 5 % of clean cells get a wrong label (flips drawn
    uniformly, other seeds): close for a good and for a weak model, and low for the weak one."""
    bundle = demo_bundle if model == "good" else weak_bundle
    size = bundle.config["training"]["synthetic_size"]
    cells = load_dataset(f"synthetic:n=300,size={size},seed=21")
    result = audit(bundle, cells, max_cases=0, map_method=None)
    estimate = result.readings["label_error"]
    labels, neighbours = np.asarray(cells.labels), _neighbour_labels(bundle, cells)
    precisions, recalls = [], []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        planted = rng.choice(len(labels), 15, replace=False)
        given = labels.copy()
        given[planted] = (labels[planted] + rng.integers(1, len(cells.classes), len(planted))) % len(cells.classes)
        _, flags, _ = S.label_issue_scores(given, result.probabilities)
        read = S.label_error_readings(given, result.probabilities, neighbours, flags)
        precisions.append(read[planted].sum() / max(read.sum(), 1))
        recalls.append(read[planted].mean())
    assert estimate["precision"] == pytest.approx(np.mean(precisions), abs=0.2)
    assert estimate["recall"] == pytest.approx(np.mean(recalls), abs=0.2)
    if model == "good":
        assert estimate["precision"] > 0.9
    else:
        assert result.metrics["accuracy"] < 0.75 and estimate["precision"] < S.MIN_READING_PRECISION
        disagreeing = audit(bundle, cells, methods="gradcam", map_method=None, confidence=0.0)
        assert not any(case.kind == "label_error" for case in disagreeing.cases)
        assert {case.cell_id for case in disagreeing.cases if case.kind == "disagreement"} == \
            {cells.cell_ids[i] for i in np.flatnonzero(disagreeing.label_errors)}


def test_audit_refuses_data_with_other_classes(demo_bundle):
    cells = load_dataset("synthetic:n=10,size=32,seed=0")
    other = dataclasses.replace(cells, classes=[f"x{i}" for i in range(len(cells.classes))])
    with pytest.raises(DataError, match="differ from the bundle"):
        audit(demo_bundle, other)


# -- command line ---------------------------------------------------------------------------------
def test_cli_audit_writes_a_report(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "report"
    code = cli_main(["audit", "--bundle", str(tiny_bundle.path), "--data", "synthetic", "--split", "test",
                     "--steps", "4", "--map", "pca", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "cases" in printed and (out / "report.html").is_file() and (out / "cases.csv").is_file()


def test_cli_audit_bad_data_is_one_clear_line(tiny_bundle, tmp_path, capsys):
    code = cli_main(["audit", "--bundle", str(tiny_bundle.path), "--data", str(tmp_path / "missing"),
                     "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("xcyto: error:") and "Traceback" not in error
    assert not (tmp_path / "out").exists()


# -- in a browser -----------------------------------------------------------------------------------
def test_report_in_chromium_loads_every_image_and_filters_by_class_pair(planted_audit, tmp_path):
    import playwright.sync_api  # noqa: F401  (the dev extra: a missing one is an error, not a skip)

    from conftest import require_chromium
    from tools.audit_browser import check_report

    require_chromium()
    written = planted_audit.save(tmp_path / "audit")
    check = check_report(written["report"], screenshot=tmp_path / "report.png")
    assert check.console_errors == [] and check.page_errors == [] and check.external_requests == []
    assert check.images >= 3 + 9 * len(planted_audit.cases) and check.broken_images == []
    assert check.cards == len(planted_audit.cases)
    assert check.pair is not None and check.shown_after_filter == check.expected_after_filter > 0
    assert check.wrong_after_filter == 0 and check.shown_after_reset == check.cards
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_planted_label_errors_rank_first_on_a_freshly_trained_bundle(tiny_bundle):
    """Not only on the shipped bundle: the session's small CNN, trained minutes ago. Three of
    its confidently right held-out cells get a wrong label; they lead the audit."""
    from xcyto.cli._embedding import load_cells

    cells, _ = load_cells(tiny_bundle, "synthetic", "test")
    probabilities = tiny_bundle.probabilities(tiny_bundle.predict_logits(
        tiny_bundle.preprocess([sample.image for sample in cells.samples]))).numpy()
    confident = [i for i in np.argsort(-probabilities.max(axis=1))
                 if probabilities[i].argmax() == cells.labels[i]][:3]
    wrong = {int(i): int((cells.labels[i] + 2) % len(cells.classes)) for i in confident}
    result = audit(tiny_bundle, with_labels(cells, wrong), methods="gradcam", map_method=None)
    planted_ids = {cells.samples[i].cell_id for i in wrong}
    assert {case.cell_id for case in result.cases[:3]} == planted_ids, \
        [(c.rank, c.cell_id, c.given, c.predicted, round(c.suspicion, 3)) for c in result.cases[:6]]
    assert all(case.kind in ("label_error", "disagreement") for case in result.cases[:3])
    # the tiny bundle's gallery measured its training cells: every case is measured and the
    # morphometric model gives its second opinion
    for case in result.cases:
        assert case.morphology is not None and set(case.morphology_probabilities) == set(tiny_bundle.classes)
        expected = 1 - case.morphology_probabilities[case.predicted]
        assert case.signals["morphology_disagreement"] == pytest.approx(expected, abs=1e-3)
    from xcyto.audit._report import render_html

    page = render_html(result)
    assert page.count('<table class="morphology">') == len(result.cases) and "measurements alone:" in page


def test_auditing_and_evaluating_new_data_use_every_cell_and_say_so(tiny_bundle, tmp_path, capsys):
    """A folder of cells the bundle never saw (none in its split.csv): every cell is used."""
    from xcyto.data import write_sipakmed_layout

    folder = write_sipakmed_layout(tmp_path / "new-cells", n=25, seed=99, size=64)
    out = tmp_path / "report"
    assert cli_main(["audit", "--bundle", str(tiny_bundle.path), "--data", str(folder), "--split", "test",
                     "--methods", "gradcam", "--map", "none", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "all 25 cells" in printed and "none of them is in the bundle's split.csv" in printed
    import json

    summary = json.loads((out / "audit.json").read_text())
    assert summary["settings"]["cells"] == 25 and "none of them is in the bundle's split.csv" in summary["settings"]["data"]
    assert summary["settings"]["tta"] == tiny_bundle.tta
    assert cli_main(["evaluate", "--bundle", str(tiny_bundle.path), "--data", str(folder), "--split", "test",
                     "--out", str(tmp_path / "evaluated")]) == 0
    printed = capsys.readouterr().out
    assert "all 25 cells" in printed and "(all, 25 cells)" in printed  # the test split was asked; none applies
    metrics = json.loads((tmp_path / "evaluated" / "metrics.json").read_text())
    assert (metrics["split"], metrics["split_requested"], metrics["n"]) == ("all", "test", 25)
