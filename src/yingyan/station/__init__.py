"""Face stations: two synchronised cameras (colour + near-infrared) and their calibration."""

from yingyan.station.calibration import (
    Rectification,
    StereoCalibration,
    load_calibration,
    make_calibration,
    rectify,
    save_calibration,
)
from yingyan.station.frames import FramePair, Illuminator

__all__ = [
    "FramePair",
    "Illuminator",
    "Rectification",
    "StereoCalibration",
    "load_calibration",
    "make_calibration",
    "rectify",
    "save_calibration",
]
