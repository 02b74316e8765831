"""Herlev Pap smear benchmark: class folders, optional ``<stem>-d.bmp`` colour masks.

Two label schemes: the 7 class folders (sorted by name) and ``"binary"``
(normal = the ``normal_*`` folders, abnormal = the rest).

Groups: Herlev names cells ``AAAAAAAAA-BBBBBBBBB-NNN``; cells sharing the prefix
come from one source image, so the group is the stem without its last ``-NNN``.
Copies renamed to ``N-K`` (the 40 px redistribution, N = class index) carry no
source image, so each such cell is its own group and the dataset says so.

Mask convention (shared with SIPaKMeD): ``nucleus_mask`` is the nucleus and
``cytoplasm_mask`` is the whole cell, nucleus included, so "inside the cell" is
``cytoplasm_mask`` and "cytoplasm proper" is ``cytoplasm_mask & ~nucleus_mask``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from xcyto.data._folder import finish_dataset, images_under, require_folder, subfolders
from xcyto.data._io import ProblemLog, read_image, read_images
from xcyto.data._records import CellDataset, CellSample
from xcyto.errors import DataError, ImageError

HERLEV_FOLDER_PATTERN = re.compile(r"^(normal_.+|.+_dysplastic|carcinoma_in_situ)$", re.IGNORECASE)
BINARY_CLASSES = ["normal", "abnormal"]
MASK_SUFFIX = "-d"
NO_GROUPS_NOTE = ("file names carry no source image (names 'N-K'), so source-image groups are unknown "
                  "for this copy: each cell is its own group and splits cannot keep a slide together")


def is_herlev(root: Path) -> bool:
    """Whether ``root`` has class folders named like Herlev's (``normal_*``, ``*_dysplastic``, ...)."""
    return root.is_dir() and any(HERLEV_FOLDER_PATTERN.match(folder.name) for folder in subfolders(root))


def load_herlev(root: Path, scheme: str | None = None, *, progress: bool | None = None) -> CellDataset:
    """Herlev cells (and masks where ``<stem>-d.bmp`` exists) under ``root/<class>/``."""
    root = require_folder(root)
    if scheme not in (None, "default", "binary"):
        raise DataError(f"unknown Herlev label scheme {scheme!r}; use 'default' (7 classes) or 'binary'")
    log = ProblemLog(root.name)
    cells_by_folder, masks_by_folder = {}, {}
    for folder in subfolders(root):
        files = images_under(folder)
        cells = [path for path in files if not is_mask_file(path)]
        if cells:
            cells_by_folder[folder.name] = cells
            masks_by_folder[folder.name] = {_cell_stem(p): p for p in files if is_mask_file(p)}
        else:
            log.add("class folders without cell images, ignored", folder.name)
    if not cells_by_folder:
        raise DataError(f"{root}: no class folders with images; expected {root}/<class folder>/<cell image>")
    folder_names = sorted(cells_by_folder)
    classes = BINARY_CLASSES if scheme == "binary" else folder_names

    entries = [(folder, path) for folder in folder_names for path in cells_by_folder[folder]]
    images = read_images([path for _, path in entries], log, progress, f"reading {root.name}")
    any_masks = any(masks_by_folder.values())
    samples, ungrouped = [], 0
    for (folder, path), image in zip(entries, images):
        if image is None:
            continue
        class_name = _class_of(folder) if scheme == "binary" else folder
        cell_id = path.relative_to(root).as_posix()
        group = herlev_group(path.stem)
        if group is None:
            group, ungrouped = cell_id, ungrouped + 1
        nucleus, cell = _masks_for(path, image, masks_by_folder[folder].get(path.stem.lower()), any_masks, log)
        samples.append(CellSample(image=image, label=classes.index(class_name), class_name=class_name,
                                  cell_id=cell_id, group=group, path=path,
                                  nucleus_mask=nucleus, cytoplasm_mask=cell))
    if ungrouped:
        log.note(NO_GROUPS_NOTE if ungrouped == len(samples) else
                 f"{ungrouped} cells have names without a source image; each is its own group")
    name = f"{root.name} (binary)" if scheme == "binary" else root.name
    return finish_dataset(samples, classes, log, name=name, root=root, layout="herlev")


def herlev_group(stem: str) -> str | None:
    """Source image of a Herlev cell: ``153956040-153956058-001`` -> ``153956040-153956058``.

    None when the name has fewer than three dash-separated parts (``N-K``): cutting
    the last part there would leave only the class index.
    """
    parts = stem.split("-")
    return "-".join(parts[:-1]) if len(parts) >= 3 else None


def is_mask_file(path: Path) -> bool:
    return path.stem.lower().endswith(MASK_SUFFIX)


def decode_herlev_mask(mask_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(nucleus, whole cell)`` bool masks from a mask in the Herlev colour code.

    Nucleus is light blue (0, 0, 255), cytoplasm dark blue (0, 0, 128); red is
    background and grey/black unlabelled. Colours are matched with a tolerance so a
    resaved (lossy) mask still decodes.
    """
    red, green, blue = (mask_rgb[..., channel].astype(np.int16) for channel in range(3))
    bluish = (red < 64) & (green < 64)
    nucleus = bluish & (blue >= 192)
    cytoplasm = bluish & (blue >= 64) & (blue < 192)
    return nucleus, nucleus | cytoplasm


def _masks_for(cell_path: Path, image: np.ndarray, mask_path: Path | None, any_masks: bool,
               log: ProblemLog) -> tuple[np.ndarray | None, np.ndarray | None]:
    if mask_path is None:
        if any_masks:
            log.add("cells without a -d.bmp mask", cell_path.name)
        return None, None
    try:
        mask_rgb = read_image(mask_path)
    except ImageError as error:
        log.add("unreadable masks, cells kept without masks", str(error))
        return None, None
    if mask_rgb.shape[:2] != image.shape[:2]:
        log.add("masks of a different size than their cell, dropped",
                f"{mask_path.name} {mask_rgb.shape[1]}x{mask_rgb.shape[0]} vs {image.shape[1]}x{image.shape[0]}")
        return None, None
    return decode_herlev_mask(mask_rgb)


def _cell_stem(mask_path: Path) -> str:
    return mask_path.stem[: -len(MASK_SUFFIX)].lower()


def _class_of(folder: str) -> str:
    return "normal" if folder.lower().startswith("normal") else "abnormal"
