"""Evaluation: biometric error metrics and benchmark protocols (LFW), reused by the fairness
and liveness work."""
