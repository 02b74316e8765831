"""What a bundle records about trust: its prediction sets and its screening threshold, both
fitted on the validation cells, with the scores they came from so either can be refitted
(another coverage, another sensitivity) without the data."""
from __future__ import annotations

import numpy as np

from xcyto.data import abnormal_flags
from xcyto.trust._screen import DEFAULT_SENSITIVITY, fit_screen, p_abnormal
from xcyto.trust._sets import DEFAULT_COVERAGE, PredictionSets, fit_sets


def trust_records(probabilities, labels, classes: list[str], coverage: float = DEFAULT_COVERAGE,
                  sensitivity: float = DEFAULT_SENSITIVITY, fitted_on: str | None = None) -> dict:
    """``{"conformal": ..., "screen": ...}`` for ``bundle.json`` from the validation cells'
    probabilities (as the bundle gives them: calibrated, with its TTA) and labels; no
    ``screen`` when the classes are not each normal or abnormal."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    records = {"conformal": fit_sets(probabilities, labels, len(classes), coverage=coverage).to_dict()}
    flags = abnormal_flags(classes)
    if flags is not None:
        records["screen"] = screen_record(p_abnormal(probabilities, classes), flags[labels], sensitivity)
    if fitted_on:  # which cells: held out of every other choice, or the validation cells
        for record in records.values():
            record["fitted_on"] = fitted_on
    return records


def screen_record(scores, abnormal, sensitivity: float = DEFAULT_SENSITIVITY) -> dict:
    """The ``screen`` record: the threshold for ``sensitivity`` with the validation cells'
    p(abnormal) and truth it was chosen on."""
    abnormal = np.asarray(abnormal, dtype=bool)
    return {**fit_screen(scores, abnormal, sensitivity).to_dict(), "validation": {
        "p_abnormal": [round(float(s), 6) for s in scores], "abnormal": abnormal.astype(int).tolist()}}


def refit_records(records: dict, sensitivity: float = DEFAULT_SENSITIVITY, coverage: float = DEFAULT_COVERAGE) -> dict:
    """``records`` (as :func:`trust_records` wrote them) for another sensitivity and coverage,
    from the validation scores they keep: no data needed."""
    sets = PredictionSets.from_dict(records["conformal"])
    sets.coverage = float(coverage)
    recorded = records["screen"]["validation"]
    refitted = {"conformal": sets.to_dict(),
                "screen": screen_record(recorded["p_abnormal"], recorded["abnormal"], sensitivity)}
    for name, record in refitted.items():
        if "fitted_on" in records[name]:
            record["fitted_on"] = records[name]["fitted_on"]
    return refitted
