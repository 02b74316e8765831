"""Placing new cells on the training map, with the model's predictions and atypicality."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xcyto.embedding._gallery import require_gallery


@dataclass
class Placement:
    """New cells on a gallery map: positions ``(M, 2)``, true labels (``-1`` where the
    data's classes differ from the bundle's), predictions, errors, atypicality."""

    method: str
    coords: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    errors: np.ndarray
    atypicality_scores: np.ndarray
    atypical: np.ndarray
    cell_ids: list[str]


def place_cells(bundle, dataset, method: str = "umap", batch_size: int = 64, progress: bool = False) -> Placement:
    """Embed ``dataset``'s cells, classify them as the bundle predicts (with its test-time
    augmentation, if any) and place them on the map."""
    gallery = require_gallery(bundle)
    projection = gallery.projection(method)
    predicted = bundle.predict_cells(dataset.samples, batch_size=batch_size, progress=progress)
    embeddings = predicted.embeddings
    coords = projection.transform(embeddings)
    predictions = predicted.probabilities.argmax(1) if len(embeddings) else np.zeros(0, dtype=np.int64)
    same_classes = list(dataset.classes) == bundle.classes
    labels = np.asarray(dataset.labels) if same_classes else np.full(len(dataset), -1)
    errors = (predictions != labels) if same_classes else np.zeros(len(dataset), dtype=bool)
    scores, flags = gallery.atypicality(torch.from_numpy(embeddings))
    return Placement(method=projection.method, coords=coords, labels=labels, predictions=predictions,
                     errors=errors, atypicality_scores=scores, atypical=flags, cell_ids=dataset.cell_ids)
