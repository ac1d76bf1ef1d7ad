"""Image input: bytes or paths in, RGB uint8 arrays out, hostile files refused."""

from yingyan.io.image import load_image

__all__ = ["load_image"]
