"""Synthetic cells: deterministic, well-formed masks, no colour shortcut, readable as SIPaKMeD."""
import cv2
import numpy as np
import pytest

from xcyto.data import load_dataset
from xcyto.data._synthetic import CLASSES, generate_cell, make_dataset, write_sipakmed_layout
from xcyto.errors import DataError


def test_same_seed_same_cells_and_cell_i_independent_of_n():
    first, again, longer = make_dataset(20, seed=3), make_dataset(20, seed=3), make_dataset(30, seed=3)
    other = make_dataset(20, seed=4)
    for a, b, c in zip(first.samples, again.samples, longer.samples):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.image, c.image)
        assert a.cell_id == b.cell_id
    assert not all(np.array_equal(a.image, d.image) for a, d in zip(first.samples, other.samples))


def test_cells_are_well_formed_and_balanced():
    dataset = make_dataset(50, seed=0, size=96)
    assert dataset.classes == CLASSES
    assert np.bincount(dataset.labels, minlength=5).tolist() == [10] * 5
    for cell in dataset.samples:
        assert cell.image.shape == (96, 96, 3) and cell.image.dtype == np.uint8
        for mask in (cell.nucleus_mask, cell.cytoplasm_mask, cell.evidence_mask):
            assert mask.shape == (96, 96) and mask.dtype == bool and mask.any()
        assert not (cell.nucleus_mask & ~cell.cytoplasm_mask).any()  # nucleus inside the cell
        assert not (cell.evidence_mask & ~cell.cytoplasm_mask).any()
        # the nucleus is darker than the cell's cytoplasm around it
        cytoplasm = cell.cytoplasm_mask & ~cell.nucleus_mask
        assert cell.image[cell.nucleus_mask].mean() < cell.image[cytoplasm].mean()
    groups = dataset.groups
    assert len(set(groups)) == 15  # clusters of 4 cells of one class (the last ones of 2)
    assert all(len({c.class_name for c in dataset.samples if c.group == g}) == 1 for g in set(groups))


def test_morphology_differs_by_class_in_size_and_ratio():
    dataset = make_dataset(200, seed=1, size=128)
    def mean_of(name, measure):
        return np.mean([measure(c) for c in dataset.samples if c.class_name == name])
    cell_area = lambda c: c.cytoplasm_mask.sum()
    ratio = lambda c: c.nucleus_mask.sum() / c.cytoplasm_mask.sum()
    assert mean_of("Superficial-Intermediate", cell_area) > 2 * mean_of("Parabasal", cell_area)
    assert mean_of("Parabasal", ratio) > 3 * mean_of("Superficial-Intermediate", ratio)
    assert mean_of("Metaplastic", ratio) > mean_of("Superficial-Intermediate", ratio)


def test_evidence_marks_what_defines_each_class():
    dataset = make_dataset(25, seed=6, size=96)
    for cell in dataset.samples:
        nucleus, evidence, whole = cell.nucleus_mask, cell.evidence_mask, cell.cytoplasm_mask
        if cell.class_name in ("Parabasal", "Superficial-Intermediate"):  # N:C ratio, pyknosis
            assert np.array_equal(evidence, nucleus)
        elif cell.class_name == "Dyskeratotic":  # the keratinised clump
            assert np.array_equal(evidence, whole)
        else:  # Koilocytotic: halo around the nuclei; Metaplastic: processes beyond the body
            assert not (nucleus & ~evidence).any() and (evidence & ~nucleus).sum() > nucleus.sum() / 4
            assert (evidence & ~whole).sum() == 0 and evidence.sum() < whole.sum()


def test_generate_cell_takes_a_name_or_index_and_a_seed():
    by_name, by_index = generate_cell("Parabasal", 12, size=64), generate_cell(3, np.random.default_rng(12), size=64)
    assert np.array_equal(by_name.image, by_index.image) and by_name.label == 3
    assert by_name.cell_id == "synthetic-Parabasal-12-0"


def _stain_chromaticity(cell) -> np.ndarray:
    """Mean optical density of the cytoplasm, normalised to sum 1: the stain's colour whatever its thickness."""
    pixels = cell.image[cell.cytoplasm_mask & ~cell.nucleus_mask].astype(np.float32)
    density = -np.log((pixels + 1) / 256).mean(axis=0)
    return density / density.sum()


def _best_threshold_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """Accuracy of the best single threshold telling ``a`` from ``b``."""
    values, is_b = np.concatenate([a, b]), np.r_[np.zeros(len(a)), np.ones(len(b))]
    return max(max(((values > t) == is_b).mean(), ((values <= t) == is_b).mean()) for t in values)


def test_shared_palette_gives_no_colour_shortcut():
    """Koilocytotic, Metaplastic, Parabasal and Superficial-Intermediate: cytoplasm colour tells them apart
    no better than chance; Dyskeratotic's orange keratin does (so the test can see a colour cue)."""
    dataset = make_dataset(250, seed=2, size=64)
    colour = {name: np.array([_stain_chromaticity(c) for c in dataset.samples if c.class_name == name])
              for name in CLASSES}
    shared = ["Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"]
    for i, a in enumerate(shared):
        for b in shared[i + 1:]:
            for channel in range(3):
                assert _best_threshold_accuracy(colour[a][:, channel], colour[b][:, channel]) < 0.72, (a, b, channel)
    for other in shared:
        assert _best_threshold_accuracy(colour["Dyskeratotic"][:, 2], colour[other][:, 2]) > 0.95


def test_bad_requests_are_clear_errors():
    with pytest.raises(DataError, match="unknown synthetic class"):
        generate_cell("Unicorn", 0)
    with pytest.raises(DataError, match="32 to 512"):
        generate_cell("Parabasal", 0, size=8)
    with pytest.raises(DataError, match="n must be"):
        make_dataset(0)


def test_written_sipakmed_layout_reads_back_with_masks(tmp_path):
    original = make_dataset(15, seed=5, size=96)
    write_sipakmed_layout(tmp_path, n=15, seed=5, size=96)
    crops = sorted(tmp_path.glob("im_*/CROPPED/*.bmp"))
    assert len(crops) == 15 and all(p.name[3] == "_" for p in crops)
    lines = (crops[0].with_name(crops[0].stem + "_nuc.dat")).read_text().splitlines()
    assert all(len(line.split(",")) == 2 for line in lines)
    loaded = load_dataset(tmp_path)
    assert loaded.layout == "sipakmed" and loaded.classes == CLASSES and len(loaded) == 15
    by_image = {cell.image.tobytes(): cell for cell in original.samples}
    for cell in loaded.samples:
        source = by_image[cell.image.tobytes()]
        assert cell.class_name == source.class_name
        # One contour per file, as in SIPaKMeD: the largest region, so it lies inside the source mask,
        # and it is the whole mask where the source has a single region.
        for mine, theirs in ((cell.cytoplasm_mask, source.cytoplasm_mask), (cell.nucleus_mask, source.nucleus_mask)):
            assert (mine & theirs).sum() / mine.sum() > 0.85
            if cv2.connectedComponents(theirs.astype(np.uint8))[0] == 2:  # background + one region
                assert (mine & theirs).sum() / (mine | theirs).sum() > 0.8


@pytest.mark.parametrize("height, width", [(1, 1), (1, 3), (3, 1), (2, 2), (5, 4)])
@pytest.mark.parametrize("texture", [None, (0.3, 0.2)])
def test_stain_of_shapes_down_to_one_pixel(height, width, texture):
    """A debris speck can be one pixel wide: its stain must land on exactly those pixels
    (OpenCV 5 broadcast a float times a 1 x 1 array to 4 x 1)."""
    from xcyto.data import _synthetic_shapes as shapes
    canvas = shapes.Canvas(16, np.random.default_rng(0))
    shade = np.zeros((16, 16), np.uint8)
    shade[6:6 + height, 7:7 + width] = shapes.BODY
    canvas.add("nuclei", shade, strength=0.8, texture=texture)
    density = canvas.density["nuclei"]
    assert density.shape == (16, 16) and density.dtype == np.float32
    assert np.array_equal(density > 0, shade > 0)
    if texture is None:
        np.testing.assert_allclose(density[shade > 0], 0.8, rtol=1e-6)
    assert not canvas.density["cytoplasm"].any()


def test_many_small_cells_draw_with_any_opencv():
    """Small crops make many one-pixel debris particles; every cell must still draw."""
    dataset = make_dataset(60, seed=11, size=32)
    assert all(cell.image.shape == (32, 32, 3) for cell in dataset.samples)
    assert cv2.__version__.split(".")[0] in {"4", "5"}
