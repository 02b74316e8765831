"""What ``explain`` accepts: images in any form, and the class to explain."""
from __future__ import annotations

import os

import numpy as np
import torch

from xcyto.data import check_cell_size, read_image, to_rgb_uint8
from xcyto.errors import ExplainError, ImageError


def load_images(image) -> tuple[list[np.ndarray], list[str], bool]:
    """``(RGB uint8 arrays, names, single)`` from one image or a list of them.

    Paths and bytes go through :func:`xcyto.data.read_image` (which refuses huge
    images from the header, before decoding); PIL images, arrays and tensors through
    :func:`~xcyto.data.to_rgb_uint8`. A 4-D array or tensor is a batch.
    """
    single = not isinstance(image, (list, tuple))
    items = [image] if single else list(image)
    if single and _is_batch_array(image):
        items, single = list(image), False
    if not items:
        raise ImageError("no images given")
    arrays, names = [], []
    for index, item in enumerate(items):
        name = str(item) if isinstance(item, (str, os.PathLike)) else f"image {index}"
        if isinstance(item, (str, os.PathLike, bytes, bytearray)):
            array = read_image(item)
        else:
            try:
                array = to_rgb_uint8(item)
            except ImageError as error:
                raise ImageError(f"{name}: {error}") from None
        arrays.append(check_cell_size(array, name))
        names.append(name)
    return arrays, names, single


def _is_batch_array(image) -> bool:
    return isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 4


def resolve_target(target, classes: list[str], count: int) -> list[int] | None:
    """``None`` (explain the prediction), a class index or name, or one per image -> indices."""
    if target is None:
        return None
    if isinstance(target, (list, tuple, np.ndarray, torch.Tensor)) and not isinstance(target, str):
        targets = list(target.tolist() if hasattr(target, "tolist") else target)
        if len(targets) != count:
            raise ExplainError(f"{len(targets)} targets given for {count} images")
        return [_class_index(t, classes) for t in targets]
    return [_class_index(target, classes)] * count


def _class_index(target, classes: list[str]) -> int:
    if isinstance(target, (bool, np.bool_)):
        raise ExplainError(f"target must be a class name or index, got {target!r}")
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < len(classes):
            raise ExplainError(f"target class index {target} out of range 0..{len(classes) - 1} ({', '.join(classes)})")
        return int(target)
    if isinstance(target, str):
        wanted = target.strip().lower()
        for index, name in enumerate(classes):
            if name.lower() == wanted:
                return index
        if wanted.isdigit():
            return _class_index(int(wanted), classes)
        raise ExplainError(f"unknown class {target!r}; this bundle's classes are: {', '.join(classes)}")
    raise ExplainError(f"target must be a class name or index, got {type(target).__name__}")
