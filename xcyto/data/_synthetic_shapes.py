"""Drawing of synthetic Pap cells: outlines, stains, and the masks of each class.

Everything is drawn as stain *density* into 2-D float maps, one map per stain (the
centre cell's cytoplasm, nuclei, a neighbouring cell); ``synthetic._photograph``
turns them into light with one matrix product and one ``exp`` (Beer-Lambert).
Drawing in 2-D, inside each shape's bounding box, is what keeps a cell cheap.
Sizes are fractions of the crop width, so a cell looks the same at any resolution.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

STAINS = ("cytoplasm", "nuclei", "neighbour")

# Transmittance (RGB, 0..1) of a unit thickness of each stain.
PINK = np.array([0.93, 0.60, 0.70], np.float32)  # eosinophilic cytoplasm
BLUE_GREEN = np.array([0.58, 0.80, 0.80], np.float32)  # cyanophilic cytoplasm
KERATIN_ORANGE = np.array([0.97, 0.62, 0.30], np.float32)  # Orange G on keratin
HEMATOXYLIN = np.array([0.40, 0.32, 0.58], np.float32)  # nuclei
_CLEAR = np.ones(3, np.float32)
_SUBPIXEL = 3  # fillPoly shift: outlines placed to 1/8 pixel, so small nuclei stay round
BODY = 150  # shade of a shape's inside; its rim, up to 255, is up to 1.7 times as dense
_ORDERS = np.arange(2, 6)  # harmonics that bend a blob


def optical_density(transmittance: np.ndarray) -> np.ndarray:
    return -np.log(np.maximum(transmittance, np.float32(1e-3), dtype=np.float32))


def cytoplasm_colour(rng, class_name: str) -> np.ndarray:
    """One palette for every class but Dyskeratotic, so colour cannot give those away."""
    if class_name == "Dyskeratotic":
        colour = KERATIN_ORANGE + rng.uniform(0, 0.3) * (PINK - KERATIN_ORANGE)
    else:
        colour = PINK + rng.beta(0.6, 0.6) * (BLUE_GREEN - PINK)  # mostly pink or blue-green, few mixed
    return np.minimum(np.maximum(colour + rng.normal(0, 0.03, 3), 0.05), 1).astype(np.float32)


def blob(rng, n_points: int, irregularity: float) -> np.ndarray:
    """Unit-radius closed outline ``(n_points, 2)``: a circle bent by random harmonics 2 to 5.

    Gaussian cosine and sine weights give each harmonic a random phase; a harmonic's mean
    amplitude is about ``irregularity / order``.
    """
    cos_sin, unit_circle = _harmonics(n_points)
    weights = rng.normal(0, 0.8 * irregularity, 2 * len(_ORDERS)) / np.tile(_ORDERS, 2)
    radius = np.minimum(np.maximum(1 + weights @ cos_sin, 0.55), 1.5)  # np.clip is slow on small arrays
    return unit_circle * radius[:, None]


@lru_cache(maxsize=None)
def _harmonics(n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """cos(k t) and sin(k t) for the blob harmonics, and the unit circle, at ``n_points`` angles."""
    angles = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    products = _ORDERS[:, None] * angles
    return np.concatenate([np.cos(products), np.sin(products)]), np.stack([np.cos(angles), np.sin(angles)], 1)


def polygon(rng, sides: int) -> np.ndarray:
    """Unit-radius polygon with jittered corners: the flat, angular squamous cell."""
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False) + rng.uniform(-0.25, 0.25, sides)
    radius = rng.uniform(0.85, 1.1, sides)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def with_processes(rng, outline: np.ndarray, count: int, length: float) -> np.ndarray:
    """Short cytoplasmic processes: narrow bumps pushed out of the outline."""
    n = len(outline)
    index = np.arange(n)
    scale = np.ones(n)
    for centre in rng.choice(n, size=count, replace=False):
        distance = np.minimum(np.abs(index - centre), n - np.abs(index - centre))
        scale += length * rng.uniform(0.6, 1.0) * np.exp(-(distance / (n / 40)) ** 2)
    return outline * scale[:, None]


def place(outline: np.ndarray, centre, radius: float, angle: float, stretch: float = 1.0) -> np.ndarray:
    """Scale, stretch, rotate and move a unit outline; int32 points in 1/8 pixel."""
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (outline * [radius * stretch, radius]) @ rotation.T + centre
    return np.round(points * (1 << _SUBPIXEL)).astype(np.int32)


def fill(size: int, *outlines: np.ndarray) -> np.ndarray:
    """uint8 0/1 mask of the union of ``outlines`` (from :func:`place`)."""
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [p.reshape(-1, 1, 2) for p in outlines], 1, cv2.LINE_8, _SUBPIXEL)
    return mask


def random_offsets(rng, highest: int, count: int) -> np.ndarray:
    """``count`` random crop offsets in 0..highest, as pairs (rng.integers(..., size) is slow)."""
    return (rng.random(count) * (highest + 1)).astype(int).reshape(-1, 2)


@lru_cache(maxsize=8)
def _noise_tiles(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth unit-variance noise, 4 crops wide: mottling ~size/6 across, granules ~3 px at 128."""
    rng = np.random.default_rng(8675309)
    tiles = []
    for cells in (24, max(32, 4 * size // 3)):  # noise cells across the tile: coarse, fine
        grid = rng.standard_normal((cells, cells), dtype=np.float32)
        tile = cv2.resize(grid, (4 * size, 4 * size), interpolation=cv2.INTER_CUBIC)
        tiles.append(tile / tile.std())
    return tiles[0], tiles[1]


class Canvas:
    """Stain density per pixel, one 2-D map per stain, and each stain's colour."""

    def __init__(self, size: int, rng):
        self.size = size
        self.density = {stain: np.zeros((size, size), np.float32) for stain in STAINS}
        self.colour = dict.fromkeys(STAINS, _CLEAR)
        # Two noise fields shared by every layer of this image, slow mottling and fine granules,
        # cut from fixed tiles at random offsets: deterministic and nearly free.
        coarse_tile, fine_tile = _noise_tiles(size)
        (row, col), (fine_row, fine_col) = random_offsets(rng, coarse_tile.shape[0] - size, 4)
        self.coarse = coarse_tile[row:row + size, col:col + size]
        self.fine = fine_tile[fine_row:fine_row + size, fine_col:fine_col + size]

    def add(self, stain: str, shade: np.ndarray, strength: float, texture: tuple[float, float] | None = None):
        """Add ``stain`` where ``shade`` (uint8) is non-zero: ``strength`` per ``BODY`` of shade.

        ``texture`` = (coarse, fine) amplitudes of stain unevenness and granularity. Edges
        stay hard here: the focus blur of the whole image softens them all at once.
        """
        left, top, width, height = cv2.boundingRect(shade)
        if width == 0 or height == 0:
            return
        rows, cols = slice(top, top + height), slice(left, left + width)
        scale = strength / BODY
        if texture is None:
            # NumPy, not cv2.multiply(array, float): OpenCV 5 turns the float into a 4-channel
            # Scalar and returns (4, 1) for a 1 x 1 array. Double precision then float32, as cv2 did.
            layer = (shade[rows, cols] * scale).astype(np.float32)
        else:
            field = cv2.addWeighted(self.coarse[rows, cols], texture[0], self.fine[rows, cols], texture[1], 1.0)
            cv2.threshold(field, 0.0, 0.0, cv2.THRESH_TOZERO, dst=field)  # no negative stain
            layer = cv2.multiply(shade[rows, cols], field, scale=scale, dtype=cv2.CV_32F)
        self.density[stain][rows, cols] += layer


def shade(size: int, outline: np.ndarray, rim: int = 255, within: np.ndarray | None = None) -> np.ndarray:
    """uint8 amount of stain: ``BODY`` inside ``outline``, up to ``rim`` on its anti-aliased edge
    (the folded border of a flat cell, a nuclear membrane), optionally cut to ``within``."""
    amount = fill(size, outline)
    if within is not None:
        amount &= within
    amount *= np.uint8(BODY)
    draw_rim(amount, outline, rim)
    return amount


def draw_rim(amount: np.ndarray, outline: np.ndarray, level: int, closed: bool = True):
    thickness = max(1, round(amount.shape[0] / 128))
    cv2.polylines(amount, [outline.reshape(-1, 1, 2)], closed, level, thickness, cv2.LINE_AA, _SUBPIXEL)


def draw_cell(canvas: Canvas, rng, class_name: str, centre: np.ndarray, scale: float):
    """Draw one cell of ``class_name`` centred near ``centre``; return uint8 0/1 (cell, nucleus, evidence) masks.

    ``scale`` is the crop width in pixels times a magnification jitter. Each class sets: cell
    radius and outline, cytoplasm density and texture (coarse, fine), nuclei (centre, radius),
    nuclear darkness, chromatin granularity and nuclear irregularity.
    """
    size = canvas.size
    angle = rng.uniform(0, 2 * np.pi)
    body = None  # the outline without processes (Metaplastic)
    halo = None
    if class_name == "Superficial-Intermediate":
        radius = rng.uniform(0.34, 0.45) * scale
        cell_outline = place(polygon(rng, int(rng.integers(5, 8))), centre, radius, angle, rng.uniform(1.0, 1.3))
        density, texture = rng.uniform(0.4, 0.65), (0.25, 0.08)
        nuclei = [(centre + rng.normal(0, radius * 0.1, 2), rng.uniform(0.04, 0.06) * scale)]
        nucleus_strength, chromatin, irregularity = rng.uniform(1.7, 2.3), 0.08, 0.05  # pyknotic
    elif class_name == "Parabasal":
        radius = rng.uniform(0.19, 0.25) * scale
        cell_outline = place(blob(rng, 64, 0.08), centre, radius, angle, rng.uniform(1.0, 1.15))
        density, texture = rng.uniform(0.7, 0.95), (0.12, 0.1)
        nuclei = [(centre + rng.normal(0, radius * 0.06, 2), radius * rng.uniform(0.47, 0.57))]
        nucleus_strength, chromatin, irregularity = rng.uniform(1.2, 1.5), 0.3, 0.06
    elif class_name == "Koilocytotic":
        radius = rng.uniform(0.32, 0.41) * scale
        cell_outline = place(blob(rng, 64, 0.35), centre, radius, angle, rng.uniform(1.0, 1.3))
        density, texture = rng.uniform(0.45, 0.65), (0.2, 0.08)
        nucleus_radius = radius * rng.uniform(0.17, 0.23)
        if rng.uniform() < 0.4:  # binucleation
            offset = np.array([np.cos(angle), np.sin(angle)]) * nucleus_radius * 1.05
            nuclei = [(centre + offset, nucleus_radius * 0.85), (centre - offset, nucleus_radius * 0.85)]
        else:
            nuclei = [(centre, nucleus_radius)]
        nucleus_strength, chromatin, irregularity = rng.uniform(1.2, 1.5), 0.4, 0.25  # raisinoid, smudged
        halo = place(blob(rng, 48, 0.25), centre, nucleus_radius * rng.uniform(2.3, 2.9), angle)
    elif class_name == "Metaplastic":
        radius = rng.uniform(0.25, 0.31) * scale
        body_unit, stretch = blob(rng, 96, 0.12), rng.uniform(1.0, 1.2)
        processes = with_processes(rng, body_unit, int(rng.integers(3, 6)), 0.45)
        cell_outline = place(processes, centre, radius, angle, stretch)
        body = place(body_unit, centre, radius, angle, stretch)
        density, texture = rng.uniform(0.75, 1.0), (0.1, 0.18)  # dense, granular
        nuclei = [(centre + rng.normal(0, radius * 0.05, 2), radius * rng.uniform(0.3, 0.37))]
        nucleus_strength, chromatin, irregularity = rng.uniform(1.0, 1.3), 0.25, 0.05
    elif class_name == "Dyskeratotic":
        radius = rng.uniform(0.15, 0.19) * scale
        cell_outline = place(blob(rng, 48, 0.25), centre, radius, angle, rng.uniform(1.0, 1.3))
        density, texture = rng.uniform(0.8, 1.05), (0.06, 0.04)  # glassy keratin
        nuclei = [(centre + rng.normal(0, radius * 0.08, 2), radius * rng.uniform(0.22, 0.3))]
        nucleus_strength, chromatin, irregularity = rng.uniform(1.7, 2.2), 0.1, 0.3  # small, dark, angular
    else:
        raise ValueError(class_name)

    cell = fill(size, cell_outline)
    evidence = np.zeros_like(cell)
    cytoplasm = cell * np.uint8(BODY)
    if halo is not None:  # a sharp clear zone: cytoplasm pushed aside by the virus, a thin film left
        halo_mask = fill(size, halo) & cell
        cytoplasm -= halo_mask * np.uint8(BODY - BODY // 10)
        draw_rim(cytoplasm, halo, 255)
        evidence |= halo_mask
    if class_name == "Superficial-Intermediate":
        _draw_folds(cytoplasm, rng, centre, radius)
    cytoplasm *= cell  # rims and creases stop at the cell border...
    draw_rim(cytoplasm, cell_outline, 255)  # ...which has its own
    canvas.add("cytoplasm", cytoplasm, density, texture=texture)
    nucleus = np.zeros_like(cell)
    for nucleus_centre, nucleus_radius in nuclei:
        nucleus_outline = place(blob(rng, 32, irregularity), nucleus_centre, max(nucleus_radius, 1.5),
                                rng.uniform(0, np.pi), rng.uniform(1.0, 1.3))
        one_nucleus = shade(size, nucleus_outline, rim=200, within=cell)
        canvas.add("nuclei", one_nucleus, nucleus_strength, texture=(0.1, chromatin))
        nucleus |= fill(size, nucleus_outline) & cell
    if body is not None:
        evidence |= cell & (1 - fill(size, body))
    evidence |= cell if class_name == "Dyskeratotic" else nucleus
    return cell, nucleus, evidence


def _draw_folds(cytoplasm: np.ndarray, rng, centre, radius: float):
    """A few creases across a flat superficial cell."""
    for _ in range(int(rng.integers(0, 4))):
        ends = centre + rng.uniform(-radius, radius, (3, 2))
        draw_rim(cytoplasm, np.round(ends * (1 << _SUBPIXEL)).astype(np.int32), 255, closed=False)


def draw_neighbour(canvas: Canvas, rng):
    """A cell cut by the frame, of no particular class: context a real crop has too."""
    size = canvas.size
    along, outside = rng.uniform(0.1, 0.9) * size, -rng.uniform(0.05, 0.2) * size
    centre = np.array([(along, outside), (along, size - outside), (outside, along), (size - outside, along)]
                      [int(rng.integers(4))])
    radius = rng.uniform(0.25, 0.4) * size
    canvas.colour["neighbour"] = cytoplasm_colour(rng, "Parabasal")
    outline = place(blob(rng, 48, 0.3), centre, radius, rng.uniform(0, 2 * np.pi))
    density = rng.uniform(0.3, 0.7)
    canvas.add("neighbour", shade(size, outline), density, texture=(0.15, 0.08))
    nucleus_centre = centre + (size / 2 - centre) * rng.uniform(0.1, 0.4)
    nucleus = place(blob(rng, 24, 0.05), nucleus_centre, rng.uniform(0.04, 0.07) * size, 0.0)
    canvas.add("nuclei", shade(size, nucleus, rim=200), rng.uniform(1.0, 1.8), texture=(0.1, 0.2))


def draw_debris(canvas: Canvas, rng, count: int):
    """Specks and small dark clumps: bacteria, leukocyte nuclei (three lobes), dried stain."""
    size, unit = canvas.size, 1 << _SUBPIXEL
    if not count:
        return
    debris = np.zeros((size, size), np.uint8)
    centres = rng.uniform(0, size, (count, 1, 2)) + rng.normal(0, size / 90, (count, 3, 2))  # three lobes...
    lobes = np.where(rng.random(count) < 0.3, 3, 1)  # ...of which most specks keep one
    radii = np.round(rng.uniform(0.006, 0.02, (count, 3)) * size * unit).astype(int)
    points = np.round(centres * unit).astype(int)
    for speck in range(count):
        for lobe in range(lobes[speck]):
            x, y = points[speck, lobe]
            cv2.circle(debris, (int(x), int(y)), int(radii[speck, lobe]), BODY, -1, cv2.LINE_8, _SUBPIXEL)
    canvas.add("nuclei", debris, rng.uniform(0.5, 1.2))
