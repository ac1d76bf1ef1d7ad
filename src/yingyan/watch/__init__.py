"""Watchlist monitoring: sessions, thresholds for a target FPIR, alerts and their human review,
delivery, camera workers and retrospective search."""
