"""2-D maps of the gallery (UMAP, PCA, t-SNE), fitted once and stored without pickle.

Each map stores the 2-D coordinates of every gallery cell. What a map keeps to place
a *new* cell on it (``transform``) differs:

- **PCA**: the principal axes and mean as ``.npy`` arrays; ``transform`` is exact.
- **UMAP**: a fitted ``umap.UMAP`` can only be saved by pickling it, and a pickle
  must never be loaded from a file someone else made. So only the training
  coordinates are kept, and ``transform`` re-implements the *first step* of UMAP's
  own ``transform``: a new cell is placed at the weighted average of the map
  positions of its ``n_neighbors`` nearest gallery cells (cosine, in embedding
  space), weighted with UMAP's membership strengths ``exp(-d / sigma)`` (``sigma``
  solved per cell so the weights sum to ``log2(n_neighbors)``). UMAP would then run
  a few optimisation epochs on the new points; that refinement is left out, so
  placements are an approximation: a new cell lands among the training cells it
  resembles, never in an empty region of the map. A gallery cell lands exactly on
  its stored position.
- **t-SNE** has no transform: only the fitted map of the training cells.

Files, in ``gallery/projections/``: ``<method>.json`` (parameters, written last, so
its presence means the map is complete), ``<method>_coords.npy`` and, for PCA,
``pca_components.npy`` and ``pca_mean.npy``.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xcyto.embedding._search import NeighbourIndex
from xcyto.errors import BundleError, EmbeddingError

METHODS = ("umap", "pca", "tsne")
PROJECTIONS_DIR = "projections"
UMAP_NEIGHBOURS = 15
SMALL_TSNE = 5000  # cells; below this t-SNE runs single-threaded (see fit_map)


@dataclass
class EmbeddingMap:
    """A fitted 2-D map: ``coords`` ``(N, 2)`` of the gallery cells, in gallery order."""

    method: str
    coords: np.ndarray
    params: dict = field(default_factory=dict)

    def transform(self, embeddings) -> np.ndarray:
        """Map positions ``(B, 2)`` of new cells' unit-norm embeddings ``(B, D)``."""
        raise EmbeddingError(f"{self.method} cannot place new cells on its map (it has no transform); "
                         f"use method 'umap' or 'pca'")

    def _arrays(self) -> dict[str, np.ndarray]:
        return {f"{self.method}_coords": self.coords}


@dataclass
class PCAMap(EmbeddingMap):
    components: np.ndarray = None  # (2, D)
    mean: np.ndarray = None  # (D,)

    def transform(self, embeddings) -> np.ndarray:
        embeddings = _as_unit_numpy(embeddings)
        return ((embeddings - self.mean) @ self.components.T).astype(np.float32)

    def _arrays(self):
        return {**super()._arrays(), "pca_components": self.components, "pca_mean": self.mean}


@dataclass
class UMAPMap(EmbeddingMap):
    index: NeighbourIndex | None = None

    def transform(self, embeddings) -> np.ndarray:
        queries = torch.from_numpy(_as_unit_numpy(embeddings))
        n_neighbors = min(int(self.params.get("n_neighbors", UMAP_NEIGHBOURS)), len(self.index))
        result = self.index.search(queries, n_neighbors)
        distances = (1.0 - result.similarities.double()).clamp(min=0).numpy()
        weights = umap_membership_weights(distances)
        positions = self.coords[result.indices.numpy()]  # (B, k, 2)
        placed = (weights[..., None] * positions).sum(1) / weights.sum(1, keepdims=True)
        exact = distances[:, 0] <= 1e-6  # as in umap: a point identical to a training point sits on it
        placed[exact] = positions[exact, 0]
        return placed.astype(np.float32)


def umap_membership_weights(distances: np.ndarray, iterations: int = 64, tolerance: float = 1e-5) -> np.ndarray:
    """UMAP's membership strengths ``exp(-d / sigma)`` of new points to their neighbours.

    ``distances`` ``(B, k)``, ascending. As in ``umap.UMAP.transform`` (local
    connectivity 0 for new points), ``sigma`` is found per row by bisection so that the
    strengths sum to ``log2(k)``, and kept above 1e-3 of the row's mean distance.
    """
    n_rows, k = distances.shape
    target = math.log2(k) if k > 1 else 1.0
    low, high, sigma = np.zeros(n_rows), np.full(n_rows, np.inf), np.ones(n_rows)
    for _ in range(iterations):
        total = np.exp(-distances / sigma[:, None]).sum(1)
        if np.all(np.abs(total - target) < tolerance):
            break
        too_wide = total > target
        high = np.where(too_wide, sigma, high)
        low = np.where(too_wide, low, sigma)
        sigma = np.where(np.isinf(high), sigma * 2, (low + high) / 2)
    sigma = np.maximum(sigma, 1e-3 * distances.mean(1))
    sigma = np.where(sigma > 0, sigma, 1.0)
    return np.exp(-distances / sigma[:, None])


def fit_map(method: str, embeddings: np.ndarray, index: NeighbourIndex, seed: int = 0) -> EmbeddingMap:
    """Fit ``method`` on the gallery's unit-norm ``embeddings`` ``(N, D)``."""
    method = check_method(method)
    embeddings = _as_numpy(embeddings)
    n_cells = len(embeddings)
    if n_cells < 3:
        raise EmbeddingError(f"a {method} map needs at least 3 gallery cells, the gallery has {n_cells}")
    if method == "pca":
        components, mean, explained = fit_pca(embeddings)
        coords = ((embeddings - mean) @ components.T).astype(np.float32)
        return PCAMap("pca", coords, {"explained_variance_ratio": explained}, components=components, mean=mean)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, (n_cells - 1) / 3))
        tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
        # Barnes-Hut synchronises its OpenMP threads 1000 times; for small maps on a busy
        # machine that costs 10x (15 s instead of 1.5 s for 170 cells), so use one thread.
        with threadpool_limits(limits=1 if n_cells < SMALL_TSNE else None, user_api="openmp"):
            coords = tsne.fit_transform(embeddings).astype(np.float32)
        return EmbeddingMap("tsne", coords, {"perplexity": perplexity, "metric": "cosine", "seed": seed})
    return _fit_umap(embeddings, index, seed)


def fit_pca(embeddings: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Principal axes ``(n_components, D)``, mean ``(D,)`` and explained variance ratios.

    The same axes as scikit-learn's ``PCA`` (eigenvectors of the covariance, each signed
    so its largest-magnitude entry is positive), computed from the ``D x D`` covariance
    in float64: exact, and no 3-second scikit-learn import at the end of training.
    """
    data = embeddings.astype(np.float64)
    mean = data.mean(0)
    centred = data - mean
    covariance = centred.T @ centred / max(len(data) - 1, 1)
    variances, vectors = np.linalg.eigh(covariance)  # ascending
    top = np.argsort(variances)[::-1][:n_components]
    components = vectors[:, top].T
    signs = np.sign(components[np.arange(len(top)), np.abs(components).argmax(1)])
    components *= np.where(signs == 0, 1, signs)[:, None]
    explained = (variances[top] / max(variances.sum(), 1e-12)).tolist()
    return components.astype(np.float32), mean.astype(np.float32), explained


def _fit_umap(embeddings: np.ndarray, index: NeighbourIndex, seed: int) -> UMAPMap:
    import umap

    n_neighbors = min(UMAP_NEIGHBOURS, len(embeddings) - 1)
    # Exact neighbours from our own index, so the fit and our transform agree on them.
    knn = index.search(torch.from_numpy(embeddings), n_neighbors)
    knn_indices = knn.indices.numpy().astype(np.int64)
    knn_distances = (1.0 - knn.similarities).clamp(min=0).numpy().astype(np.float32)
    params = {"n_neighbors": n_neighbors, "min_dist": 0.1, "metric": "cosine", "seed": seed}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by the seed; small-data notes
        reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, metric="cosine", random_state=seed,
                            precomputed_knn=(knn_indices, knn_distances, None),
                            init="spectral" if len(embeddings) > n_neighbors + 1 else "random")
        coords = reducer.fit_transform(embeddings).astype(np.float32)
    return UMAPMap("umap", coords, params, index=index)


def save_map(projection: EmbeddingMap, gallery_dir: Path) -> None:
    """Write the map's arrays, then its JSON (each file atomically)."""
    folder = Path(gallery_dir) / PROJECTIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in projection._arrays().items():
        _save_npy_atomic(folder / f"{name}.npy", array)
    description = {"method": projection.method, "n_cells": int(len(projection.coords)), "params": projection.params}
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{projection.method}.", suffix=".json")
    with os.fdopen(handle, "w") as stream:
        json.dump(description, stream, indent=2)
    os.replace(temporary, folder / f"{projection.method}.json")


def load_map(gallery_dir: Path, method: str, index: NeighbourIndex) -> EmbeddingMap | None:
    """The stored map ``method`` of a gallery, or ``None`` if it was never fitted."""
    method = check_method(method)
    folder = Path(gallery_dir) / PROJECTIONS_DIR
    description_path = folder / f"{method}.json"
    if not description_path.is_file():
        return None
    try:
        description = json.loads(description_path.read_text())
        coords = np.load(folder / f"{method}_coords.npy", allow_pickle=False)
        extra = {}
        if method == "pca":
            extra = {"components": np.load(folder / "pca_components.npy", allow_pickle=False),
                     "mean": np.load(folder / "pca_mean.npy", allow_pickle=False)}
    except (OSError, ValueError) as error:
        raise BundleError(f"{folder}: the stored {method} map is unreadable ({error}); delete "
                          f"{description_path} to refit it") from None
    if coords.shape != (len(index), 2):
        raise BundleError(f"{folder}: the {method} map has {coords.shape[0]} points but the gallery "
                          f"{len(index)} cells; delete {description_path} to refit it")
    params = description.get("params", {})
    if method == "pca":
        return PCAMap("pca", coords, params, **extra)
    if method == "umap":
        return UMAPMap("umap", coords, params, index=index)
    return EmbeddingMap(method, coords, params)


def check_method(method: str) -> str:
    method = str(method).lower().replace("-", "")
    if method not in METHODS:
        raise EmbeddingError(f"unknown projection {method!r}; choose one of: {', '.join(METHODS)}")
    return method


def _as_numpy(embeddings) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    return np.asarray(embeddings, dtype=np.float32)


def _as_unit_numpy(embeddings) -> np.ndarray:
    """Rows scaled to unit norm, as the maps were fitted on (stored float16 rows are 1 +- 1e-3)."""
    embeddings = np.atleast_2d(_as_numpy(embeddings))
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npy")
    with os.fdopen(handle, "wb") as stream:
        np.save(stream, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(temporary, path)
