import contextlib
import io

import numpy as np
import pytest
from conftest import real_images
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from semdefect.board.errors import ImageError
from semdefect.board.images import Preprocess, load_image, percentiles, read_gray

PREP = Preprocess()


def save(tmp_path, image: Image.Image, name: str, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def gradient(width=40, height=30) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.bmp", "a.tif"])
def test_formats_give_the_model_input(tmp_path, name):
    x = load_image(save(tmp_path, Image.fromarray(gradient()), name), PREP)
    assert x.shape == (128, 128, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() < 0.1 and 0.9 < x.max() <= 1.0


def test_grey_rgb_and_palette_agree(tmp_path):
    grey = Image.fromarray(gradient())
    a = load_image(save(tmp_path, grey, "g.png"), PREP)
    b = load_image(save(tmp_path, grey.convert("RGB"), "rgb.png"), PREP)
    c = load_image(save(tmp_path, grey.convert("P"), "p.png"), PREP)
    assert np.abs(a - b).max() < 1 / 255 + 1e-6 and np.abs(a - c).max() < 0.02


def test_sixteen_bit_tiff_keeps_its_range(tmp_path):
    pixels = (np.tile(np.linspace(0, 65535, 40), (30, 1))).astype(np.uint16)
    path = save(tmp_path, Image.fromarray(pixels), "a.tif")
    gray = read_gray(path)
    assert gray.max() == pytest.approx(1.0) and gray.min() == 0.0
    assert np.allclose(gray, pixels / 65535.0, atol=1e-6)


def test_float_tiff_is_stretched_from_its_own_range(tmp_path):
    pixels = np.tile(np.linspace(-3.0, 5.0, 40, dtype=np.float32), (30, 1))
    gray = read_gray(save(tmp_path, Image.fromarray(pixels), "f.tif"))
    assert gray.min() == 0.0 and gray.max() == pytest.approx(1.0)


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)  # black, fully transparent
    gray = read_gray(save(tmp_path, Image.fromarray(rgba, "RGBA"), "t.png"))
    assert np.allclose(gray, 1.0)


def test_cmyk_jpeg_reads(tmp_path):
    path = save(tmp_path, Image.fromarray(gradient()).convert("CMYK"), "c.jpg")
    assert load_image(path, PREP).shape == (128, 128, 1)


def test_exif_rotation_is_undone(tmp_path):
    pixels = np.zeros((20, 40), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    gray = read_gray(save(tmp_path, image, "r.jpg", exif=exif, quality=95))
    assert gray.shape == (40, 20)  # displayed portrait
    assert gray[:20].mean() > 0.8 and gray[20:].mean() < 0.2  # white half now on top


@pytest.mark.parametrize("size", [(1, 1), (10000, 10), (10, 10000)])
def test_extreme_shapes_still_give_the_model_input(tmp_path, size):
    image = Image.new("L", size, 128)
    assert load_image(save(tmp_path, image, "x.png"), PREP).shape == (128, 128, 1)


def test_crop_bottom_removes_the_data_bar(tmp_path):
    pixels = np.full((100, 100), 200, dtype=np.uint8)
    pixels[80:] = 0  # a black data bar
    x = load_image(save(tmp_path, Image.fromarray(pixels), "bar.png"), Preprocess(crop_bottom=20))
    assert x.min() > 0.7


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 2**32 - 1), st.booleans(),
       st.lists(st.floats(0, 100), min_size=1, max_size=4))
def test_fast_percentiles_equal_numpys_bit_for_bit(n, seed, grey_levels, qs):
    # Models were trained with np.percentile; the board's faster version must give the very same numbers.
    values = np.random.default_rng(seed).random(n).astype(np.float32)
    if grey_levels:  # 8-bit images: many equal values
        values = np.round(values * 255) / 255
    np.testing.assert_array_equal(percentiles(values, tuple(qs)), np.percentile(values, qs))


@pytest.mark.parametrize("method", ["minmax"])
def test_normalisation_takes_away_gain_and_offset(tmp_path, method):
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, (64, 64))
    dim = Image.fromarray((40 + 60 * base).astype(np.uint8))
    bright = Image.fromarray((120 + 120 * base).astype(np.uint8))
    prep = Preprocess(normalize=method)
    a, b = load_image(save(tmp_path, dim, "d.png"), prep), load_image(save(tmp_path, bright, "b.png"), prep)
    assert np.abs(a - b).mean() < 0.03
    assert a.max() > 0.95 and a.min() < 0.05


@pytest.mark.parametrize("content, fragment", [
    (b"", "empty file"),
    (b"this is not an image\n", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not an image"),
])
def test_unreadable_files_raise_image_error_naming_them(tmp_path, content, fragment):
    path = tmp_path / "bad name é.png"
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(path, PREP)
    assert str(path) in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_raise_image_error(tmp_path, fmt):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)).save(buffer, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut"):
        load_image(path, PREP)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = save(tmp_path, Image.new("L", (5000, 5000)), "bomb.png")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path, Preprocess(max_image_pixels=1_000_000))


def test_a_folder_or_missing_file_is_named(tmp_path):
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path, PREP)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png", PREP)


def test_metadata_round_trip():
    prep = Preprocess(image_size=96, resize="area", crop_bottom=12, normalize="minmax")
    assert Preprocess.from_json(prep.to_json()) == prep


def test_metadata_of_a_removed_normalisation_is_refused():
    # a model trained with an option that was measured and removed must not be read with other preprocessing
    with pytest.raises(ValueError, match="normalize=flatten"):
        Preprocess.from_json(Preprocess(normalize="minmax").to_json().replace('"minmax"', '"flatten"'))


@settings(deadline=2000, max_examples=60)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_image_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(data)
    with contextlib.suppress(ImageError):  # anything else is a bug
        load_image(path, PREP)


MODES = ["L", "RGB", "RGBA", "P", "I;16", "F", "1", "LA"]


@settings(deadline=3000, max_examples=40)
@given(st.sampled_from(MODES), st.integers(1, 300), st.integers(1, 300), st.sampled_from(["png", "tif", "bmp", "jpg"]),
       st.integers(0, 2**32 - 1))
def test_valid_images_of_any_mode_and_size_give_the_model_input(tmp_path_factory, mode, width, height, fmt, seed):
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    image = base if mode == "L" else base.convert(mode)
    path = tmp_path_factory.mktemp("valid") / f"x.{fmt}"
    try:
        image.save(path)
    except (OSError, KeyError, ValueError):
        return  # this format cannot hold this mode: nothing to test
    x = load_image(path, PREP)
    assert x.shape == (128, 128, 1) and x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0


def test_every_real_sem_image_loads():
    files = real_images()
    for path in files:
        assert load_image(path, PREP).shape == (128, 128, 1)
