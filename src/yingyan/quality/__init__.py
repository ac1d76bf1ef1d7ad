"""Face quality: numbers that later stages use to gate enrollment; never mixed into scores."""

from yingyan.quality.measures import assess_quality

__all__ = ["assess_quality"]
