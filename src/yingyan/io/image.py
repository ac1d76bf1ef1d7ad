"""Safe image decoding.

Only the parsers of the accepted formats ever see the bytes: `Image.open` is given `DECODERS`,
so none of the 39 other plugins of Pillow 13 (TIFF, PSD, ICO, GIF, EPS, TGA..., each a parser
of untrusted input) runs on an upload, whatever its name or content. A file in a format that
is refused is named from its magic bytes (our own prefix check, no parser) for a clear error.

Pillow reads only the header on `open`, so size limits are checked before any pixel is
decoded. EXIF orientation is applied because phone photos are stored sideways; alpha is
composited on white so transparent PNGs do not turn into black faces.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import (
    BmpImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from yingyan.config import ImageLimits
from yingyan.errors import ImageError, ImageTooLargeError, UnsupportedFormatError
from yingyan.types import RGBImage

# The Pillow plugins tried on input, imported here so that `Image.open` finds them registered
# (it would otherwise import every plugin it knows to look one up). MPO, a JPEG with extra
# frames, is no plugin of its own: the JPEG parser returns it.
DECODERS: tuple[str, ...] = (
    JpegImagePlugin.JpegImageFile.format,
    PngImagePlugin.PngImageFile.format,
    WebPImagePlugin.WebPImageFile.format,
    BmpImagePlugin.BmpImageFile.format,
)
SUPPORTED_FORMATS = frozenset({*DECODERS, "MPO"})
ACCEPTED = "JPEG, PNG, BMP or WebP"
# Formats refused by name, recognised by their first bytes (never parsed): a clearer answer
# than "not an image" for the files people most often try.
_REFUSED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),  # not CUR's 00 00 02 00: an uncompressed TGA starts so
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
)
_HEIF_BRANDS: dict[bytes, str] = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
}
ImageSource = bytes | bytearray | memoryview | str | Path


def _read_bytes(source: ImageSource, limits: ImageLimits) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no such image file: {path}")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageTooLargeError(f"{path}: {size} bytes exceeds the {limits.max_bytes} limit")
        data = path.read_bytes()
    if not data:
        raise ImageError("empty input: zero bytes")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"{len(data)} bytes exceeds the {limits.max_bytes} limit")
    return data


def refused_format(data: bytes) -> str | None:
    """The name of a refused format that `data` starts like, from its magic bytes alone."""
    for magic, name in _REFUSED_MAGIC:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(data[8:12])
    return None


def _check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"image has zero size ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over the "
            f"{limits.max_pixels} pixel limit (possible decompression bomb)"
        )
    if min(width, height) < limits.min_side:
        raise ImageError(f"image is {width}x{height}: too small to hold a face")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise ImageError(f"image is {width}x{height}: absurd aspect ratio")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        return Image.fromarray((arr * (255.0 / top)).clip(0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def load_image(source: ImageSource, limits: ImageLimits | None = None) -> RGBImage:
    """Decode JPEG/PNG/BMP/WebP bytes or a file into an upright RGB uint8 array."""
    limits = limits or ImageLimits()
    data = _read_bytes(source, limits)
    name = str(source) if isinstance(source, (str, Path)) else "input"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=DECODERS)
        except UnidentifiedImageError:
            refused = refused_format(data)
            if refused is not None:
                raise UnsupportedFormatError(
                    f"{name}: format {refused} is not accepted; use {ACCEPTED}"
                ) from None
            raise ImageError(f"{name}: not an image in an accepted format ({ACCEPTED})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(f"{name}: {exc}") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{name}: corrupt or truncated image header ({exc})") from None
        with img:
            if img.format not in SUPPORTED_FORMATS:  # e.g. a plugin's new variant
                raise UnsupportedFormatError(
                    f"{name}: format {img.format} is not accepted; use {ACCEPTED}"
                )
            _check_dimensions(img.width, img.height, limits)
            try:
                img.load()
                upright = ImageOps.exif_transpose(img) or img
                rgb = _to_rgb(upright)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageTooLargeError(f"{name}: {exc}") from None
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
