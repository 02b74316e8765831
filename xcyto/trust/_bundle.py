"""What a bundle records about trust: its prediction sets and its screening threshold, both
fitted on the validation cells, with the scores they came from so either can be refitted
(another coverage, another sensitivity) without the data."""
from __future__ import annotations

import numpy as np

from xcyto.data import abnormal_flags
from xcyto.trust._screen import DEFAULT_SENSITIVITY, fit_screen, p_abnormal
from xcyto.trust._sets import DEFAULT_COVERAGE, fit_sets


def trust_records(probabilities, labels, classes: list[str], coverage: float = DEFAULT_COVERAGE,
                  sensitivity: float = DEFAULT_SENSITIVITY) -> dict:
    """``{"conformal": ..., "screen": ...}`` for ``bundle.json`` from the validation cells'
    probabilities (as the bundle gives them: calibrated, with its TTA) and labels; no
    ``screen`` when the classes are not each normal or abnormal."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    records = {"conformal": fit_sets(probabilities, labels, len(classes), coverage=coverage).to_dict()}
    flags = abnormal_flags(classes)
    if flags is not None:
        scores = p_abnormal(probabilities, classes)
        screen = fit_screen(scores, flags[labels], sensitivity)
        records["screen"] = {**screen.to_dict(), "validation": {
            "p_abnormal": [round(float(s), 6) for s in scores], "abnormal": flags[labels].astype(int).tolist()}}
    return records
