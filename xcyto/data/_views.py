"""Views of a cell crop: what part of the crop a model reads.

``cell``: the whole crop (the default). ``nucleus``: a square around the segmented nucleus,
``NUCLEUS_VIEW_SCALE`` times its equivalent diameter, so that at the model's input size the
nucleus, which decides the grade, fills a third of the side instead of a few dozen pixels of
the whole crop. The square is moved, not cut, where it would leave the crop; a crop whose
nucleus cannot be found is read whole.

A view is a box ``(left, top, width, height)`` in the crop's pixels; the transform cuts it out
of the image and of its masks alike, and explanations put their maps back into it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from xcyto.errors import DataError

#: Side of the nucleus view in equivalent diameters of the nucleus.
NUCLEUS_VIEW_SCALE = 3.0
#: The nucleus view is never smaller than this many pixels (tiny nuclei are not blown up to mush).
MIN_VIEW_SIDE = 48
_BOXES: dict[bytes, tuple[int, int, int, int]] = {}
_KEPT_BOXES = 8192


def _whole(image: np.ndarray) -> tuple[int, int, int, int]:
    return 0, 0, image.shape[1], image.shape[0]


def _nucleus(image: np.ndarray) -> tuple[int, int, int, int]:
    """The square around the nucleus (segmented once per distinct image: training reads each
    crop every epoch)."""
    key = hashlib.blake2b(image.tobytes(), digest_size=16, person=str(image.shape).encode()).digest()
    if key not in _BOXES:
        if len(_BOXES) >= _KEPT_BOXES:
            _BOXES.clear()
        _BOXES[key] = _nucleus_square(image)
    return _BOXES[key]


def _nucleus_square(image: np.ndarray) -> tuple[int, int, int, int]:
    from xcyto.morphology import SegmentationError, segment

    height, width = image.shape[:2]
    try:
        nucleus = segment(image).nucleus
    except SegmentationError:
        return _whole(image)
    if not nucleus.any():
        return _whole(image)
    rows, columns = np.nonzero(nucleus)
    diameter = 2.0 * np.sqrt(len(rows) / np.pi)
    side = int(min(min(height, width), max(MIN_VIEW_SIDE, round(NUCLEUS_VIEW_SCALE * diameter))))
    left = int(np.clip(round(columns.mean() - side / 2), 0, width - side))
    top = int(np.clip(round(rows.mean() - side / 2), 0, height - side))
    return left, top, side, side


#: Views by name; each takes an ``H x W x 3`` uint8 crop and returns its box.
VIEWS: dict[str, Callable[[np.ndarray], tuple[int, int, int, int]]] = {"cell": _whole, "nucleus": _nucleus}


def view_box(image: np.ndarray, view: str = "cell") -> tuple[int, int, int, int]:
    """``(left, top, width, height)`` of the part of ``image`` that the view ``view`` reads."""
    return VIEWS[check_view(view)](image)


def check_view(view: str) -> str:
    if view not in VIEWS:
        raise DataError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    return view
