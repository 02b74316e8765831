"""read_image / to_rgb_uint8: every kind of image in, H x W x 3 uint8 out, or a clear ImageError."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from xcyto.data._io import MAX_PIXELS, ProblemLog, DataWarning, read_image, to_rgb_uint8
from xcyto.errors import ImageError


def _save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    loaded = read_image(_save(Image.fromarray(pixels), tmp_path / "cell.png"))
    assert loaded.dtype == np.uint8 and loaded.shape == (7, 5, 3)
    np.testing.assert_array_equal(loaded, pixels)
    assert loaded.flags.writeable  # torch.from_numpy needs it


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    loaded = read_image(_save(Image.fromarray(gray, mode="L"), tmp_path / "gray.png"))
    assert loaded.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[..., channel], gray)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 65535], [32896, 1000, 65535]], dtype=np.uint16)
    loaded = read_image(_save(Image.fromarray(values), tmp_path / "deep.png"))
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded[..., 0], np.rint(values / 257.0).astype(np.uint8))


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[1, 1] = (0, 0, 0, 0)  # fully transparent becomes white background
    loaded = read_image(_save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "alpha.png"))
    assert tuple(loaded[0, 0]) == (255, 0, 0)
    assert tuple(loaded[1, 1]) == (255, 255, 255)


def test_palette_bmp_decodes_to_its_colours(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2] = (0, 0, 255)
    rgb[2:] = (255, 0, 0)
    path = _save(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4), tmp_path / "m-d.bmp")
    np.testing.assert_array_equal(read_image(path), rgb)


def test_bytes_and_file_objects_are_accepted(tmp_path):
    pixels = np.full((3, 3, 3), 77, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    np.testing.assert_array_equal(read_image(buffer.getvalue()), pixels)
    buffer.seek(0)
    np.testing.assert_array_equal(read_image(buffer), pixels)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageError, match="nope.png.*not found"):
        read_image(tmp_path / "nope.png")


def test_folder_is_refused(tmp_path):
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_text_file_with_image_extension(tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a JPEG")
    with pytest.raises(ImageError, match="notes.jpg.*not a readable image"):
        read_image(fake)


def test_truncated_jpeg(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(pixels).save(whole, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    with pytest.raises(ImageError, match="cut.jpg.*cannot decode"):
        read_image(cut)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png"):
        read_image(empty)


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path):
    # A BMP header claiming 8000 x 7000 pixels (56 MP > MAX_PIXELS) with almost no data:
    # decoding would fail as truncated, so the "limit" message proves the header check ran first.
    width, height = 8000, 7000
    assert width * height > MAX_PIXELS
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + 12, 0, 0, 14 + len(info))
    huge = tmp_path / "huge.bmp"
    huge.write_bytes(header + info + b"\0" * 12)
    with pytest.raises(ImageError, match="huge.bmp.*above the limit"):
        read_image(huge)


def test_custom_pixel_limit(tmp_path):
    path = _save(Image.new("RGB", (20, 20)), tmp_path / "small.png")
    with pytest.raises(ImageError, match="above the limit"):
        read_image(path, max_pixels=100)


def test_to_rgb_uint8_arrays():
    np.testing.assert_array_equal(to_rgb_uint8(np.full((2, 2), 9, np.uint8)), np.full((2, 2, 3), 9, np.uint8))
    np.testing.assert_array_equal(to_rgb_uint8(np.ones((2, 2, 3), np.float32)), np.full((2, 2, 3), 255, np.uint8))
    np.testing.assert_array_equal(to_rgb_uint8(np.full((2, 2, 3), 0.5)), np.full((2, 2, 3), 128, np.uint8))
    np.testing.assert_array_equal(to_rgb_uint8(np.full((1, 1, 3), 65535, np.uint16)), np.full((1, 1, 3), 255, np.uint8))
    np.testing.assert_array_equal(to_rgb_uint8(np.full((1, 1, 3), 200.0)), np.full((1, 1, 3), 200, np.uint8))
    assert to_rgb_uint8(np.ones((3, 4), bool)).min() == 255
    channels_first = np.zeros((3, 5, 6), np.uint8)
    channels_first[0] = 255
    out = to_rgb_uint8(channels_first)
    assert out.shape == (5, 6, 3) and (out[..., 0] == 255).all() and (out[..., 1] == 0).all()


def test_to_rgb_uint8_tensor_and_pil():
    tensor = torch.zeros(3, 4, 5)
    tensor[2] = 1.0
    out = to_rgb_uint8(tensor)
    assert out.shape == (4, 5, 3) and (out[..., 2] == 255).all() and (out[..., 0] == 0).all()
    out = to_rgb_uint8(Image.new("LA", (3, 2), (0, 0)))  # black, fully transparent -> white
    assert out.shape == (2, 3, 3) and (out == 255).all()


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 2, 5)), "shape"),
    (np.zeros((2, 3, 4, 5)), "shape"),
    (np.zeros((0, 4, 3), np.uint8), "no pixels"),
    (np.full((2, 2, 3), np.nan), "NaN"),
    (np.zeros((2, 2, 3), complex), "dtype"),
    ([[1, 2], [3, 4]], "list"),
])
def test_to_rgb_uint8_refuses_clearly(bad, message):
    with pytest.raises(ImageError, match=message):
        to_rgb_uint8(bad)


def test_problem_log_warns_once_per_kind_with_examples():
    log = ProblemLog("demo")
    for index in range(5):
        log.add("unreadable images, skipped", f"bad{index}.png")
    log.note("no groups")
    with pytest.warns(DataWarning) as caught:
        messages = log.report()
    assert len(caught) == 2 and len(messages) == 2
    assert "5 unreadable images" in messages[0] and "bad0.png" in messages[0] and "2 more" in messages[0]
