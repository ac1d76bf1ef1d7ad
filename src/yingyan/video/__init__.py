"""Video: sources (decoded in the worker process), tracking, best shots, the camera pipeline."""
