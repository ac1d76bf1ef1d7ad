"""Comparison: two templates → a similarity score → a decision against a named threshold."""

from yingyan.comparison.compare import Comparison, Decision, compare, decide, similarity_matrix
from yingyan.comparison.thresholds import Threshold, default_threshold, get_threshold

__all__ = [
    "Comparison",
    "Decision",
    "Threshold",
    "compare",
    "decide",
    "default_threshold",
    "get_threshold",
    "similarity_matrix",
]
