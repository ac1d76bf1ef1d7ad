"""Safe image decoding.

Pillow reads only the header on `open`, so size limits are checked before any pixel is
decoded. EXIF orientation is applied because phone photos are stored sideways; alpha is
composited on white so transparent PNGs do not turn into black faces.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from yingyan.config import ImageLimits
from yingyan.errors import ImageError, ImageTooLargeError, UnsupportedFormatError
from yingyan.types import RGBImage

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "WEBP"})
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
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image (or an unsupported format)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(f"{name}: {exc}") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{name}: corrupt or truncated image header ({exc})") from None
        with img:
            if img.format not in SUPPORTED_FORMATS:
                raise UnsupportedFormatError(
                    f"{name}: format {img.format} is not accepted; use JPEG, PNG, BMP or WebP"
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
