"""The gallery: every training cell's embedding, label, identity and thumbnail, in the bundle.

Layout of ``bundle/gallery/`` (memory-mapped on load, nothing pickled)::

    gallery.json                 classes, cell ids, groups, thumbnail size, embedding dim,
                                 weights_sha256 of the bundle it was built with,
                                 atypicality settings (k, percentile, threshold)
    embeddings.npy               (N, D) float16, L2-normalised embedding-layer outputs
    labels.npy                   (N,) int32
    thumbnails.npy               (N, T, T, 3) uint8, T = 96 by default
    atypicality_*.npy            calibration of the atypicality score (see atypicality.py):
                                 sorted reference values (knn, spread, combined) and the
                                 spread model (mean; whitening in float16, times the
                                 whitening_scale of gallery.json)
    projections/                 2-D maps, fitted on first use (see projection.py)

A gallery belongs to the exact weights it was built with: loading it into a bundle
whose weights hash differs is refused, since its embeddings would be in another space.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xcyto import __version__
from xcyto.atomic import replace_dir
from xcyto.embedding._atypicality import (DEFAULT_K, DEFAULT_PERCENTILE, MIN_HELD_OUT, AtypicalityReference, calibrate,
                                         calibrate_held_out, compact_whitening, expand_whitening)
from xcyto.embedding._embed import THUMBNAIL_SIZE, embed_cells, thumbnail
from xcyto.embedding._projection import EmbeddingMap, check_method, fit_map, load_map, save_map
from xcyto.embedding._search import NeighbourIndex, SearchResult
from xcyto.errors import BundleError, DataError

FORMAT = "xcyto-gallery"
FORMAT_VERSION = 1
META_FILE = "gallery.json"
CALIBRATION_ARRAYS = ("knn_reference", "spread_reference", "combined_reference", "mean", "whitening")
ARRAYS = ("embeddings", "labels", "thumbnails", *(f"atypicality_{name}" for name in CALIBRATION_ARRAYS))


@dataclass
class Neighbour:
    """A training cell close to a query: who it is, its class, how similar (cosine), what it looks like."""

    cell_id: str
    class_name: str
    label: int
    similarity: float
    group: str
    thumbnail: np.ndarray  # H x W x 3 uint8


@dataclass
class Lookup:
    """What :meth:`Gallery.lookup` finds for a batch of queries, in one search pass."""

    neighbours: list[list[Neighbour]]
    nearest_per_class: list[dict[str, Neighbour]]
    atypicality_scores: np.ndarray
    atypical: np.ndarray


@dataclass
class Gallery:
    """The training cells of one bundle. Arrays are memory-mapped (read-only).

    The float32 search index is built on first use and kept (``N x D x 4`` bytes).
    """

    path: Path
    meta: dict
    embeddings: np.ndarray
    labels: np.ndarray
    thumbnails: np.ndarray
    calibration: AtypicalityReference
    _index: NeighbourIndex | None = field(default=None, repr=False)
    _maps: dict = field(default_factory=dict, repr=False)
    _morphology: np.ndarray | None = field(default=None, repr=False)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def cell_ids(self) -> list[str]:
        return self.meta["cell_ids"]

    @property
    def groups(self) -> list[str]:
        return self.meta["groups"]

    @property
    def morphology(self) -> tuple[np.ndarray, list[str]] | None:
        """The training cells' morphometric features ``(N, F)`` and their names, when the
        gallery measured them (:mod:`xcyto.morphology`); ``None`` for older galleries."""
        settings = self.meta.get("morphology")
        if not settings:
            return None
        if self._morphology is None:
            self._morphology = np.load(self.path / "morphology.npy", mmap_mode="r", allow_pickle=False)
        return self._morphology, list(settings["features"])

    @property
    def embedding_dim(self) -> int:
        return int(self.meta["embedding_dim"])

    @property
    def weights_sha256(self) -> str:
        return self.meta["weights_sha256"]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def index(self) -> NeighbourIndex:
        if self._index is None:
            self._index = NeighbourIndex(self.embeddings, self.labels, len(self.classes), groups=group_codes(self.groups))
        return self._index

    # -- neighbours -----------------------------------------------------------------
    def neighbour(self, row: int, similarity: float) -> Neighbour:
        label = int(self.labels[row])
        return Neighbour(cell_id=self.cell_ids[row], class_name=self.classes[label], label=label,
                         similarity=float(similarity), group=self.groups[row],
                         thumbnail=np.array(self.thumbnails[row]))

    def neighbours(self, query_embeddings: torch.Tensor, k: int = 5) -> list[list[Neighbour]]:
        """The ``k`` most similar training cells of each query ``(B, D)``, most similar first."""
        return self._neighbour_lists(self.index.search(self._queries(query_embeddings), k), k)

    def nearest_per_class(self, query_embeddings: torch.Tensor) -> list[dict[str, Neighbour]]:
        """For each query, the closest training cell of every class (classes without cells left out)."""
        return self._class_best(self.index.search(self._queries(query_embeddings), 1, per_class=True))

    def neighbours_in_class(self, query_embeddings: torch.Tensor, labels, k: int = 3) -> list[list[Neighbour]]:
        """For query ``i``, its ``k`` most similar training cells of class ``labels[i]``
        (an index into ``classes``): "the closest cells it would be if it were that class"."""
        found = self.index.search_class(self._queries(query_embeddings), labels, k)
        return [[self.neighbour(row, value) for row, value in zip(rows, values)] for rows, values in found]

    def atypicality(self, query_embeddings: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(B,)`` (percentile 0-100 among the training cells, see atypicality.py)
        and flags ``(B,)`` bool: True = unlike the training cells."""
        queries = self._queries(query_embeddings)
        return self._atypicality(self.index.search(queries, self.calibration.k), queries)

    def lookup(self, query_embeddings: torch.Tensor, k: int = 5) -> Lookup:
        """``neighbours``, ``nearest_per_class`` and ``atypicality`` from one search pass."""
        queries = self._queries(query_embeddings)
        result = self.index.search(queries, max(int(k), self.calibration.k), per_class=True)
        return Lookup(self._neighbour_lists(result, k), self._class_best(result), *self._atypicality(result, queries))

    def _neighbour_lists(self, result: SearchResult, k: int) -> list[list[Neighbour]]:
        return [[self.neighbour(row, value) for row, value in zip(rows[:k], values[:k])]
                for rows, values in zip(result.indices.tolist(), result.similarities.tolist())]

    def _class_best(self, result: SearchResult) -> list[dict[str, Neighbour]]:
        return [{self.classes[label]: self.neighbour(row, value)
                 for label, (row, value) in enumerate(zip(rows, values)) if row >= 0}
                for rows, values in zip(result.class_indices.tolist(), result.class_similarities.tolist())]

    def _atypicality(self, result: SearchResult, queries: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        kth = (1.0 - result.similarities[:, self.calibration.k - 1].double()).clamp(min=0).numpy()
        return self.calibration.score(kth, queries.numpy())

    def _queries(self, query_embeddings) -> torch.Tensor:
        queries = torch.as_tensor(query_embeddings).detach().to("cpu", torch.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if queries.shape[-1] != self.embedding_dim:
            raise ValueError(f"query embeddings have {queries.shape[-1]} dimensions, the gallery "
                             f"{self.embedding_dim}: were they made by this bundle's model?")
        return F.normalize(queries, dim=1)

    # -- maps -----------------------------------------------------------------------
    def projection(self, method: str = "umap", fit: bool = True) -> EmbeddingMap:
        """The 2-D map ``method`` (umap, pca, tsne) of the gallery; fitted and stored on first use."""
        method = check_method(method)
        if method not in self._maps:
            projection = load_map(self.path, method, self.index)
            if projection is None:
                if not fit:
                    raise BundleError(f"{self.path}: no {method} map stored; run "
                                      f"'xcyto gallery build ... --projections {method}'")
                projection = fit_map(method, self.index.matrix[self.index.position].numpy(), self.index)
                try:
                    save_map(projection, self.path)
                except OSError as error:  # a read-only bundle: keep the map in memory only
                    warnings.warn(f"could not store the {method} map in {self.path} ({error}); "
                                  f"it will be refitted next time", stacklevel=2)
            self._maps[method] = projection
        return self._maps[method]


# -- building ---------------------------------------------------------------------------
def build_gallery(bundle, dataset, thumbnail_size: int = THUMBNAIL_SIZE, batch_size: int = 64,
                  k: int = DEFAULT_K, percentile: float = DEFAULT_PERCENTILE,
                  projections: tuple[str, ...] = ("pca",), progress: bool = False,
                  calibration_cells=None, morphology: bool = True) -> Gallery:
    """Embed every cell of ``dataset`` (the training cells) and write ``bundle.gallery_dir``.

    ``calibration_cells``: held-out cells (the validation split, a ``CellDataset``) on which
    the atypicality flag is calibrated; without them (or with fewer than ``MIN_HELD_OUT``)
    it is calibrated on the training cells themselves (leave-one-group-out, cross-fitted).
    ``morphology``: also measure each training cell (:mod:`xcyto.morphology`), so an
    explanation can say where a cell's measurements fall among each class's training cells.

    The folder is written beside the bundle and renamed into place, so a crash leaves
    the old gallery (or none), never half of one. ``projections`` are fitted now;
    others are fitted when first asked for.
    """
    if bundle.path is None or bundle.sha256 is None:
        raise BundleError("save the bundle (bundle.save(path)) before building its gallery")
    if len(dataset) < 2:
        raise DataError(f"a gallery needs at least 2 training cells, got {len(dataset)}")
    if list(dataset.classes) != bundle.classes:
        raise DataError(f"the data's classes {list(dataset.classes)} differ from the bundle's {bundle.classes}; "
                        f"check the label scheme")
    samples = dataset.samples
    embeddings = embed_cells(bundle, samples, batch_size=batch_size, progress=progress)
    labels = np.array([sample.label for sample in samples], dtype=np.int32)
    thumbnails = np.stack([thumbnail(sample.image, thumbnail_size) for sample in samples])
    stored = embeddings.astype(np.float16)
    groups = [str(sample.group) for sample in samples]
    index = NeighbourIndex(stored, labels, len(bundle.classes), groups=group_codes(groups))
    calibration = calibrate(index, k=k, percentile=percentile)
    calibrated_on = ("training cells (k-NN leave-one-group-out, Ledoit-Wolf Mahalanobis 5-fold cross-fitted)")
    if calibration_cells is not None and len(calibration_cells) >= MIN_HELD_OUT:
        held_out = embed_cells(bundle, calibration_cells.samples, batch_size=batch_size)
        calibration = calibrate_held_out(calibration, index, held_out)
        calibrated_on = f"{len(calibration_cells)} held-out cells ({calibration_cells.name})"
    stored_whitening, whitening_scale = compact_whitening(calibration.whitening)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "xcyto_version": __version__,
        "weights_sha256": bundle.sha256,
        "bundle_name": bundle.name,
        "architecture": bundle.architecture,
        "embedding_layer": bundle.config.get("embedding_layer", "pool"),
        "embedding_dim": int(embeddings.shape[1]),
        "n_cells": len(samples),
        "classes": bundle.classes,
        "class_counts": np.bincount(labels, minlength=len(bundle.classes)).tolist(),
        "thumbnail_size": int(thumbnail_size),
        "source": {"dataset": dataset.name, "root": str(dataset.root) if dataset.root else None},
        "atypicality": {"k": calibration.k, "percentile": calibration.percentile,
                        "whitening_scale": whitening_scale,
                        "threshold": calibration.threshold,
                        "calibration_cells": int(len(calibration.knn_reference)),
                        "calibrated_on": calibrated_on,
                        "method": "max of the k-th nearest neighbour's cosine distance and the Ledoit-Wolf "
                                  "Mahalanobis distance, each scaled by its reference percentile"},
        "cell_ids": [sample.cell_id for sample in samples],
        "groups": groups,
    }
    target = Path(bundle.gallery_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        arrays = {"embeddings": stored, "labels": labels, "thumbnails": thumbnails,
                  **{f"atypicality_{name}": np.asarray(getattr(calibration, name), dtype=np.float32)
                     for name in CALIBRATION_ARRAYS}}
        arrays["atypicality_whitening"] = stored_whitening
        if morphology:
            from xcyto.morphology import feature_table, list_features, preferred_segmenter

            arrays["morphology"] = feature_table(samples, progress=progress).astype(np.float32)
            meta["morphology"] = {"features": list_features(), "segmenter": preferred_segmenter()}
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array, allow_pickle=False)
        (staging / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        gallery = _open(staging, meta)
        gallery._index = index
        for method in projections:
            gallery.projection(method)  # fitted and written into the staging folder
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    gallery = _open(target, meta)
    gallery._index, gallery._maps = index, {}
    _remember(bundle, gallery)
    return gallery


def group_codes(groups: list[str]) -> np.ndarray:
    """Integer code of each cell's source group (same group, same code)."""
    return np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1].astype(np.int64)


# -- loading ----------------------------------------------------------------------------
_CACHE: dict[int, tuple[weakref.ref, tuple, Gallery]] = {}


def load_gallery(bundle) -> Gallery | None:
    """The bundle's gallery (memory-mapped), or ``None`` when it has none.

    Cached per bundle object until ``gallery.json`` changes. Raises ``BundleError`` when
    the gallery was built with other weights or its files are inconsistent.
    """
    folder = bundle.gallery_dir
    if folder is None or not (Path(folder) / META_FILE).is_file():
        return None
    key = _cache_key(bundle, Path(folder))
    cached = _CACHE.get(id(bundle))
    if cached and cached[0]() is bundle and cached[1] == key:
        return cached[2]
    gallery = _open(Path(folder))
    if gallery.weights_sha256 != bundle.sha256:
        raise BundleError(
            f"{folder}: this gallery was built with other weights (sha256 {gallery.weights_sha256[:12]}..., "
            f"the bundle's are {str(bundle.sha256)[:12]}...); its embeddings do not belong to this model. "
            f"Rebuild it: xcyto gallery build --bundle {bundle.path} --data <training data>")
    _remember(bundle, gallery)
    return gallery


def require_gallery(bundle) -> Gallery:
    """``load_gallery``, with a clear error when the bundle has none."""
    gallery = load_gallery(bundle)
    if gallery is None:
        raise BundleError(f"bundle {bundle.path} has no gallery; build it with "
                          f"'xcyto gallery build --bundle {bundle.path} --data <training data>'")
    return gallery


def _cache_key(bundle, folder: Path) -> tuple:
    stat = (folder / META_FILE).stat()
    return (str(folder), bundle.sha256, stat.st_ino, stat.st_mtime_ns)


def _remember(bundle, gallery: Gallery) -> None:
    for key in [key for key, (ref, _, _) in _CACHE.items() if ref() is None]:
        del _CACHE[key]
    _CACHE[id(bundle)] = (weakref.ref(bundle), _cache_key(bundle, gallery.path), gallery)


def _open(folder: Path, meta: dict | None = None) -> Gallery:
    """Read ``gallery.json`` and memory-map the arrays, checking they agree."""
    try:
        meta = meta or json.loads((folder / META_FILE).read_text())
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAYS}
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise BundleError(f"{folder}: unreadable gallery ({error}); rebuild it with 'xcyto gallery build'") from None
    if meta.get("format") != FORMAT:
        raise BundleError(f"{folder / META_FILE}: not an xcyto gallery")
    n_cells, size = int(meta["n_cells"]), int(meta["thumbnail_size"])
    expected = {"embeddings": (n_cells, int(meta["embedding_dim"])), "labels": (n_cells,),
                "thumbnails": (n_cells, size, size, 3)}
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise BundleError(f"{folder}: {name}.npy has shape {arrays[name].shape}, gallery.json says {shape}; "
                              f"the gallery is corrupt, rebuild it")
    if len(meta["cell_ids"]) != n_cells or len(meta["groups"]) != n_cells:
        raise BundleError(f"{folder}: gallery.json lists {len(meta['cell_ids'])} cell ids for {n_cells} cells")
    settings = meta["atypicality"]
    calibration = AtypicalityReference(k=int(settings["k"]), percentile=float(settings["percentile"]),
                              **{name: np.asarray(arrays[f"atypicality_{name}"]) for name in CALIBRATION_ARRAYS
                                 if name != "whitening"},
                              whitening=expand_whitening(arrays["atypicality_whitening"],
                                                         settings.get("whitening_scale", 1.0)))
    return Gallery(path=folder, meta=meta, embeddings=arrays["embeddings"], labels=arrays["labels"],
                   thumbnails=arrays["thumbnails"], calibration=calibration)


def false_flag_rate(bundle, dataset, batch_size: int = 64) -> dict:
    """Share of ``dataset``'s cells flagged as unlike the training cells by ``bundle``'s gallery.

    Run it on held-out cells of the training distribution (e.g. the test split): the
    rate should be near ``100 - percentile`` percent (1%). Returns ``n``, ``flagged``,
    ``rate``, ``per_class`` rates, ``k``, ``percentile`` and ``flagged_cell_ids``.
    """
    gallery = require_gallery(bundle)
    embeddings = embed_cells(bundle, dataset.samples, batch_size=batch_size)
    _, flags = gallery.atypicality(torch.from_numpy(embeddings))
    labels = np.asarray(dataset.labels)
    per_class = {name: float(flags[labels == label].mean())
                 for label, name in enumerate(dataset.classes) if (labels == label).any()}
    return {
        "n": int(len(flags)),
        "flagged": int(flags.sum()),
        "rate": float(flags.mean()) if len(flags) else float("nan"),
        "per_class": per_class,
        "k": gallery.calibration.k,
        "percentile": gallery.calibration.percentile,
        "flagged_cell_ids": [sample.cell_id for sample, flag in zip(dataset.samples, flags) if flag],
    }
