"""What a crop shows as a cell: its nuclei, where they lie, whether the border cuts them.

A crop is meant to hold one cell, nucleus near the middle. Everything the cell checks need
comes from the learned segmenter (:mod:`xcyto.morphology`, a U-Net trained on Herlev and
synthetic cells), one batched pass over every crop and a second over a part of some:

1. Flat bands along the edges (padding added by whoever cropped the cells) are set aside, so
   a cell in a strip is seen at the size it has.
2. The crop is mirrored outwards by ``PAD_SHARE`` of its side on each side before
   segmentation: a nucleus cut by the border then reads as a nucleus (joined to its mirror
   image) rather than as a dark smear the segmenter was never shown.
3. Each nucleus region must also *look* like a stained nucleus: darker than the ring around
   it by ``MIN_CONTRAST`` in optical density (summed over R, G and B, relative to the crop's
   brightest pixels), and at least ``MIN_AREA_SHARE`` of the crop. The segmenter alone answers
   "nucleus" on some empty, evenly tinted patches; the contrast test does not.
4. A small round blob much darker than the cytoplasm it lies on counts as a nucleus too (a
   superficial cell's pyknotic nucleus can be 4 px across at the working size, below what
   the segmenter resolves), looked for at a finer scale, when it stands out from every other
   such blob: bacteria, specks and a leukocyte's lobes come in numbers, on bare slide or on
   red blood cells (:func:`_pyknotic_blobs`).
5. The segmenter learnt from single-cell crops and marks the nucleus of one cell. When the
   main nucleus does not cover the crop's centre, the widest part of the crop beyond it is
   segmented again on its own, so a neighbouring cell's nucleus is seen
   (:attr:`CellFindings.beside`, read only by the check for several cells).

Positions and areas are reported as shares of the *whole* crop, flat bands included: a cell
pushed into a corner by a padding band is off-centre for the model too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

#: Side of the segmenter's input, the mirrored margin included.
WORK_SIDE = 128
#: Mirrored margin added on each side, as a share of the crop's longer side.
PAD_SHARE = 0.125
#: A nucleus covers at least this share of the crop (0.3 %: a 12 px nucleus in a 224 px crop).
MIN_AREA_SHARE = 0.003
#: Optical-density contrast (R + G + B) of a nucleus against the ring around it.
MIN_CONTRAST = 0.2
#: A pyknotic nucleus: a round blob whose optical density (R + G + B) rises at least
#: ``BLOB_CONTRAST`` above what lies around it within ``BLOB_RADIUS`` of the crop's side, and
#: peaks at least ``BLOB_PEAK`` above it and ``BLOB_DOMINANCE`` times above any other such blob;
#: covering at least ``MIN_BLOB_SHARE`` of the crop, lying in the segmenter's cell on cytoplasm
#: stained at least ``MIN_BLOB_RING_DENSITY``, and absorbing red as haematoxylin does (red blood
#: cells and orange keratin absorb little red).
BLOB_CONTRAST = 0.5
BLOB_PEAK = 1.2
BLOB_DOMINANCE = 1.3
BLOB_RADIUS = 0.04
MIN_BLOB_SHARE = 0.0003
MIN_BLOB_INSIDE = 0.5
MIN_BLOB_RING_DENSITY = 0.25
MIN_BLOB_RED_SHARE = 0.2
#: ... and the stained cytoplasm it lies on covers at least this share of the crop.
MIN_BLOB_CELL_SHARE = 0.05
#: Blobs are looked for at this side (longer side of the crop, bands excluded; never enlarged).
BLOB_SIDE = 192
#: Rows or columns along an edge whose grey level varies less than this are padding.
FLAT_STD = 4.0
#: Crops whose brightest pixels are darker than this are brightened to it before segmentation.
DIM = 200.0


@dataclass
class Nucleus:
    """One nucleus found in a crop. ``area_share``: of the crop; ``centre``: ``(row, col)`` in
    shares of the crop's height and width (0.5, 0.5 is the middle); ``cut``: the length of
    crop border running through it over its width (0: whole, about 1: cut through the middle);
    ``contrast``: optical density above its surroundings; ``found_by``: ``segmenter`` or
    ``dark blob``."""

    area_share: float
    centre: tuple[float, float]
    cut: float
    contrast: float
    found_by: str
    extent: tuple[float, float] = (0.0, 0.0)  # half its height and width, in shares of the crop's
    solidity: float = 1.0  # area over the area of its convex hull: a crescent of cytoplasm is low

    @property
    def offset(self) -> float:
        """How far it sits from the crop's middle, per axis, as a share of the room it has there:
        0 centred, 1 touching an edge (a large nucleus has little room to be off-centre)."""
        shifts = [abs(c - 0.5) / max(0.5 - half, 0.05) for c, half in zip(self.centre, self.extent)]
        return float(min(max(shifts), 1.5))

    @property
    def gap(self) -> float:
        """Distance from the crop's centre to its bounding box, in half-sides of the crop (0: the
        centre is on it)."""
        rows = max(0.0, abs(self.centre[0] - 0.5) - self.extent[0])
        cols = max(0.0, abs(self.centre[1] - 0.5) - self.extent[1])
        return float(np.hypot(rows, cols) / 0.5)

    def moved(self, top: float, left: float, height: float, width: float) -> Nucleus:
        """This nucleus of a window at ``(top, left)``, ``height x width`` (shares of a crop), in
        that crop's shares."""
        return Nucleus(area_share=self.area_share * height * width,
                       centre=(top + self.centre[0] * height, left + self.centre[1] * width), cut=self.cut,
                       contrast=self.contrast, found_by=self.found_by,
                       extent=(self.extent[0] * height, self.extent[1] * width), solidity=self.solidity)


@dataclass
class CellFindings:
    """The nuclei of one crop (largest first), the share of it covered by cell, and the
    working-size image and masks (for measuring the main nucleus)."""

    nuclei: list[Nucleus]
    cell_share: float
    flat_bands: tuple[int, int, int, int]  # top, bottom, left, right (pixels of the crop)
    beside: list[Nucleus] = field(default_factory=list)  # found by segmenting the crop beyond the main one
    image: np.ndarray | None = field(default=None, repr=False)
    nucleus_mask: np.ndarray | None = field(default=None, repr=False)
    cell_mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def main(self) -> Nucleus | None:
        """The nucleus of the cell the crop is about: large and near the middle."""
        if not self.nuclei:
            return None
        return max(self.nuclei, key=lambda n: n.area_share * np.exp(-2.0 * n.offset))


def flat_bands(image: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)``: rows and columns of flat padding along each edge (each
    side kept to less than three eighths of the crop)."""
    grey = image.astype(np.float32).mean(axis=2)
    flat_rows, flat_cols = grey.std(axis=1) < FLAT_STD, grey.std(axis=0) < FLAT_STD

    def run(flags):
        limit = int(len(flags) * 3 / 8)
        count = 0
        while count < limit and flags[count]:
            count += 1
        return count

    return run(flat_rows), run(flat_rows[::-1]), run(flat_cols), run(flat_cols[::-1])


def find_nuclei(images: list[np.ndarray], segmenter=None, batch_size: int = 32, keep_images: bool = False,
                progress=None, second_look: bool = True) -> list[CellFindings]:
    """:class:`CellFindings` of each ``H x W x 3`` uint8 crop (one batched pass of the segmenter).

    ``segmenter``: a :class:`xcyto.morphology.LearnedSegmenter` (default: the shipped one).
    ``keep_images``: keep the working-size image and masks in each finding (for morphometry).
    ``progress``: called with the number of crops done after each batch.
    ``second_look``: segment the crop beyond an off-centre main nucleus again (step 5 above).
    """
    import torch

    from xcyto.morphology import LearnedSegmenter

    segmenter = segmenter or _shipped_segmenter()
    if not isinstance(segmenter, LearnedSegmenter):
        raise TypeError("find_nuclei needs a LearnedSegmenter")
    findings = []
    for start in range(0, len(images), batch_size):
        prepared = [_prepare(image) for image in images[start:start + batch_size]]
        with torch.inference_mode():
            batch = torch.stack([torch.from_numpy(p["input"]).permute(2, 0, 1) for p in prepared]).float() / 255.0
            labels = segmenter.model(batch).argmax(dim=1).numpy().astype(np.uint8)
        for item, label_map in zip(prepared, labels):
            findings.append(_findings(item, label_map, keep_images))
        if progress is not None:
            progress(len(prepared))
    if second_look:
        _look_beyond_main(images, findings, segmenter, batch_size)
    return findings


#: The part of a crop segmented again must be at least this share of its side across.
MIN_BEYOND = 0.3
#: ... and keeps this share of the side away from the main nucleus's box.
BEYOND_MARGIN = 0.02
#: A nucleus found there counts when the segmenter found it and it is this much darker than its
#: ring (pale cytoplasm seen alone can pass the looser ``MIN_CONTRAST``; the blob finder needs
#: the whole crop to judge what stands out).
BEYOND_CONTRAST = 0.5


def _beyond(main: Nucleus) -> tuple[float, float, float, float] | None:
    """``(top, left, height, width)`` in shares of the crop: the widest band of the crop beyond
    the main nucleus's box on one side, or ``None`` when no side leaves room for a cell."""
    (row, col), (half_height, half_width) = main.centre, main.extent
    above, below = row - half_height - BEYOND_MARGIN, 1 - (row + half_height + BEYOND_MARGIN)
    before, after = col - half_width - BEYOND_MARGIN, 1 - (col + half_width + BEYOND_MARGIN)
    room, side = max((above, "above"), (below, "below"), (before, "before"), (after, "after"))
    if room < MIN_BEYOND:
        return None
    return {"above": (0.0, 0.0, room, 1.0), "below": (1 - room, 0.0, room, 1.0),
            "before": (0.0, 0.0, 1.0, room), "after": (0.0, 1 - room, 1.0, room)}[side]


def _look_beyond_main(images, findings, segmenter, batch_size) -> None:
    """Fill ``beside`` for the crops whose centre is not on the main nucleus."""
    windows, crops, owners = [], [], []
    for index, finding in enumerate(findings):
        main = finding.main
        window = _beyond(main) if main is not None and main.gap > 0 else None
        if window is None:
            continue
        height, width = images[index].shape[:2]
        top, left, rows, cols = window
        r0, c0 = int(round(top * height)), int(round(left * width))
        r1, c1 = max(r0 + 8, int(round((top + rows) * height))), max(c0 + 8, int(round((left + cols) * width)))
        windows.append((r0 / height, c0 / width, (r1 - r0) / height, (c1 - c0) / width))
        crops.append(np.ascontiguousarray(images[index][r0:r1, c0:c1]))
        owners.append(index)
    looked = find_nuclei(crops, segmenter, batch_size, second_look=False) if crops else []
    for index, window, finding in zip(owners, windows, looked):
        known = findings[index].nuclei
        for nucleus in finding.nuclei:
            if nucleus.found_by != "segmenter" or nucleus.contrast < BEYOND_CONTRAST:
                continue
            moved = nucleus.moved(*window)
            if not any(abs(moved.centre[0] - n.centre[0]) <= n.extent[0] and abs(moved.centre[1] - n.centre[1])
                       <= n.extent[1] for n in known):
                findings[index].beside.append(moved)


@lru_cache(maxsize=1)
def _shipped_segmenter():
    from xcyto.morphology import LearnedSegmenter

    return LearnedSegmenter.load()


def _prepare(image: np.ndarray) -> dict:
    """The crop without its flat bands, brightened when under-exposed, mirrored outwards and
    placed on the segmenter's square."""
    import cv2

    from xcyto.data._transforms import background_colour, fit_box

    height, width = image.shape[:2]
    top, bottom, left, right = flat_bands(image)
    inner = image[top:height - bottom, left:width - right]
    bright = float(np.percentile(inner, 98))
    if bright < DIM:  # the segmenter learnt from well-lit slides; densities are ratios and do not change
        inner = np.clip(inner.astype(np.float32) * (DIM / max(bright, 1.0)), 0, 255).astype(np.uint8)
    margin = max(1, int(round(PAD_SHARE * max(inner.shape[:2]))))
    mirrored = cv2.copyMakeBorder(inner, margin, margin, margin, margin, cv2.BORDER_REFLECT_101
                                  if min(inner.shape[:2]) > margin else cv2.BORDER_REPLICATE)
    box_left, box_top, box_width, box_height = fit_box(*mirrored.shape[:2], WORK_SIDE)
    canvas = np.empty((WORK_SIDE, WORK_SIDE, 3), np.uint8)
    canvas[:] = background_colour(mirrored)
    small = cv2.resize(mirrored, (box_width, box_height), interpolation=cv2.INTER_AREA)
    canvas[box_top:box_top + box_height, box_left:box_left + box_width] = small
    scale = box_width / mirrored.shape[1]
    # the crop itself (bands excluded) inside the working image
    inner_box = (int(round(margin * scale)), int(round(margin * scale)),
                 max(1, int(round(inner.shape[1] * scale))), max(1, int(round(inner.shape[0] * scale))))
    return {"input": canvas, "box": (box_left, box_top, box_width, box_height), "small": small, "inner": inner,
            "inner_box": inner_box, "bands": (top, bottom, left, right), "shape": (height, width),
            "inner_shape": inner.shape[:2]}


def _optical_density(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Optical density summed over R, G and B, relative to the crop's brightest pixels."""
    reference = np.percentile(image[inside].reshape(-1, 3), 98, axis=0).astype(np.float32) + 1.0
    return np.maximum(-np.log((image.astype(np.float32) + 1.0) / reference), 0).sum(axis=2)


@dataclass
class _Frame:
    """A working-size view of the crop: ``image`` holds the crop (flat bands excluded) at
    ``(row0, col0)``, ``height x width`` pixels, each ``to_crop`` pixels of the crop."""

    image: np.ndarray
    row0: int
    col0: int
    height: int
    width: int
    to_crop: float
    bands: tuple[int, int, int, int]
    crop_shape: tuple[int, int]

    @property
    def inside(self) -> np.ndarray:
        mask = np.zeros(self.image.shape[:2], bool)
        mask[self.row0:self.row0 + self.height, self.col0:self.col0 + self.width] = True
        return mask

    def describe(self, mask: np.ndarray, density: np.ndarray, found_by: str) -> Nucleus | None:
        """``mask`` (this frame's pixels; may reach into the mirrored margin) as a :class:`Nucleus`."""
        from scipy import ndimage

        visible = mask & self.inside
        visible_pixels = int(visible.sum())
        if not visible_pixels:
            return None
        rows, cols = np.nonzero(visible)
        ring = ndimage.binary_dilation(mask, iterations=max(2, int(np.sqrt(mask.sum()) / 3))) & ~mask
        contrast = float(density[mask].mean() - (density[ring].mean() if ring.any() else 0.0))
        bottom, right = self.row0 + self.height - 1, self.col0 + self.width - 1
        on_edge = max(int(visible[self.row0].sum()), int(visible[bottom].sum()),
                      int(visible[:, self.col0].sum()), int(visible[:, right].sum()))
        diameter = 2.0 * np.sqrt(mask.sum() / np.pi)
        cut = on_edge / max(diameter, 1.0) if on_edge > 1 else 0.0
        crop_height, crop_width = self.crop_shape
        top, _, left, _ = self.bands
        centre = ((top + (rows.mean() - self.row0 + 0.5) * self.to_crop) / crop_height,
                  (left + (cols.mean() - self.col0 + 0.5) * self.to_crop) / crop_width)
        extent = ((rows.max() - rows.min() + 1) * self.to_crop / (2 * crop_height),
                  (cols.max() - cols.min() + 1) * self.to_crop / (2 * crop_width))
        return Nucleus(area_share=visible_pixels * self.to_crop ** 2 / (crop_height * crop_width),
                       centre=(float(centre[0]), float(centre[1])), cut=float(min(cut, 1.5)), contrast=contrast,
                       found_by=found_by, extent=(float(extent[0]), float(extent[1])), solidity=_solidity(visible))


def _findings(item: dict, label_map: np.ndarray, keep_images: bool) -> CellFindings:
    import cv2
    from scipy import ndimage

    box_left, box_top, box_width, box_height = item["box"]
    labels = label_map[box_top:box_top + box_height, box_left:box_left + box_width]
    col0, row0, inner_width, inner_height = item["inner_box"]
    inner_rows, inner_cols = item["inner_shape"]
    frame = _Frame(item["small"], row0, col0, inner_height, inner_width, inner_rows / max(inner_height, 1),
                   item["bands"], item["shape"])
    inside = frame.inside
    density = _optical_density(frame.image, inside)
    cell = labels >= 1
    nucleus_labels, count = ndimage.label(labels == 2)
    window = (slice(row0, row0 + inner_height), slice(col0, col0 + inner_width))
    nuclei, shapes, claimed = [], [], np.zeros(labels.shape, bool)
    for index in range(1, count + 1):
        mask = nucleus_labels == index
        found = frame.describe(mask, density, "segmenter")
        if found and found.area_share >= MIN_AREA_SHARE and found.contrast >= MIN_CONTRAST:
            nuclei.append(found)
            shapes.append(mask[window])
            claimed |= mask

    # small dark round blobs inside a cell, at a finer scale: pyknotic nuclei below the
    # segmenter's resolution
    crop = item["inner"]
    scale = min(1.0, BLOB_SIDE / max(crop.shape[:2]))
    fine_size = (max(8, int(round(crop.shape[1] * scale))), max(8, int(round(crop.shape[0] * scale))))
    fine_image = crop if scale == 1.0 else cv2.resize(crop, fine_size, interpolation=cv2.INTER_AREA)
    fine = _Frame(fine_image, 0, 0, fine_image.shape[0], fine_image.shape[1], inner_rows / fine_image.shape[0],
                  item["bands"], item["shape"])
    to_fine = fine_image.shape[1::-1]
    fine_cell = cv2.resize(cell[window].astype(np.uint8), to_fine, interpolation=cv2.INTER_NEAREST) > 0
    fine_claimed = cv2.resize(ndimage.binary_dilation(claimed, iterations=2)[window].astype(np.uint8), to_fine,
                              interpolation=cv2.INTER_NEAREST) > 0
    fine_density = _optical_density(fine_image, np.ones(fine_image.shape[:2], bool))
    crop_area = float(item["shape"][0] * item["shape"][1])
    for mask in _pyknotic_blobs(fine_density, fine_image, ~fine_claimed, fine_cell,
                                MIN_BLOB_SHARE * crop_area / fine.to_crop ** 2):
        found = fine.describe(mask, fine_density, "dark blob")
        if found and found.contrast >= MIN_CONTRAST:
            nuclei.append(found)
            shapes.append(cv2.resize(mask.astype(np.uint8), (inner_width, inner_height),
                                     interpolation=cv2.INTER_NEAREST) > 0)
    order = sorted(range(len(nuclei)), key=lambda i: -nuclei[i].area_share)
    nuclei, shapes = [nuclei[i] for i in order], [shapes[i] for i in order]
    findings = CellFindings(nuclei=nuclei, cell_share=float(cell[inside].mean()) * (inner_rows * inner_cols) / crop_area,
                            flat_bands=item["bands"])
    if keep_images:
        findings.image = np.ascontiguousarray(frame.image[window])
        main = findings.main
        findings.nucleus_mask = (shapes[next(i for i, n in enumerate(nuclei) if n is main)] if main
                                 else np.zeros((inner_height, inner_width), bool))
        findings.cell_mask = _cell_around(cell[window], findings.nucleus_mask)
    return findings


def _cell_around(cell: np.ndarray, nucleus: np.ndarray) -> np.ndarray:
    """The connected part of ``cell`` that holds ``nucleus`` (with the nucleus)."""
    from scipy import ndimage

    joined = cell | nucleus
    if not nucleus.any():
        return np.zeros_like(cell)
    labels, _ = ndimage.label(joined)
    touching = np.unique(labels[nucleus])
    return np.isin(labels, touching[touching > 0])


def _pyknotic_blobs(density: np.ndarray, image: np.ndarray, allowed: np.ndarray, cell: np.ndarray,
                    min_pixels: float) -> list[np.ndarray]:
    """The mask of the one small round haematoxylin-blue blob that is much darker than the
    cytoplasm around it and than any other such blob (``[]`` when there is none).

    Darker than its surroundings, not than the slide: the density's white top-hat (the density
    minus its opening by a disc of ``BLOB_RADIUS`` of the side) keeps what is small and dark
    over whatever lies beneath it. The surroundings (the opening) must be stained cytoplasm,
    not bare slide, inside the segmenter's cell. A cell has one such nucleus: among specks of
    debris none stands out, so the darkest must beat the next by ``BLOB_DOMINANCE``."""
    import cv2
    from scipy import ndimage

    radius = max(2, int(round(BLOB_RADIUS * max(density.shape))))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    beneath = cv2.morphologyEx(density.astype(np.float32), cv2.MORPH_OPEN, disc)
    above = density - beneath
    red = image[..., 0].astype(np.float32)
    red_density = np.maximum(-np.log((red + 1.0) / (np.percentile(red, 98) + 1.0)), 0)
    labels, count = ndimage.label((above >= BLOB_CONTRAST) & allowed)
    stained, _ = ndimage.label(beneath >= MIN_BLOB_RING_DENSITY)
    stained_sizes = np.bincount(stained.ravel())
    blobs = []  # every small round blue blob, wherever it lies: (peak, mask, on a cell)
    for index in range(1, count + 1):
        mask = labels == index
        if mask.sum() < min_pixels or not _round(mask):
            continue
        if red_density[mask].sum() < MIN_BLOB_RED_SHARE * density[mask].sum():
            continue
        # on a cell: stained cytoplasm beneath it, large enough to be a cell's (not a red
        # blood cell's), and the segmenter's cell
        under = np.unique(stained[mask])
        on_cell = (beneath[mask].mean() >= MIN_BLOB_RING_DENSITY and cell[mask].mean() >= MIN_BLOB_INSIDE
                   and stained_sizes[under[under > 0]].sum() >= MIN_BLOB_CELL_SHARE * density.size)
        blobs.append((float(above[mask].max()), mask, on_cell))
    blobs.sort(key=lambda item: -item[0])
    if not blobs or not blobs[0][2] or blobs[0][0] < BLOB_PEAK:
        return []
    if len(blobs) > 1 and blobs[0][0] < BLOB_DOMINANCE * blobs[1][0]:
        return []
    return [blobs[0][1]]


def _solidity(mask: np.ndarray) -> float:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0
    hull = cv2.convexHull(np.concatenate(contours))
    return float(min(1.0, mask.sum() / max(cv2.contourArea(hull) + len(hull) / 2.0, 1.0)))


def _round(mask: np.ndarray) -> bool:
    """Compact and not elongated: bacteria are rods, a nucleus is not."""
    rows, cols = np.nonzero(mask)
    if len(rows) < 3:
        return len(rows) > 0
    covariance = np.cov(np.stack([rows, cols]).astype(np.float64))
    eigen = np.linalg.eigvalsh(covariance)
    return bool(eigen[0] > 0 and eigen[1] / eigen[0] <= 4.0)  # axes ratio at most 2
