"""The Gradio demo over a bundle (``python demo/app.py``; ``xcyto.demo.app.main``).

``xcyto.demo.cell_info`` describes the cell classes, ``xcyto.demo.views`` turns an
:class:`~xcyto.explain.Explanation` into what the page shows, ``xcyto.demo.embedding_map``
draws a cell on the cached training map, and ``xcyto.demo.app`` wires them to Gradio.
Gradio is imported only when the app is built.
"""
from xcyto.demo.cell_info import CELL_INFO, DISCLAIMER, CellInfo, cell_info

__all__ = ["CELL_INFO", "CellInfo", "DISCLAIMER", "cell_info"]
