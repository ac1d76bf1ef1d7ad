"""Score calibration without demographic labels: fair score normalisation profiles."""

from yingyan.calibration.fair_score import FairScoreProfile, fit_profile, load_profile

__all__ = ["FairScoreProfile", "fit_profile", "load_profile"]
