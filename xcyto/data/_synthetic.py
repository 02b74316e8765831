"""Procedural Pap-stained cells of the five SIPaKMeD classes, with ground-truth masks.

The embedded default dataset (the demo's model is trained on it) and a ground truth for
explanation metrics: every cell comes with its nucleus mask, its whole-cell mask and an
*evidence* mask, the region that defines its class (see ``CLASS_MORPHOLOGY``).

What a microscope varies (background tint, stain intensity, illumination gradient,
focus, noise, rotation, scale, debris, a neighbouring cell cut by the frame) is drawn
independently of the class. Parabasal, Metaplastic and Superficial-Intermediate share
one cytoplasm palette and Koilocytotic draws from it too, so four classes differ only
in shape, size and texture; only Dyskeratotic keeps its orange keratin, as on a slide.

Cells come in clusters of ``CELLS_PER_GROUP`` (the ``group``, like SIPaKMeD's cluster
images) that share their slide: background, stain batch and debris. A split that
ignores groups therefore leaks, as it would on real data.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from xcyto.data import _synthetic_shapes as shapes
from xcyto.data._records import CellDataset, CellSample
from xcyto.errors import DataError

CLASSES = ["Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"]
CELLS_PER_GROUP = 4

#: Why each class looks as it does, and what its evidence mask marks.
CLASS_MORPHOLOGY = {
    "Dyskeratotic": "two or three small dense cells clumped, orange keratinised cytoplasm, small dark "
                    "irregular nuclei (evidence: the whole clump, keratin and nuclei)",
    "Koilocytotic": "enlarged irregular cell, one or two raisinoid nuclei inside a sharp clear perinuclear "
                    "halo (evidence: halo and nuclei)",
    "Metaplastic": "round to oval cell, dense granular cytoplasm with short processes, round central nucleus, "
                   "intermediate N:C ratio (evidence: processes and nucleus)",
    "Parabasal": "small round cell, high nucleus-to-cytoplasm ratio, dense chromatin (evidence: the nucleus, "
                 "whose size relative to the cell defines the class)",
    "Superficial-Intermediate": "large flat polygonal cell with creases, abundant thin cytoplasm, small "
                                "pyknotic nucleus (evidence: the nucleus, whose small size defines the class)",
}


@dataclass(frozen=True)
class Slide:
    """What the cells of one cluster share: the slide's background, stain batch and dirt."""

    background: np.ndarray  # RGB transmittance of the empty slide
    counterstain: float  # gain on cytoplasm stains
    hematoxylin: float  # gain on nuclear stain, independent of the counterstain
    nucleus_colour: np.ndarray
    debris: float  # mean number of specks per crop
    focus: float  # blur sigma at 128 px

    @classmethod
    def draw(cls, rng) -> "Slide":
        tint = rng.normal(0, 0.025, 3)
        return cls(background=np.clip(np.array([0.93, 0.92, 0.93]) + tint, 0.78, 1.0),
                   counterstain=rng.uniform(0.75, 1.25), hematoxylin=rng.uniform(0.8, 1.2),
                   nucleus_colour=np.clip(shapes.HEMATOXYLIN + rng.normal(0, 0.04, 3), 0.1, 0.9),
                   debris=rng.uniform(0.5, 5), focus=rng.uniform(0.4, 1.4))


def _class_name(class_name: str | int) -> str:
    if isinstance(class_name, (int, np.integer)) and 0 <= class_name < len(CLASSES):
        return CLASSES[int(class_name)]
    if class_name not in CLASSES:
        raise DataError(f"unknown synthetic class {class_name!r}; choose one of {CLASSES} or an index 0-4")
    return class_name


def generate_cell(class_name: str | int, rng: np.random.Generator | int, size: int = 128, *,
                  slide: Slide | None = None) -> CellSample:
    """One synthetic cell of ``class_name`` (a name or an index into ``CLASSES``).

    ``rng`` is a NumPy generator or a seed; ``slide`` what the cell shares with its
    cluster (drawn from ``rng`` when omitted). Masks are ``size x size`` bool; the cell
    mask includes the nucleus. Identity fields name the seed when one is given;
    :func:`make_dataset` sets them for its cells.
    """
    class_name = _class_name(class_name)
    if not 32 <= size <= 512:
        raise DataError(f"synthetic cells are 32 to 512 pixels wide, got {size}")
    seed = rng if isinstance(rng, (int, np.integer)) else None
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    slide = slide or Slide.draw(rng)
    canvas = shapes.Canvas(size, rng)
    canvas.colour["cytoplasm"] = shapes.cytoplasm_colour(rng, class_name)  # one per cell (or clump)
    canvas.colour["nuclei"] = slide.nucleus_colour
    if rng.uniform() < 0.45:
        shapes.draw_neighbour(canvas, rng)
    shapes.draw_debris(canvas, rng, int(rng.poisson(slide.debris)))
    scale = size * rng.uniform(0.85, 1.1)
    centre = np.array([size / 2, size / 2]) + rng.normal(0, size * 0.03, 2)
    clump = int(rng.integers(2, 4)) if class_name == "Dyskeratotic" else 1
    cell, nucleus, evidence = shapes.draw_cell(canvas, rng, class_name, centre, scale)
    for _ in range(clump - 1):  # Dyskeratotic cells come clumped, touching the first one
        direction = rng.normal(0, 1, 2)
        offset = direction / max(np.linalg.norm(direction), 1e-6) * size * rng.uniform(0.15, 0.21)
        masks = shapes.draw_cell(canvas, rng, class_name, centre + offset, scale)
        cell, nucleus, evidence = cell | masks[0], nucleus | masks[1], evidence | masks[2]
    image = _photograph(canvas, rng, slide)
    return CellSample(image=image, label=CLASSES.index(class_name), class_name=class_name,
                      cell_id="" if seed is None else f"synthetic-{class_name}-{seed}-0",
                      group="" if seed is None else f"{class_name}/{seed}-0000",
                      nucleus_mask=nucleus.astype(bool), cytoplasm_mask=cell.astype(bool),
                      evidence_mask=(evidence & cell).astype(bool))


# Sensor noise is cut from one fixed tile at random offsets: deterministic, and far
# cheaper than drawing fresh normals for every pixel of every cell.
_NOISE_TILE = np.random.default_rng(20240917).standard_normal((1024, 1024), dtype=np.float32)


def _photograph(canvas: shapes.Canvas, rng, slide: Slide) -> np.ndarray:
    """Light through the slide (Beer-Lambert), then illumination, focus and sensor noise.

    Per colour channel, the (negated) optical density is a weighted sum of the stain maps,
    the background's, an illumination ramp and noise; done with OpenCV per channel, as a
    NumPy product over (pixels x maps) is several times slower at these sizes.
    """
    size = canvas.size
    direction, tilt = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.1)
    ramp = _ramp(size)
    illumination = np.add.outer(ramp * np.float32(tilt * np.sin(direction)), ramp * np.float32(tilt * np.cos(direction)))
    stains = [(canvas.density[stain], (slide.hematoxylin if stain == "nuclei" else slide.counterstain)
               * shapes.optical_density(canvas.colour[stain])) for stain in shapes.STAINS]
    background = shapes.optical_density(slide.background)
    noise = rng.uniform(0.005, 0.02)  # relative: in optical density, noise scales with the light
    offsets = shapes.random_offsets(rng, _NOISE_TILE.shape[0] - size, 6)
    channels = []
    for channel, (row, col) in enumerate(offsets):
        negative_density = cv2.scaleAdd(_NOISE_TILE[row:row + size, col:col + size], noise,
                                        illumination - np.float32(background[channel]))
        for stain_map, stain_density in stains:
            negative_density = cv2.scaleAdd(stain_map, -float(stain_density[channel]), negative_density)
        channels.append(negative_density)
    image = cv2.convertScaleAbs(cv2.exp(cv2.merge(channels)), alpha=255)  # rounds and saturates to 0..255
    sigma = max(0.4, slide.focus + rng.uniform(-0.2, 0.2)) * size / 128  # >= 0.4: the drawing's edges are hard
    kernel = 2 * int(np.ceil(2 * sigma)) + 1
    return cv2.GaussianBlur(image, (kernel, kernel), sigma)


@lru_cache(maxsize=8)
def _ramp(size: int) -> np.ndarray:
    return np.linspace(-1, 1, size, dtype=np.float32)


def make_dataset(n: int = 500, seed: int = 0, size: int = 128, classes: list[str] | None = None) -> CellDataset:
    """``n`` synthetic cells, classes balanced and interleaved, deterministic from ``seed``.

    Cell ``i`` depends only on ``(seed, i)`` (and its cluster's slide on ``(seed, cluster)``),
    so it is the same whatever ``n`` is, and cells can be made in any order or in parallel.
    """
    classes = list(classes or CLASSES)
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        raise DataError(f"unknown synthetic classes {unknown}; choose from {CLASSES}")
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}")
    if seed < 0:
        raise DataError(f"seed must be >= 0, got {seed}")
    samples, slides = [], {}
    cells_per_cluster = len(classes) * CELLS_PER_GROUP  # interleaved classes: 4 of each class per cluster
    for index in range(n):
        class_name = classes[index % len(classes)]
        cluster = index // cells_per_cluster
        key = (cluster, CLASSES.index(class_name))
        if key not in slides:
            slides[key] = Slide.draw(np.random.default_rng([seed, *key, 1]))
        slide = slides[key]
        cell = generate_cell(class_name, np.random.default_rng([seed, index]), size, slide=slide)
        cell.label = classes.index(class_name)
        cell.cell_id = f"synthetic-{class_name}-{seed}-{index:05d}"
        cell.group = f"{class_name}/{seed}-{cluster:04d}"
        samples.append(cell)
    return CellDataset(samples=samples, classes=classes, name="synthetic", layout="synthetic")


def _contour(mask: np.ndarray) -> np.ndarray:
    """The largest outer contour of a mask as ``(N, 2)`` x,y points."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea).reshape(-1, 2) if contours else np.zeros((0, 2), int)


def write_sipakmed_layout(out_dir, n: int = 1000, seed: int = 0, size: int = 128) -> Path:
    """Write synthetic cells in the SIPaKMeD layout, so the SIPaKMeD loader reads them.

    ``out_dir/im_<Class>/CROPPED/NNN_MM.bmp`` with ``NNN_MM_nuc.dat`` and ``NNN_MM_cyt.dat``
    (one ``x,y`` contour point per line; the largest region where a mask has several,
    as SIPaKMeD has one contour per file); NNN is the cell's cluster, MM the cell in it.
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
