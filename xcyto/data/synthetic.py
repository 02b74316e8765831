"""Procedural Pap-stained cells of the five SIPaKMeD classes, with ground-truth masks.

The embedded default dataset (the demo's model is trained on it) and a ground truth for
explanation metrics: every cell comes with its nucleus mask, its whole-cell mask and an
*evidence* mask, the region that defines its class.

Morphology follows cytology (see ``CLASS_MORPHOLOGY``); what a microscope varies
(background tint, illumination gradient, focus, noise, stain intensity, rotation, scale,
debris, a neighbouring cell cut by the frame) is drawn independently of the class.
Parabasal, Metaplastic and Superficial-Intermediate share one cytoplasm palette and
Koilocytotic draws from it too, so four classes differ only in shape, size and texture;
only Dyskeratotic keeps its orange keratin, as in real smears.

Images are composed in optical density (Beer-Lambert): each layer multiplies the light
that passes, so cytoplasm is translucent and overlaps darken as on a slide.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from xcyto.data.records import CellDataset, CellSample
from xcyto.errors import DataError

CLASSES = ["Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"]
CELLS_PER_GROUP = 4  # cells of one "cluster image": exercises group-aware splits

#: Why each class looks as it does, and what its evidence mask marks.
CLASS_MORPHOLOGY = {
    "Superficial-Intermediate": "large flat polygonal cell, abundant cytoplasm, small pyknotic nucleus "
                                "(evidence: the nucleus, whose small size defines the class)",
    "Parabasal": "small round cell, high nucleus-to-cytoplasm ratio, dense chromatin (evidence: the nucleus)",
    "Koilocytotic": "enlarged irregular cell, one or two nuclei inside a sharp clear perinuclear halo "
                    "(evidence: halo and nuclei)",
    "Dyskeratotic": "two or three small dense cells clumped, orange keratinised cytoplasm, small dark "
                    "irregular nuclei (evidence: the whole clump)",
    "Metaplastic": "round to oval cell, dense cytoplasm with short processes, round central nucleus "
                   "(evidence: processes and nucleus)",
}

# Cytoplasm colours (RGB transmittance): pink (eosinophilic) and blue-green (cyanophilic).
_SHARED_PALETTE = np.array([[0.93, 0.62, 0.70], [0.58, 0.80, 0.80]], dtype=np.float32)
_KERATIN_ORANGE = np.array([0.97, 0.62, 0.30], dtype=np.float32)
_NUCLEUS_COLOUR = np.array([0.38, 0.30, 0.55], dtype=np.float32)


def _od(colour: np.ndarray) -> np.ndarray:
    """Optical density of a transmittance colour."""
    return -np.log(np.clip(colour, 1e-3, 1.0))


def _blob(rng, n_points: int, irregularity: float, harmonics: int = 4) -> np.ndarray:
    """Unit-radius closed outline ``(n_points, 2)``: a circle bent by random low harmonics."""
    angles = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    orders = np.arange(2, 2 + harmonics)[:, None]
    amplitudes = irregularity / orders * rng.normal(size=(harmonics, 1))
    phases = rng.uniform(0, 2 * np.pi, (harmonics, 1))
    radius = np.clip(1 + (amplitudes * np.cos(orders * angles + phases)).sum(axis=0), 0.55, 1.5)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _polygon(rng, sides: int) -> np.ndarray:
    """Unit-radius polygon with jittered corners: the flat, angular squamous cell."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, sides))
    angles += np.linspace(0, 2 * np.pi, sides, endpoint=False) - angles  # spread evenly...
    angles += rng.uniform(-0.25, 0.25, sides)  # ...then jitter
    radius = rng.uniform(0.85, 1.1, sides)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _with_processes(rng, outline: np.ndarray, count: int, length: float) -> np.ndarray:
    """Short cytoplasmic processes: narrow bumps pushed out of the outline."""
    n = len(outline)
    scale = np.ones(n)
    index = np.arange(n)
    for centre in rng.choice(n, size=count, replace=False):
        distance = np.minimum(np.abs(index - centre), n - np.abs(index - centre))
        scale += length * rng.uniform(0.6, 1.0) * np.exp(-(distance / (n / 40)) ** 2)
    return outline * scale[:, None]


def _place(outline, centre, radius, angle, stretch=1.0) -> np.ndarray:
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (outline * [radius * stretch, radius]) @ rotation.T + centre
    return np.round(points).astype(np.int32)


def _fill(size: int, *polygons) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [p.reshape(-1, 1, 2) for p in polygons], 1)
    return mask.astype(bool)


def _ellipse(size, centre, axes, angle) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (max(1, int(axes[0])), max(1, int(axes[1]))),
                float(np.degrees(angle)), 0, 360, 1, -1)
    return mask.astype(bool)


def _texture(rng, size: int, cells: int, amount: float) -> np.ndarray:
    """Smooth random field around 1 (granularity ``size / cells``)."""
    coarse = rng.normal(0, amount, (cells, cells)).astype(np.float32)
    return 1 + cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)


class _Canvas:
    """Accumulates optical density per pixel and the masks of the centre cell."""

    def __init__(self, size: int):
        self.size = size
        self.density = np.zeros((size, size, 3), np.float32)

    def add(self, mask: np.ndarray, colour_od: np.ndarray, strength: float, texture=None, soften: float = 0.8):
        x, y, width, height = cv2.boundingRect(mask if mask.dtype == np.uint8 else mask.astype(np.uint8))
        if width == 0 or height == 0:
            return
        margin = 4  # room for the softened edge; work only where the mask is
        top, left = max(0, y - margin), max(0, x - margin)
        bottom, right = min(self.size, y + height + margin), min(self.size, x + width + margin)
        layer = mask[top:bottom, left:right].astype(np.float32)
        if soften:
            layer = cv2.GaussianBlur(layer, (0, 0), soften)
        if texture is not None:
            layer *= texture[top:bottom, left:right]
        self.density[top:bottom, left:right] += layer[..., None] * (strength * colour_od).astype(np.float32)

    def rim(self, polygon: np.ndarray, colour_od: np.ndarray, strength: float):
        """A thin darker edge: the folded border of a flat cell."""
        edge = np.zeros((self.size, self.size), np.uint8)
        cv2.polylines(edge, [polygon.reshape(-1, 1, 2)], True, 255, 1, lineType=cv2.LINE_AA)
        self.add(edge, colour_od, strength / 255, texture=None, soften=0)


def _cytoplasm_colour(rng, class_name: str) -> np.ndarray:
    if class_name == "Dyskeratotic":
        return np.clip(_KERATIN_ORANGE + rng.normal(0, 0.03, 3), 0.05, 1).astype(np.float32)
    mix = rng.uniform(0, 1)
    colour = mix * _SHARED_PALETTE[0] + (1 - mix) * _SHARED_PALETTE[1]
    return np.clip(colour + rng.normal(0, 0.03, 3), 0.05, 1).astype(np.float32)


def _draw_cell(canvas: _Canvas, rng, class_name: str, centre, scale: float):
    """Draw one cell of ``class_name``; return (cell, nucleus, evidence) masks."""
    size = canvas.size
    angle = rng.uniform(0, 2 * np.pi)
    cytoplasm_od = _od(_cytoplasm_colour(rng, class_name))
    nucleus_od = _od(_NUCLEUS_COLOUR)
    chromatin = _texture(rng, size, max(4, size // 6), 0.25)
    granules = _texture(rng, size, max(6, size // 3), 0.15)
    nuclei_masks = []
    halo = None
    if class_name == "Superficial-Intermediate":
        radius = rng.uniform(0.34, 0.44) * scale
        outline = _place(_polygon(rng, int(rng.integers(5, 8))), centre, radius, angle, rng.uniform(1.0, 1.25))
        density = rng.uniform(0.35, 0.55)
        nuclei = [(centre + rng.normal(0, radius * 0.1, 2), rng.uniform(0.045, 0.065) * scale, 1.0)]
        nucleus_strength = rng.uniform(1.6, 2.2)  # pyknotic: small and very dark
    elif class_name == "Parabasal":
        radius = rng.uniform(0.19, 0.25) * scale
        outline = _place(_blob(rng, 64, 0.08), centre, radius, angle, rng.uniform(1.0, 1.15))
        density = rng.uniform(0.75, 1.0)
        nuclei = [(centre + rng.normal(0, radius * 0.06, 2), radius * rng.uniform(0.48, 0.58), 1.05)]
        nucleus_strength = rng.uniform(1.2, 1.5)
    elif class_name == "Koilocytotic":
        radius = rng.uniform(0.32, 0.41) * scale
        outline = _place(_blob(rng, 64, 0.35), centre, radius, angle, rng.uniform(1.0, 1.3))
        density = rng.uniform(0.45, 0.65)
        nucleus_radius = radius * rng.uniform(0.17, 0.23)
        if rng.uniform() < 0.4:  # binucleation
            offset = np.array([np.cos(angle), np.sin(angle)]) * nucleus_radius * 1.1
            nuclei = [(centre + offset, nucleus_radius * 0.85, 1.15), (centre - offset, nucleus_radius * 0.85, 1.15)]
        else:
            nuclei = [(centre, nucleus_radius, rng.uniform(1.0, 1.3))]
        nucleus_strength = rng.uniform(1.1, 1.4)
        halo = _place(_blob(rng, 48, 0.25), centre, nucleus_radius * rng.uniform(2.3, 2.9), angle)
    elif class_name == "Metaplastic":
        radius = rng.uniform(0.25, 0.31) * scale
        outline = _place(_with_processes(rng, _blob(rng, 96, 0.12), int(rng.integers(3, 6)), 0.45),
                         centre, radius, angle, rng.uniform(1.0, 1.2))
        density = rng.uniform(0.75, 1.0)
        nuclei = [(centre + rng.normal(0, radius * 0.05, 2), radius * rng.uniform(0.3, 0.37), 1.0)]
        nucleus_strength = rng.uniform(1.0, 1.3)
    elif class_name == "Dyskeratotic":
        radius = rng.uniform(0.15, 0.19) * scale
        outline = _place(_blob(rng, 48, 0.25), centre, radius, angle, rng.uniform(1.0, 1.3))
        density = rng.uniform(0.8, 1.05)
        nuclei = [(centre + rng.normal(0, radius * 0.08, 2), radius * rng.uniform(0.22, 0.3), rng.uniform(1.0, 1.5))]
        nucleus_strength = rng.uniform(1.6, 2.1)
    else:
        raise DataError(f"unknown synthetic class {class_name!r}; choose one of {CLASSES}")

    cell = _fill(size, outline)
    canvas.add(cell, cytoplasm_od, density, texture=granules)
    canvas.rim(outline, cytoplasm_od, 0.5 * density)
    evidence = np.zeros_like(cell)
    if halo is not None:  # a sharp clear zone: cytoplasm pushed aside by the virus
        halo_mask = _fill(size, halo) & cell
        canvas.add(halo_mask, cytoplasm_od, -0.85 * density, texture=None, soften=0.4)
        canvas.rim(halo, cytoplasm_od, 0.8 * density)
        evidence |= halo_mask
    for nucleus_centre, nucleus_radius, stretch in nuclei:
        nucleus = _ellipse(size, nucleus_centre, (nucleus_radius * stretch, nucleus_radius), rng.uniform(0, np.pi))
        nucleus &= cell
        canvas.add(nucleus, nucleus_od, nucleus_strength, texture=chromatin, soften=0.6)
        nuclei_masks.append(nucleus)
    nucleus_mask = np.logical_or.reduce(nuclei_masks)
    if class_name == "Metaplastic":
        core = _ellipse(size, centre, (radius * 0.95, radius * 0.95), 0.0)
        evidence |= (cell & ~core) | nucleus_mask
    elif class_name == "Dyskeratotic":
        evidence |= cell
    else:
        evidence |= nucleus_mask
    return cell, nucleus_mask, evidence


def _draw_neighbour(canvas: _Canvas, rng):
    """A cell cut by the frame, of no particular class: context a real crop has too."""
    size = canvas.size
    side = rng.integers(4)
    along = rng.uniform(0.1, 0.9) * size
    outside = -rng.uniform(0.05, 0.2) * size
    centre = [(along, outside), (along, size - outside), (outside, along), (size - outside, along)][side]
    outline = _place(_blob(rng, 48, 0.3), np.array(centre), rng.uniform(0.25, 0.4) * size, rng.uniform(0, 6.3))
    colour = _cytoplasm_colour(rng, "Parabasal")
    canvas.add(_fill(size, outline), _od(colour), rng.uniform(0.3, 0.7))


def _draw_debris(canvas: _Canvas, rng):
    """Specks and small dark clumps: bacteria, blood, dried stain."""
    size = canvas.size
    debris = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(0, 7))):
        x, y = rng.uniform(0, size, 2)
        cv2.circle(debris, (int(x), int(y)), int(rng.integers(1, max(2, size // 40) + 1)), 1, -1)
    canvas.add(debris.astype(bool), _od(np.array([0.55, 0.45, 0.6])), rng.uniform(0.4, 1.0), soften=0.5)


def generate_cell(class_name: str | int, rng: np.random.Generator | int, size: int = 128) -> CellSample:
    """One synthetic cell of ``class_name`` (name or index into ``CLASSES``).

    ``rng`` is a NumPy generator or a seed. Identity fields are placeholders here;
    :func:`make_dataset` fills them in.
    """
    if isinstance(class_name, (int, np.integer)):
        class_name = CLASSES[int(class_name)]
    if class_name not in CLASSES:
        raise DataError(f"unknown synthetic class {class_name!r}; choose one of {CLASSES}")
    if not 32 <= size <= 512:
        raise DataError(f"synthetic cells are 32 to 512 pixels wide, got {size}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    canvas = _Canvas(size)
    if rng.uniform() < 0.4:
        _draw_neighbour(canvas, rng)
    _draw_debris(canvas, rng)
    scale = size * rng.uniform(0.85, 1.1)
    centre = np.array([size / 2, size / 2]) + rng.normal(0, size * 0.03, 2)
    if class_name == "Dyskeratotic":  # two or three cells clumped
        cells, nuclei, evidence = [], [], []
        for index in range(int(rng.integers(2, 4))):
            offset = np.zeros(2) if index == 0 else rng.normal(0, 1, 2)
            offset = offset / max(np.linalg.norm(offset), 1e-6) * size * rng.uniform(0.12, 0.18) if index else offset
            masks = _draw_cell(canvas, rng, class_name, centre + offset, scale)
            cells.append(masks[0]), nuclei.append(masks[1]), evidence.append(masks[2])
        cell, nucleus, evidence_mask = (np.logical_or.reduce(m) for m in (cells, nuclei, evidence))
    else:
        cell, nucleus, evidence_mask = _draw_cell(canvas, rng, class_name, centre, scale)
    image = _photograph(canvas, rng)
    return CellSample(image=image, label=CLASSES.index(class_name), class_name=class_name, cell_id="",
                      group="", nucleus_mask=nucleus, cytoplasm_mask=cell, evidence_mask=evidence_mask & cell)


# Sensor noise is cut from one fixed tile at a random offset: deterministic, and far
# cheaper than drawing fresh normals for every pixel of every cell.
_NOISE_TILE = np.random.default_rng(20240917).standard_normal((640, 640, 3), dtype=np.float32)


def _photograph(canvas: _Canvas, rng) -> np.ndarray:
    """Light through the slide: background tint, stain intensity, illumination, focus, noise."""
    size = canvas.size
    background = np.clip(np.array([0.94, 0.92, 0.90]) + rng.normal(0, 0.025, 3), 0.75, 1.0)
    stain, direction, tilt = rng.uniform(0.75, 1.25), rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.08)
    focus, noise = rng.uniform(0.3, 1.3), rng.uniform(0.005, 0.02)
    row, col = rng.integers(0, _NOISE_TILE.shape[0] - size + 1, 2)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    gradient = 1 + np.float32(tilt * np.cos(direction)) * ramp[None, :] + np.float32(tilt * np.sin(direction)) * ramp[:, None]
    light = cv2.exp(canvas.density * np.float32(-stain))  # everything float32: NumPy would promote
    light *= (background.astype(np.float32) * 255)[None, None, :]
    light *= gradient[..., None]
    light += _NOISE_TILE[row:row + size, col:col + size] * np.float32(255 * noise)
    image = cv2.convertScaleAbs(light)  # rounds and saturates to 0..255
    return cv2.GaussianBlur(image, (0, 0), focus)  # focus blur, fast on uint8


def make_dataset(n: int = 500, seed: int = 0, size: int = 128, classes: list[str] | None = None) -> CellDataset:
    """``n`` synthetic cells, classes balanced and interleaved, deterministic from ``seed``.

    Cell ``i`` depends only on ``(seed, i)``, so it is the same whatever ``n`` is.
    """
    classes = list(classes or CLASSES)
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        raise DataError(f"unknown synthetic classes {unknown}; choose from {CLASSES}")
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}")
    samples = []
    for index in range(n):
        class_name = classes[index % len(classes)]
        cell = generate_cell(class_name, np.random.default_rng([seed, index]), size)
        cell.label = classes.index(class_name)
        cell.cell_id = f"synthetic-{seed}-{index:05d}"
        cell.group = f"{class_name}/{seed}-{index // (len(classes) * CELLS_PER_GROUP):04d}"
        samples.append(cell)
    return CellDataset(samples=samples, classes=classes, name="synthetic", layout="synthetic")


def _contour(mask: np.ndarray) -> np.ndarray:
    """The largest outer contour of a mask as ``(N, 2)`` x,y points."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea).reshape(-1, 2) if contours else np.zeros((0, 2), int)


def write_sipakmed_layout(out_dir, n: int = 1000, seed: int = 0, size: int = 128) -> Path:
    """Write synthetic cells in the SIPaKMeD layout, so the SIPaKMeD loader reads them.

    ``out_dir/im_<Class>/CROPPED/NNN_MM.bmp`` with ``NNN_MM_nuc.dat`` and ``NNN_MM_cyt.dat``
    (one ``x,y`` contour point per line); NNN is the cell's cluster, MM the cell in it.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    dataset = make_dataset(n=n, seed=seed, size=size)
    counters: dict[str, int] = {}
    for cell in tqdm(dataset.samples, desc="writing synthetic cells", disable=n < 2000, unit="cell"):
        cluster = int(cell.group.rsplit("-", 1)[1]) + 1
        key = f"{cell.class_name}/{cluster}"
        counters[key] = counters.get(key, 0) + 1
        folder = out_dir / f"im_{cell.class_name}" / "CROPPED"
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"{cluster:03d}_{counters[key]:02d}"
        cv2.imwrite(str(stem) + ".bmp", cv2.cvtColor(cell.image, cv2.COLOR_RGB2BGR))
        for suffix, mask in (("_nuc.dat", cell.nucleus_mask), ("_cyt.dat", cell.cytoplasm_mask)):
            points = _contour(mask)
            Path(str(stem) + suffix).write_text("".join(f"{x},{y}\n" for x, y in points))
    return out_dir
