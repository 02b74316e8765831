"""Two copies of one collection, matched cell by cell by what they look like.

Public copies of a cell collection are often resized, padded or renamed by whoever
redistributed them: Herlev circulates at 224 px (padded to a square, original names) and at
40 px (stretched, renamed ``N-K``, with nucleus/cytoplasm masks). :func:`match_copies`
pairs the cells of two copies within each class by the correlation of small thumbnails,
after cutting the uniform padding bands, and :func:`transfer_masks` brings the masks of one
copy onto the images (and names and source groups) of the other.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from xcyto.data._records import CellDataset
from xcyto.errors import DataError

THUMBNAIL = 40
#: Pairs less alike than this (Pearson correlation of the thumbnails) are left unmatched.
MIN_CORRELATION = 0.9


@dataclass(frozen=True)
class Match:
    target: int  # index into the target copy
    source: int  # index into the source copy
    correlation: float


def content_box(image: np.ndarray, tolerance: float = 6.0) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of ``image`` without uniform bands along its edges
    (rows or columns whose brightness varies by less than ``tolerance`` grey levels)."""
    grey = image.astype(np.float32).mean(axis=2)
    rows = np.flatnonzero(grey.std(axis=1) > tolerance)
    cols = np.flatnonzero(grey.std(axis=0) > tolerance)
    if len(rows) < 8 or len(cols) < 8:
        return 0, image.shape[0], 0, image.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _thumbnail(image: np.ndarray) -> np.ndarray:
    import cv2

    top, bottom, left, right = content_box(image)
    small = cv2.resize(image[top:bottom, left:right], (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)
    vector = small.astype(np.float32).ravel()
    vector -= vector.mean()
    return vector / (np.linalg.norm(vector) + 1e-9)


def match_copies(target: CellDataset, source: CellDataset, min_correlation: float = MIN_CORRELATION) -> list[Match]:
    """One-to-one pairs of cells of the same class, most alike overall (Hungarian assignment
    on thumbnail correlation), keeping pairs at least ``min_correlation`` alike."""
    from scipy.optimize import linear_sum_assignment

    if list(target.classes) != list(source.classes):
        raise DataError(f"the copies have different classes: {target.classes} and {source.classes}")
    matches = []
    for label in range(len(target.classes)):
        mine = np.flatnonzero(target.labels == label)
        theirs = np.flatnonzero(source.labels == label)
        if not len(mine) or not len(theirs):
            continue
        similarity = (np.stack([_thumbnail(target.samples[i].image) for i in mine])
                      @ np.stack([_thumbnail(source.samples[j].image) for j in theirs]).T)
        rows, cols = linear_sum_assignment(-similarity)
        matches += [Match(int(mine[r]), int(theirs[c]), float(similarity[r, c])) for r, c in zip(rows, cols)
                    if similarity[r, c] >= min_correlation]
    return sorted(matches, key=lambda match: match.target)


def transfer_masks(target: CellDataset, source: CellDataset, min_correlation: float = MIN_CORRELATION) -> CellDataset:
    """The matched cells of ``target`` with ``source``'s nucleus and cell masks, resized onto
    each target image's content box (its padding bands are background)."""
    import cv2

    samples = []
    for match in match_copies(target, source, min_correlation):
        cell, donor = target.samples[match.target], source.samples[match.source]
        if donor.nucleus_mask is None or donor.cytoplasm_mask is None:
            continue
        top, bottom, left, right = content_box(cell.image)
        masks = []
        for mask in (donor.nucleus_mask, donor.cytoplasm_mask):
            placed = np.zeros(cell.image.shape[:2], bool)
            placed[top:bottom, left:right] = cv2.resize(mask.astype(np.uint8), (right - left, bottom - top),
                                                        interpolation=cv2.INTER_NEAREST).astype(bool)
            masks.append(placed)
        samples.append(dataclasses.replace(cell, nucleus_mask=masks[0], cytoplasm_mask=masks[1] | masks[0]))
    if not samples:
        raise DataError(f"no cells of {target.name} matched {source.name} closely enough (correlation "
                        f">= {min_correlation})")
    return dataclasses.replace(target, samples=samples)
