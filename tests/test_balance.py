"""balance="auto": plain cross-entropy, then the validation cells choose raw or prior-adjusted logits."""
import numpy as np
from scipy.special import softmax

from xcyto.calibration import Calibration, choose_calibration
from xcyto.training._balance import MAX_ACCURACY_LOSS, MIN_MACRO_F1_GAIN, choose_prior_adjustment, prior_offsets


def _logits_biased_against_rare(rng, n_common=300, n_rare=20, bias=1.5):
    """Two well-separated classes, the model's logits pushed towards the common one (as a
    plain cross-entropy model leans towards the majority)."""
    labels = np.r_[np.zeros(n_common, int), np.ones(n_rare, int)]
    signal = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.0, len(labels))
    logits = np.stack([-signal / 2 + bias / 2, signal / 2 - bias / 2], axis=1)
    return logits, labels


def test_offsets_follow_the_class_shares():
    offsets = prior_offsets([300, 20], tau=1.0)
    np.testing.assert_allclose(offsets, -np.log([300 / 320, 20 / 320]))
    assert offsets[1] > offsets[0]  # the rare class is pushed up
    np.testing.assert_allclose(prior_offsets([300, 20], tau=0.5), offsets / 2)
    assert np.isfinite(prior_offsets([10, 0], tau=1.0)).all()  # an empty class does not give inf


def test_adjustment_kept_when_it_raises_macro_f1_without_costing_accuracy():
    rng = np.random.default_rng(0)
    logits, labels = _logits_biased_against_rare(rng)
    # the validation cells are as uneven as the training cells, so an adjustment that trades
    # common-class accuracy for rare-class recall must respect the accuracy budget
    offsets, report = choose_prior_adjustment(logits, labels, class_counts=[300, 20])
    raw, options = report["validation"]["raw"], report["validation"]
    kept = {float(name.split()[1]): v for name, v in options.items() if name != "raw"
            and v["macro_f1"] >= raw["macro_f1"] + MIN_MACRO_F1_GAIN and v["accuracy"] >= raw["accuracy"] - MAX_ACCURACY_LOSS}
    # the rule, applied independently to the recorded figures
    expected_tau = max(kept, key=lambda tau: kept[tau]["macro_f1"]) if kept else None
    assert report["tau"] == expected_tau
    assert report["chosen"] == ("raw" if expected_tau is None else "prior-adjusted")
    np.testing.assert_allclose(offsets if offsets is not None else np.zeros(2),
                               prior_offsets([300, 20], expected_tau) if expected_tau else np.zeros(2))

    # balanced validation cells (what a rare class's recall is worth there): adjusting wins clearly
    balanced_logits, balanced_labels = _logits_biased_against_rare(rng, n_common=100, n_rare=100, bias=2.5)
    offsets, report = choose_prior_adjustment(balanced_logits, balanced_labels, class_counts=[300, 20])
    assert report["chosen"] == "prior-adjusted" and offsets is not None
    adjusted = report["validation"][f"tau {report['tau']:g}"]
    assert adjusted["macro_f1"] > report["validation"]["raw"]["macro_f1"] + 0.05


def test_adjustment_refused_when_it_costs_accuracy():
    rng = np.random.default_rng(1)
    # the model is right to favour the common class: noisy, and the rare class is rare on validation too
    labels = np.r_[np.zeros(400, int), np.ones(10, int)]
    signal = np.where(labels == 1, 0.3, -0.3) + rng.normal(0, 1.5, len(labels))
    logits = np.stack([-signal, signal], axis=1) + [1.0, -1.0]
    offsets, report = choose_prior_adjustment(logits, labels, class_counts=[400, 10])
    raw = report["validation"]["raw"]
    for name in ("tau 0.5", "tau 1"):
        assert report["validation"][name]["accuracy"] < raw["accuracy"] - MAX_ACCURACY_LOSS  # each costs accuracy
    assert offsets is None and report["chosen"] == "raw"


def test_prior_folds_into_the_calibration():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (50, 3))
    labels = rng.integers(0, 3, 50)
    prior = prior_offsets([100, 30, 10], tau=1.0)
    fitted = choose_calibration(logits + prior, labels, methods=("none", "temperature"))
    combined = Calibration(method="temperature", temperature=1.7, prior=tuple(prior))
    expected = softmax((logits + prior) / 1.7, axis=1)
    np.testing.assert_allclose(combined.probabilities(logits), expected, rtol=1e-5)
    restored = Calibration.from_config({"calibration": combined.to_dict()})
    np.testing.assert_allclose(restored.probabilities(logits), expected, rtol=1e-5)
    assert "class shares" in combined.describe()
    assert Calibration.from_config({"calibration": fitted.to_dict()}).prior is None


def test_a_gain_within_noise_keeps_the_raw_logits():
    # two classes, the adjustment flips one borderline cell: macro-F1 up by less than a point
    labels = np.r_[np.zeros(150, int), np.ones(50, int)]
    logits = np.zeros((200, 2))
    logits[:, 1] = np.where(labels == 1, 2.0, -2.0)
    logits[150, 1] = -0.05  # a rare-class cell just on the wrong side
    offsets, report = choose_prior_adjustment(logits, labels, class_counts=[3, 2])
    raw, adjusted = report["validation"]["raw"], report["validation"]["tau 1"]
    assert 0 < adjusted["macro_f1"] - raw["macro_f1"] < MIN_MACRO_F1_GAIN  # better, but within noise
    assert offsets is None and report["chosen"] == "raw"


def test_the_weighted_training_is_kept_only_when_validation_prefers_it():
    from xcyto.training._balance import choose_training, describe_balance, worth_weighting

    plain = {"accuracy": 0.62, "macro_f1": 0.59}
    assert choose_training(plain, {"accuracy": 0.64, "macro_f1": 0.62})[0]  # better on both
    assert not choose_training(plain, {"accuracy": 0.60, "macro_f1": 0.65})[0]  # costs 2 points of accuracy
    assert not choose_training(plain, {"accuracy": 0.63, "macro_f1": 0.595})[0]  # half a point: noise
    keep, record = choose_training(plain, {"accuracy": 0.64, "macro_f1": 0.62})
    line = describe_balance({"chosen": "balance=loss", "validation_cells": 130, "validation": {}, "training": record})
    assert line.startswith("trained with class-weighted loss") and "0.620" in line
    assert worth_weighting([60, 20]) and not worth_weighting([56, 20]) and worth_weighting([40, 0])
