"""Atypicality: how unlike the training cells a cell is, calibrated on the training cells.

Two views of the model's (unit-norm) embedding space, each turned into a percentile
among the training cells, and their maximum calibrated once more:

- **nearest neighbours**: the cosine distance (``1 - cos``) to the k-th nearest
  training cell (k = 5), as in Sun et al., "Out-of-distribution detection with deep
  nearest neighbors" (ICML 2022). Reference: every training cell's own distance,
  leave-one-out; more exactly leave-one-*group*-out, since cells cropped from the same
  source image are near-duplicates that a new cell never has in the gallery. Catches
  cells in empty regions between the training clusters.
- **spread**: the Mahalanobis distance to the training cells' mean, with a
  Ledoit-Wolf shrinkage covariance (Lee et al., NeurIPS 2018, with one shared
  Gaussian). Reference: 5-fold cross-fitted distances (each fold of source groups
  scored by a fit on the other four, so a cell never calibrates its own fit). Catches inputs that leave
  the subspace the training cells span. Small from-scratch CNNs need it: their
  ReLU features all point into one orthant, and a blank field or noise can sit at an
  unremarkable *cosine* distance while being far outside the training spread.

**Held-out calibration.** When cells the model was not trained on are at hand (the
validation split), :func:`calibrate_held_out` replaces the references by their distances
to the training cells: the threshold then comes from cells as new to the model as the
ones it will be asked about, rather than from training cells whose features the model
has fitted (leave-one-out and cross-fitting only partly undo that, so the training
reference is optimistic and flags too many new cells).

Each view's distance is divided by the ``percentile`` (99th) of its reference,
so both read "1 = as far out as the 1% most unusual training cells"; the larger of the
two is the combined value. A cell's **score** is the percentile (0-100) of its combined
value among the training cells'; it is flagged "unlike the training cells" when the
combined value exceeds the ``percentile`` of the training cells' combined values. About 1% of cells like the training cells are
flagged by construction: measure the rate on held-out cells with :func:`xcyto.embedding._gallery.false_flag_rate`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xcyto.embedding._search import NeighbourIndex

DEFAULT_K = 5
DEFAULT_PERCENTILE = 99.0
MAX_CALIBRATION_CELLS = 20_000  # leave-one-out over more cells costs N^2 D and changes little
CROSS_FIT_FOLDS = 5


@dataclass(frozen=True)
class AtypicalityReference:
    """What scoring needs: sorted reference values of the training cells and the spread model.

    ``knn_reference``: leave-one-out k-th neighbour cosine distances. ``spread_reference``:
    cross-fitted Mahalanobis distances. ``combined_reference``: each cell's larger
    scaled distance of the two. ``mean`` ``(D,)`` and ``whitening`` ``(D, D)``: the
    Mahalanobis distance of ``x`` is ``|(x - mean) @ whitening|``.
    """

    k: int
    percentile: float
    knn_reference: np.ndarray
    spread_reference: np.ndarray
    combined_reference: np.ndarray
    mean: np.ndarray
    whitening: np.ndarray

    @property
    def threshold(self) -> float:
        """Combined value above which a cell is flagged (the ``percentile`` of the training cells)."""
        return float(np.percentile(self.combined_reference, self.percentile))

    def spread_distance(self, queries: np.ndarray) -> np.ndarray:
        centred = np.asarray(queries, dtype=np.float32) - self.mean
        return np.linalg.norm(centred @ self.whitening, axis=1).astype(np.float64)

    def components(self, kth_distances: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The neighbour and spread distances, each divided by its training ``percentile``."""
        return (np.asarray(kth_distances, dtype=np.float64) / _scale(self.knn_reference, self.percentile),
                self.spread_distance(queries) / _scale(self.spread_reference, self.percentile))

    def score(self, kth_distances: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(B,)`` in 0-100 and flags ``(B,)`` for unit-norm ``queries`` ``(B, D)``
        whose k-th neighbour cosine distances are ``kth_distances``."""
        combined = np.maximum(*self.components(kth_distances, queries))
        return _percentile_of(self.combined_reference, combined), combined > self.threshold


def _scale(sorted_reference: np.ndarray, percentile: float) -> float:
    return max(float(np.percentile(sorted_reference, percentile)), 1e-12)


def _percentile_of(sorted_reference: np.ndarray, values) -> np.ndarray:
    """Share (in %) of the reference at or below each value."""
    values = np.asarray(values, dtype=np.float64)
    return 100.0 * np.searchsorted(sorted_reference, values, side="right") / len(sorted_reference)


def kth_distances(index: NeighbourIndex, queries: torch.Tensor, k: int,
                  exclude_groups: torch.Tensor | None = None) -> np.ndarray:
    """Cosine distance of each query to its ``k``-th nearest gallery cell."""
    result = index.search(queries, k, exclude_groups=exclude_groups)
    return (1.0 - result.similarities[:, -1].double()).clamp(min=0).numpy()


def fit_spread(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and whitening ``(D, D)`` of a Ledoit-Wolf shrinkage Gaussian."""
    from sklearn.covariance import ledoit_wolf

    data = np.asarray(embeddings, dtype=np.float64)
    mean = data.mean(0)
    covariance, _ = ledoit_wolf(data - mean, assume_centered=True)
    variances, axes = np.linalg.eigh(covariance)
    floor = max(float(variances.max(initial=0.0)), 1e-12) * 1e-6  # one cell or exact duplicates
    whitening = axes / np.sqrt(np.maximum(variances, floor))
    return mean.astype(np.float32), whitening.astype(np.float32)


def compact_whitening(whitening: np.ndarray) -> tuple[np.ndarray, float]:
    """``(float16 matrix, scale)`` with ``matrix * scale ~= whitening``: the ``D x D``
    whitening is most of a gallery's calibration (6.5 MB at D = 1280 in float32); divided
    by its largest entry it keeps float16's 3 significant digits in half the bytes."""
    scale = float(np.abs(whitening).max()) or 1.0
    return (np.asarray(whitening, dtype=np.float32) / scale).astype(np.float16), scale


def expand_whitening(stored: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The float32 whitening from what :func:`compact_whitening` stored."""
    return np.asarray(stored, dtype=np.float32) * np.float32(scale)


def calibrate(index: NeighbourIndex, k: int = DEFAULT_K, percentile: float = DEFAULT_PERCENTILE,
              max_cells: int = MAX_CALIBRATION_CELLS, batch_size: int = 1024, seed: int = 0) -> AtypicalityReference:
    """Reference values of the gallery's own cells, each cell's source group left out (a
    random ``max_cells`` of them for very large galleries, still searched among all cells)."""
    n_cells = len(index)
    if n_cells < 2:
        raise ValueError("atypicality needs a gallery of at least 2 cells")
    groups = index.groups[index.position].numpy()  # gallery order
    if np.unique(groups, return_counts=True)[1].max() > n_cells - 2:  # (nearly) one group: leave out single cells
        groups = np.arange(n_cells)
        index = NeighbourIndex(index.matrix[index.position].numpy(), np.zeros(n_cells), 1, groups=groups)
    k = min(k, n_cells - int(np.unique(groups, return_counts=True)[1].max()))
    rng = np.random.default_rng(seed)
    rows = np.arange(n_cells) if n_cells <= max_cells else np.sort(rng.choice(n_cells, max_cells, replace=False))
    vectors = index.matrix[index.position[torch.from_numpy(rows)]].numpy()  # gallery order, unit norm
    row_groups = torch.from_numpy(groups[rows])
    knn = np.concatenate([
        kth_distances(index, torch.from_numpy(vectors[start:start + batch_size]), k,
                      exclude_groups=row_groups[start:start + batch_size])
        for start in range(0, len(rows), batch_size)
    ])
    # cross-fitting: whole source groups per fold, as for the neighbours
    unique_groups, group_of_row = np.unique(groups[rows], return_inverse=True)
    folds = (rng.permutation(len(unique_groups)) % min(CROSS_FIT_FOLDS, len(unique_groups)))[group_of_row]
    spread = np.empty(len(rows))
    for fold in np.unique(folds):
        mean, whitening = fit_spread(vectors[folds != fold])
        spread[folds == fold] = np.linalg.norm((vectors[folds == fold] - mean) @ whitening, axis=1)
    mean, whitening = fit_spread(index.matrix.numpy())
    whitening = expand_whitening(*compact_whitening(whitening))  # exactly what the gallery stores
    knn_reference, spread_reference = np.sort(knn), np.sort(spread)
    combined = np.maximum(knn / _scale(knn_reference, percentile), spread / _scale(spread_reference, percentile))
    return AtypicalityReference(k=k, percentile=float(percentile), knn_reference=knn_reference,
                       spread_reference=spread_reference, combined_reference=np.sort(combined),
                       mean=mean, whitening=whitening)


#: Fewest held-out cells worth calibrating on; with fewer, the training cells' references stay.
MIN_HELD_OUT = 30


def calibrate_held_out(calibration: AtypicalityReference, index: NeighbourIndex, held_out: np.ndarray) -> AtypicalityReference:
    """``calibration`` with references from ``held_out`` ``(N, D)`` unit-norm embeddings of
    cells outside the gallery: their k-th neighbour distance among all gallery cells and
    their distance from the gallery's spread (the full fit)."""
    queries = np.asarray(held_out, dtype=np.float32)
    knn = kth_distances(index, torch.from_numpy(queries), calibration.k)
    spread = calibration.spread_distance(queries)
    knn_reference, spread_reference = np.sort(knn), np.sort(spread)
    combined = np.maximum(knn / _scale(knn_reference, calibration.percentile),
                          spread / _scale(spread_reference, calibration.percentile))
    return AtypicalityReference(k=calibration.k, percentile=calibration.percentile, knn_reference=knn_reference,
                       spread_reference=spread_reference, combined_reference=np.sort(combined),
                       mean=calibration.mean, whitening=calibration.whitening)
