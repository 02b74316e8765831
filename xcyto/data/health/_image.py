"""What a crop is as a picture, whatever it shows: exposure, contrast, focus, size, and a
fingerprint that survives re-encoding, rescaling, flips and quarter turns.

Focus is measured at a fixed scale (the crop shrunk to ``FOCUS_SIDE`` on its longer side) as
the variance of the Laplacian over the variance of the grey levels: fine detail relative to
the crop's own contrast, so a pale crop is not called blurred for being pale. It is judged
against the collection's own median (a collection of soft crops is not flagged as a whole).

The fingerprint is a perceptual hash (Zauner 2010: the signs of the lowest 8 x 8 DCT
coefficients of a 32 x 32 grey thumbnail) for each of the 8 dihedral views, computed from
one DCT by sign changes and a transposition, plus the normalised thumbnail itself, so a
candidate pair can be confirmed by correlation.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

FOCUS_SIDE = 128
THUMB = 32
HASH_SIDE = 8


@dataclass
class ImageFacts:
    """Per-crop picture facts (see the module docstring)."""

    height: int
    width: int
    brightness: float  # grey level of the brightest 2 % (0..255): the slide's light
    darkest_density: float  # optical density (R + G + B) of the darkest 0.5 %, against the brightest
    grey_std: float
    log_sharpness: float
    pixels_md5: str
    hashes: np.ndarray  # (8,) uint64: perceptual hash of each dihedral view
    thumb: np.ndarray  # (8, THUMB * THUMB) float32: each view's thumbnail, zero mean and unit norm


def image_facts(image: np.ndarray) -> ImageFacts:
    """:class:`ImageFacts` of an ``H x W x 3`` uint8 RGB crop."""
    import cv2

    height, width = image.shape[:2]
    grey = image.astype(np.float32).mean(axis=2)
    reference = np.percentile(image.reshape(-1, 3), 98, axis=0).astype(np.float32) + 1.0
    density = np.maximum(-np.log((image.astype(np.float32) + 1.0) / reference), 0).sum(axis=2)
    scale = min(1.0, FOCUS_SIDE / max(height, width))
    small = grey if scale == 1.0 else cv2.resize(grey, (max(8, round(width * scale)), max(8, round(height * scale))),
                                                  interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(small, cv2.CV_32F).var()) / max(float(small.var()), 1e-3)
    hashes, thumbs = _fingerprint(grey)
    return ImageFacts(height=height, width=width, brightness=float(np.percentile(grey, 98)),
                      darkest_density=float(np.percentile(density, 99.5)), grey_std=float(grey.std()),
                      log_sharpness=float(np.log(max(sharpness, 1e-9))),
                      pixels_md5=hashlib.md5(np.ascontiguousarray(image).tobytes()
                                             + f"{height}x{width}".encode()).hexdigest(),
                      hashes=hashes, thumb=thumbs)


def _fingerprint(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import cv2
    from scipy.fft import dctn

    thumb = cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float64)
    low = dctn(thumb, norm="ortho")[:HASH_SIDE, :HASH_SIDE]
    signs = (-1.0) ** np.arange(HASH_SIDE)
    views, thumbs = [], []
    for transpose in (False, True):
        base, picture = (low.T, thumb.T) if transpose else (low, thumb)
        for flip_rows in (False, True):
            for flip_cols in (False, True):
                coefficients = base * (signs[:, None] if flip_rows else 1.0) * (signs[None, :] if flip_cols else 1.0)
                views.append(_bits(coefficients))
                view = picture[::-1] if flip_rows else picture
                view = view[:, ::-1] if flip_cols else view
                centred = view.ravel() - view.mean()
                thumbs.append(centred / max(np.linalg.norm(centred), 1e-6))
    return np.array(views, dtype=np.uint64), np.array(thumbs, dtype=np.float32)


def _bits(coefficients: np.ndarray) -> int:
    flat = coefficients.ravel()
    above = flat > np.median(flat[1:])  # the DC term (overall brightness) does not vote
    return int(np.packbits(above).view(">u8")[0])


_BITS_SET = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def hamming(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Bits that differ between uint64 hashes (broadcasting)."""
    different = np.ascontiguousarray(np.bitwise_xor(first, second))
    return _BITS_SET[different.view(np.uint8).reshape(*different.shape, 8)].sum(axis=-1, dtype=np.int32)
