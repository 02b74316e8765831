"""The Gradio demo over a bundle: ``python demo/app.py`` (= :func:`main`), or :func:`launch`.

It shows a cell's prediction beside its heatmaps, its nearest training cells and its place on
the training map; the shipped bundles (:func:`shipped_bundles`) come first. Gradio and torch are
imported only when the app is built, so ``--help`` answers at once.
"""
from xcyto.demo._cell_info import CELL_INFO, DISCLAIMER, CellInfo, cell_info
from xcyto.demo._cli import main
from xcyto.demo._shipped import DEFAULT_HOST, DEFAULT_PORT, MAX_FILE_SIZE, default_examples, example_files, shipped_bundles

_LAZY = ("Demo", "build", "launch")

__all__ = ["CELL_INFO", "CellInfo", "DEFAULT_HOST", "DEFAULT_PORT", "DISCLAIMER", "MAX_FILE_SIZE", "cell_info",
           "default_examples", "example_files", "main", "shipped_bundles", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from xcyto.demo import _app

        return getattr(_app, name)
    raise AttributeError(f"module 'xcyto.demo' has no attribute {name!r}")
