"""SIPaKMeD: five ``im_<Class>`` folders of single-cell crops with contour files.

Layout (the Kaggle copy nests each class twice, ``im_X/im_X/``)::

    im_Dyskeratotic[/im_Dyskeratotic]/CROPPED/001_01.bmp
                                     CROPPED/001_01_nuc.dat   one "x,y" point per line
                                     CROPPED/001_01_cyt.dat

Full cluster images beside ``CROPPED/`` are ignored. The group of a crop ``NNN_MM``
is its class and cluster image (``Dyskeratotic/001``): crops of one cluster image
stay on one side of a split.

Mask convention (shared with Herlev): ``nucleus_mask`` is the filled nucleus
contour and ``cytoplasm_mask`` the whole cell (the filled cytoplasm contour, nucleus
included). A missing or malformed contour, or one outside the crop, leaves that
mask ``None`` and is reported in one warning; it never stops the load.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from xcyto.data._folder import finish_dataset, natural_key, require_folder
from xcyto.data._io import ProblemLog, is_image_file, read_images
from xcyto.data._records import CellDataset, CellSample
from xcyto.errors import DataError

SIPAKMED_CLASSES = ["Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"]
CROP_NAME = re.compile(r"^(\d+)_(\d+)$")
#: Contour points may sit up to this many pixels outside the crop (boundary tracers
#: often emit x = width); they are clipped. Farther out means the contour belongs to
#: another frame (e.g. the full cluster image) and is refused.
CONTOUR_TOLERANCE = 1.0
CONTOUR_PROBLEMS = "contour files missing, malformed or outside their crop (cells kept without that mask)"


def is_sipakmed(root: Path) -> bool:
    """Whether ``root`` holds ``im_*`` class folders."""
    return root.is_dir() and any(p.is_dir() and p.name.startswith("im_") for p in root.iterdir())


def crop_folder(root: Path, class_name: str) -> Path | None:
    """The ``CROPPED`` folder of a class, nested once or twice; None if absent."""
    class_dir = root / f"im_{class_name}"
    for candidate in (class_dir / class_dir.name / "CROPPED", class_dir / "CROPPED"):
        if candidate.is_dir():
            return candidate
    return None


def load_sipakmed(root: Path, scheme: str | None = None, *, progress: bool | None = None) -> CellDataset:
    """SIPaKMeD crops with nucleus and whole-cell masks from their ``.dat`` contours."""
    root = require_folder(root)
    if scheme not in (None, "default"):
        raise DataError(f"label scheme {scheme!r} is not available for SIPaKMeD; it has only its 5 classes")
    log = ProblemLog(root.name)
    known = {f"im_{name}" for name in SIPAKMED_CLASSES}
    for folder in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("im_")):
        if folder not in known:
            log.add("unknown im_* folders, ignored", folder)
    entries = []
    for label, class_name in enumerate(SIPAKMED_CLASSES):
        folder = crop_folder(root, class_name)
        crops = _crops_in(folder) if folder else []
        if not crops:
            log.add("classes without crops (expected im_<Class>[/im_<Class>]/CROPPED/NNN_MM.bmp)", class_name)
        entries += [(label, class_name, path) for path in crops]
    images = read_images([path for _, _, path in entries], log, progress, f"reading {root.name}")
    samples = []
    for (label, class_name, path), image in zip(entries, images):
        if image is None:
            continue
        match = CROP_NAME.match(path.stem)
        if match is None:
            log.add("crops not named NNN_MM, each its own group", path.name)
        cluster = match.group(1) if match else path.stem
        nucleus = _contour_mask(path.with_name(f"{path.stem}_nuc.dat"), image.shape[:2], log)
        cell = _contour_mask(path.with_name(f"{path.stem}_cyt.dat"), image.shape[:2], log)
        if cell is not None and nucleus is not None:
            cell = cell | nucleus  # the cell region contains its nucleus, whatever the tracer did
        samples.append(CellSample(image=image, label=label, class_name=class_name,
                                  cell_id=f"{class_name}/{path.stem}", group=f"{class_name}/{cluster}",
                                  path=path, nucleus_mask=nucleus, cytoplasm_mask=cell))
    return finish_dataset(samples, SIPAKMED_CLASSES, log, name=root.name, root=root, layout="sipakmed")


def read_contour(path: Path) -> np.ndarray:
    """Points of a ``.dat`` contour as an ``N x 2`` float array of ``(x, y)``.

    Accepts commas, semicolons or whitespace between the numbers, and blank lines.
    Raises DataError when the file is missing, a line is not two numbers, or there
    are fewer than three points.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise DataError(f"{path.name}: cannot read ({error.strerror or error})") from None
    points = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = [field for field in re.split(r"[,;\s]+", line.strip()) if field]
        if not fields:
            continue
        try:
            x, y = (float(field) for field in fields)
        except ValueError:
            raise DataError(f"{path.name}: line {line_number} is not an 'x,y' pair: {line.strip()[:40]!r}") from None
        points.append((x, y))
    contour = np.array(points, dtype=np.float64).reshape(-1, 2)
    if len(contour) < 3:
        raise DataError(f"{path.name}: {len(contour)} points, a contour needs at least 3")
    if not np.isfinite(contour).all():
        raise DataError(f"{path.name}: contains NaN or infinite coordinates")
    return contour


def contour_to_mask(contour: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fill a contour into an ``H x W`` bool mask; DataError if it leaves the image."""
    height, width = shape
    x, y = contour[:, 0], contour[:, 1]
    low, high_x, high_y = -CONTOUR_TOLERANCE, width - 1 + CONTOUR_TOLERANCE, height - 1 + CONTOUR_TOLERANCE
    if x.min() < low or y.min() < low or x.max() > high_x or y.max() > high_y:
        raise DataError(f"contour spans x {x.min():.0f}..{x.max():.0f}, y {y.min():.0f}..{y.max():.0f}, "
                        f"outside the {width} x {height} crop")
    pixels = np.rint(np.stack([np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)], axis=1)).astype(np.int32)
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(mask, [pixels.reshape(-1, 1, 2)], 1)
    return mask.astype(bool)


def _contour_mask(path: Path, shape: tuple[int, int], log: ProblemLog) -> np.ndarray | None:
    if not path.is_file():
        log.add(CONTOUR_PROBLEMS, f"{path.name}: missing")
        return None
    try:
        return contour_to_mask(read_contour(path), shape)
    except DataError as error:
        message = str(error)
        log.add(CONTOUR_PROBLEMS, message if message.startswith(path.name) else f"{path.name}: {message}")
        return None


def _crops_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: natural_key(p.name))
