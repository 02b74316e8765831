"""Label schemes: which classes count as abnormal, for 2-class (normal/abnormal) metrics.

Herlev: the three ``normal_*`` classes are normal, the dysplasias and carcinoma in
situ abnormal. SIPaKMeD (and the synthetic cells, which follow it): Koilocytotic and
Dyskeratotic are abnormal; Superficial-Intermediate and Parabasal are normal and
Metaplastic benign, so both count as not abnormal. Bethesda categories: NILM is normal,
every atypia, lesion and carcinoma (ASC-US, LSIL, ASC-H, HSIL, SCC, AGC) abnormal.
Names match whatever their case, spaces, hyphens and underscores (:func:`class_key`).
"""
from __future__ import annotations

import numpy as np


def class_key(name: str) -> str:
    """A class name as compared: lower case, without spaces, hyphens or underscores."""
    return str(name).strip().lower().replace("-", "").replace("_", "").replace(" ", "")


ABNORMAL = {
    "light_dysplastic",
    "moderate_dysplastic",
    "severe_dysplastic",
    "carcinoma_in_situ",
    "Dyskeratotic",
    "Koilocytotic",
    "abnormal",
    "ASC-US",
    "ASC-H",
    "LSIL",
    "HSIL",
    "SCC",
    "AGC",
    "squamous cell carcinoma",
}
NORMAL = {
    "normal_superficiel",
    "normal_intermediate",
    "normal_columnar",
    "Superficial-Intermediate",
    "Parabasal",
    "Metaplastic",
    "normal",
    "NILM",
    "negative for intraepithelial lesion",
    "negative for intraepithelial lesion or malignancy",
}
_ABNORMAL_KEYS = {class_key(name) for name in ABNORMAL}
_NORMAL_KEYS = {class_key(name) for name in NORMAL}


def abnormal_flags(classes: list[str]) -> np.ndarray | None:
    """Per class, whether it is abnormal; ``None`` when a class is in neither set."""
    keys = [class_key(name) for name in classes]
    if not all(key in _ABNORMAL_KEYS or key in _NORMAL_KEYS for key in keys):
        return None
    flags = np.array([key in _ABNORMAL_KEYS for key in keys])
    if flags.all() or not flags.any():
        return None
    return flags
