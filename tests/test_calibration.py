"""Calibration and classifier metrics against values worked out by hand or planted."""
import json

import numpy as np
import pytest
from scipy.special import softmax

from xcyto.calibration import (MIN_CELLS, TEMPERATURE_BOUNDS, Calibration, choose_calibration,
                               expected_calibration_error, fit_temperature, fit_vector)
from xcyto.training import classification_metrics


def _planted(n: int, temperature: float, classes: int = 5, seed: int = 0):
    """Logits and labels drawn from softmax(logits / temperature): the true temperature is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, classes))
    probabilities = softmax(logits / temperature, axis=1)
    labels = np.array([rng.choice(classes, p=p) for p in probabilities])
    return logits, labels


def test_ece_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.62, 0.38], [0.17, 0.83]])
    labels = np.array([0, 1, 1])
    # bins: 0.9 right (gap 0.1), 0.62 wrong (gap 0.62), 0.83 right (gap 0.17), each 1/3 of the cells
    assert expected_calibration_error(probabilities, labels) == pytest.approx((0.1 + 0.62 + 0.17) / 3)
    assert expected_calibration_error(np.array([[0.5, 0.5]] * 4), np.array([0, 1, 0, 1])) == pytest.approx(0.0)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_recovers_a_planted_temperature(true_temperature):
    logits, labels = _planted(4000, true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.1)


def test_fit_temperature_stays_inside_its_bounds():
    logits = np.array([[5.0, -5.0]] * 40)
    labels = np.array([0, 1] * 20)  # right half the time at any confidence: NLL wants T -> infinity
    temperature = fit_temperature(logits, labels)
    assert TEMPERATURE_BOUNDS[1] * 0.99 < temperature <= TEMPERATURE_BOUNDS[1]


def test_vector_scaling_learns_a_class_bias():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, (3000, 3))
    shifted = logits + np.array([0.0, 0.0, 1.5])  # the model over-rates class 2 by 1.5 logits
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits, axis=1)])
    scale, bias = fit_vector(shifted, labels)
    assert np.allclose(scale, 1.0, atol=0.15)
    assert bias[2] - bias[:2].mean() == pytest.approx(-1.5, abs=0.25)


def test_choose_calibration_fixes_overconfidence_and_leaves_calibrated_logits_alone():
    overconfident, labels = _planted(600, 3.0)
    chosen = choose_calibration(overconfident, labels)
    assert chosen.method in ("temperature", "vector")
    held_out = chosen.report["held_out"]
    assert held_out[chosen.method]["ece"] < held_out["none"]["ece"]
    fresh, fresh_labels = _planted(3000, 3.0, seed=7)  # and it holds on cells it never saw
    assert (expected_calibration_error(chosen.probabilities(fresh), fresh_labels)
            < expected_calibration_error(softmax(fresh, axis=1), fresh_labels) / 2)

    calibrated, labels = _planted(600, 1.0, seed=3)
    chosen = choose_calibration(calibrated, labels)
    held_out = chosen.report["held_out"]
    assert chosen.method == "none" or held_out[chosen.method]["ece"] < held_out["none"]["ece"]
    assert chosen.method == "none" or chosen.temperature == pytest.approx(1.0, abs=0.2)


def test_keeping_the_raw_probabilities_says_why():
    calibrated, labels = _planted(300, 1.0, seed=2)  # well calibrated: no method beats none here
    chosen = choose_calibration(calibrated, labels)
    assert chosen.method == "none"
    assert chosen.report["chosen_because"].startswith("no method lowered the held-out ECE")
    assert "without lowering the held-out accuracy" in chosen.describe() and "chosen on" not in chosen.describe()


def test_too_few_validation_cells_means_no_calibration():
    logits, labels = _planted(MIN_CELLS - 1, 3.0)
    chosen = choose_calibration(logits, labels)
    assert chosen.method == "none" and "validation cells" in chosen.describe()
    assert np.array_equal(chosen.apply(logits), logits)


def test_calibration_round_trips_and_reads_old_bundles():
    chosen = choose_calibration(*_planted(300, 2.0))
    again = Calibration.from_config({"calibration": json.loads(json.dumps(chosen.to_dict()))})
    logits = np.random.default_rng(0).normal(size=(4, 5))
    assert np.allclose(again.probabilities(logits), chosen.probabilities(logits))
    old = Calibration.from_config({"temperature": 2.0})
    assert old.method == "temperature" and np.allclose(old.probabilities(logits), softmax(logits / 2.0, axis=1))


def test_binary_sensitivity_and_specificity_by_hand():
    classes = ["normal_superficiel", "normal_columnar", "light_dysplastic", "carcinoma_in_situ"]
    labels = np.array([0, 1, 1, 2, 2, 3, 3, 3])
    predicted = np.array([0, 2, 1, 2, 0, 3, 2, 1])
    logits = np.eye(4)[predicted] * 5.0
    binary = classification_metrics(logits, labels, classes)["binary"]
    # abnormal cells 3,4,5,6,7: called abnormal 3,5,6 -> sensitivity 3/5; normal 0,1,2: 0 and 2 -> 2/3
    assert binary["sensitivity"] == pytest.approx(3 / 5)
    assert binary["specificity"] == pytest.approx(2 / 3)
    assert binary["accuracy"] == pytest.approx(5 / 8)
