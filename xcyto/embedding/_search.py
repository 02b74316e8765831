"""Exact cosine nearest-neighbour search over the gallery, in torch.

The gallery embeddings are unit vectors, so cosine similarity is one matrix product.
The index keeps a float32 copy of them in memory (``N x D x 4`` bytes: 100,000 cells
of 1,280 dimensions are 512 MB), reordered so each class is a contiguous block of
rows: the closest cell of each class is then a max over a slice, found in the same
pass as the overall top-k. Exact search like this is fast enough up to about a
million cells; the product is chunked so the similarity matrix never exceeds
``chunk_elements`` floats, whatever the query batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # 64 MB of float32 similarities per step


@dataclass
class SearchResult:
    """Top-k neighbours and the best match per class, as gallery row indices.

    ``similarities``/``indices``: ``(B, k)``, most similar first. ``class_similarities``/
    ``class_indices``: ``(B, C)``, the closest cell of each class (``-inf`` and ``-1``
    for a class with no gallery cells).
    """

    similarities: torch.Tensor
    indices: torch.Tensor
    class_similarities: torch.Tensor | None = None
    class_indices: torch.Tensor | None = None


class NeighbourIndex:
    """Exact cosine search over unit-norm ``embeddings`` ``(N, D)`` with ``labels`` ``(N,)``.

    ``groups`` ``(N,)``: integer source-group codes (default: each row its own group), so
    searches can leave out a query's own group (see ``search``).
    """

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray, n_classes: int,
                 groups: np.ndarray | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS):
        labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        # Reading a memory-mapped float16 array row by row in class order, once.
        matrix = torch.from_numpy(np.ascontiguousarray(np.asarray(embeddings)[order], dtype=np.float32))
        # float16 storage leaves norms of 1 +- 1e-3: renormalise so a stored cell is at similarity 1 to itself
        self.matrix = torch.nn.functional.normalize(matrix, dim=1)
        self.order = torch.from_numpy(order)
        self.position = torch.empty_like(self.order)
        self.position[self.order] = torch.arange(len(order))
        groups = np.arange(len(order)) if groups is None else np.asarray(groups, dtype=np.int64)
        self.groups = torch.from_numpy(np.ascontiguousarray(groups[order]))  # in matrix row order
        # class c occupies rows bounds[c]:bounds[c + 1] of self.matrix
        self.bounds = np.searchsorted(labels[order], np.arange(n_classes + 1)).tolist()
        self.n_classes = n_classes
        self.chunk_elements = int(chunk_elements)

    def __len__(self) -> int:
        return self.matrix.shape[0]

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, per_class: bool = False,
               exclude_groups: torch.Tensor | None = None) -> SearchResult:
        """The ``k`` most similar gallery cells of each query (unit-norm ``(B, D)``).

        ``exclude_groups`` ``(B,)``: for each query a group code whose gallery cells are
        left out (``-1``: none); with the default groups (one per row) that is
        leave-one-out over the gallery itself. A query whose exclusion leaves fewer than
        ``k`` cells gets ``-inf`` similarities in the missing places.
        """
        queries = queries.detach().to("cpu", torch.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (B, {self.dim}), got {tuple(queries.shape)}")
        n_rows, n_queries = len(self), queries.shape[0]
        k = min(int(k), n_rows)
        if k < 1:
            raise ValueError("the gallery has no cells to search")
        rows_per_chunk = max(1024, self.chunk_elements // max(n_queries, 1))
        top_values, top_rows = [], []
        class_values = torch.full((n_queries, self.n_classes), -torch.inf)
        class_rows = torch.full((n_queries, self.n_classes), -1, dtype=torch.long)
        for start in range(0, n_rows, rows_per_chunk):
            stop = min(start + rows_per_chunk, n_rows)
            similarities = queries @ self.matrix[start:stop].T
            if exclude_groups is not None:
                same_group = self.groups[start:stop][None, :] == exclude_groups[:, None]
                similarities.masked_fill_(same_group, -torch.inf)
            values, rows = similarities.topk(min(k, stop - start), dim=1)
            top_values.append(values)
            top_rows.append(rows + start)
            if per_class:
                self._update_class_best(similarities, start, stop, class_values, class_rows)
        values, picked = torch.cat(top_values, 1).topk(k, dim=1)
        rows = torch.cat(top_rows, 1).gather(1, picked)
        result = SearchResult(similarities=values, indices=self.order[rows])
        if per_class:
            found = class_rows >= 0
            result.class_similarities = class_values
            result.class_indices = torch.where(found, self.order[class_rows.clamp(min=0)], -1)
        return result

    @torch.no_grad()
    def search_class(self, queries: torch.Tensor, labels, k: int) -> list[tuple[list[int], list[float]]]:
        """The ``k`` most similar gallery cells of class ``labels[i]`` for each query ``i``:
        ``(gallery rows, similarities)`` per query, most similar first (fewer when the
        class has fewer cells). Each class is a contiguous block, so this reads only it."""
        queries = queries.detach().to("cpu", torch.float32)
        labels = np.asarray(labels, dtype=np.int64)
        found: list[tuple[list[int], list[float]]] = [([], []) for _ in range(len(labels))]
        for label in np.unique(labels):
            low, high = self.bounds[label], self.bounds[label + 1]
            asking = np.flatnonzero(labels == label)
            if high <= low or k < 1:
                continue
            values, rows = (queries[asking] @ self.matrix[low:high].T).topk(min(int(k), high - low), dim=1)
            for position, row_values, row_rows in zip(asking, values.tolist(), (self.order[rows + low]).tolist()):
                found[position] = (row_rows, row_values)
        return found

    def _update_class_best(self, similarities, start, stop, class_values, class_rows) -> None:
        for label in range(self.n_classes):
            low, high = max(self.bounds[label], start), min(self.bounds[label + 1], stop)
            if low >= high:
                continue
            values, rows = similarities[:, low - start:high - start].max(dim=1)
            better = values > class_values[:, label]
            class_values[:, label] = torch.where(better, values, class_values[:, label])
            class_rows[:, label] = torch.where(better, rows + low, class_rows[:, label])
