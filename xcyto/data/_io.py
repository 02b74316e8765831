"""Reading cell images, and reporting the files that could not be read.

Every image in xcyto enters through :func:`read_image` (files, bytes) or
:func:`to_rgb_uint8` (PIL images, arrays, tensors), so the rest of the code can rely
on one format: ``H x W x 3`` uint8 RGB. Problems are raised as
:class:`~xcyto.errors.ImageError` naming the file, never as a PIL or NumPy error.
Loaders skip such files and report them once, through :class:`ProblemLog`.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from xcyto.errors import ImageError

#: Largest image accepted, in pixels. Checked from the file header before decoding, so
#: a huge or malicious file cannot exhaust memory. Whole slides belong in a tiler.
MAX_PIXELS = 50_000_000
#: Smallest side (pixels) of an image worth classifying or explaining.
MIN_SIDE = 8

#: File extensions read as images (compared lower-case).
IMAGE_EXTENSIONS = frozenset({".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff"})

#: Loading more images than this shows a progress bar (when stderr is a terminal).
PROGRESS_THRESHOLD = 300

#: Alpha is composited over white: transparent parts of a cell crop read as empty
#: brightfield background, not as black.
_ALPHA_BACKGROUND = 255.0


class DataWarning(UserWarning):
    """Files were skipped or annotations dropped while loading a dataset."""


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has an image extension (by name only; the file is not opened)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_image(source: str | Path | bytes | BinaryIO, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file (path, bytes or file object) to ``H x W x 3`` uint8 RGB.

    Grayscale, palette, RGBA and 16-bit images are converted (see :func:`to_rgb_uint8`).
    Raises :class:`ImageError` naming the file when it is missing, not an image,
    truncated, or larger than ``max_pixels`` (checked from the header, before decoding).
    """
    name = _source_name(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        with Image.open(source) as image:
            _check_pixel_count(image.size, name, max_pixels)
            image.load()
            return to_rgb_uint8(image, max_pixels=max_pixels)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name}: image too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # PIL reports truncated and corrupt data as OSError/SyntaxError/ValueError.
        raise ImageError(f"{name}: cannot decode image ({error})") from None


def check_cell_size(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` if both sides have at least ``MIN_SIDE`` pixels, else an ImageError naming it."""
    if min(array.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{name}: {array.shape[1]} x {array.shape[0]} pixels is too small for a cell "
                         f"(need at least {MIN_SIDE} x {MIN_SIDE}); pass a single-cell crop")
    return array


def to_rgb_uint8(obj, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Convert a PIL image, NumPy array or torch tensor to ``H x W x 3`` uint8 RGB.

    Accepts ``H x W`` (grayscale), ``H x W x 1/3/4`` and channel-first ``1/3/4 x H x W``
    arrays; uint8, bool, 16-bit (scaled by 255/65535, not clipped) and float images
    (``[0, 1]`` scaled to 255, anything larger clipped to ``[0, 255]``). Alpha is
    composited over white. A path or bytes is read with :func:`read_image`.
    Raises :class:`ImageError` for anything else.
    """
    if isinstance(obj, (str, Path, bytes, bytearray, memoryview)):
        return read_image(obj, max_pixels=max_pixels)
    if isinstance(obj, Image.Image):
        return _pil_to_rgb(obj, max_pixels)
    if type(obj).__module__.startswith("torch"):
        obj = obj.detach().cpu().numpy()
    if not isinstance(obj, np.ndarray):
        raise ImageError(f"cannot use {type(obj).__name__} as an image: expected a PIL image, array or tensor")
    return _array_to_rgb(obj, max_pixels)


class ProblemLog:
    """Problems found while loading one dataset, reported once at the end.

    Loaders call :meth:`add` for each skipped file or dropped annotation and
    :meth:`report` when done, which issues one :class:`DataWarning` per kind of
    problem (with a count and a few example files) and returns the messages so they
    can be stored in ``CellDataset.warnings``.
    """

    EXAMPLES = 3

    def __init__(self, dataset_name: str) -> None:
        self.dataset_name = dataset_name
        self._problems: dict[str, list[str]] = {}
        self._notes: list[str] = []

    def add(self, kind: str, what: str) -> None:
        """Record one problem of ``kind`` (e.g. "unreadable images, skipped") about ``what``."""
        self._problems.setdefault(kind, []).append(what)

    def note(self, message: str) -> None:
        """Record a dataset-level caveat (not about a particular file)."""
        self._notes.append(message)

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return sum(len(items) for items in self._problems.values())
        return len(self._problems.get(kind, []))

    def messages(self) -> list[str]:
        lines = []
        for kind, items in self._problems.items():
            examples = "; ".join(items[: self.EXAMPLES])
            more = f"; and {len(items) - self.EXAMPLES} more" if len(items) > self.EXAMPLES else ""
            lines.append(f"{self.dataset_name}: {len(items)} {kind} (e.g. {examples}{more})")
        return lines + [f"{self.dataset_name}: {note}" for note in self._notes]

    def report(self) -> list[str]:
        """Warn once per kind of problem; return all messages."""
        lines = self.messages()
        for line in lines:
            warnings.warn(line, DataWarning, stacklevel=3)
        return lines


def read_images(paths: Iterable[Path], log: ProblemLog, progress: bool | None = None,
                description: str = "reading images") -> list[np.ndarray | None]:
    """Read many images; unreadable ones become ``None`` and are logged, not raised.

    A progress bar is shown for more than ``PROGRESS_THRESHOLD`` images unless
    ``progress`` is False (None: only when stderr is a terminal).
    """
    paths = list(paths)
    images: list[np.ndarray | None] = []
    for path in _progress(paths, progress, description):
        try:
            images.append(read_image(path))
        except ImageError as error:
            log.add("unreadable images, skipped", str(error))
            images.append(None)
    return images


def _progress(items: list, progress: bool | None, description: str):
    if progress is False or len(items) <= PROGRESS_THRESHOLD:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="img", disable=None if progress is None else False, leave=False)


def _source_name(source) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(getattr(source, "name", "<file object>"))


def _check_pixel_count(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width} x {height} pixels is above the limit of {max_pixels:,} "
            "(xcyto.data.MAX_PIXELS); crop single cells first"
        )


def _pil_to_rgb(image: Image.Image, max_pixels: int) -> np.ndarray:
    _check_pixel_count(image.size, "image", max_pixels)
    if image.mode in ("RGB", "L"):
        return _array_to_rgb(np.asarray(image), max_pixels)
    if image.mode in ("P", "PA", "LA", "La", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        target = "RGBA" if image.mode in ("PA", "LA", "La", "RGBa") or "transparency" in image.info else "RGB"
        return _array_to_rgb(np.asarray(image.convert(target)), max_pixels)
    # RGBA, 16-bit ("I;16*"), 32-bit int ("I") and float ("F"): let the array path scale them.
    return _array_to_rgb(np.asarray(image), max_pixels)


def _array_to_rgb(array: np.ndarray, max_pixels: int) -> np.ndarray:
    array = _channels_last(array)
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ImageError(f"array of {array.shape[1]} x {array.shape[0]} pixels is above the limit of {max_pixels:,}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"image array has no pixels (shape {array.shape})")
    alpha = None
    if array.shape[2] in (2, 4):
        alpha = _to_unit_float(array[..., -1:])
        array = array[..., :-1]
    if alpha is None and array.dtype == np.uint8:
        rgb = array
    else:
        rgb_float = _to_unit_float(array) * 255.0
        if alpha is not None:
            rgb_float = rgb_float * alpha + _ALPHA_BACKGROUND * (1.0 - alpha)
        rgb = np.clip(np.rint(rgb_float), 0, 255).astype(np.uint8)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if not rgb.flags.writeable or not rgb.flags.c_contiguous:
        rgb = np.array(rgb, order="C")  # PIL's arrays are read-only; torch.from_numpy wants writable
    return rgb


def _channels_last(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3 and array.shape[2] in (1, 2, 3, 4):
        return array
    if array.ndim == 3 and array.shape[0] in (1, 3, 4):
        return np.moveaxis(array, 0, -1)
    raise ImageError(f"cannot use an array of shape {array.shape} as an image: expected H x W, H x W x C or C x H x W")


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    """Scale to ``[0, 1]`` by what the dtype means: 8-bit /255, 16-bit /65535, float as is."""
    kind, itemsize = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return array.astype(np.float32)
    if kind == "u" and itemsize == 1:
        return array.astype(np.float32) / 255.0
    if kind == "u" and itemsize == 2:  # any byte order (PIL's "I;16B" is big-endian)
        return array.astype(np.float32) / 65535.0
    if kind in "iu":
        # PIL opens 16-bit PNG/TIFF as 32-bit "I": judge the range from the values.
        peak = float(array.max(initial=0))
        scale = 255.0 if peak <= 255 else 65535.0
        return np.clip(array.astype(np.float32) / scale, 0.0, 1.0)
    if kind == "f":
        if not np.isfinite(array).all():
            raise ImageError("image array contains NaN or infinite values")
        peak = float(array.max(initial=0.0))
        scale = 1.0 if peak <= 1.0 else 255.0
        return np.clip(array.astype(np.float32) / scale, 0.0, 1.0)
    raise ImageError(f"cannot use an array of dtype {array.dtype} as an image")
