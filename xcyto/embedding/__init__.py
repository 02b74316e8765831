"""The embedding space of a bundle: training-cell gallery, nearest neighbours, 2-D maps,
and a flag for cells unlike any seen in training.

>>> gallery = xcyto.embedding.load_gallery(bundle)          # None if the bundle has none
>>> queries = xcyto.embedding.embed(bundle, bundle.preprocess(images))   # (B, D), unit norm
>>> gallery.neighbours(queries, k=5)                         # most similar training cells
>>> gallery.nearest_per_class(queries)                       # closest cell of each class
>>> scores, flags = gallery.atypicality(queries)             # flags: unlike the training cells
>>> gallery.projection("umap").transform(queries)           # positions on the training map

Figures (``plot_embedding_map``, ``plot_gallery_map``) import matplotlib on first use.
"""
from xcyto.embedding._atypicality import AtypicalityReference
from xcyto.embedding._embed import embed, embed_cells, thumbnail
from xcyto.embedding._gallery import (Gallery, Lookup, Neighbour, build_gallery, false_flag_rate, load_gallery,
                                     require_gallery)
from xcyto.embedding._place import Placement, place_cells
from xcyto.embedding._projection import METHODS, EmbeddingMap, check_method
from xcyto.embedding._search import NeighbourIndex

_FIGURES = ("plot_embedding_map", "plot_gallery_map")

__all__ = [
    "AtypicalityReference", "EmbeddingMap", "Gallery", "Lookup", "METHODS", "Neighbour", "NeighbourIndex", "Placement",
    "build_gallery", "check_method", "embed", "embed_cells", "false_flag_rate", "load_gallery", "place_cells",
    "require_gallery", "thumbnail", *_FIGURES,
]


def __getattr__(name: str):
    if name in _FIGURES:
        from xcyto.embedding import _figures as figures

        return getattr(figures, name)
    raise AttributeError(f"module 'xcyto.embedding' has no attribute {name!r}")
