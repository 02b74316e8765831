"""Exact and near duplicates among crops, and the pairs a split puts on two sides.

Exact: the same decoded pixels. Near: perceptual hashes within ``MAX_HASH_DISTANCE`` bits in
some dihedral view (a flipped or turned copy is still a copy), confirmed by a correlation of
at least ``MIN_CORRELATION`` between the two grey thumbnails in that view: the hash is the
fast filter, the correlation the evidence. With a bundle, crops whose embeddings have a cosine
similarity of at least ``MIN_EMBEDDING_COSINE`` are near duplicates too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xcyto.data.health._image import hamming

MAX_HASH_DISTANCE = 14
MIN_CORRELATION = 0.92
MIN_EMBEDDING_COSINE = 0.995


@dataclass(frozen=True)
class Pair:
    """Crop ``second`` (later in the data) repeats crop ``first``; ``kind``: ``exact``, ``near``
    or ``embedding``; ``similarity``: 1 for exact, else the correlation or cosine."""

    first: int
    second: int
    kind: str
    similarity: float


def find_pairs(md5s: list[str], hashes: np.ndarray, thumbs: np.ndarray, embeddings: np.ndarray | None = None,
               chunk: int = 256) -> list[Pair]:
    """Every duplicate pair among the crops. ``hashes`` ``(N, 8)`` uint64 and ``thumbs``
    ``(N, 8, D)`` from :func:`xcyto.data.health._image.image_facts`."""
    pairs: dict[tuple[int, int], Pair] = {}
    seen: dict[str, int] = {}
    for index, digest in enumerate(md5s):
        if digest in seen:
            pairs[(seen[digest], index)] = Pair(seen[digest], index, "exact", 1.0)
        else:
            seen[digest] = index
    count = len(md5s)
    canonical = hashes[:, 0]
    for start in range(0, count, chunk):
        rows = np.arange(start, min(count, start + chunk))
        # (rows, all crops, 8 views): distance from each row's first view to every view of every crop
        distance = hamming(canonical[rows, None, None], hashes[None, :, :])
        best_view = distance.argmin(axis=2)
        close = distance.min(axis=2) <= MAX_HASH_DISTANCE
        for row, other in zip(*np.nonzero(close)):
            index = int(rows[row])
            if other == index or (min(index, other), max(index, other)) in pairs:
                continue
            view = int(best_view[row, other])
            correlation = float(thumbs[index, 0] @ thumbs[other, view])
            if correlation >= MIN_CORRELATION:
                first, second = min(index, int(other)), max(index, int(other))
                pairs[(first, second)] = Pair(first, second, "near", correlation)
    if embeddings is not None and len(embeddings) == count:
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        for start in range(0, count, chunk):
            cosine = unit[start:start + chunk] @ unit.T
            for row, other in zip(*np.nonzero(cosine >= MIN_EMBEDDING_COSINE)):
                index = start + int(row)
                first, second = min(index, int(other)), max(index, int(other))
                if first != second and (first, second) not in pairs:
                    pairs[(first, second)] = Pair(first, second, "embedding", float(cosine[row, other]))
    return sorted(pairs.values(), key=lambda pair: (pair.second, pair.first))


def repeats(pairs: list[Pair], count: int) -> dict[int, Pair]:
    """For each crop that repeats an earlier one, the pair that says so (its closest earlier
    copy). The first crop of a set of copies is kept, the later ones are the repeats."""
    found: dict[int, Pair] = {}
    for pair in pairs:
        if pair.second not in found or pair.similarity > found[pair.second].similarity:
            found[pair.second] = pair
    return found


def across(pairs: list[Pair], sides: dict[int, str]) -> list[tuple[Pair, str, str]]:
    """Pairs whose two crops lie on different sides of a split (``sides``: crop -> ``train``,
    ``val`` or ``test``): leakage that grouping by source image cannot see."""
    return [(pair, sides[pair.first], sides[pair.second]) for pair in pairs
            if pair.first in sides and pair.second in sides and sides[pair.first] != sides[pair.second]]
