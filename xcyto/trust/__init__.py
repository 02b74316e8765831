"""How far to trust one cell's prediction: prediction sets with a coverage guarantee, a
screening threshold with a guaranteed sensitivity, errors measured in grades, and what
abstaining on the least sure cells buys.

>>> sets = fit_sets(val_probabilities, val_labels)          # on held-out (validation) cells
>>> sets.predict(probabilities, coverage=0.9)                # (N, C) bool: the classes not ruled out
>>> screen = fit_screen(p_abnormal(val_probabilities, classes), val_abnormal, sensitivity=0.98)
>>> screen.refer(p_abnormal(probabilities, classes))         # True: a person reads the cell
>>> grade_metrics(labels, predictions, classes)              # mean grade error, serious misses
>>> coverage_at_accuracy(risk_coverage(probabilities, labels, classes))

A bundle carries its sets and its screen (``Bundle.prediction_sets``, ``Bundle.screen``);
``xcyto screen`` chooses a threshold from the shell.
"""
from xcyto.trust._bundle import refit_records, trust_records
from xcyto.trust._grades import SCALES, GradeScale, grade_metrics, grade_scale, register_scale
from xcyto.trust._risk import TARGET_ACCURACY, coverage_at_accuracy, plot_risk_coverage, risk_coverage
from xcyto.trust._screen import DEFAULT_SENSITIVITY, Screen, fit_screen, needed_cells, p_abnormal
from xcyto.trust._sets import (DEFAULT_COVERAGE, MIN_CLASS_CELLS, SCORES, PredictionSets, fit_sets, nonconformity,
                               set_metrics)

__all__ = [
    "DEFAULT_COVERAGE", "DEFAULT_SENSITIVITY", "GradeScale", "MIN_CLASS_CELLS", "PredictionSets", "SCALES", "SCORES",
    "Screen", "TARGET_ACCURACY", "coverage_at_accuracy", "fit_screen", "fit_sets", "grade_metrics", "grade_scale",
    "needed_cells", "nonconformity", "p_abnormal", "plot_risk_coverage", "refit_records", "register_scale",
    "risk_coverage", "set_metrics", "trust_records",
]
