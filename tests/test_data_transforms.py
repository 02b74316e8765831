"""Transforms: exact output shape/dtype, masks that follow the geometry, preprocessing by name."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fixtures import cell_image, make_sipakmed_tree
from xcyto.data import load_dataset
from xcyto.data._transforms import (PREPROCESSING, CellTorchDataset, StainJitter, background_colour,
                                   eval_transform, preprocess, train_transform)
from xcyto.errors import DataError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def square_scene(height=60, width=80):
    """Grey image with a red square off-centre, and a mask marking exactly that square."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    mask = np.zeros((height, width), dtype=bool)
    image[10:30, 15:35] = (255, 0, 0)
    mask[10:30, 15:35] = True
    return image, mask


def red_pixels(tensor: torch.Tensor) -> torch.Tensor:
    """Where the normalised image is (nearly) pure red."""
    rgb = tensor * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    return (rgb[0] > 0.8) & (rgb[1] < 0.2) & (rgb[2] < 0.2)


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("shape", [(60, 80), (33, 17), (224, 224)])
def test_output_is_float32_normalised_3_by_size_by_size(shape, pad):
    image = cell_image(shape, np.random.default_rng(0))
    for transform in (eval_transform(64, mean=MEAN, std=STD, pad_to_square=pad),
                      train_transform(64, mean=MEAN, std=STD, pad_to_square=pad)):
        out = transform(image)
        assert out.shape == (3, 64, 64) and out.dtype == torch.float32 and type(out) is torch.Tensor
    expected = (torch.tensor(128 / 255) - 0.5) / 0.25
    flat = eval_transform(16, mean=MEAN, std=STD)(np.full((16, 16, 3), 128, np.uint8))
    torch.testing.assert_close(flat, torch.full((3, 16, 16), float(expected)))


def test_pad_to_square_keeps_aspect_and_pads_with_background():
    image, mask = square_scene(60, 80)
    out, out_mask = eval_transform(40, mean=MEAN, std=STD)(image, mask)
    # 80 -> 40 wide, 60 -> 30 high, padded 5 rows top and bottom with the grey background.
    rgb = out * 0.25 + 0.5
    assert torch.allclose(rgb[:, :5], torch.tensor(128 / 255), atol=0.01)
    assert out_mask.shape == (1, 40, 40) and out_mask.dtype == torch.bool
    rows, cols = torch.nonzero(out_mask[0], as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 19, 8, 17)  # (10..29)/2+5, (15..34)/2


@pytest.mark.parametrize("seed", range(6))
def test_mask_follows_the_square_under_random_augmentation(seed):
    torch.manual_seed(seed)
    image, mask = square_scene(90, 70)
    transform = train_transform(64, mean=MEAN, std=STD, color_jitter=0.0, hue_jitter=0.0, stain_jitter=0.0,
                                blur_probability=0.0)
    out, out_mask = transform(image, mask)
    red, marked = red_pixels(out), out_mask[0]
    assert marked.sum() > 50
    overlap = (red & marked).sum() / (red | marked).sum()
    assert overlap > 0.85, f"mask and red square disagree (IoU {overlap:.2f})"


def test_augmentation_actually_moves_things():
    image, mask = square_scene(64, 64)
    transform = train_transform(64, mean=MEAN, std=STD)
    torch.manual_seed(0)
    masks = [transform(image, mask)[1] for _ in range(8)]
    assert any(not torch.equal(masks[0], other) for other in masks[1:])
    torch.manual_seed(0)
    again = [transform(image, mask)[1] for _ in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(masks, again))  # reproducible from torch's seed


def test_rotation_fills_corners_with_background_not_black():
    image = np.full((50, 50, 3), (230, 225, 220), dtype=np.uint8)
    transform = train_transform(50, mean=(0, 0, 0), std=(1, 1, 1), flips=False, color_jitter=0.0, hue_jitter=0.0,
                                stain_jitter=0.0, blur_probability=0.0)
    torch.manual_seed(1)
    out = transform(image)
    assert out.min() > 0.8  # a black corner would be 0


def test_preprocessing_by_name():
    image = cell_image(40, np.random.default_rng(0))
    assert set(PREPROCESSING) == {"none", "clahe", "median", "nlmeans"}
    assert preprocess(image, "none") is not None and np.array_equal(preprocess(image, "none"), image)
    for name in ("clahe", "median", "nlmeans"):
        out = preprocess(image, name)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert not np.array_equal(out, image), name
    # Denoisers reduce pixel-to-pixel noise; CLAHE raises contrast.
    noise = lambda im: np.abs(np.diff(im.astype(int), axis=1)).mean()
    assert noise(preprocess(image, "median")) < noise(image)
    assert noise(preprocess(image, "nlmeans")) < noise(image)
    flat = np.full((32, 32, 3), 120, np.uint8)
    flat[:, 16:] = 130
    assert np.ptp(preprocess(flat, "clahe")[..., 0].astype(int)) > 10
    out = eval_transform(32, preprocessing="clahe")(image)
    assert out.shape == (3, 32, 32)
    with pytest.raises(DataError, match="unknown preprocessing 'sharpen'.*clahe"):
        eval_transform(32, preprocessing="sharpen")


def test_bad_settings_fail_clearly():
    with pytest.raises(DataError, match="std"):
        eval_transform(32, std=(0.2, 0.0, 0.2))
    with pytest.raises(DataError, match="size"):
        eval_transform(0)
    with pytest.raises(DataError, match="do not match"):
        eval_transform(32)(np.zeros((10, 10, 3), np.uint8), np.zeros((9, 10), bool))


def test_stain_jitter_changes_colour_but_not_shape():
    torch.manual_seed(0)
    pixels = torch.from_numpy(cell_image(20, np.random.default_rng(0))).permute(2, 0, 1).contiguous()
    out = StainJitter(0.2)(pixels)
    assert out.shape == pixels.shape and out.dtype == torch.uint8 and not torch.equal(out, pixels)
    assert torch.equal(StainJitter(0.0)(pixels), pixels)
    assert background_colour(np.full((5, 5, 3), 7, np.uint8)) == (7, 7, 7)


def test_torch_dataset_with_and_without_masks(tmp_path):
    dataset = load_dataset(make_sipakmed_tree(tmp_path, n_per_class=2, size=32))
    dataset.samples[0].nucleus_mask = None
    plain = CellTorchDataset(dataset, eval_transform(48))
    image, label = plain[3]
    assert image.shape == (3, 48, 48) and label == dataset[3].label
    with_masks = CellTorchDataset(dataset.samples, train_transform(48), with_masks=True)
    batch = next(iter(DataLoader(with_masks, batch_size=4)))
    assert batch["image"].shape == (4, 3, 48, 48) and batch["masks"].shape == (4, 3, 48, 48)
    assert batch["masks"].dtype == torch.bool
    assert batch["mask_present"][0].tolist() == [False, True, False]
    assert batch["mask_present"][1].tolist() == [True, True, False]
    assert not batch["masks"][0, 0].any() and batch["masks"][1, 0].any()
    # Nucleus inside the whole-cell mask after augmentation too.
    assert not (batch["masks"][1:, 0] & ~batch["masks"][1:, 1]).any()


def test_real_herlev_masks_follow_transforms(herlev_masks_root):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = load_dataset(herlev_masks_root)
    item = CellTorchDataset(dataset.samples[:4], train_transform(96), with_masks=True)[0]
    masks = item["masks"]
    assert item["mask_present"][:2].all() and masks[0].any()
    assert not (masks[0] & ~masks[1]).any()


def test_dihedral_augmentation_gives_exact_symmetries_of_the_cell():
    from xcyto.bundle import dihedral_views
    from xcyto.data import eval_transform, train_transform

    image = (np.random.default_rng(3).random((40, 40, 3)) * 255).astype(np.uint8)
    plain = eval_transform(32)(image)
    augment = train_transform(32, rotation="dihedral", color_jitter=0.0, stain_jitter=0.0, blur_probability=0.0)
    views = dihedral_views(plain[None])
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out = augment(image)
        matches = [index for index, view in enumerate(views) if torch.equal(out, view[0])]
        assert len(matches) == 1  # exactly one of the 8 symmetries, no interpolation
        seen.add(matches[0])
    assert len(seen) == 8
    with pytest.raises(DataError, match="rotation must be one of"):
        train_transform(32, rotation="sideways")
