"""Every image mode Pillow opens becomes the right 8-bit RGB: each against a computation of
its own (numpy, from the pixel values written), not against Pillow's convert()."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netspec.train.decode import load_image, rescale_and_center, to_tensor

SIZE = 4  # images are square and loaded at their own size: no resampling between


def loaded(img: Image.Image, path: Path) -> np.ndarray:
    img.save(path)
    with Image.open(path) as reread:
        assert reread.size == (SIZE, SIZE)
        mode = reread.mode
    return mode, load_image(path, SIZE).permute(1, 2, 0).numpy()


def grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(np.uint8)[..., None], 3, axis=2)


def round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5)


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = np.array([0, 257, 32768, 65535, 1000, 40000, 128, 60000] * 2, np.uint16)
    mode, got = loaded(Image.fromarray(values.reshape(SIZE, SIZE)), tmp_path / "g.png")
    assert mode == "I;16"
    expected = grey(np.rint(values.reshape(SIZE, SIZE) / 257))  # 65535 / 255 = 257
    np.testing.assert_array_equal(got, expected)
    assert got.min() == 0 and got.max() == 255 and 0 < got.mean() < 255  # not all white


def test_32_bit_integer_mode_i_reads_16_bit_values(tmp_path):
    # Pillow opens 16-bit PGM files as I (32-bit integers holding 0 … 65535)
    values = np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE) * 4369
    mode, got = loaded(Image.fromarray(values), tmp_path / "g.pgm")
    assert mode == "I"
    np.testing.assert_array_equal(got, grey(np.rint(values / 257)))


def test_float_mode_f_reads_0_to_1(tmp_path):
    values = np.linspace(-0.25, 1.25, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    mode, got = loaded(Image.fromarray(values), tmp_path / "f.tif")
    assert mode == "F"
    np.testing.assert_array_equal(got, grey(np.clip(np.rint(values * 255.0), 0, 255)))


def test_grey_with_alpha_is_composited_over_white(tmp_path):
    rng = np.random.default_rng(0)
    la = rng.integers(0, 256, (SIZE, SIZE, 2), dtype=np.uint8)
    la[0, 0, 1], la[0, 1, 1] = 0, 255  # fully transparent, fully opaque
    mode, got = loaded(Image.fromarray(la, "LA"), tmp_path / "la.png")
    assert mode == "LA"
    v, a = la[..., 0].astype(float), la[..., 1].astype(float) / 255
    expected = grey(round_half_up(v * a + 255 * (1 - a)))
    np.testing.assert_allclose(got, expected, atol=1)  # Pillow's fixed-point blend
    assert (got[0, 0] == 255).all() and (got[0, 1] == la[0, 1, 0]).all()


def test_palette_with_a_transparent_entry_is_composited_over_white(tmp_path):
    palette = [200, 10, 10, 10, 200, 10, 10, 10, 200]
    index = np.array([[0, 1, 2, 0]] * SIZE, np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette + [0] * (768 - len(palette)))
    img.info["transparency"] = 0  # entry 0 (red) is transparent
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    mode, got = loaded(Image.open(path), tmp_path / "p2.png")
    assert mode == "P"
    colours = np.array([[255, 255, 255], [10, 200, 10], [10, 10, 200]], np.uint8)
    np.testing.assert_array_equal(got, colours[index])


def test_cmyk_is_multiplied_out(tmp_path):
    rng = np.random.default_rng(1)
    cmyk = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    mode, got = loaded(Image.fromarray(cmyk, "CMYK"), tmp_path / "c.tif")
    assert mode == "CMYK"
    c, k = cmyk[..., :3].astype(float), cmyk[..., 3:].astype(float)
    np.testing.assert_array_equal(got, round_half_up((255 - c) * (255 - k) / 255))


def test_one_bit_is_black_and_white(tmp_path):
    bits = np.array([[0, 1, 1, 0]] * SIZE, dtype=bool)
    mode, got = loaded(Image.fromarray(bits), tmp_path / "b.png")
    assert mode == "1"
    np.testing.assert_array_equal(got, grey(bits * 255))


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = (0, 0, 0)  # black stored under the transparent pixels
    rgba[:2, :, 3] = 0
    rgba[2:, :, :] = (30, 60, 90, 255)
    mode, got = loaded(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")
    assert mode == "RGBA"
    assert (got[:2] == 255).all() and (got[2:] == (30, 60, 90)).all()


def rgb_of(img: Image.Image) -> np.ndarray:
    return to_tensor(rescale_and_center(img, SIZE)).permute(1, 2, 0).numpy().astype(float)


@pytest.mark.parametrize("mode", ["La", "RGBa"])
def test_premultiplied_alpha_is_composited_over_white(mode):
    # stored colour is already colour · alpha, so over white it is stored + 255 · (1 - alpha)
    rng = np.random.default_rng(2)
    bands = len(mode)
    raw = rng.integers(0, 256, (SIZE, SIZE, bands), dtype=np.uint8)
    raw[..., :-1] = (raw[..., :-1].astype(int) * raw[..., -1:] // 255).astype(np.uint8)
    got = rgb_of(Image.frombytes(mode, (SIZE, SIZE), raw.tobytes()))
    colour = raw[..., :-1].astype(float)
    expected = colour + 255 - raw[..., -1:].astype(float)
    expected = np.repeat(expected, 3, axis=2) if bands == 2 else expected
    np.testing.assert_allclose(got, expected, atol=2)  # un-premultiplied, then blended


def test_ycbcr_follows_the_jpeg_equations():
    rng = np.random.default_rng(3)
    ycc = rng.integers(16, 240, (SIZE, SIZE, 3), dtype=np.uint8)
    got = rgb_of(Image.frombytes("YCbCr", (SIZE, SIZE), ycc.tobytes()))
    y, cb, cr = (ycc[..., i].astype(float) for i in range(3))
    expected = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
         y + 1.772 * (cb - 128)],
        axis=2,
    )  # fmt: skip
    np.testing.assert_allclose(got, np.clip(expected, 0, 255), atol=1)
