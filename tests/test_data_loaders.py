"""Loaders and layout detection: fixtures in the real layouts, bad input, and the real Herlev copies."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from fixtures import (SIPAKMED_CLASSES, cell_image, circle, make_class_tree, make_herlev_tree,
                      make_sipakmed_tree, write_contour)
from xcyto.data import DataWarning, detect_layout, list_layouts, load_dataset
from xcyto.data._herlev import decode_herlev_mask, herlev_group
from xcyto.data._sipakmed import read_contour
from xcyto.errors import DataError


def _load_quietly(source, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_dataset(source, **options)


# -- SIPaKMeD ---------------------------------------------------------------------------

@pytest.mark.parametrize("nested", [True, False])
def test_sipakmed_classes_groups_and_masks(tmp_path, nested):
    root = make_sipakmed_tree(tmp_path, n_per_class=4, nested=nested, size=32, clusters_per_class=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean tree loads without any warning
        dataset = load_dataset(root)
    assert dataset.layout == "sipakmed" and dataset.classes == SIPAKMED_CLASSES
    assert len(dataset) == 20  # full cluster images beside CROPPED/ are not cells
    assert list(np.bincount(dataset.labels)) == [4] * 5
    first = dataset[0]
    assert first.cell_id == "Dyskeratotic/001_01" and first.group == "Dyskeratotic/001"
    assert len(set(dataset.groups)) == 10
    # Circles of radius 0.15 and 0.4 x 32 px: areas about pi r^2, nucleus inside the cell.
    assert abs(first.nucleus_mask.sum() - np.pi * 4.8**2) < 25
    assert abs(first.cytoplasm_mask.sum() - np.pi * 12.8**2) < 60
    assert not (first.nucleus_mask & ~first.cytoplasm_mask).any()
    assert first.nucleus_mask[16, 16] and not first.cytoplasm_mask[0, 0]


def test_sipakmed_bad_contours_give_one_warning_and_no_mask(tmp_path):
    root = make_sipakmed_tree(tmp_path, n_per_class=2, nested=True, size=32)
    crops = root / "im_Parabasal" / "im_Parabasal" / "CROPPED"
    (crops / "001_01_nuc.dat").unlink()  # missing
    (crops / "001_01_cyt.dat").write_text("12,13\nnot a number\n")  # malformed
    write_contour(crops / "002_01_cyt.dat", circle((100, 100), 50))  # outside the 32 px crop
    (crops / "002_01_nuc.dat").write_text("5.5\t6\n7;8\n\n9 10\n")  # tabs/semicolons/blank line: fine
    with pytest.warns(DataWarning) as caught:
        dataset = load_dataset(root)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "3 contour files" in message and "001_01_nuc.dat" in message and "not an 'x,y' pair" in message
    assert dataset.warnings == [message]
    by_id = {sample.cell_id: sample for sample in dataset}
    assert by_id["Parabasal/001_01"].nucleus_mask is None and by_id["Parabasal/001_01"].cytoplasm_mask is None
    assert by_id["Parabasal/002_01"].cytoplasm_mask is None and by_id["Parabasal/002_01"].nucleus_mask is not None
    assert len(dataset) == 10  # no cell lost


def test_read_contour_accepts_floats_and_refuses_too_few_points(tmp_path):
    dat = tmp_path / "a_nuc.dat"
    dat.write_text("1.5, 2.5\n3 4\n5,6\n")
    np.testing.assert_allclose(read_contour(dat), [[1.5, 2.5], [3, 4], [5, 6]])
    dat.write_text("1,2\n3,4\n")
    with pytest.raises(DataError, match="at least 3"):
        read_contour(dat)


def test_sipakmed_unreadable_crop_is_skipped_and_named(tmp_path):
    root = make_sipakmed_tree(tmp_path, n_per_class=2, nested=False)
    (root / "im_Metaplastic" / "CROPPED" / "001_01.bmp").write_bytes(b"BM broken")
    with pytest.warns(DataWarning, match="1 unreadable images.*001_01.bmp"):
        dataset = load_dataset(root)
    assert len(dataset) == 9


def test_sipakmed_missing_class_keeps_class_order(tmp_path):
    root = make_sipakmed_tree(tmp_path, n_per_class=2, classes=SIPAKMED_CLASSES[:3])
    with pytest.warns(DataWarning, match="classes without crops.*Parabasal"):
        dataset = load_dataset(root)
    assert dataset.classes == SIPAKMED_CLASSES and set(dataset.labels) == {0, 1, 2}


# -- Herlev -----------------------------------------------------------------------------

def test_herlev_groups_masks_and_mask_files_are_not_cells(tmp_path):
    root = make_herlev_tree(tmp_path, n_per_class=4, groups_per_class=2, size=24, masks=True)
    dataset = load_dataset(root)
    assert dataset.layout == "herlev" and len(dataset) == 16  # 16 cells, not 32 files
    assert dataset.classes == sorted(dataset.classes)
    assert not any(sample.cell_id.endswith("-d.bmp") for sample in dataset)
    assert len(set(dataset.groups)) == 8
    assert dataset[0].group == "100000000-100000007"
    sample = dataset[0]
    assert sample.nucleus_mask[12, 12] and sample.cytoplasm_mask[12, 12]  # whole cell includes the nucleus
    assert sample.cytoplasm_mask[12, 4] and not sample.nucleus_mask[12, 4]
    assert not sample.cytoplasm_mask[0, 23] and not sample.cytoplasm_mask[0, 0]  # background, grey


def test_herlev_binary_scheme(tmp_path):
    root = make_herlev_tree(tmp_path, n_per_class=3)
    dataset = load_dataset(root, scheme="binary")
    assert dataset.classes == ["normal", "abnormal"]
    for sample in dataset:
        folder = sample.cell_id.split("/")[0]
        assert sample.class_name == ("normal" if folder.startswith("normal_") else "abnormal")
        assert sample.label == dataset.classes.index(sample.class_name)


def test_herlev_renamed_copy_gets_one_group_per_cell(tmp_path):
    root = make_herlev_tree(tmp_path, n_per_class=3, renamed=True, masks=True)
    with pytest.warns(DataWarning, match="source-image groups are unknown"):
        dataset = load_dataset(root)
    assert len(set(dataset.groups)) == len(dataset) == 12
    assert any("groups are unknown" in line for line in dataset.warnings)


def test_herlev_group_and_mask_decoding():
    assert herlev_group("153956040-153956058-001") == "153956040-153956058"
    assert herlev_group("3-17") is None
    code = np.array([[[0, 0, 255], [0, 0, 128], [255, 0, 0], [128, 128, 128], [0, 0, 0]]], dtype=np.uint8)
    nucleus, cell = decode_herlev_mask(code)
    assert nucleus.tolist() == [[True, False, False, False, False]]
    assert cell.tolist() == [[True, True, False, False, False]]


def test_herlev_mask_of_wrong_size_is_dropped(tmp_path):
    root = make_herlev_tree(tmp_path, n_per_class=2, size=24, masks=True)
    mask_path = next((root / "normal_columnar").glob("*-d.bmp"))
    Image.new("RGB", (10, 10), (0, 0, 255)).save(mask_path)
    with pytest.warns(DataWarning, match="different size.*" + mask_path.name):
        dataset = load_dataset(root)
    assert sum(sample.nucleus_mask is None for sample in dataset) == 1


# -- Generic folder and CSV -------------------------------------------------------------

def test_class_folder_tree(tmp_path):
    root = make_class_tree(tmp_path / "cells", classes=("b_class", "a_class"), n_per_class=3)
    (root / "empty_class").mkdir()
    with pytest.warns(DataWarning) as caught:
        dataset = load_dataset(root)
    assert dataset.layout == "folder" and dataset.classes == ["a_class", "b_class"]
    assert len(dataset) == 6 and len(set(dataset.groups)) == 6
    assert any("without images" in str(w.message) and "empty_class" in str(w.message) for w in caught)


def test_grayscale_rgba_and_16bit_files_load_as_rgb(tmp_path):
    root = tmp_path / "mixed"
    (root / "x").mkdir(parents=True)
    Image.fromarray(np.full((5, 6), 100, np.uint8)).save(root / "x" / "gray.png")
    Image.fromarray(np.full((5, 6, 4), 200, np.uint8), mode="RGBA").save(root / "x" / "rgba.png")
    Image.fromarray(np.full((5, 6), 65535, np.uint16)).save(root / "x" / "deep.png")
    Image.fromarray(np.full((5, 6), 4000, np.uint16)).save(root / "x" / "deep.tif")
    dataset = _load_quietly(root)
    images = {sample.cell_id: sample.image for sample in dataset}
    assert all(image.shape == (5, 6, 3) and image.dtype == np.uint8 for image in images.values())
    assert images["x/gray.png"].max() == 100 and images["x/deep.png"].min() == 255
    assert images["x/deep.tif"].max() == round(4000 / 257)


def test_unreadable_and_fake_images_are_skipped_and_named(tmp_path):
    root = make_class_tree(tmp_path, n_per_class=2)
    (root / "cat_a" / "fake.png").write_text("not an image")
    good = (root / "cat_b" / "cell_0.png").read_bytes()
    (root / "cat_b" / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.warns(DataWarning) as caught:
        dataset = load_dataset(root)
    assert len(dataset) == 4
    assert any("2 unreadable images" in str(warning.message) for warning in caught)
    assert "fake.png" in " ".join(dataset.warnings) and "truncated.png" in " ".join(dataset.warnings)


def test_only_unreadable_images_is_a_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_text("no")
    with pytest.raises(DataError, match="no readable cells.*x.jpg"):
        load_dataset(tmp_path)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(DataError, match="not a dataset"):
        load_dataset(tmp_path)
    (tmp_path / "class_without_images").mkdir()
    (tmp_path / "class_without_images" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="not a dataset"):
        load_dataset(tmp_path)


def test_csv_manifest(tmp_path):
    make_class_tree(tmp_path / "img", n_per_class=2)
    (tmp_path / "cells.csv").write_text(
        "path,label,group\n"
        "img/cat_a/cell_0.png,alpha,slide1\n"
        "img/cat_a/cell_1.png,alpha,slide1\n"
        "img/cat_b/cell_0.png,beta,slide2\n"
        "img/cat_b/missing.png,beta,slide2\n"
    )
    with pytest.warns(DataWarning, match="1 files listed but missing.*missing.png"):
        dataset = load_dataset(tmp_path / "cells.csv")
    assert dataset.layout == "csv" and dataset.classes == ["alpha", "beta"]
    assert len(dataset) == 3 and list(dataset.groups) == ["slide1", "slide1", "slide2"]
    assert dataset[0].cell_id == "img/cat_a/cell_0.png"


def test_csv_unknown_or_missing_columns(tmp_path):
    (tmp_path / "extra.csv").write_text("path,label,stain,scanner\na.png,x,pap,1\n")
    with pytest.raises(DataError, match="unknown column.*'stain', 'scanner'"):
        load_dataset(tmp_path / "extra.csv")
    (tmp_path / "nolabel.csv").write_text("path\na.png\n")
    with pytest.raises(DataError, match="missing column.*'label'"):
        load_dataset(tmp_path / "nolabel.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty CSV"):
        load_dataset(tmp_path / "empty.csv")


# -- Registry ---------------------------------------------------------------------------

def test_layout_detection_and_registry(tmp_path):
    assert list_layouts() == ["sipakmed", "herlev", "csv", "folder"]
    assert detect_layout(make_sipakmed_tree(tmp_path / "s", n_per_class=1)) == "sipakmed"
    assert detect_layout(make_herlev_tree(tmp_path / "h", n_per_class=1)) == "herlev"
    assert detect_layout(make_class_tree(tmp_path / "f", n_per_class=1)) == "folder"
    (tmp_path / "m.csv").write_text("path,label\n")
    assert detect_layout(tmp_path / "m.csv") == "csv"
    # A Herlev tree can also be read as a plain folder when asked.
    dataset = _load_quietly(tmp_path / "h", layout="folder")
    assert dataset.layout == "folder"


def test_schemes_are_checked(tmp_path):
    root = make_sipakmed_tree(tmp_path / "s", n_per_class=1)
    with pytest.raises(DataError, match="'binary' is not available for the sipakmed layout"):
        load_dataset(root, scheme="binary")
    with pytest.raises(DataError, match="unknown label scheme"):
        load_dataset(root, scheme="3-class")
    with pytest.raises(DataError, match="unknown layout"):
        load_dataset(root, layout="dicom")
    with pytest.raises(DataError, match="do not apply"):
        load_dataset(root, n=5)


# -- Real Herlev (skipped when absent; a failure under XCYTO_REQUIRE_DATA=1) ------------

def test_real_herlev(herlev_dataset):
    dataset = herlev_dataset
    assert dataset.layout == "herlev" and len(dataset) == 917
    assert len(dataset.classes) == 7 and dataset.classes == sorted(dataset.classes)
    assert len(set(dataset.groups)) == 538
    assert dataset.warnings == []
    assert all(sample.image.dtype == np.uint8 and sample.image.shape[2] == 3 for sample in dataset)
    counts = dict(zip(dataset.classes, np.bincount(dataset.labels)))
    assert counts["normal_columnar"] == 98 and counts["severe_dysplastic"] == 197


def test_real_herlev_binary(herlev_root):
    dataset = load_dataset(herlev_root, scheme="binary", progress=False)
    assert dataset.classes == ["normal", "abnormal"]
    assert list(np.bincount(dataset.labels)) == [74 + 70 + 98, 917 - 242]


def test_real_herlev_40px_masks(herlev_masks_root):
    with pytest.warns(DataWarning, match="groups are unknown"):
        dataset = load_dataset(herlev_masks_root)
    assert len(dataset) == 917 and len(set(dataset.groups)) == 917
    assert all(sample.nucleus_mask is not None and sample.cytoplasm_mask is not None for sample in dataset)
    nucleus_area = np.mean([sample.nucleus_mask.mean() for sample in dataset])
    cell_area = np.mean([sample.cytoplasm_mask.mean() for sample in dataset])
    assert 0.02 < nucleus_area < cell_area < 0.95
    assert all(not (sample.nucleus_mask & ~sample.cytoplasm_mask).any() for sample in dataset)


#: Herlev cells whose 40 px copy pairs at a thumbnail correlation >= 0.9 (measured on the
#: shared data; docs/morphology.md). The other 30 have no partner that close in their class:
#: their one-to-one partner correlates 0.48 to 0.90. Why their thumbnails differ more was not
#: pinned down (29 of the 30 have padding bands in the 224 px copy, but so do 808 of the 887).
HERLEV_PAIRS = 887


def test_real_herlev_copies_pair_cell_by_cell_and_the_masks_land_on_their_cells(herlev_dataset, herlev_masks_dataset,
                                                                                 herlev_with_masks):
    from xcyto.data import match_copies

    herlev, small = herlev_dataset, herlev_masks_dataset
    matches = match_copies(herlev, small)
    assert len(matches) == len(herlev_with_masks) == HERLEV_PAIRS
    assert len({m.target for m in matches}) == len({m.source for m in matches}) == HERLEV_PAIRS  # one to one
    for match in matches:
        assert herlev.samples[match.target].class_name == small.samples[match.source].class_name, match
    correlations = np.array([m.correlation for m in matches])
    assert correlations.min() >= 0.9 and np.median(correlations) > 0.998
    # without the threshold every cell gets a partner (the copies hold the same cells per class);
    # the threshold alone leaves the 30 out, and keeps the very same pairs
    everything = match_copies(herlev, small, min_correlation=-1.0)
    assert len(everything) == len(herlev) == len(small) == 917
    assert [m for m in everything if m.correlation >= 0.9] == matches
    assert len([m for m in everything if m.correlation < 0.9]) == 917 - HERLEV_PAIRS

    # the masks land on their cells: in every pair the nucleus is darker than the cytoplasm
    # around it (haematoxylin), clearly so (a mask given the next cell of the class instead:
    # median 18 grey levels, and about 1 in 8 "nuclei" lighter than their cytoplasm)
    assert [s.cell_id for s in herlev_with_masks.samples] == [herlev.samples[m.target].cell_id for m in matches]
    contrasts = []
    for sample in herlev_with_masks.samples:
        grey = sample.image.astype(float).mean(axis=2)
        assert sample.nucleus_mask.shape == grey.shape and not (sample.nucleus_mask & ~sample.cytoplasm_mask).any()
        around = sample.cytoplasm_mask & ~sample.nucleus_mask
        assert sample.nucleus_mask.any() and around.any(), sample.cell_id
        contrasts.append(grey[around].mean() - grey[sample.nucleus_mask].mean())
    assert min(contrasts) > 0 and np.median(contrasts) > 30, (min(contrasts), np.median(contrasts))
