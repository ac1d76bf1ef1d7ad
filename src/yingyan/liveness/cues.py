"""What every presentation-attack cue answers: a decision, a score and a reason.

Scores follow the project's convention (higher = more bona fide; a cue passes at score >= its
threshold), so ISO/IEC 30107-3 metrics and threshold selection work on them unchanged. A cue
that cannot decide abstains with what the person should do ("come closer"), and a NaN score:
an abstention is a non-response, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Decision(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ABSTAIN = "abstain"


# Reasons a person can act on, shared by the cues.
COME_CLOSER = "come closer"
STEP_BACK = "step back"
LOOK_AT_CAMERA = "look at the camera"


@dataclass(frozen=True, slots=True)
class CueResult:
    cue: str  # "epipolar", "distance", "relief", "nir", ...
    decision: Decision
    score: float  # NaN when abstaining
    reason: str
    details: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def passed(self) -> bool:
        return self.decision is Decision.PASS

    @classmethod
    def judge(
        cls,
        cue: str,
        score: float,
        threshold: float,
        reason_fail: str,
        reason_pass: str,
        details: Mapping[str, float] | None = None,
    ) -> CueResult:
        """Pass at score >= threshold, else fail with `reason_fail`."""
        ok = score >= threshold
        return cls(
            cue,
            Decision.PASS if ok else Decision.FAIL,
            float(score),
            reason_pass if ok else reason_fail,
            MappingProxyType(dict(details or {})),
        )

    @classmethod
    def abstain(
        cls, cue: str, reason: str, details: Mapping[str, float] | None = None
    ) -> CueResult:
        return cls(cue, Decision.ABSTAIN, math.nan, reason, MappingProxyType(dict(details or {})))
