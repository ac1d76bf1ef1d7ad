"""One capture of a face station: camera 1's and camera 2's images, taken together, and the
state of the near-infrared illuminator when they were taken.

The cues compare the two images geometrically, so the pair must show the same instant: a face
moving 0.3 m/s moves 3 mm in 10 ms, about 6 px at 0.5 m, which breaks the epipolar rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from yingyan.errors import ConfigError

MODALITIES = ("rgb", "nir")
DEFAULT_MAX_SKEW_S = 0.005

Image = npt.NDArray[np.uint8]  # RGB (H, W, 3) or NIR (H, W)


@dataclass(frozen=True, slots=True)
class Illuminator:
    """The NIR illuminator beside the NIR camera: `on` during the frame; `wavelength_nm` of its
    LEDs (850 or 940 usually). A station that strobes it also gives an `off` frame."""

    on: bool = True
    wavelength_nm: float = 850.0


@dataclass(frozen=True, slots=True, eq=False)
class FramePair:
    """Camera 1 (the reference, usually colour) and camera 2 (usually NIR) of one capture.

    `second_off` is camera 2's frame with the illuminator off, when the station strobes it:
    the difference isolates the illuminator's reflection from ambient NIR (sunlight, lamps)."""

    first: Image
    second: Image
    first_kind: str = "rgb"
    second_kind: str = "nir"
    first_time: float = 0.0  # seconds, the station's clock
    second_time: float = 0.0
    illuminator: Illuminator = Illuminator()
    second_off: Image | None = None

    def __post_init__(self) -> None:
        for kind, image, name in (
            (self.first_kind, self.first, "first"),
            (self.second_kind, self.second, "second"),
        ):
            if kind not in MODALITIES:
                raise ConfigError(f"{name} camera kind must be one of {MODALITIES}, got {kind!r}")
            if image.dtype != np.uint8:
                raise ConfigError(f"{name} image must be uint8, got {image.dtype}")
            want = 3 if kind == "rgb" else 2
            if image.ndim != want or (kind == "rgb" and image.shape[2] != 3):
                raise ConfigError(f"{name} {kind} image has shape {image.shape}")
        if self.second_off is not None and self.second_off.shape != self.second.shape:
            raise ConfigError("the illuminator-off frame must have the second image's shape")

    @property
    def skew(self) -> float:
        """Time between the two exposures, in seconds."""
        return abs(self.first_time - self.second_time)

    def synchronised(self, max_skew: float = DEFAULT_MAX_SKEW_S) -> bool:
        return self.skew <= max_skew

    def nir(self) -> Image | None:
        """The near-infrared image of the pair (camera 2 first), or None for an RGB-only pair."""
        if self.second_kind == "nir":
            return self.second
        return self.first if self.first_kind == "nir" else None
