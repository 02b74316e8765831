"""What fusion reads of cells: the network's probabilities and the cells' measurements."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def measured_features(bundle, images, progress: bool = False) -> np.ndarray:
    """``(N, F)`` features of cells (``CellSample``s, anything with ``.image``, or ``H x W x 3``
    arrays), measured with the segmenter the bundle's gallery used."""
    from xcyto.embedding import load_gallery
    from xcyto.morphology import feature_table

    gallery = load_gallery(bundle)
    segmenter = None if gallery is None or not gallery.meta.get("morphology") else gallery.meta["morphology"]["segmenter"]
    cells = [SimpleNamespace(image=item) if isinstance(item, np.ndarray) else item for item in images]
    return feature_table(cells, method=segmenter, progress=progress)


def fusion_inputs(bundle, samples, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (N, C), features (N, F))`` of cells (``CellSample``s or anything with
    ``.image``): as the bundle predicts them, and measured as its gallery's cells were."""
    probabilities = bundle.predict_cells(samples, progress=progress).probabilities
    return probabilities, measured_features(bundle, samples, progress=progress)
