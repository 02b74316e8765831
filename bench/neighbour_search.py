"""Exact nearest-neighbour search over a gallery: xcyto's torch index against brute-force NumPy.

Both run in the same process on the same float32 unit vectors: NumPy computes all
similarities with one product and sorts them (``argsort``), the torch index computes
the same product and keeps the top k (``torch.topk``) and, in the same pass, the
closest cell of each class. Prints milliseconds per query for one query and for a
batch of 32, and checks that both return the same neighbours.

    python bench/neighbour_search.py                 # D = 1280 (EfficientNet-Lite0) and 256 (small_cnn)
    python bench/neighbour_search.py --dims 1280 --sizes 1000 10000 100000 --k 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from xcyto.embedding import NeighbourIndex


def make_gallery(n: int, dim: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one centre per class (so neighbours mean something), stored float16 as in a bundle."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    labels = rng.integers(0, n_classes, n)
    vectors = centres[labels] + 1.5 * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float16), labels


def timed(function, repeats: int) -> float:
    """Median wall time of ``function()`` in milliseconds (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def numpy_search(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    similarities = queries @ matrix.T
    return np.argsort(-similarities, axis=1)[:, :k]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[1280, 256])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; k = {args.k}; median of {args.repeats} runs")
    header = (f"| gallery | D | torch 1 query (ms) | NumPy 1 query (ms) | torch batch 32 (ms/query) | "
              f"NumPy batch 32 (ms/query) | torch + per-class, 1 query (ms) | same neighbours |")
    print(header)
    print("|---:|---:|---:|---:|---:|---:|---:|:---:|")
    rng = np.random.default_rng(1)
    for dim in args.dims:
        for size in args.sizes:
            stored, labels = make_gallery(size, dim, args.classes)
            index = NeighbourIndex(stored, labels, args.classes)  # the float32 copy a Gallery keeps
            matrix = np.ascontiguousarray(stored, dtype=np.float32)  # the same unit vectors for NumPy
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            queries = rng.standard_normal((32, dim)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            single, batch = torch.from_numpy(queries[:1]), torch.from_numpy(queries)

            torch_single = timed(lambda: index.search(single, args.k), args.repeats)
            torch_batch = timed(lambda: index.search(batch, args.k), max(3, args.repeats // 3)) / 32
            torch_classes = timed(lambda: index.search(single, args.k, per_class=True), args.repeats)
            numpy_single = timed(lambda: numpy_search(matrix, queries[:1], args.k), args.repeats)
            numpy_batch = timed(lambda: numpy_search(matrix, queries, args.k), max(3, args.repeats // 3)) / 32

            agree = np.array_equal(index.search(batch, args.k).indices.numpy(), numpy_search(matrix, queries, args.k))
            print(f"| {size:,} | {dim} | {torch_single:.2f} | {numpy_single:.2f} | {torch_batch:.3f} | "
                  f"{numpy_batch:.3f} | {torch_classes:.2f} | {'yes' if agree else 'NO'} |")
            del index, matrix, stored


if __name__ == "__main__":
    main()
