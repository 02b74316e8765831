"""Embeddings: the model's pooled features, L2-normalised, and small cell thumbnails.

The embedding is the output of the model's embedding layer (``CellClassifier.pool``,
the vector the classifier reads), divided by its norm so that the dot product of two
embeddings is their cosine similarity.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from xcyto.models import evaluating
from xcyto.models.fold import pass_model

THUMBNAIL_SIZE = 96


@torch.no_grad()
def embed(bundle, batch: torch.Tensor) -> torch.Tensor:
    """L2-normalised embeddings ``(B, D)`` (float32, on the bundle's device) of a
    preprocessed batch ``(B, 3, S, S)`` (from ``bundle.preprocess``). No gradients."""
    batch = batch.to(bundle.device)
    with evaluating(bundle.model) as model:
        features = pass_model(model, batch).forward_embedding(batch)
    return F.normalize(features.float(), dim=1)


@torch.no_grad()
def embed_cells(bundle, samples, batch_size: int = 64, with_logits: bool = False, progress: bool = False):
    """Embeddings ``(N, D)`` float32 of cells (``CellSample``s), and their logits ``(N, C)``
    from the same forward pass when ``with_logits``. Uses the bundle's eval transform."""
    transform = bundle.transform()
    embeddings, logits = [], []
    starts = range(0, len(samples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding", unit="batch", leave=False)
    with evaluating(bundle.model) as model:
        for start in starts:
            batch = torch.stack([transform(sample.image) for sample in samples[start:start + batch_size]])
            batch = batch.to(bundle.device)
            fast = pass_model(model, batch)  # on CPU: the batch-norm-folded copy, a third faster
            features = fast.forward_embedding(batch)
            embeddings.append(F.normalize(features.float(), dim=1).cpu())
            if with_logits:
                logits.append(fast.forward_head(features).float().cpu())
    dim = bundle.model.embedding_dim
    embeddings = torch.cat(embeddings).numpy() if embeddings else np.zeros((0, dim), np.float32)
    if not with_logits:
        return embeddings
    logits = torch.cat(logits).numpy() if logits else np.zeros((0, len(bundle.classes)), np.float32)
    return embeddings, logits


def thumbnail(image: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """``size x size x 3`` uint8: the cell scaled to fit, padded with its background colour."""
    from xcyto.data.transforms import background_colour

    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((new_width, new_height), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), background_colour(image))
    canvas.paste(resized, ((size - new_width) // 2, (size - new_height) // 2))
    return np.asarray(canvas, dtype=np.uint8)
