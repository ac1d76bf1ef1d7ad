"""Errors a caller can act on. Each carries a stable machine-readable code.

The CLI turns them into a message and a non-zero exit; the service (a later issue) maps them
to 4xx JSON bodies. Anything that is not a YingyanError is a bug.
"""

from __future__ import annotations


class YingyanError(Exception):
    """Base of every error caused by input or configuration rather than by a bug."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImageError(YingyanError):
    """The input is not a decodable image of acceptable size."""

    code = "invalid_image"


class ImageTooLargeError(ImageError):
    """Too many pixels or bytes: refused before decoding (decompression bombs)."""

    code = "image_too_large"


class UnsupportedFormatError(ImageError):
    code = "unsupported_format"


class NoFaceError(YingyanError):
    code = "no_face"


class ModelError(YingyanError):
    """A model file is missing, unreadable or not configured."""

    code = "model_unavailable"


class ModelMismatchError(YingyanError):
    """Templates from different models (or versions) cannot be compared."""

    code = "model_mismatch"


class ConfigError(YingyanError):
    code = "invalid_config"


class DatasetError(YingyanError):
    """An evaluation data set is missing or malformed."""

    code = "invalid_dataset"


class SeveralFacesError(YingyanError):
    """Exactly one face was required (enrolment, 1:1 verification) and several were found."""

    code = "several_faces"


class TooManyFacesError(YingyanError):
    """More faces than the configured limit: refused before any of them is embedded."""

    code = "too_many_faces"


class SourceError(YingyanError):
    """A video source cannot be opened, or its file is truncated or corrupt."""

    code = "source_error"
