"""Embeddings: the model's pooled features, L2-normalised, and small cell thumbnails.

The embedding is the output of the model's embedding layer (``CellClassifier.pool``,
the vector the classifier reads), divided by its norm so that the dot product of two
embeddings is their cosine similarity.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

THUMBNAIL_SIZE = 96


def embed(bundle, batch: torch.Tensor) -> torch.Tensor:
    """L2-normalised embeddings ``(B, D)`` (float32, on the bundle's device) of a
    preprocessed batch ``(B, 3, S, S)`` (from ``bundle.preprocess``). No gradients."""
    return bundle.predict_batch(batch.to(bundle.device), tta=False).embeddings


def embed_cells(bundle, samples, batch_size: int = 64, with_logits: bool = False, progress: bool = False):
    """Embeddings ``(N, D)`` float32 of cells (``CellSample``s), and their logits ``(N, C)``
    from the same forward pass when ``with_logits``. Uses the bundle's eval transform."""
    predictions = bundle.predict_cells(samples, batch_size=batch_size, progress=progress, tta=False)
    return (predictions.embeddings, predictions.logits) if with_logits else predictions.embeddings


def thumbnail(image: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """``size x size x 3`` uint8: the cell scaled to fit, padded with its background colour."""
    from xcyto.data import background_colour

    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((new_width, new_height), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), background_colour(image))
    canvas.paste(resized, ((size - new_width) // 2, (size - new_height) // 2))
    return np.asarray(canvas, dtype=np.uint8)
