"""The interpretable baseline: a classifier that sees only the morphometric features.

Gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``) on the features of
:mod:`xcyto.morphology._features`, computed from each cell's segmentation. It answers "how far
do the measurements cytologists make get on their own?", and it is the second opinion the
audit compares the CNN with. Cross-validated like the CNNs, in ``xcyto compare``.
"""
from __future__ import annotations

import numpy as np

from xcyto.morphology._analyse import analyse
from xcyto.morphology._features import list_features


def feature_table(samples, method: str | None = None, progress: bool = False) -> np.ndarray:
    """``(N, F)`` features of cells (``CellSample``s or anything with ``.image``), in the
    order of :func:`list_features`; ``nan`` where a region was not found. ``method``: the
    segmenter (default: the learned one when shipped, else the classical one)."""
    from xcyto.morphology._learned import preferred_segmenter

    method = method or preferred_segmenter()
    items = samples
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(samples, desc="measuring cells", unit="cell", leave=False)
    names = list_features()
    rows = []
    for sample in items:
        features = analyse(sample.image, method).features
        rows.append([features[name] for name in names])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(names))


def fit_baseline(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Gradient-boosted trees on the features (missing values allowed), class-balanced."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                           l2_regularization=1.0, class_weight="balanced", early_stopping=False,
                                           random_state=seed)
    return model.fit(features, labels)


def baseline_log_probabilities(model, features: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N, C)`` log-probabilities over all ``num_classes`` (classes unseen in training get ~0)."""
    probabilities = np.full((len(features), num_classes), 1e-6)
    probabilities[:, model.classes_] = model.predict_proba(features)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.log(probabilities)
