"""Score calibration without demographic labels: fair score normalisation profiles."""

from yingyan.calibration.fair_score import (
    FairScoreProfile,
    TemplateNorms,
    fit_cohort_profile,
    fit_profile,
    load_profile,
    normalise_matrix,
    normalise_pairs,
)

__all__ = [
    "FairScoreProfile",
    "TemplateNorms",
    "fit_cohort_profile",
    "fit_profile",
    "load_profile",
    "normalise_matrix",
    "normalise_pairs",
]
