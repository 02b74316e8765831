"""Label schemes: which classes count as abnormal, for 2-class (normal/abnormal) metrics.

Herlev: the three ``normal_*`` classes are normal, the dysplasias and carcinoma in
situ abnormal. SIPaKMeD (and the synthetic cells, which follow it): Koilocytotic and
Dyskeratotic are abnormal; Superficial-Intermediate and Parabasal are normal and
Metaplastic benign, so both count as not abnormal.
"""
from __future__ import annotations

import numpy as np

ABNORMAL = {
    "light_dysplastic",
    "moderate_dysplastic",
    "severe_dysplastic",
    "carcinoma_in_situ",
    "Dyskeratotic",
    "Koilocytotic",
    "abnormal",
}
NORMAL = {
    "normal_superficiel",
    "normal_intermediate",
    "normal_columnar",
    "Superficial-Intermediate",
    "Parabasal",
    "Metaplastic",
    "normal",
}


def abnormal_flags(classes: list[str]) -> np.ndarray | None:
    """Per class, whether it is abnormal; ``None`` when a class is in neither set."""
    if not all(name in ABNORMAL or name in NORMAL for name in classes):
        return None
    flags = np.array([name in ABNORMAL for name in classes])
    if flags.all() or not flags.any():
        return None
    return flags
