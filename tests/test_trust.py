"""Trust per cell: conformal sets, the screening threshold, grades, risk against coverage."""
from __future__ import annotations

import numpy as np
import pytest

from xcyto.trust import (PredictionSets, coverage_at_accuracy, fit_screen, fit_sets, grade_metrics, needed_cells,
                         nonconformity, p_abnormal, risk_coverage, set_metrics)

HERLEV = ["carcinoma_in_situ", "light_dysplastic", "moderate_dysplastic", "normal_columnar", "normal_intermediate",
          "normal_superficiel", "severe_dysplastic"]


def synthetic_cells(n: int, classes: int = 5, seed: int = 0):
    """A model's probabilities and the true labels drawn from them (so the model is calibrated)."""
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.full(classes, 0.6), n)
    labels = (probabilities.cumsum(1) > rng.random((n, 1))).argmax(1)
    return probabilities, labels


def textbook_sets(cal_probabilities, cal_labels, probabilities, coverage, score, class_conditional):
    """Split conformal as written in Angelopoulos & Bates (2021): the ceil((n+1)(1-alpha))-th
    smallest calibration score is the threshold; per class from that class's cells alone."""
    cal_scores = nonconformity(cal_probabilities, score)[np.arange(len(cal_labels)), cal_labels]
    scores = nonconformity(probabilities, score)

    def threshold(values):
        rank = int(np.ceil((len(values) + 1) * coverage - 1e-9))  # (n + 1) * 0.8 is not always 24.0 in floats
        return np.inf if rank > len(values) else np.sort(values)[rank - 1]

    sets = np.zeros(scores.shape, bool)
    for c in range(scores.shape[1]):
        own = cal_scores[cal_labels == c] if class_conditional[c] else cal_scores
        sets[:, c] = scores[:, c] <= threshold(own)
    sets[np.arange(len(sets)), probabilities.argmax(1)] = True
    return sets


@pytest.mark.parametrize("score", ["lac", "aps"])
def test_sets_match_the_textbook_construction_on_the_same_scores(score):
    cal_p, cal_y = synthetic_cells(150, seed=1)
    p, _ = synthetic_cells(400, seed=2)
    for min_cells in (0, 30, 10_000):  # class-conditional everywhere, for some classes, nowhere
        sets = fit_sets(cal_p, cal_y, score=score, min_class_cells=min_cells)
        own = np.bincount(cal_y, minlength=5) >= min_cells
        assert (sets.class_conditional == own).all()
        for coverage in (0.8, 0.9, 0.95):
            expected = textbook_sets(cal_p, cal_y, p, coverage, score, own)
            assert (sets.predict(p, coverage) == expected).all()
    # and it survives bundle.json
    assert (PredictionSets.from_dict(sets.to_dict()).predict(p) == sets.predict(p)).all()


def test_coverage_over_many_random_splits_sits_at_the_target_within_its_finite_sample_band():
    p, y = synthetic_cells(4000, seed=3)
    rng = np.random.default_rng(4)
    n_cal, target = 200, 0.9
    marginal, per_class = [], []
    for _ in range(300):
        order = rng.permutation(len(y))
        cal, test = order[:n_cal], order[n_cal:n_cal + 300]
        sets = fit_sets(p[cal], y[cal], score="lac", min_class_cells=10_000).predict(p[test], target)
        marginal.append(sets[np.arange(len(test)), y[test]].mean())
        conditional = fit_sets(p[cal], y[cal], score="lac", min_class_cells=20).predict(p[test], target)
        per_class.append([conditional[np.arange(len(test)), y[test]][y[test] == c].mean() for c in range(5)])
    standard_error = np.std(marginal) / np.sqrt(len(marginal))
    # Vovk: 1 - alpha <= E[coverage] <= 1 - alpha + 1 / (n + 1)
    assert target - 3 * standard_error <= np.mean(marginal) <= target + 1 / (n_cal + 1) + 3 * standard_error
    assert (np.nanmean(per_class, axis=0) >= target - 0.02).all()  # each class holds its own coverage


def test_aps_sets_grow_with_doubt_and_auto_keeps_the_smaller_sets():
    cal_p, cal_y = synthetic_cells(300, seed=5)
    chosen = fit_sets(cal_p, cal_y, score="auto")
    sizes = {s: fit_sets(cal_p, cal_y, score=s).predict(cal_p).sum(1).mean() for s in ("lac", "aps")}
    assert chosen.score == min(sizes, key=sizes.get)
    aps = fit_sets(cal_p, cal_y, score="aps").predict(cal_p)
    sure = cal_p.max(1)
    assert aps[sure > np.quantile(sure, 0.8)].sum(1).mean() < aps[sure < np.quantile(sure, 0.2)].sum(1).mean()


def test_set_metrics_are_counted_on_the_cells():
    sets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]], bool)
    labels = np.array([0, 1, 0, 2])
    found = set_metrics(sets, labels, ["a", "b", "c"])
    assert found["coverage"] == 0.75 and found["per_class_coverage"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    assert found["lowest_class"] == "a" and found["mean_set_size"] == 1.5 and found["singletons"] == 0.5


def test_the_screening_threshold_keeps_its_sensitivity_over_repeated_splits():
    rng = np.random.default_rng(6)
    n = 6000
    abnormal = rng.random(n) < 0.4
    scores = np.clip(np.where(abnormal, rng.beta(5, 2, n), rng.beta(2, 5, n)), 0, 1)
    target, misses, cleared = 0.98, [], []
    for _ in range(400):
        order = rng.permutation(n)
        cal, test = order[:250], order[250:1250]
        screen = fit_screen(scores[cal], abnormal[cal], target)
        assert screen.guaranteed
        refer = screen.refer(scores[test])
        misses.append((~refer[abnormal[test]]).mean())
        cleared.append((~refer[~abnormal[test]]).mean())
    error = np.std(misses) / np.sqrt(len(misses))
    assert np.mean(misses) <= (1 - target) + 3 * error  # conformal risk control: expected miss rate <= 2 %
    assert np.mean(misses) > (1 - target) / 3  # and it is not wasting the budget by clearing nothing
    assert np.mean(cleared) > 0.2


def test_too_few_abnormal_cells_clear_nothing_and_say_why():
    assert needed_cells(0.98) == 49
    few = fit_screen(np.linspace(0, 1, 60), np.r_[np.zeros(20, bool), np.ones(40, bool)], 0.98)
    assert not few.guaranteed and few.threshold == 0.0 and few.cleared_normal == 0.0
    assert "needs 49" in few.describe()
    enough = fit_screen(np.r_[np.full(30, 0.1), np.linspace(0.5, 1, 49)], np.r_[np.zeros(30, bool), np.ones(49, bool)],
                        0.98)
    assert enough.guaranteed and enough.validation_sensitivity == 1.0 and enough.cleared_normal == 1.0
    assert enough.threshold == 0.5  # the lowest abnormal score: clearing below it misses none of them


def test_p_abnormal_sums_the_abnormal_classes():
    probabilities = np.array([[0.1, 0.2, 0.3, 0.1, 0.1, 0.1, 0.1]])
    # abnormal: carcinoma_in_situ, light, moderate, severe
    assert p_abnormal(probabilities, HERLEV)[0] == pytest.approx(0.1 + 0.2 + 0.3 + 0.1)


def test_grade_errors_count_far_misses_more_than_near_ones():
    index = {name: i for i, name in enumerate(HERLEV)}
    pairs = [("carcinoma_in_situ", "normal_intermediate"),   # 4 grades, abnormal called normal
             ("carcinoma_in_situ", "severe_dysplastic"),     # 1 grade
             ("moderate_dysplastic", "light_dysplastic"),    # 1 grade, high called low
             ("normal_columnar", "normal_superficiel"),      # 0 grades (both normal), still an error
             ("light_dysplastic", "light_dysplastic")]       # right
    labels = [index[a] for a, _ in pairs]
    predictions = [index[b] for _, b in pairs]
    found = grade_metrics(labels, predictions, HERLEV)
    assert found["scale"] == "herlev" and found["graded_cells"] == 5
    assert found["mean_grade_error"] == pytest.approx((4 + 1 + 1 + 0 + 0) / 5)
    assert found["errors_within_one_grade"] == pytest.approx(3 / 4)
    assert (found["abnormal_called_normal"], found["high_grade_called_low"], found["serious_misses"]) == (1, 1, 2)
    assert found["serious_miss_rate"] == pytest.approx(2 / 4)  # of the 4 abnormal cells


def test_bethesda_leaves_agc_outside_the_scale_and_two_classes_fall_back_to_normal_abnormal():
    bethesda = ["AGC", "ASC-H", "ASC-US", "HSIL", "LSIL", "NILM", "SCC"]
    found = grade_metrics([0, 3, 1], [5, 4, 4], bethesda)  # AGC->NILM left out; HSIL->LSIL; ASC-H->LSIL
    assert found["scale"] == "bethesda" and found["outside_the_scale"] == ["AGC"] and found["graded_cells"] == 2
    assert found["high_grade_called_low"] == 2 and found["mean_grade_error"] == pytest.approx((2 + 1) / 2)
    binary = grade_metrics([0, 0, 1], [1, 0, 0], ["abnormal", "normal"])
    assert binary["scale"] == "normal-abnormal" and binary["abnormal_called_normal"] == 1
    assert grade_metrics([0, 1], [1, 0], ["cats", "dogs"]) is None


def test_risk_coverage_keeps_the_surest_cells_first():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    curve = risk_coverage(probabilities, labels, ["normal", "abnormal"])
    # ranked 0.9 (right), 0.8 (wrong), 0.6 (right), 0.55 (right)
    assert list(curve["accuracy"]) == [1.0, 0.5, 2 / 3, 0.75]
    assert coverage_at_accuracy(curve, 0.9) == 0.25 and coverage_at_accuracy(curve, 0.7) == 1.0
    assert list(curve["serious_misses"]) == [0.0, 0.5, 1 / 3, 0.25]  # the abnormal cell called normal


def test_a_trained_bundle_carries_sets_and_a_screen_and_explain_predict_show_them(tiny_bundle, tiny_run, tmp_path):
    import csv

    import xcyto
    from xcyto.data import generate_cell
    from xcyto.training import predict_command

    sets, screen = tiny_bundle.prediction_sets, tiny_bundle.screen
    assert sets is not None and sets.coverage == 0.9 and screen is not None
    assert len(sets.labels) == tiny_bundle.config["data"]["n_val"]
    image = generate_cell("Koilocytotic", 0, size=64).image
    e = xcyto.explain(image, bundle=tiny_bundle, methods="gradcam", neighbours=0, morphology=False)
    assert e.predicted in e.prediction_set
    expected = sets.predict(np.array([[e.probabilities[c] for c in tiny_bundle.classes]]))[0]
    assert sorted(e.prediction_set) == sorted(np.array(tiny_bundle.classes)[expected])
    assert e.plausible.startswith("plausible at 90%: ") and e.to_dict()["prediction_set"] == e.prediction_set
    assert (e.screening is None) == (not screen.guaranteed)
    path = tmp_path / "cell.png"
    from PIL import Image

    Image.fromarray(image).save(path)
    predict_command(tiny_run / "bundle", [path], out=tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["prediction_set"].split("|") == e.prediction_set


def test_screen_refits_from_the_scores_the_bundle_keeps_and_records_the_choice(tiny_run, tmp_path):
    import json
    import shutil

    import xcyto
    from xcyto.trust import fit_screen
    from xcyto.training import screen_command

    shutil.copytree(tiny_run / "bundle", tmp_path / "bundle")
    before = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    recorded = before["screen"]["validation"]
    records = screen_command(tmp_path / "bundle", sensitivity=0.8, coverage=0.8)
    expected = fit_screen(recorded["p_abnormal"], np.asarray(recorded["abnormal"], bool), 0.8)
    assert records["screen"]["threshold"] == expected.threshold and records["screen"]["validation"] == recorded
    reloaded = xcyto.load(tmp_path / "bundle")
    assert reloaded.screen.sensitivity == 0.8 and reloaded.prediction_sets.coverage == 0.8
    assert reloaded.prediction_sets.calibration_scores.tolist() == before["conformal"]["calibration_scores"]


def test_a_calibration_split_is_held_out_of_training_and_the_sets_are_fitted_on_it(tmp_path):
    """With ``calibration_fraction`` the sets and the screen are fitted on cells that neither
    training nor any validation choice saw: the bundle's recorded scores are theirs."""
    import xcyto
    from tests.tiny import TINY_SETTINGS
    from xcyto.data import load_dataset, load_split_manifest
    from xcyto.trust import nonconformity

    settings = {**TINY_SETTINGS, "epochs": 1, "gallery": False, "calibration_fraction": 0.2}
    xcyto.train(**settings, out=str(tmp_path / "run"))
    bundle = xcyto.load(tmp_path / "run" / "bundle")
    dataset = load_dataset(f"synthetic:n={TINY_SETTINGS['synthetic_n']},size={TINY_SETTINGS['synthetic_size']},seed=0")
    split = load_split_manifest(tmp_path / "run" / "bundle" / "split.csv", dataset)
    calibration = split["calibration"]
    assert len(calibration) > 0 and not set(calibration) & (set(split.train) | set(split.val) | set(split.test))
    assert bundle.config["data"]["n_calibration"] == len(calibration)
    assert bundle.config["conformal"]["fitted_on"] == f"{len(calibration)} held-out calibration cells"
    sets = bundle.prediction_sets
    np.testing.assert_array_equal(sets.labels, dataset.labels[calibration])
    probabilities = bundle.predict_cells(dataset.subset(calibration).samples).probabilities
    own = nonconformity(probabilities, sets.score)[np.arange(len(calibration)), sets.labels]
    np.testing.assert_allclose(sets.calibration_scores, own, atol=1e-5)
    assert len(bundle.config["screen"]["validation"]["abnormal"]) == len(calibration)
