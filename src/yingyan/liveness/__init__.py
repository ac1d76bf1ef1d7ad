"""Presentation-attack detection (liveness): cues that each answer pass, fail or abstain.

Modules: `cues` (the common result), `fusion` (gates, the calibrated combination, several
frames), `render` (stereo pairs with a real face photo), `geometry` (epipolar rows, size
against distance), `relief` (the stereo shape against a face and against sheets), `nir` (NIR
presence and reflectance), `simulator` (a seeded two-camera station for tests and
benchmarks). Nothing here loads a model at import time.
"""

from yingyan.liveness.cues import CueResult, Decision

__all__ = ["CueResult", "Decision"]
