"""The training map with one cell placed on it, cheap enough to draw on every request.

The map of the training cells does not change between requests, so its matplotlib
figure (:func:`xcyto.embedding.plot_embedding_map`) is rendered once per gallery and
kept as pixels, with the affine data-to-pixel transform of its axes. Placing a cell
is then a projection of its embedding (``gallery.projection(method).transform``) and
a star drawn with PIL: a few milliseconds instead of a fresh figure (~0.3 s).

UMAP maps that are not stored in the bundle take tens of seconds to fit (numba
compilation included), so :class:`MapViews` fits them in a background thread and
serves the stored PCA map until the UMAP map is ready.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
from PIL import Image, ImageDraw

from xcyto.errors import XcytoError

#: Resolution of the rendered map (figure inches x DPI = pixels: 7.5 x 6 in -> 750 x 600 px).
MAP_DPI = 100
STAR_RADIUS = 12
STAR_FILL = (255, 215, 0)
#: The map leaves as a JPEG: 4 ms to encode against 17-40 ms for a PNG of a 750 x 600 plot,
#: with no visible loss at this quality.
JPEG_QUALITY = 92


class MapView:
    """One stored map of a gallery, pre-rendered; :meth:`place` draws cells on a copy."""

    def __init__(self, gallery, method: str = "umap", fit: bool = False):
        from xcyto.embedding import plot_embedding_map
        from xcyto.plotting import plt

        self.projection = gallery.projection(method, fit=fit)
        self.method = self.projection.method
        coords = np.asarray(self.projection.coords)
        name = {"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}.get(self.method, self.method)
        # Drawn with a query so the training cells are faint and the legend names the star;
        # the star itself is hidden before rendering and drawn per request instead.
        figure = plot_embedding_map(coords, np.asarray(gallery.labels), gallery.classes, query=coords.mean(0),
                                    method=self.method,
                                    title=f"This cell (star) on the {name} map of {len(coords)} training cells")
        axis = figure.axes[0]
        for collection in axis.collections:
            if collection.get_label() == "query cell":
                collection.set_visible(False)
        legend = axis.get_legend()
        if legend is not None:  # legend markers at full colour (the dots are faint), a modest star
            for handle in legend.legend_handles:
                handle.set_alpha(1.0)
                if handle.get_label() == "query cell" and hasattr(handle, "set_sizes"):
                    handle.set_sizes([110])
        figure.set_dpi(MAP_DPI)
        figure.canvas.draw()
        self.background = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
        height = self.background.shape[0]
        origin, unit_x, unit_y = axis.transData.transform([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        self._scale = np.array([unit_x[0] - origin[0], -(unit_y[1] - origin[1])])  # pixel rows grow downwards
        self._offset = np.array([origin[0], height - origin[1]])
        x0, y0, x1, y1 = axis.bbox.extents
        self._box = (x0, height - y1, x1, height - y0)
        plt.close(figure)

    def pixels(self, positions: np.ndarray) -> np.ndarray:
        """Map coordinates ``(B, 2)`` -> pixel ``(x, y)`` in :attr:`background`, kept inside the axes."""
        pixels = np.atleast_2d(positions) * self._scale + self._offset
        left, top, right, bottom = self._box
        return np.column_stack([np.clip(pixels[:, 0], left, right), np.clip(pixels[:, 1], top, bottom)])

    def place(self, embedding) -> np.ndarray:
        """The map (``H x W x 3`` uint8) with the cell of ``embedding`` ``(D,)`` drawn as a star."""
        position = self.projection.transform(np.atleast_2d(np.asarray(embedding, dtype=np.float32)))
        image = Image.fromarray(self.background)
        draw = ImageDraw.Draw(image)
        for x, y in self.pixels(position):
            draw.polygon(_star(x, y, STAR_RADIUS), fill=STAR_FILL, outline=(0, 0, 0), width=2)
        return np.asarray(image)


def _star(x: float, y: float, radius: float) -> list[tuple[float, float]]:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    return [(float(x + r * np.cos(a)), float(y + r * np.sin(a))) for r, a in zip(radii, angles)]


class MapViews:
    """The map the demo shows for one gallery: ``preferred`` when stored (or once fitted
    in the background), else the stored PCA map. :meth:`current` never blocks on a fit."""

    def __init__(self, gallery, preferred: str = "umap", fit_in_background: bool = True):
        self.gallery = gallery
        self.preferred = preferred
        self._views: dict[str, MapView] = {}
        self._lock = threading.Lock()
        self._fitting: threading.Thread | None = None
        self.note: str | None = None
        if self._try(preferred) is None and fit_in_background and preferred != "pca":
            self.note = f"the {preferred.upper()} map is being fitted (first run of this bundle); showing PCA meanwhile"
            self._fitting = threading.Thread(target=self._fit, name=f"xcyto-demo-{preferred}-fit", daemon=True)
            self._fitting.start()

    def _try(self, method: str, fit: bool = False) -> MapView | None:
        fit = fit or method == "pca"  # exact and fast: fitted whenever missing
        with self._lock:
            if method in self._views:
                return self._views[method]
        try:
            view = MapView(self.gallery, method, fit=fit)
        except (XcytoError, ImportError, ValueError):
            return None
        with self._lock:
            return self._views.setdefault(method, view)

    def _fit(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            view = self._try(self.preferred, fit=True)
        self.note = None if view is not None else f"the {self.preferred.upper()} map could not be fitted; showing PCA"

    def wait(self, timeout: float | None = None) -> None:
        """Block until a background fit (if any) has finished."""
        if self._fitting is not None:
            self._fitting.join(timeout)

    def current(self) -> MapView | None:
        """The preferred map if ready, else PCA, else ``None`` (no map can be drawn)."""
        for method in (self.preferred, "pca"):
            with self._lock:
                if method in self._views:
                    return self._views[method]
        return self._try("pca")
