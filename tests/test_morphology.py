"""Morphology: segmentation against exact synthetic masks, features against shapes drawn by hand."""
import math
from pathlib import Path

import numpy as np
import pytest

from xcyto.morphology import CellMasks, SegmentationError, analyse, list_features, measure, segment

REPO = Path(__file__).resolve().parents[1]


def disc(shape, centre, radius):
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def painted(cell, nucleus, cytoplasm=(230, 170, 190), nucleus_colour=(80, 60, 140)):
    """A pale slide, pink cytoplasm and a dark blue-purple (haematoxylin) nucleus."""
    image = np.full((*cell.shape, 3), (245, 242, 240), np.uint8)
    image[cell] = cytoplasm
    image[nucleus] = nucleus_colour
    return image


def dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_features_of_concentric_discs_match_their_geometry():
    cell, nucleus = disc((128, 128), (64, 64), 40), disc((128, 128), (64, 64), 20)
    features = measure(painted(cell, nucleus), CellMasks(nucleus, cell))
    assert set(features) == set(list_features())
    assert features["nucleus_area"] == nucleus.sum() and features["cytoplasm_area"] == (cell & ~nucleus).sum()
    assert features["nc_ratio"] == pytest.approx(20 ** 2 / 40 ** 2, rel=0.02)  # area ratio of the discs
    assert features["nucleus_longest_diameter"] == pytest.approx(40, rel=0.02)
    assert features["nucleus_elongation"] == pytest.approx(1.0, abs=0.01)
    assert features["nucleus_roundness"] > 0.9 and features["cell_roundness"] > 0.9
    assert features["nucleus_perimeter"] == pytest.approx(2 * math.pi * 20, rel=0.05)
    assert features["nucleus_position"] == pytest.approx(0.0, abs=0.01)
    assert features["nucleus_brightness"] == pytest.approx((80 + 60 + 140) / 3 / 255, abs=1e-6)
    assert features["nucleus_irregularity"] < 0.05
    assert features["perinuclear_halo"] == pytest.approx(0.0, abs=1e-9)  # flat cytoplasm: no halo


def test_features_see_elongation_offset_irregularity_and_a_halo():
    rows, cols = np.mgrid[:128, :128]
    cell = disc((128, 128), (64, 64), 50)
    ellipse = ((rows - 64) / 10) ** 2 + ((cols - 80) / 25) ** 2 <= 1  # 50 x 20, right of centre
    features = measure(painted(cell, ellipse), CellMasks(ellipse, cell))
    assert features["nucleus_elongation"] == pytest.approx(20 / 50, abs=0.03)
    assert features["nucleus_position"] == pytest.approx(16 / 50, abs=0.03)
    star = disc((128, 128), (64, 64), 18) | ((np.abs(rows - 64) < 3) & (np.abs(cols - 64) < 30)) \
        | ((np.abs(cols - 64) < 3) & (np.abs(rows - 64) < 30))
    assert measure(painted(cell, star), CellMasks(star, cell))["nucleus_irregularity"] > 0.15
    nucleus = disc((128, 128), (64, 64), 15)
    image = painted(cell, nucleus)
    image[disc((128, 128), (64, 64), 24) & ~nucleus] = 250  # a clear ring around the nucleus
    assert measure(image, CellMasks(nucleus, cell))["perinuclear_halo"] > 0.1


def test_micrometres_scale_lengths_and_areas():
    cell, nucleus = disc((64, 64), (32, 32), 20), disc((64, 64), (32, 32), 10)
    pixels = measure(painted(cell, nucleus), CellMasks(nucleus, cell))
    microns = measure(painted(cell, nucleus), CellMasks(nucleus, cell), microns_per_pixel=0.5)
    assert microns["nucleus_area"] == pytest.approx(pixels["nucleus_area"] * 0.25)
    assert microns["nucleus_longest_diameter"] == pytest.approx(pixels["nucleus_longest_diameter"] * 0.5)
    assert microns["nc_ratio"] == pixels["nc_ratio"]


def test_classical_segmentation_finds_the_synthetic_nuclei():
    from xcyto.data import load_dataset

    cells = load_dataset("synthetic:n=40,size=128,seed=3")
    scores = [dice(segment(s.image).nucleus, s.nucleus_mask) for s in cells.samples]
    assert np.median(scores) > 0.9 and np.mean(scores) > 0.75
    drawn = painted(disc((96, 96), (48, 48), 30), disc((96, 96), (48, 48), 12))
    masks = segment(drawn)
    assert dice(masks.nucleus, disc((96, 96), (48, 48), 12)) > 0.9
    assert dice(masks.cell, disc((96, 96), (48, 48), 30)) > 0.9
    assert not (masks.nucleus & ~masks.cell).any()


def test_analyse_reports_in_the_images_pixels_whatever_the_working_size():
    drawn = painted(disc((256, 256), (128, 128), 80), disc((256, 256), (128, 128), 30))
    full, shrunk = analyse(drawn, working_size=512), analyse(drawn)  # 128 px working size
    assert shrunk.masks.nucleus.shape == (256, 256)
    for name in ("nucleus_area", "cytoplasm_area", "nucleus_longest_diameter", "nc_ratio"):
        assert shrunk.features[name] == pytest.approx(full.features[name], rel=0.05), name
    assert shrunk.units["nucleus_area"] == "px2" and analyse(drawn, microns_per_pixel=0.2).units["nucleus_area"] == "um2"


def test_bad_requests_are_clear_errors():
    with pytest.raises(SegmentationError, match="unknown segmenter 'magic'"):
        segment(np.zeros((32, 32, 3), np.uint8), "magic")
    with pytest.raises(SegmentationError, match="too small"):
        segment(np.zeros((4, 4, 3), np.uint8))


@pytest.fixture(scope="module")
def demo_bundle():
    import xcyto
    from xcyto.explain import default_bundle_path

    path = default_bundle_path()
    assert (path / "bundle.json").is_file(), f"no shipped demo bundle at {path} (make artifacts)"
    return xcyto.load(path)


def test_concepts_recover_what_defines_the_synthetic_classes(demo_bundle):
    """The synthetic cells are drawn so: Parabasal small and round with a high N/C ratio,
    Superficial-Intermediate large with a small pyknotic nucleus, Koilocytotic with a clear
    perinuclear halo. The concept analysis of the model trained on them must find that."""
    from xcyto.data import load_dataset
    from xcyto.morphology import feature_table
    from xcyto.morphology import concept_scores

    cells = load_dataset("synthetic:n=200,size=112,seed=77")
    report = concept_scores(demo_bundle, cells.samples, feature_table(cells.samples), list_features(), runs=6,
                            wanted=("nc_ratio", "perinuclear_halo"), cells_per_concept=30, cells_per_class=30)
    parabasal, koilocyte = report.score("Parabasal", "nc_ratio"), report.score("Koilocytotic", "perinuclear_halo")
    superficial = report.score("Superficial-Intermediate", "nc_ratio")
    assert parabasal.tcav > 0.7 and parabasal.significant and parabasal.rank_correlation > 0.3, parabasal
    assert koilocyte.tcav > 0.7 and koilocyte.significant, koilocyte
    assert superficial.tcav < 0.3 and superficial.significant, superficial
    assert parabasal.partial_dependence > 0  # the morphometric model agrees: more N/C, more Parabasal
    assert "Parabasal: N/C ratio TCAV" in parabasal.sentence()


def test_concepts_and_segment_commands_write_their_tables(tiny_bundle, tmp_path, capsys):
    import csv
    import json
    import shutil

    from PIL import Image

    from xcyto.cli import main
    from xcyto.data import generate_cell

    bundle = shutil.copytree(tiny_bundle.path, tmp_path / "bundle")
    out = tmp_path / "concepts"
    assert main(["concepts", "--bundle", str(bundle), "--data", "synthetic", "--runs", "3", "--cells", "80",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "concepts.csv").read_text().splitlines()))
    assert len(rows) == len(tiny_bundle.classes) * 7 and all(0 <= float(r["tcav"]) <= 1 for r in rows)
    assert json.loads((bundle / "concepts.json").read_text())["scores"] == json.loads((out / "concepts.json").read_text())["scores"]
    assert len(list(out.glob("concepts_*.png"))) == len(tiny_bundle.classes)
    assert "TCAV score" in capsys.readouterr().out

    Image.fromarray(generate_cell("Parabasal", 3, size=96).image).save(tmp_path / "cell.png")
    assert main(["segment", str(tmp_path / "cell.png"), "--method", "classical", "--microns-per-pixel", "0.5",
                 "--out", str(tmp_path / "seg")]) == 0
    record = json.loads((tmp_path / "seg" / "cell.json").read_text())
    assert record["units"]["nucleus_area"] == "um2" and record["features"]["nc_ratio"] > 0
    assert (tmp_path / "seg" / "cell_outline.png").is_file() and (tmp_path / "seg" / "features.csv").is_file()


def test_the_learned_segmenter_finds_the_nuclei_of_held_out_herlev_cells(herlev_dataset, herlev_with_masks,
                                                                          monkeypatch):
    """docs/morphology.md: nucleus Dice 0.878 on the Herlev test split (source images the
    segmenter never saw; masks from the 40 px copy), against a goal of 0.85. Measured again
    on the same cells (artifacts/build_segmenter.py: split seed 0) with the shipped weights."""
    import json

    from xcyto.data import check_leakage, train_val_test_split
    from xcyto.morphology._learned import CONFIG_FILE, LearnedSegmenter, default_path

    monkeypatch.delenv("XCYTO_SEGMENTER", raising=False)
    path = default_path()  # inside the package: xcyto/morphology/weights
    record = json.loads((path / CONFIG_FILE).read_text())
    recorded = record["test"]["herlev"]["learned"]
    split = train_val_test_split(herlev_dataset, seed=0)  # the shipped Herlev bundle's split
    check_leakage(herlev_dataset, split)  # no source image on two sides
    test_ids = {herlev_dataset.samples[i].cell_id for i in split.test}
    held_out = [sample for sample in herlev_with_masks.samples if sample.cell_id in test_ids]
    assert len(held_out) == recorded["cells"] == 133
    train_ids = {herlev_dataset.samples[i].cell_id for i in split.train}
    assert record["trained_on"].startswith(f"{len([s for s in herlev_with_masks.samples if s.cell_id in train_ids])} "
                                           "Herlev training-split cells")

    segmenter = LearnedSegmenter.load(path)
    found = [segmenter.segment(sample.image) for sample in held_out]
    nucleus = [dice(masks.nucleus, sample.nucleus_mask) for masks, sample in zip(found, held_out)]
    cell = [dice(masks.cell, sample.cytoplasm_mask) for masks, sample in zip(found, held_out)]
    assert np.mean(nucleus) >= 0.85, np.mean(nucleus)
    assert np.mean(nucleus) == pytest.approx(recorded["nucleus_mean"], abs=0.005)
    assert np.median(nucleus) == pytest.approx(recorded["nucleus_median"], abs=0.005)
    assert np.mean(cell) == pytest.approx(recorded["cell_mean"], abs=0.005)
    assert f"**{recorded['nucleus_mean']:.3f}**" in (REPO / "docs" / "morphology.md").read_text()


def test_without_the_learned_segmenter_morphology_says_so_once(tmp_path, monkeypatch):
    import warnings

    from xcyto.morphology import SegmenterWarning, preferred_segmenter

    assert preferred_segmenter() == "learned"  # shipped inside the package
    monkeypatch.setenv("XCYTO_SEGMENTER", str(tmp_path / "nowhere"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert preferred_segmenter() == "classical"
        assert preferred_segmenter() == "classical"
    said = [w for w in caught if issubclass(w.category, SegmenterWarning)]
    assert len(said) == 1 and "nowhere" in str(said[0].message)
