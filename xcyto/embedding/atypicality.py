"""Atypicality: how unlike the training cells a cell is, from its k-th nearest neighbour.

The distance of a cell to its k-th nearest training cell (cosine distance, ``1 - cos``,
in the model's embedding space; k = 5 by default) is large for inputs the model never
saw anything like: debris, blank fields, cells of a stain or scanner it was not trained
on, non-cell pictures. The score is calibrated on the training set itself: for every
training cell the same distance is measured leave-one-out (its own row excluded), and
a query's score is the percentile of its distance among those. A cell above the
``percentile`` (99th by default) is flagged "unlike the training cells".

This is the k-NN out-of-distribution detector of Sun et al., "Out-of-distribution
detection with deep nearest neighbors" (ICML 2022), with a percentile threshold taken
from the training cells rather than from examples of outliers. By construction about
1% of cells like the training cells are flagged too; measure the rate on held-out
cells with :func:`false_flag_rate`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xcyto.embedding.search import NeighbourIndex

DEFAULT_K = 5
DEFAULT_PERCENTILE = 99.0
MAX_CALIBRATION_CELLS = 20_000  # leave-one-out over more cells costs N^2 D and changes little


@dataclass(frozen=True)
class Calibration:
    """Sorted leave-one-out k-th neighbour distances of the training cells, and the threshold."""

    k: int
    percentile: float
    reference: np.ndarray

    @property
    def threshold(self) -> float:
        return float(np.percentile(self.reference, self.percentile))

    def score(self, kth_distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Percentile (0-100) of each distance among the training cells', and the flags."""
        kth_distances = np.asarray(kth_distances, dtype=np.float64)
        below_or_equal = np.searchsorted(self.reference, kth_distances, side="right")
        scores = 100.0 * below_or_equal / len(self.reference)
        return scores, kth_distances > self.threshold


def kth_distances(index: NeighbourIndex, queries: torch.Tensor, k: int,
                  exclude: torch.Tensor | None = None) -> np.ndarray:
    """Cosine distance of each query to its ``k``-th nearest gallery cell."""
    result = index.search(queries, k, exclude=exclude)
    return (1.0 - result.similarities[:, -1].double()).clamp(min=0).numpy()


def calibrate(index: NeighbourIndex, k: int = DEFAULT_K, percentile: float = DEFAULT_PERCENTILE,
              max_cells: int = MAX_CALIBRATION_CELLS, batch_size: int = 1024, seed: int = 0) -> Calibration:
    """Leave-one-out k-th neighbour distances of the gallery's own cells (a random
    ``max_cells`` of them for very large galleries, each still searched against all)."""
    n_cells = len(index)
    if n_cells < 2:
        raise ValueError("atypicality needs a gallery of at least 2 cells")
    k = min(k, n_cells - 1)
    rows = np.arange(n_cells)
    if n_cells > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(n_cells, max_cells, replace=False))
    distances = []
    for start in range(0, len(rows), batch_size):
        chunk = torch.from_numpy(rows[start:start + batch_size])
        queries = index.matrix[index.position[chunk]]
        distances.append(kth_distances(index, queries, k, exclude=chunk))
    return Calibration(k=k, percentile=float(percentile), reference=np.sort(np.concatenate(distances)))


def false_flag_rate(bundle, dataset, batch_size: int = 64) -> dict:
    """Share of ``dataset``'s cells flagged as unlike the training cells by ``bundle``'s gallery.

    Run it on held-out cells of the training distribution (e.g. the test split): the
    rate should be near ``100 - percentile`` percent (1%). Returns ``n``, ``flagged``,
    ``rate``, ``per_class`` rates, ``k``, ``percentile`` and the distance ``threshold``.
    """
    from xcyto.embedding.embed import embed_cells
    from xcyto.embedding.gallery import require_gallery

    gallery = require_gallery(bundle)
    embeddings = embed_cells(bundle, dataset.samples, batch_size=batch_size)
    _, flags = gallery.atypicality(torch.from_numpy(embeddings))
    labels = np.asarray(dataset.labels)
    per_class = {}
    for label, name in enumerate(dataset.classes):
        members = labels == label
        if members.any():
            per_class[name] = float(flags[members].mean())
    calibration = gallery.calibration
    return {
        "n": int(len(flags)),
        "flagged": int(flags.sum()),
        "rate": float(flags.mean()) if len(flags) else float("nan"),
        "per_class": per_class,
        "k": calibration.k,
        "percentile": calibration.percentile,
        "threshold": calibration.threshold,
        "flagged_cell_ids": [sample.cell_id for sample, flag in zip(dataset.samples, flags) if flag],
    }
