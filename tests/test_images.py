"""The image pipeline: every format and mode to RGB, EXIF, draft mode, resizing, bad files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed.errors import ImageError
from orangecontrib.transferembed.pipeline import images

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def decode(data: bytes, size=None, policy="stretch", min_size=1) -> np.ndarray:
    return images.decode_file_bytes(data, size, policy, min_size)


def halves(width=40, height=20, left=RED, right=BLUE) -> Image.Image:
    """An RGB image, left half ``left``, right half ``right``."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :width // 2] = left
    pixels[:, width // 2:] = right
    return Image.fromarray(pixels)


@pytest.mark.parametrize("fmt, lossy", [("JPEG", True), ("PNG", False), ("BMP", False),
                                        ("GIF", False), ("TIFF", False), ("WEBP", True)])
def test_every_format_decodes_to_rgb(fmt, lossy):
    data = encode(halves(), fmt, **({"quality": 95} if lossy else {}))
    pixels = decode(data)
    assert pixels.shape == (20, 40, 3) and pixels.dtype == np.uint8
    tol = 40 if lossy else 0
    assert np.abs(pixels[10, 5] - RED).max() <= tol
    assert np.abs(pixels[10, 35] - BLUE).max() <= tol
    resized = decode(data, (16, 16))
    assert resized.shape == (16, 16, 3)


def test_grayscale_l():
    pixels = decode(encode(Image.new("L", (8, 6), 77), "PNG"))
    assert pixels.shape == (6, 8, 3)
    assert np.all(pixels == 77)


def test_grayscale_with_alpha_la_is_composited_on_white():
    img = Image.new("LA", (8, 6), (50, 255))
    img.putpixel((0, 0), (50, 0))  # fully transparent
    pixels = decode(encode(img, "PNG"))
    assert pixels[1, 1].tolist() == [50, 50, 50]
    assert pixels[0, 0].tolist() == [255, 255, 255]


def _palette_image() -> Image.Image:
    img = Image.new("P", (8, 6), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((0, 0), 0)
    return img


def test_palette_without_transparency():
    pixels = decode(encode(_palette_image(), "PNG"))
    assert pixels[3, 3].tolist() == [10, 200, 30]
    assert pixels[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency(fmt):
    data = encode(_palette_image(), fmt, transparency=0)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 0
    pixels = decode(data)
    assert pixels[3, 3].tolist() == [10, 200, 30]
    assert pixels[0, 0].tolist() == [255, 255, 255]  # transparent -> white


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (8, 6), (0, 0, 255, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    img.putpixel((1, 0), (0, 0, 0, 128))
    pixels = decode(encode(img, "PNG"))
    assert pixels[3, 3].tolist() == [0, 0, 255]
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert np.all(np.abs(pixels[0, 1] - 127) <= 1)


def test_cmyk_jpeg():
    img = Image.new("CMYK", (400, 300), (0, 255, 255, 0))  # red in CMYK
    data = encode(img, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    pixels = decode(data)
    assert pixels.shape == (300, 400, 3)
    assert np.abs(pixels[8, 8] - RED).max() <= 10
    small = decode(data, (32, 32))  # through draft mode
    assert np.abs(small[16, 16] - RED).max() <= 10


def test_16_bit_png_i16():
    ramp = np.array([[0, 257 * 100, 65535]], np.uint16).repeat(4, axis=0)
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    pixels = decode(data)
    assert pixels.shape == (4, 3, 3)
    assert pixels[0, :, 0].tolist() == [0, 100, 255]


def test_16_bit_png_with_small_values_is_not_stretched():
    dark = np.array([[0, 1], [1, 0]], np.uint16)
    pixels = decode(encode(Image.fromarray(dark), "PNG"))
    assert pixels.max() <= 1


def test_48_bit_rgb_png():
    # Pillow reads 16-bit-per-channel RGB PNGs as 8-bit RGB; build one by hand.
    rgb16 = np.zeros((2, 3, 3), ">u2")
    rgb16[..., 0] = 65535
    rows = b"".join(b"\0" + row.tobytes() for row in rgb16)
    data = _png(3, 2, bit_depth=16, color_type=2, idat=zlib.compress(rows))
    pixels = decode(data)
    assert pixels.shape == (2, 3, 3)
    assert pixels[1, 1].tolist() == [255, 0, 0]


def test_32_bit_integer_tiff_mode_i():
    values = np.array([[0, 100, 200]], np.int32)
    data = encode(Image.fromarray(values, "I"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert decode(data)[0, :, 1].tolist() == [0, 100, 200]


def test_float_tiff_mode_f():
    values = np.array([[0.0, 0.5, 1.0]], np.float32)
    data = encode(Image.fromarray(values, "F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    assert decode(data)[0, :, 2].tolist() == [0, 128, 255]


def _exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(halves(40, 20), "JPEG", quality=95, exif=exif)


def test_exif_orientation_is_applied():
    # Orientation 6: the stored image must be turned 90 degrees clockwise, so
    # the stored left half (red) ends at the top.
    pixels = decode(_exif_jpeg(6))
    assert pixels.shape == (40, 20, 3)
    assert np.abs(pixels[5, 10] - RED).max() <= 40
    assert np.abs(pixels[35, 10] - BLUE).max() <= 40
    upright = decode(_exif_jpeg(1))
    assert upright.shape == (20, 40, 3)


def test_exif_orientation_with_resize_and_draft():
    exif = Image.Exif()
    exif[0x0112] = 8  # turn 90 degrees counter-clockwise: stored left half to the bottom
    data = encode(halves(800, 400), "JPEG", quality=90, exif=exif)
    pixels = decode(data, (32, 32))
    assert pixels.shape == (32, 32, 3)
    assert np.abs(pixels[28, 16] - RED).max() <= 40
    assert np.abs(pixels[3, 16] - BLUE).max() <= 40


def test_draft_mode_never_goes_below_the_target():
    data = encode(halves(2000, 1000), "JPEG", quality=80)
    img = images.open_image(data, (224, 224))
    assert img.size[0] < 2000  # the draft did reduce the decoding
    assert min(img.size) >= 224
    full = images.open_image(data)
    assert full.size == (2000, 1000)


def test_stretch_keeps_the_whole_image():
    img = halves(100, 50)
    out = np.asarray(images.resize(img, (20, 20), "stretch"))
    assert out.shape == (20, 20, 3)
    assert out[10, 2].tolist() == list(RED)
    assert out[10, 17].tolist() == list(BLUE)


def test_crop_takes_the_centre():
    pixels = np.zeros((50, 100, 3), np.uint8)
    pixels[:, :25], pixels[:, 25:75], pixels[:, 75:] = RED, GREEN, BLUE
    out = np.asarray(images.resize(Image.fromarray(pixels), (20, 20), "crop"))
    assert out.shape == (20, 20, 3)
    # the filter reaches a little past the crop box: only the edge columns blend
    assert np.all(out[:, 1:-1] == GREEN)
    assert np.all(out[..., 1] >= 200)
    via_decode = decode(encode(Image.fromarray(pixels), "PNG"), (20, 20), "crop")
    assert np.array_equal(via_decode, out)


def test_resize_is_antialiased():
    checker = (np.indices((200, 200)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = np.asarray(images.resize(Image.fromarray(checker).convert("RGB"), (20, 20)))
    assert np.all(np.abs(out.astype(int) - 127) <= 3)


def test_unknown_resize_policy():
    with pytest.raises(ValueError, match="stretch"):
        images.resize(halves(), (10, 10), "squash")


def test_own_size_below_the_minimum_is_an_image_error():
    data = encode(halves(40, 20), "PNG")
    with pytest.raises(ImageError, match="20.*smaller than the model's minimum 32x32"):
        decode(data, None, min_size=32)
    assert decode(data, None, min_size=20).shape == (20, 40, 3)


def _png(width: int, height: int, bit_depth: int = 8, color_type: int = 2,
         idat: bytes = b"") -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) \
        + chunk(b"IEND", b"")


def test_decompression_bomb_header_is_refused():
    bomb = _png(100_000, 100_000, idat=zlib.compress(b"\0" * 301))
    with pytest.raises(ImageError, match="decompression bomb"):
        decode(bomb, (224, 224))


@pytest.mark.parametrize("pixels", [1_500, 10_000])  # warning range, error range
def test_images_over_the_pixel_limit_are_refused(monkeypatch, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    side = int(pixels ** 0.5)
    data = encode(halves(side, side), "PNG")
    with pytest.raises(ImageError, match="decompression bomb"):
        decode(data, (32, 32))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF"])
@pytest.mark.parametrize("lenient", [False, True])
def test_truncated_image(fmt, lenient, monkeypatch):
    """Refused also where another add-on told Pillow to load truncated files
    (Image Analytics sets ``ImageFile.LOAD_TRUNCATED_IMAGES`` when it is imported)."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient)
    data = encode(halves(200, 100), fmt)
    assert decode(data, (32, 32)).shape == (32, 32, 3)
    with pytest.raises(ImageError, match="cannot decode.*truncated"):
        decode(data[:len(data) // 2], (32, 32))


def test_text_file_named_jpg():
    with pytest.raises(ImageError, match="not an image"):
        decode(b"label,path\nants,ant.jpg\n", (32, 32))


def test_zero_byte_file():
    with pytest.raises(ImageError, match="empty file"):
        decode(b"", (32, 32))


@pytest.mark.parametrize("shape", [(6, 8), (6, 8, 1), (6, 8, 3), (6, 8, 4)])
def test_arrays_of_every_channel_count(shape):
    pixels = np.full(shape, 90, np.uint8)
    if len(shape) == 3 and shape[2] == 4:
        pixels[..., 3] = 255
    out = images.decode_array(pixels, None)
    assert out.shape == (6, 8, 3)
    assert np.all(out == 90)


@pytest.mark.parametrize("dtype, value, expected", [
    (np.float32, 0.5, 128), (np.float64, 1.0, 255), (np.float32, 200.0, 200),
    (np.uint16, 65535, 255), (np.int64, 77, 77)])
def test_array_value_ranges(dtype, value, expected):
    pixels = np.full((4, 4, 3), value, dtype)
    assert np.all(images.decode_array(pixels, None) == expected)


def test_array_with_nan_or_bad_shape():
    with pytest.raises(ImageError, match="NaN"):
        images.decode_array(np.full((4, 4), np.nan, np.float32), None)
    with pytest.raises(ImageError, match="shape"):
        images.decode_array(np.zeros((4, 4, 2), np.uint8), None)
