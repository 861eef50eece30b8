"""Decoding and resizing images: pure functions on one image at a time.

Every function either returns an RGB ``uint8`` array of shape ``(H, W, 3)``
or raises :class:`~orangecontrib.transferembed.errors.ImageError` with a
reason that a user can read.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import DEFAULT_RESIZE, RESIZE_POLICIES
from ..errors import ImageError

_RESAMPLE = Image.Resampling.BILINEAR  # antialiased when downscaling
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: Pixels of one image at most when Pillow's own limit is switched off
#: (``Image.MAX_IMAGE_PIXELS = None``, as some add-ons set it): Pillow's default.
MAX_PIXELS = 89_478_485


class _Bytes(io.BytesIO):
    """Encoded bytes that notice a read past their end while the image loads.

    That is a truncated file, which Pillow fills with grey instead of failing
    once ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set, as Image Analytics sets it
    for the whole process when Orange loads it.
    """

    loading = False
    ran_out = False

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if self.loading and not chunk and size != 0:
            self.ran_out = True
        return chunk


def open_image(data: bytes, target: tuple[int, int] | None = None) -> Image.Image:
    """Decode encoded image bytes into a loaded PIL image: the first frame of
    an animated or multi-page file.

    With ``target`` (width, height), JPEGs are decoded in draft mode straight
    to the smallest DCT scale that is still at least that large.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        encoded = _Bytes(data)
        img = Image.open(encoded)
        _check_pixel_count(img)  # before decoding; warnings filters are not thread-safe
        if target is not None and img.format == "JPEG":
            img.draft("RGB", _draft_size(target))
        encoded.loading = True
        img.load()
        if encoded.ran_out:
            raise OSError("image file is truncated")
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large, a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (unknown format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from None
    return img


def _check_pixel_count(img: Image.Image) -> None:
    limit = Image.MAX_IMAGE_PIXELS or MAX_PIXELS
    if img.width * img.height > limit:
        raise Image.DecompressionBombError(
            f"{img.width}x{img.height} = {img.width * img.height} pixels exceeds the limit "
            f"of {limit} pixels")


def _draft_size(target: tuple[int, int]) -> tuple[int, int]:
    # EXIF orientation may swap the axes after decoding; ask for the larger
    # side in both so the draft never falls below the target.
    side = max(target)
    return side, side


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode (L, LA, P, RGBA, CMYK, I;16, I, F ...) to 8-bit RGB.

    EXIF orientation is applied; transparency is composited on white.
    """
    try:
        img = ImageOps.exif_transpose(img, in_place=False) if _has_orientation(img) else img
    except (OSError, ValueError, SyntaxError, TypeError):  # broken EXIF: keep pixels as stored
        pass
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_deep_to_uint8(np.asarray(img), mode)).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")
    return img


def _has_orientation(img: Image.Image) -> bool:
    """Whether EXIF asks for a rotation or flip (reading it is cheap; copying is not)."""
    try:
        return img.getexif().get(0x0112, 1) not in (1, None)
    except (OSError, ValueError, SyntaxError, TypeError):
        return False


def _deep_to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit or float pixels to 0..255."""
    floats = pixels.dtype.kind == "f"
    pixels = pixels.astype(np.float64)
    if mode.startswith("I;16"):
        pixels = pixels / 257.0  # always the full 16-bit range, however dark the image
    elif floats and pixels.size and pixels.min() >= 0 and pixels.max() <= 1.0:
        pixels = pixels * 255.0
    elif pixels.size and pixels.max() > 255:
        pixels = pixels / 257.0  # 16-bit range
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def resize(img: Image.Image, size: tuple[int, int], policy: str = DEFAULT_RESIZE) -> Image.Image:
    """Resize to ``size`` (width, height) with an antialiased filter."""
    if img.size == size:
        return img
    if policy == "crop":
        return ImageOps.fit(img, size, method=_RESAMPLE)
    if policy != "stretch":
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {policy!r}")
    return img.resize(size, _RESAMPLE)


def array_to_image(pixels: np.ndarray, scale: float | None = None) -> Image.Image:
    """An ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array to RGB.

    ``uint8`` is taken as is. Other pixels are multiplied by ``scale`` (see
    :func:`pixel_scale`, best found once for a whole data set), then rounded
    and clipped to 0..255; without ``scale`` it is found from this image.
    """
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ImageError(f"cannot read an array of shape {pixels.shape} as an image")
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        if pixels.dtype.kind not in "biuf":
            raise ImageError(f"cannot read {pixels.dtype} pixels")
        values = pixels.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise ImageError("pixels contain NaN or infinity")
        if scale is None:
            scale = pixel_scale(pixels.dtype, float(values.min(initial=0)),
                                float(values.max(initial=0)))
        pixels = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(pixels))
    return to_rgb(img)


def pixel_scale(dtype: np.dtype, low: float, high: float) -> float:
    """The factor that maps pixels of ``dtype`` spanning ``[low, high]`` to 0..255.

    Booleans and floats in [0, 1] are scaled up to 255; values that pass 255
    are taken as 16-bit (0..65535); anything else is kept (and later clipped
    to 0..255).
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "b" or (dtype.kind == "f" and low >= 0 and high <= 1):
        return 255.0
    if high > 255:
        return 1 / 257
    return 1.0


def prepare(img: Image.Image, size: tuple[int, int] | None, policy: str = DEFAULT_RESIZE,
            min_size: int = 1) -> np.ndarray:
    """RGB, resized to ``size`` (or kept at its own size if None), as uint8 HWC."""
    rgb = to_rgb(img)
    if size is None:
        width, height = rgb.size
        if min(width, height) < min_size:
            raise ImageError(
                f"image is {width}x{height}, smaller than the model's minimum "
                f"{min_size}x{min_size} for embedding at the image's own size")
    else:
        rgb = resize(rgb, size, policy)
    return np.asarray(rgb, dtype=np.uint8)


def decode_file_bytes(data: bytes, size: tuple[int, int] | None, policy: str = DEFAULT_RESIZE,
                      min_size: int = 1) -> np.ndarray:
    """Encoded bytes to a uint8 ``(H, W, 3)`` array ready for preprocessing."""
    return prepare(open_image(data, size), size, policy, min_size)


def decode_array(pixels: np.ndarray, size: tuple[int, int] | None, policy: str = DEFAULT_RESIZE,
                 min_size: int = 1, scale: float | None = None) -> np.ndarray:
    """A pixel array (one npy row, already shaped) to a uint8 ``(H, W, 3)`` array."""
    return prepare(array_to_image(pixels, scale), size, policy, min_size)
