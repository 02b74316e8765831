"""Static figures of the embedding space: the training map, with new cells, errors and a query.

Class colours come from :func:`xcyto.plotting.class_colors`, as in every other figure.
"""
from __future__ import annotations

import numpy as np

from xcyto.plotting import class_colors, plt

AXIS_NAMES = {"umap": "UMAP", "pca": "PC", "tsne": "t-SNE"}
ERROR_COLOUR = "black"  # not a class colour (tab10 has red)


def plot_embedding_map(map_coords: np.ndarray, map_labels: np.ndarray, classes: list[str], *,
                       placed: np.ndarray | None = None, placed_labels: np.ndarray | None = None,
                       errors: np.ndarray | None = None, query: np.ndarray | None = None,
                       method: str = "umap", title: str | None = None):
    """The gallery map coloured by class; optionally new cells placed on it.

    ``map_coords`` ``(N, 2)`` and ``map_labels`` ``(N,)``: the training cells.
    ``placed`` ``(M, 2)`` and ``placed_labels`` ``(M,)``: new cells drawn larger, on top.
    ``errors`` bool, aligned with ``placed`` when given, else with the training cells:
    those cells are ringed in red. ``query`` ``(2,)`` or ``(Q, 2)``: drawn as stars.
    """
    colours = class_colors(classes)
    map_coords, map_labels = np.asarray(map_coords), np.asarray(map_labels)
    figure, axis = plt.subplots(figsize=(7.5, 6))
    background = placed is not None or query is not None
    for label, name in enumerate(classes):
        members = map_labels == label
        if not members.any():
            continue
        axis.scatter(*map_coords[members].T, s=8 if background else 14, color=colours[name],
                     alpha=0.3 if background else 0.8, linewidths=0,
                     label=f"{name} ({int(members.sum())})" if placed is None else None)
    if placed is not None:
        # one legend entry for the faint dots (the training cells); the class entries are the placed cells
        axis.scatter([], [], s=8, color="grey", alpha=0.5, linewidths=0, label=f"training cells ({len(map_coords)})")
        placed, placed_labels = np.asarray(placed), np.asarray(placed_labels)
        for label, name in enumerate(classes):
            members = placed_labels == label
            if members.any():
                axis.scatter(*placed[members].T, s=26, color=colours[name], edgecolors="black", linewidths=0.4,
                             label=f"{name} ({int(members.sum())})")
    if errors is not None:
        errors = np.asarray(errors, dtype=bool)
        ringed = (placed if placed is not None else map_coords)[errors]
        if len(ringed):
            axis.scatter(*ringed.T, s=90, facecolors="none", edgecolors=ERROR_COLOUR, linewidths=1.3,
                         label=f"misclassified ({len(ringed)})")
    if query is not None:
        query = np.atleast_2d(np.asarray(query))
        axis.scatter(*query.T, s=320, marker="*", color="gold", edgecolors="black", linewidths=1.2,
                     label="query cell", zorder=5)
    name = AXIS_NAMES.get(method, method)
    axis.set_xlabel(f"{name} 1")
    axis.set_ylabel(f"{name} 2")
    if method != "pca":  # UMAP and t-SNE axes have no units worth reading
        axis.set_xticks([])
        axis.set_yticks([])
    if title is None:
        title = f"{name} map of the training cells" + (" with new cells placed on it" if placed is not None else "")
    axis.set_title(title)
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8, markerscale=1.2)
    figure.tight_layout()
    return figure


def plot_gallery_map(gallery, method: str = "umap", errors: np.ndarray | None = None,
                     query_embedding=None, title: str | None = None):
    """The gallery's own map (fitted on first use); ``query_embedding`` ``(D,)`` placed as a star."""
    projection = gallery.projection(method)
    query = None if query_embedding is None else projection.transform(np.atleast_2d(np.asarray(query_embedding)))
    return plot_embedding_map(projection.coords, np.asarray(gallery.labels), gallery.classes, errors=errors,
                              query=query, method=projection.method, title=title)
