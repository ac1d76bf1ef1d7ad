"""Safe image input: formats, orientation, colour modes, and every kind of bad file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yingyan import ImageLimits, load_image
from yingyan.errors import ImageError, ImageTooLargeError, UnsupportedFormatError
from yingyan.io.image import DECODERS

from .conftest import shared_path


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(w: int = 120, h: int = 80) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)
    arr = np.stack([np.tile(x, (h, 1)), np.tile(x[::-1], (h, 1)), np.full((h, w), 90, np.uint8)], 2)
    return Image.fromarray(arr)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "WEBP"])
def test_decodes_supported_formats_to_rgb(fmt: str) -> None:
    img = load_image(_encode(_gradient(), fmt))
    assert img.shape == (80, 120, 3) and img.dtype == np.uint8
    # Lossless formats round-trip exactly; red rises left to right in every format.
    if fmt in ("PNG", "BMP"):
        assert np.array_equal(img, np.asarray(_gradient()))
    assert img[40, 110, 0] > img[40, 10, 0] + 150


def test_reads_real_photo_from_path() -> None:
    path = shared_path("datasets", "video", "obama.jpg")
    img = load_image(path)
    assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) > 100


def test_applies_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to display
    data = _encode(_gradient(120, 80), "JPEG", exif=exif)
    assert load_image(data).shape == (120, 80, 3)


def test_grey_input_becomes_rgb() -> None:
    img = load_image(_encode(_gradient().convert("L"), "PNG"))
    assert img.shape == (80, 120, 3)
    assert np.array_equal(img[..., 0], img[..., 1])


def test_transparent_pixels_become_white_not_black() -> None:
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((200, 10, 10, 255), (0, 0, 32, 64))
    img = load_image(_encode(rgba, "PNG"))
    assert tuple(img[10, 60]) == (255, 255, 255)
    assert tuple(img[10, 10]) == (200, 10, 10)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    img = load_image(_encode(Image.fromarray(arr), "PNG"))
    assert img[0, 0, 0] == 0 and img[-1, -1, 0] == 255 and 100 < img[32, 0, 0] < 160


def test_rejects_non_image_bytes() -> None:
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"%PDF-1.4 this is not a picture" * 10)


def test_rejects_empty_input() -> None:
    with pytest.raises(ImageError, match="zero bytes"):
        load_image(b"")


def test_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such image"):
        load_image(tmp_path / "nope.jpg")


def test_rejects_truncated_real_jpeg() -> None:
    data = shared_path("datasets", "video", "obama.jpg").read_bytes()
    with pytest.raises(ImageError, match=r"truncated|corrupt"):
        load_image(data[: len(data) // 2])


def test_rejects_decompression_bomb_before_decoding() -> None:
    # 10,000 x 6,000 one-bit pixels: a few kB on disk, 60 MP once decoded.
    bomb = _encode(Image.new("1", (10_000, 6_000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLargeError, match="pixel limit"):
        load_image(bomb)


def test_pixel_and_byte_limits_are_configurable() -> None:
    data = _encode(_gradient(), "PNG")
    with pytest.raises(ImageTooLargeError):
        load_image(data, ImageLimits(max_pixels=5_000))
    with pytest.raises(ImageTooLargeError, match="bytes"):
        load_image(data, ImageLimits(max_bytes=100))


@pytest.mark.parametrize(("w", "h", "msg"), [(8, 8, "too small"), (2000, 20, "aspect")])
def test_rejects_absurd_dimensions(w: int, h: int, msg: str) -> None:
    with pytest.raises(ImageError, match=msg):
        load_image(_encode(Image.new("RGB", (w, h)), "PNG"))


def test_rejects_zero_sized_header() -> None:
    # A BMP whose header declares 0 x 0 pixels.
    data = bytearray(_encode(Image.new("RGB", (32, 32)), "BMP"))
    data[18:22] = (0).to_bytes(4, "little")
    data[22:26] = (0).to_bytes(4, "little")
    with pytest.raises(ImageError):
        load_image(bytes(data))


def test_rejects_unsupported_format() -> None:
    with pytest.raises(UnsupportedFormatError, match="GIF"):
        load_image(_encode(_gradient(), "GIF"))


def test_the_work_bound_is_validated_and_reaches_the_engine() -> None:
    """The bound after upsampling (see test_detection) is part of the limits: a service
    setting, refused below what one upsampled LFW image needs."""
    from yingyan.errors import ConfigError
    from yingyan.settings import Settings

    with pytest.raises(ConfigError, match="max_work_pixels"):
        ImageLimits(max_work_pixels=999_999)
    settings = Settings(max_work_pixels=8_000_000)
    assert settings.engine_config().limits.max_work_pixels == 8_000_000
    assert ImageLimits().max_work_pixels < 4 * ImageLimits().max_pixels  # below one upsampling


# -- only the accepted formats' parsers ever see the bytes -------------------------------------


@pytest.fixture
def consulted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Pillow plugin of a format that is not accepted, its `accept` check recorded
    (and still run) whenever `Image.open` considers it for some bytes."""
    Image.init()  # register all of Pillow's plugins, as any other code in the process might
    calls: list[str] = []
    for fmt, (factory, accept) in list(Image.OPEN.items()):
        if fmt in DECODERS:
            continue

        def spy(prefix: bytes, fmt: str = fmt, accept: object = accept) -> object:
            calls.append(fmt)
            return accept(prefix) if callable(accept) else True

        monkeypatch.setitem(Image.OPEN, fmt, (factory, spy))
    return calls


def _psd(w: int = 64, h: int = 48) -> bytes:
    """A real (minimal) Photoshop file, RGB, 8 bits, raw: Pillow reads PSD but cannot write it."""
    be = int.to_bytes
    header = b"8BPS" + be(1, 2, "big") + bytes(6) + be(3, 2, "big") + be(h, 4, "big")
    header += be(w, 4, "big") + be(8, 2, "big") + be(3, 2, "big")
    return header + bytes(12) + be(0, 2, "big") + bytes(w * h * 3)


def _refused(fmt: str) -> bytes:
    return _psd() if fmt == "PSD" else _encode(_gradient(64, 48), fmt)


@pytest.mark.parametrize(
    ("fmt", "error", "message"),
    [
        ("GIF", UnsupportedFormatError, "format GIF is not accepted"),
        ("TIFF", UnsupportedFormatError, "format TIFF is not accepted"),
        ("ICO", UnsupportedFormatError, "format ICO is not accepted"),
        ("PSD", UnsupportedFormatError, "format PSD is not accepted"),
        ("PPM", ImageError, "not an image in an accepted format"),
        ("TGA", ImageError, "not an image in an accepted format"),
        ("PCX", ImageError, "not an image in an accepted format"),
    ],
)
def test_a_refused_format_never_reaches_its_parser(
    consulted: list[str], fmt: str, error: type[ImageError], message: str
) -> None:
    data = _refused(fmt)
    with pytest.raises(error, match=message) as caught:
        load_image(data)
    assert "JPEG, PNG, BMP or WebP" in str(caught.value)
    assert consulted == []  # no plugin but JPEG, PNG, WebP and BMP even looked at the bytes
    # The control: Pillow left to itself reads the same bytes as that format, so it is a real
    # file of it, and the spy does see a plugin consulted.
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == fmt
    assert fmt in consulted


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "WEBP"])
def test_an_accepted_format_consults_no_other_plugin(consulted: list[str], fmt: str) -> None:
    assert load_image(_encode(_gradient(), fmt)).shape == (80, 120, 3)
    assert consulted == []


def test_a_file_is_read_by_its_content_whatever_its_name(
    tmp_path: Path, consulted: list[str]
) -> None:
    png = _encode(_gradient(), "PNG")
    for name in ("face.jpg", "face.tif", "face.gif", "face"):
        (tmp_path / name).write_bytes(png)
        assert np.array_equal(load_image(tmp_path / name), np.asarray(_gradient()))
    (tmp_path / "face.png").write_bytes(_encode(_gradient(), "TIFF"))
    with pytest.raises(UnsupportedFormatError, match="TIFF"):
        load_image(tmp_path / "face.png")
    assert consulted == []
