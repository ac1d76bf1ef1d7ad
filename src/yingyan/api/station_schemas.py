"""What a face station's attempt answers over the API (`POST /api/v1/stations/{station}/attempts`):
the outcome with its reasons, the PAD decision with every cue's decision, score and reason per
frame, the 1:1 verification, the quality of the face verified and the time of each stage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from yingyan.station.kiosk import AttemptResult, CueOut, FrameOut, PadOut, VerificationOut


class CueResultOut(BaseModel):
    cue: str = Field(description="epipolar, distance, relief, nir, rgb_texture")
    decision: Literal["pass", "fail", "abstain"]
    score: float | None = Field(description="higher = more bona fide; null when it abstained")
    reason: str

    @classmethod
    def of(cls, c: CueOut) -> CueResultOut:
        return cls(cue=c.cue, decision=c.decision, score=c.score, reason=c.reason)  # type: ignore[arg-type]


class FrameResultOut(BaseModel):
    index: int
    faces_seen: int = Field(description="faces camera 1 found (the largest is judged)")
    verdict: Literal["bona_fide", "attack", "retry"]
    score: float | None = Field(
        description="the fused PAD score; null: refused by a gate or unscored"
    )
    reason: str
    decided_by: list[str]
    quality: float | None = Field(description="quality score of camera 1's face, 0..1")
    cues: list[CueResultOut]

    @classmethod
    def of(cls, f: FrameOut) -> FrameResultOut:
        return cls(
            index=f.index,
            faces_seen=f.faces_seen,
            verdict=f.verdict,  # type: ignore[arg-type]
            score=f.score,
            reason=f.reason,
            decided_by=list(f.decided_by),
            quality=f.quality,
            cues=[CueResultOut.of(c) for c in f.cues],
        )


class PadDecisionOut(BaseModel):
    verdict: Literal["bona_fide", "attack", "retry"]
    score: float | None = Field(description="mean fused score of the frames it rests on")
    reason: str
    decided_by: list[str] = Field(description="the cues that decided")
    frames: int = Field(description="frames the decision rests on")
    policy: str = Field(description="the PAD policy's version")
    cues: list[CueResultOut] = Field(description="the last frame's cues")

    @classmethod
    def of(cls, p: PadOut) -> PadDecisionOut:
        return cls(
            verdict=p.verdict,  # type: ignore[arg-type]
            score=p.score,
            reason=p.reason,
            decided_by=list(p.decided_by),
            frames=p.frames,
            policy=p.policy,
            cues=[CueResultOut.of(c) for c in p.cues],
        )


class StationVerificationOut(BaseModel):
    target: Literal["subject", "id_document"]
    score: float = Field(description="cosine similarity (or the gallery's calibrated score)")
    threshold: float
    threshold_name: str
    threshold_source: str
    match: bool
    model: str
    gallery: str | None = None
    subject: str | None = None
    template_id: int | None = Field(default=None, description="the subject's best template")

    @classmethod
    def of(cls, v: VerificationOut) -> StationVerificationOut:
        return cls.model_validate(v, from_attributes=True)  # the same fields, by name


class AttemptOut(BaseModel):
    station: str
    outcome: Literal["accepted", "attack", "retry", "no_match", "no_face"]
    reasons: list[str] = Field(description="why, in words a person or an operator can act on")
    pad: PadDecisionOut
    verification: StationVerificationOut | None = Field(
        description="null when the attempt ended before 1:1 (attack, retry, no face)"
    )
    quality: dict[str, float] | None = Field(description="camera 1's best face's measures")
    frames: list[FrameResultOut]
    timings_ms: dict[str, float] = Field(description="milliseconds per stage")
    stored_template_id: int | None = Field(
        default=None, description="the accepted face's new template (profile store = true)"
    )

    @classmethod
    def of(cls, r: AttemptResult) -> AttemptOut:
        return cls(
            station=r.station,
            outcome=r.outcome,
            reasons=list(r.reasons),
            pad=PadDecisionOut.of(r.pad),
            verification=StationVerificationOut.of(r.verification) if r.verification else None,
            quality=dict(r.quality) if r.quality else None,
            frames=[FrameResultOut.of(f) for f in r.frames],
            timings_ms=dict(r.timings_ms),
            stored_template_id=r.stored_template_id,
        )
