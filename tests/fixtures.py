"""Builders of small datasets on disk, in the real layouts, for tests anywhere.

Every image is random texture (seeded), so no two files are byte-identical unless a
test makes them so. Import with ``from fixtures import make_sipakmed_tree``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIPAKMED_CLASSES = ["Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"]
HERLEV_FOLDERS = ["carcinoma_in_situ", "light_dysplastic", "normal_columnar", "normal_intermediate"]


def cell_image(size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A light background, a pink cell disc and a dark nucleus, plus noise: ``H x W x 3`` uint8."""
    height, width = (size, size) if isinstance(size, int) else size
    yy, xx = np.mgrid[:height, :width]
    radius = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2) ** 0.5
    image = np.full((height, width, 3), (225, 220, 215), dtype=np.float64)
    image[radius < 0.4 * min(height, width)] = (200, 140, 170)
    image[radius < 0.15 * min(height, width)] = (70, 50, 120)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def circle(centre: tuple[float, float], radius: float, n_points: int = 24) -> np.ndarray:
    """``n x 2`` float points ``(x, y)`` on a circle."""
    angles = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], axis=1)


def write_contour(path: Path, points: np.ndarray, separator: str = ",") -> None:
    path.write_text("".join(f"{x:.2f}{separator}{y:.2f}\n" for x, y in points))


def make_sipakmed_tree(root, n_per_class: int = 4, nested: bool = True, size: int = 32,
                       clusters_per_class: int = 2, seed: int = 0, classes=SIPAKMED_CLASSES) -> Path:
    """SIPaKMeD layout: ``im_<C>[/im_<C>]/CROPPED/NNN_MM.bmp`` + ``_nuc.dat``/``_cyt.dat``.

    Crops are spread round-robin over ``clusters_per_class`` cluster images
    (``001``, ``002``...), each of which also gets a full image beside CROPPED/
    (which loaders must ignore). Contours are circles of radius 0.4 (cell) and
    0.15 (nucleus) of ``size`` around the centre; ``_cyt.dat`` uses whitespace.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    centre = ((size - 1) / 2, (size - 1) / 2)
    for class_name in classes:
        class_dir = root / f"im_{class_name}"
        if nested:
            class_dir = class_dir / f"im_{class_name}"
        crops = class_dir / "CROPPED"
        crops.mkdir(parents=True, exist_ok=True)
        for cluster in range(1, clusters_per_class + 1):
            Image.fromarray(cell_image((size * 3, size * 4), rng)).save(class_dir / f"{cluster:03d}.bmp")
        for index in range(n_per_class):
            stem = f"{index % clusters_per_class + 1:03d}_{index // clusters_per_class + 1:02d}"
            Image.fromarray(cell_image(size, rng)).save(crops / f"{stem}.bmp")
            write_contour(crops / f"{stem}_nuc.dat", circle(centre, 0.15 * size))
            write_contour(crops / f"{stem}_cyt.dat", circle(centre, 0.4 * size), separator=" ")
    return root


def herlev_mask(size: int) -> np.ndarray:
    """A Herlev colour-code mask (P mode palette values as RGB): red background,
    dark-blue cytoplasm disc (r < 0.4 size), light-blue nucleus (r < 0.15 size)."""
    yy, xx = np.mgrid[:size, :size]
    radius = ((yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2) ** 0.5
    mask = np.zeros((size, size, 3), dtype=np.uint8)
    mask[:] = (255, 0, 0)
    mask[radius < 0.4 * size] = (0, 0, 128)
    mask[radius < 0.15 * size] = (0, 0, 255)
    mask[0, 0] = (128, 128, 128)
    return mask


def make_herlev_tree(root, n_per_class: int = 4, groups_per_class: int = 2, size: int = 24,
                     masks: bool = False, renamed: bool = False, folders=HERLEV_FOLDERS, seed: int = 0) -> Path:
    """Herlev layout: ``<folder>/<AAAAAAAAA-BBBBBBBBB-NNN>.jpg`` (or ``N-K.BMP`` if ``renamed``).

    With ``masks`` each cell gets ``<stem>-d.bmp`` (8-bit palette) in the colour code.
    Source images: cells are spread round-robin over ``groups_per_class`` prefixes.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for class_index, folder in enumerate(folders):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(n_per_class):
            if renamed:
                stem, suffix = f"{class_index}-{index + 1}", ".BMP"
            else:
                source = 100000000 + class_index * 1000 + index % groups_per_class
                stem, suffix = f"{source}-{source + 7}-{index + 1:03d}", ".jpg" if not masks else ".bmp"
            Image.fromarray(cell_image(size, rng)).save(root / folder / f"{stem}{suffix}")
            if masks:
                palette_mask = Image.fromarray(herlev_mask(size)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
                palette_mask.save(root / folder / f"{stem}-d.bmp")
    return root


def make_class_tree(root, classes=("cat_a", "cat_b"), n_per_class: int = 3, size: int = 20, seed: int = 0) -> Path:
    """Generic ``root/<class>/cell_<i>.png`` tree."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for class_name in classes:
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for index in range(n_per_class):
            Image.fromarray(cell_image(size, rng)).save(root / class_name / f"cell_{index}.png")
    return root
