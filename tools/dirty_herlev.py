"""A dirty copy of Herlev with a ground-truth list of what was planted, to measure ``xcyto data check``.

    python tools/dirty_herlev.py --out /tmp/herlev-dirty            # write the copy and truth.csv
    python tools/dirty_herlev.py --out /tmp/herlev-dirty --score    # ... then check it: the README's table

Planted, each kind with the check that should find it (``KINDS``):

- ``background``: crops that hold no cell. Half cut from the margins of Herlev images where
  the segmenter finds no cell (mirrored to full size, so the slide's texture keeps its
  scale), half drawn: slide background with bacteria, specks, leukocyte-like lobes,
  red-blood-cell-like discs and the edge of a cytoplasm without its nucleus.
- ``off_centre``: a cell moved so its nucleus lies near a corner, wholly inside the crop.
- ``cut_by_border``: a cell moved so the border cuts through its nucleus.
- ``several_cells``: two or four cells side by side in one crop (neighbours in the frame).
- ``blurred``: Gaussian blur of 1.2 to 2.5 % of the crop's side (out of focus).
- ``dark`` / ``light``: under- and over-exposed crops.
- ``odd_size`` / ``odd_aspect``: thumbnails (a fifth of the usual side); thin strips.
- ``exact_duplicate`` / ``near_duplicate``: a cell copied under another name and source
  group, byte for byte, or re-encoded, flipped or turned, and rescaled.
- ``far_from_class``: a normal superficial or intermediate cell labelled carcinoma in situ,
  or the reverse (the measured nucleus is far outside the class's range).
- one class cut to a twentieth of the largest (class imbalance, for training).

The clean cells are copied as they are. Written outside the repository (the data stays
where it lies) as a CSV manifest ``cells.csv`` (``path,label,group``, paths relative to it,
Herlev's source-image groups kept) and ``truth.csv`` (``path,kind,detail``: clean cells have
kind ``clean``).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

#: kind -> the check that should flag it (``None``: not a data issue, e.g. the rare class).
KINDS = {
    "background": "no_nucleus",
    "off_centre": "nucleus_off_centre",
    "cut_by_border": "nucleus_cut_by_border",
    "several_cells": "several_nuclei",
    "blurred": "out_of_focus",
    "dark": "too_dark",
    "light": "too_light",
    "odd_size": "odd_size",
    "odd_aspect": "odd_aspect",
    "exact_duplicate": "exact_duplicate",
    "near_duplicate": "near_duplicate",
    "far_from_class": "far_from_class",
}
#: How many of each kind the full copy plants (``--scale`` multiplies them).
COUNTS = {"background": 100, "off_centre": 60, "cut_by_border": 60, "several_cells": 60, "blurred": 60,
          "dark": 25, "light": 25, "odd_size": 20, "odd_aspect": 20, "exact_duplicate": 30, "near_duplicate": 60,
          "far_from_class": 40}
#: The class made rare, and how many times rarer than the largest it ends.
RARE_FACTOR = 20
NORMAL_FOR_SWAP = ("normal_superficiel", "normal_intermediate")
ABNORMAL_FOR_SWAP = ("carcinoma_in_situ",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("XCYTO_DATA", "../shared/data") + "/herlev")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the planted counts (default 1)")
    parser.add_argument("--rare-class", default="normal_superficiel",
                        help=f"class cut to 1/{RARE_FACTOR} of the largest ('none' keeps every class whole)")
    parser.add_argument("--score", action="store_true", help="then run xcyto data check and print the table")
    args = parser.parse_args(argv)
    from xcyto.data import load_dataset

    dataset = load_dataset(args.data)
    rows = plant(dataset, args.out, seed=args.seed, scale=args.scale,
                 rare_class=None if args.rare_class == "none" else args.rare_class)
    counts = {kind: sum(row["kind"] == kind for row in rows) for kind in ["clean", *KINDS]}
    print(f"{len(rows)} crops -> {args.out / 'cells.csv'}; " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    if args.score:
        from xcyto.data.health import check

        result = check(load_dataset(args.out / "cells.csv"), progress=True)
        result.save(args.out / "check")
        print(format_scores(score(result, rows, args.out)))
    return 0


def plant(dataset, out: Path, seed: int = 0, scale: float = 1.0, rare_class: str | None = "normal_superficiel",
          counts: dict | None = None) -> list[dict]:
    """Write the dirty copy of ``dataset`` (Herlev) into ``out``; return the truth rows."""
    from xcyto.morphology import segment

    rng = np.random.default_rng(seed)
    counts = {kind: int(round(n * scale)) for kind, n in (counts or COUNTS).items()}
    (out / "images").mkdir(parents=True, exist_ok=True)
    samples = list(dataset.samples)
    masks = {}

    def masks_of(index):
        if index not in masks:
            masks[index] = segment(samples[index].image, "learned")
        return masks[index]

    rows: list[dict] = []

    def write(image: np.ndarray, label: str, group: str, kind: str, detail: str = "", name: str | None = None,
              encoded: bytes | None = None, suffix: str = ".png") -> str:
        name = name or f"{kind}-{sum(row['kind'] == kind for row in rows):04d}"
        path = out / "images" / f"{name}{suffix}"
        if encoded is not None:
            path.write_bytes(encoded)
        else:
            Image.fromarray(image).save(path)
        rows.append({"path": f"images/{path.name}", "label": label, "group": group, "kind": kind, "detail": detail})
        return str(path)

    # the rare class: keep 1/RARE_FACTOR of the largest class
    by_class = {name: [i for i, s in enumerate(samples) if s.class_name == name] for name in dataset.classes}
    dropped: set[int] = set()
    if rare_class:
        kept = max(2, round(max(len(v) for v in by_class.values()) / RARE_FACTOR))
        members = by_class[rare_class]
        dropped = set(rng.choice(members, size=max(0, len(members) - kept), replace=False).tolist())
    usable = [i for i in range(len(samples)) if i not in dropped]
    # A planted crop replaces the crop of the cell it is made from (a shifted, blurred or
    # relabelled crop is that cell's only crop), so it is no near-duplicate of a clean one.
    # Duplicates copy cells that stay; composites take their other cells from those too.
    consumed: set[int] = set()
    side = 224

    rare = set(by_class[rare_class]) if rare_class else set()  # the rare class keeps all it has left

    def random_cell(condition=None):
        candidates = [i for i in usable if i not in consumed and i not in rare]
        for index in rng.permutation(candidates):
            if condition is None or condition(int(index)):
                consumed.add(int(index))
                return int(index)
        raise ValueError("no cell left for this kind: lower --scale")

    # the relabelled cells are set aside first: the classes they come from are small
    relabelled = []
    for number in range(counts["far_from_class"]):
        wanted = NORMAL_FOR_SWAP if number % 2 else ABNORMAL_FOR_SWAP
        relabelled.append(random_cell(lambda i: samples[i].class_name in wanted))

    def kept_cell():
        return int(rng.choice([i for i in usable if i not in consumed]))

    def random_label():
        return str(rng.choice(dataset.classes))

    # background: margins of Herlev images, and drawn slides
    margin_sources = [i for i in rng.permutation(usable)]
    made = 0
    for index in margin_sources:
        if made >= counts["background"] // 2:
            break
        patch = empty_margin(samples[index].image, masks_of(index))
        if patch is None:
            continue
        write(mirror_to(patch, side), random_label(), f"bg-{made}", "background", f"margin of {samples[index].cell_id}")
        made += 1
    while made < counts["background"]:
        image, what = drawn_background(rng, side)
        write(image, random_label(), f"bg-{made}", "background", what)
        made += 1

    for _ in range(counts["off_centre"]):
        index = random_cell(lambda i: fits_off_centre(masks_of(i).nucleus))  # leaves the middle clear
        image, detail = shifted(samples[index].image, masks_of(index).nucleus, rng, cut=False)
        write(image, samples[index].class_name, samples[index].group, "off_centre", detail)
    for _ in range(counts["cut_by_border"]):
        index = random_cell()
        image, detail = shifted(samples[index].image, masks_of(index).nucleus, rng, cut=True)
        write(image, samples[index].class_name, samples[index].group, "cut_by_border", detail)
    for _ in range(counts["several_cells"]):
        first = random_cell()
        others = [kept_cell() for _ in range(int(rng.choice([1, 3])))]
        image = side_by_side([samples[i].image for i in [first, *others]], side)
        write(image, samples[first].class_name, samples[first].group, "several_cells", f"{1 + len(others)} cells")
    for _ in range(counts["blurred"]):
        index = random_cell()
        image = samples[index].image
        sigma = rng.uniform(0.012, 0.025) * max(image.shape[:2])
        write(cv2.GaussianBlur(image, (0, 0), sigma), samples[index].class_name, samples[index].group, "blurred",
              f"sigma {sigma:.1f} px")
    for _ in range(counts["dark"]):
        index = random_cell()
        gain = rng.uniform(0.15, 0.3)
        image = (samples[index].image.astype(np.float32) * gain).astype(np.uint8)
        write(image, samples[index].class_name, samples[index].group, "dark", f"gain {gain:.2f}")
    for _ in range(counts["light"]):
        index = random_cell()
        amount = rng.uniform(0.8, 0.92)
        image = (samples[index].image.astype(np.float32) * (1 - amount) + 255 * amount).astype(np.uint8)
        write(image, samples[index].class_name, samples[index].group, "light", f"washed out {amount:.2f}")
    for _ in range(counts["odd_size"]):
        index = random_cell()
        small = max(16, side // 5)
        write(cv2.resize(samples[index].image, (small, small), interpolation=cv2.INTER_AREA), samples[index].class_name,
              samples[index].group, "odd_size", f"thumbnail {small} px")
    for _ in range(counts["odd_aspect"]):
        index = random_cell()
        image = samples[index].image
        height = max(16, image.shape[0] // 4)
        top = (image.shape[0] - height) // 2
        write(image[top:top + height], samples[index].class_name, samples[index].group, "odd_aspect",
              f"strip {image.shape[1]} x {height} px")
    for number in range(counts["exact_duplicate"]):
        index = kept_cell()
        sample = samples[index]
        write(sample.image, sample.class_name, f"dup-{number}", "exact_duplicate", f"copy of clean-{index:04d}",
              encoded=Path(sample.path).read_bytes(), suffix=Path(sample.path).suffix)
    for number in range(counts["near_duplicate"]):
        index = kept_cell()
        image, how = altered_copy(samples[index].image, rng)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(rng.integers(60, 90)))
        write(image, samples[index].class_name, f"near-{number}", "near_duplicate", f"{how} of clean-{index:04d}",
              encoded=buffer.getvalue(), suffix=".jpg")
    for number, index in enumerate(relabelled):  # a few wrong labels in a class, not half the rare one
        labels = ABNORMAL_FOR_SWAP if samples[index].class_name in NORMAL_FOR_SWAP else [
            name for name in NORMAL_FOR_SWAP if name != rare_class]
        label = str(rng.choice(labels))
        sample = samples[index]
        write(sample.image, label, sample.group, "far_from_class", f"{sample.class_name} labelled {label}",
              encoded=Path(sample.path).read_bytes(), suffix=Path(sample.path).suffix)
    # the clean cells: every usable cell not made into a planted crop, copied byte for byte
    for index in usable:
        if index in consumed:
            continue
        sample = samples[index]
        write(sample.image, sample.class_name, sample.group, "clean", name=f"clean-{index:04d}",
              encoded=Path(sample.path).read_bytes(), suffix=Path(sample.path).suffix)
    rows.sort(key=lambda row: row["kind"] != "clean")  # originals before their copies
    with open(out / "cells.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "group"])
        writer.writeheader()
        writer.writerows({key: row[key] for key in ("path", "label", "group")} for row in rows)
    with open(out / "truth.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "kind", "detail"])
        writer.writeheader()
        writer.writerows({key: row[key] for key in ("path", "kind", "detail")} for row in rows)
    return rows


def empty_margin(image: np.ndarray, masks, smallest: int = 64) -> np.ndarray | None:
    """The largest square of ``image`` that holds no cell: away from the segmented cell, from
    anything as dark as a nucleus, and from the flat padding bands some Herlev images carry."""
    height, width = image.shape[:2]
    grey = image.astype(np.float32).mean(axis=2)
    blocked = cv2.dilate(masks.cell.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    density = -np.log((grey + 1) / (np.percentile(grey, 99) + 1))
    blocked |= density > 0.35  # any dark thing: another cell's nucleus or cytoplasm
    flat_rows = grey.std(axis=1) < 4.0  # padding bands are not slide
    flat_cols = grey.std(axis=0) < 4.0
    blocked[flat_rows] = True
    blocked[:, flat_cols] = True
    free = (~blocked).astype(np.uint8)
    # largest free square ending at each pixel (dynamic programming)
    best = np.zeros((height + 1, width + 1), np.int32)
    for row in range(height):
        for col in range(width):
            if free[row, col]:
                best[row + 1, col + 1] = 1 + min(best[row, col + 1], best[row + 1, col], best[row, col])
    size = int(best.max())
    if size < smallest:
        return None
    row, col = np.unravel_index(int(best.argmax()), best.shape)
    return image[row - size:row, col - size:col]


def mirror_to(patch: np.ndarray, side: int) -> np.ndarray:
    """``patch`` tiled by reflection to ``side x side``: the slide's texture at its own scale."""
    reps = side // patch.shape[0] + 1
    tiled = np.pad(patch, ((0, patch.shape[0] * reps), (0, patch.shape[1] * reps), (0, 0)), mode="symmetric")
    return np.ascontiguousarray(tiled[:side, :side])


def drawn_background(rng, side: int) -> tuple[np.ndarray, str]:
    """An empty slide: specks, bacteria, leukocyte-like lobes, red blood cells and, sometimes,
    the edge of a cytoplasm whose nucleus lies outside the crop."""
    from xcyto.data import _synthetic_shapes as shapes
    from xcyto.data._synthetic import Slide, _photograph

    slide = Slide.draw(rng)
    canvas = shapes.Canvas(side, rng)
    canvas.colour["nuclei"] = slide.nucleus_colour
    parts = []
    specks = int(rng.integers(0, 40))
    shapes.draw_debris(canvas, rng, specks)
    parts.append(f"{specks} specks")
    rods = int(rng.integers(0, 60))
    if rods:
        amount = np.zeros((side, side), np.uint8)
        centres = rng.uniform(0, side, (rods, 2))
        angles = rng.uniform(0, np.pi, rods)
        length = rng.uniform(0.015, 0.03, rods) * side
        for (x, y), angle, half in zip(centres, angles, length / 2):
            dx, dy = np.cos(angle) * half, np.sin(angle) * half
            cv2.line(amount, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)), shapes.BODY,
                     max(1, round(side / 160)), cv2.LINE_AA)
        canvas.add("nuclei", amount, rng.uniform(0.4, 0.9))
        parts.append(f"{rods} bacteria")
    discs = int(rng.integers(0, 12))
    if discs:
        canvas.colour["neighbour"] = np.array([0.97, 0.55, 0.55], np.float32)  # red blood cells
        amount = np.zeros((side, side), np.uint8)
        for _ in range(discs):
            centre = rng.uniform(0, side, 2)
            radius = rng.uniform(0.025, 0.04) * side
            cv2.circle(amount, (int(centre[0]), int(centre[1])), int(radius), shapes.BODY, -1, cv2.LINE_AA)
            cv2.circle(amount, (int(centre[0]), int(centre[1])), int(radius * 0.45), shapes.BODY // 2, -1, cv2.LINE_AA)
        canvas.add("neighbour", amount, rng.uniform(0.5, 1.0))
        parts.append(f"{discs} red cells")
    if rng.uniform() < 0.5:  # the edge of a cytoplasm, its nucleus outside the crop
        colour = shapes.cytoplasm_colour(rng, "Parabasal")
        canvas.colour["cytoplasm"] = colour
        along, outside = rng.uniform(0.2, 0.8) * side, -rng.uniform(0.25, 0.4) * side
        centre = np.array([(along, outside), (along, side - outside), (outside, along), (side - outside, along)]
                          [int(rng.integers(4))])
        outline = shapes.place(shapes.blob(rng, 48, 0.3), centre, rng.uniform(0.45, 0.6) * side, rng.uniform(0, 6.3))
        canvas.add("cytoplasm", shapes.shade(side, outline), rng.uniform(0.4, 0.8), texture=(0.15, 0.08))
        parts.append("edge of a cytoplasm")
    return _photograph(canvas, rng, slide), ", ".join(parts)


def fits_off_centre(nucleus: np.ndarray) -> bool:
    """Whether the nucleus is small enough (at most 30 % of the side across) that, moved near
    a corner, it leaves the middle of the crop clear."""
    rows, cols = np.nonzero(nucleus)
    if len(rows) == 0:
        return False
    return max(np.ptp(rows) / nucleus.shape[0], np.ptp(cols) / nucleus.shape[1]) <= 0.3


def shifted(image: np.ndarray, nucleus: np.ndarray, rng, cut: bool) -> tuple[np.ndarray, str]:
    """``image`` moved (the uncovered part showing bare slide) so that its nucleus lies near a
    corner (``cut=False``) or across a border (``cut=True``)."""
    height, width = image.shape[:2]
    rows, cols = np.nonzero(nucleus)
    if len(rows) == 0:
        rows, cols = np.array([height // 2]), np.array([width // 2])
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    if cut:  # the border through the nucleus, 30-60 % of it outside
        side = int(rng.integers(4))
        share = rng.uniform(0.3, 0.6)
        if side == 0:
            dy, dx = -(top + share * (bottom - top)), 0
        elif side == 1:
            dy, dx = height - (bottom - share * (bottom - top)), 0
        elif side == 2:
            dy, dx = 0, -(left + share * (right - left))
        else:
            dy, dx = 0, width - (right - share * (right - left))
        detail = f"{share:.0%} of the nucleus outside"
    else:  # the nucleus wholly inside, its box 2-6 % of the side from a corner
        gap_y, gap_x = rng.uniform(0.02, 0.06, 2) * np.array([height, width])
        dy = (gap_y - top) if rng.uniform() < 0.5 else (height - gap_y - bottom)
        dx = (gap_x - left) if rng.uniform() < 0.5 else (width - gap_x - right)
        detail = "nucleus moved to a corner"
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=(0, 0, 0))
    covered = cv2.warpAffine(np.ones((height, width), np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST) > 0
    return np.where(covered[..., None], moved, empty_slide(image, rng)), detail


def empty_slide(image: np.ndarray, rng) -> np.ndarray:
    """Bare slide of ``image``'s light (its brightest 2 %, per channel) with a fine mottle: what a
    crop moved off its cell shows where no cell is."""
    light = np.percentile(image.reshape(-1, 3), 98, axis=0).astype(np.float32)
    mottle = cv2.GaussianBlur(rng.normal(0, 6, image.shape[:2]).astype(np.float32), (0, 0), 1.5)
    return np.clip(light * (1 + mottle[..., None] / 255) + rng.normal(0, 1.5, image.shape), 0, 255).astype(np.uint8)


def side_by_side(images: list[np.ndarray], side: int) -> np.ndarray:
    """Two cells side by side, or four in a 2 x 2 grid, on one ``side``-pixel crop."""
    from xcyto.data import background_colour

    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = background_colour(images[0])
    grid = 1 if len(images) == 2 else 2
    cell_side = side // 2
    # cells of one slide share its light: each is white-balanced to the first one's background
    reference = np.percentile(images[0].reshape(-1, 3), 98, axis=0).astype(np.float32) + 1
    for number, image in enumerate(images):
        light = np.percentile(image.reshape(-1, 3), 98, axis=0).astype(np.float32) + 1
        image = np.clip(image.astype(np.float32) * (reference / light), 0, 255).astype(np.uint8)
        small = cv2.resize(image, (cell_side, cell_side), interpolation=cv2.INTER_AREA)
        row = 0 if grid == 1 else number // 2
        col = number % 2
        top = (side - cell_side) // 2 if grid == 1 else row * cell_side
        canvas[top:top + cell_side, col * cell_side:(col + 1) * cell_side] = small
    return canvas


def altered_copy(image: np.ndarray, rng) -> tuple[np.ndarray, str]:
    """A near-duplicate: flipped or turned, rescaled by 0.8-1.25, then re-encoded (by the caller)."""
    how = []
    turn = int(rng.integers(4))
    if turn:
        image = np.rot90(image, turn)
        how.append(f"turned {90 * turn} deg")
    if rng.uniform() < 0.5:
        image = image[:, ::-1]
        how.append("mirrored")
    factor = rng.uniform(0.8, 1.25)
    size = (max(16, round(image.shape[1] * factor)), max(16, round(image.shape[0] * factor)))
    image = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
    how.append(f"rescaled {factor:.2f}")
    return image, ", ".join(how) + ", re-encoded"


def score(result, rows: list[dict], root: Path) -> list[dict]:
    """Per check: planted crops of its kind and how many it flagged (recall); of its flags on
    clean or on planted crops of its kind, the share on its kind (precision); its flags on clean
    cells; and its flags on crops planted with another problem (shown, not counted either way:
    a washed-out crop may well show no nucleus). A duplicate flag on the original of a planted
    copy counts as found. ``rows``: ``truth.csv``'s, paths relative to ``root``."""
    by_file = {str((Path(root) / row["path"]).resolve()): row for row in rows}
    flagged: dict[str, set[str]] = {}
    for issue in result.issues:
        flagged.setdefault(issue.check, set()).add(str(Path(result.source_path(issue.path)).resolve()))
    clean = {path for path, row in by_file.items() if row["kind"] == "clean"}
    table = []
    for kind, check_name in KINDS.items():
        planted = {path for path, row in by_file.items() if row["kind"] == kind}
        found = flagged.get(check_name, set())
        originals = set()
        if kind.endswith("duplicate"):  # the copy or its original, either flag finds the pair
            names = {Path(path).stem: path for path in clean}
            pairs = {path: names.get(by_file[path]["detail"].split(" of ")[-1]) for path in planted}
            hits = {path for path, original in pairs.items() if path in found or original in found}
            originals = {original for original in pairs.values() if original}
        else:
            hits = found & planted
        on_clean = (found & clean) - originals
        right = len((found & planted) | (found & originals))
        table.append({"check": check_name, "planted": kind, "n": len(planted), "flags": len(found),
                      "recall": len(hits) / max(len(planted), 1),
                      "precision": right / max(right + len(on_clean), 1),
                      "clean_flagged": len(on_clean), "clean": len(clean),
                      "other_planted_flagged": len(found - planted - clean - originals)})
    return table


def format_scores(table: list[dict]) -> str:
    lines = ["| check | planted kind | planted | precision | recall | clean cells flagged | flags on other planted kinds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in table:
        lines.append(f"| `{row['check']}` | {row['planted']} | {row['n']} | {row['precision']:.2f} | {row['recall']:.2f} | "
                     f"{row['clean_flagged']} of {row['clean']} ({row['clean_flagged'] / max(row['clean'], 1):.1%}) | "
                     f"{row['other_planted_flagged']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
