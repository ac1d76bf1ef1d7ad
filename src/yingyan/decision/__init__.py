"""Decisions: 1:N candidate lists built from index hits. A candidate is a lead for a human to
review, never an automatic identification."""

from yingyan.decision.identification import Candidate, Mode, rank_subjects

__all__ = ["Candidate", "Mode", "rank_subjects"]
