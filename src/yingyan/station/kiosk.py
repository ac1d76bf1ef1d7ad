"""The kiosk flow of a face station: one attempt, from its frames to an answer with reasons.

An attempt is one to a few consecutive frame pairs (camera 1 colour, camera 2 NIR or colour,
as the station profile says) and the face to compare with: a subject enrolled in the profile's
gallery, or an ID-document photo sent with the attempt. It goes:

1. every frame analysed (`station.analysis`: detection in both cameras, the PAD cues) and
   judged (`liveness.fusion.judge_frame`), the frames decided together (`PadWindow`);
2. the quality gate on camera 1's face (the engine's quality assessment), on the frame whose
   face is best;
3. if the presentation is bona fide and the face good enough: that face embedded by the engine
   and compared 1:1, with the ID photo's face (same engine, `comparison.compare`) or, in the
   service process, with the subject's templates (`GalleryService.verify_subject`).

The outcome is one of accepted, attack (refused as a presentation attack, with the cue's
reason), retry (with what the person should do), no_match, no_face. An attack outranks
everything: a print never hears "come closer". Nothing of an attempt is stored unless the
profile says `store = true`; its audit entry holds the PAD scores and decisions, the
verification score and ids, never an image or a template (`audit_details`).

In the service the analysis and the embedding of one attempt run as one inference job
(`attempt_job`), in a worker process; its station models (YuNet when the engine does not run
it, MiniFASNet, the policy, the rectification) load once per profile file in that worker.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

import cv2
import numpy as np

from yingyan.comparison import compare
from yingyan.comparison.thresholds import Threshold, get_threshold
from yingyan.detection.base import largest
from yingyan.engine import Engine
from yingyan.errors import ConfigError, NoFaceError, YingyanError
from yingyan.liveness.cues import COME_CLOSER, LOOK_AT_CAMERA, CueResult
from yingyan.liveness.fusion import PadDecision, PadPolicy, PadWindow, Verdict, judge_frame
from yingyan.station.calibration import Rectification, rectify
from yingyan.station.frames import FramePair, Image
from yingyan.station.profile import StationProfile, load_profile
from yingyan.types import Detection, Face, Quality, RGBImage

Outcome = Literal["accepted", "attack", "retry", "no_match", "no_face"]
OUTCOMES: Final = ("accepted", "attack", "retry", "no_match", "no_face")
Target = Literal["subject", "id_document"]
Detect = Callable[[RGBImage], list[Detection]]
NO_FACE: Final = "no face found by the colour camera: look at the camera"
GEOMETRY_CUES: Final = ("epipolar", "distance", "relief")  # station.analysis's names
NIR_CUES: Final = ("nir", "nir_face")
HOLD_STILL: Final = "hold still"


class AttemptInputError(YingyanError):
    """The frames of an attempt cannot be used as sent (counts, sizes, kinds)."""

    code = "invalid_attempt"


# -- what an attempt answers -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CueOut:
    cue: str
    decision: str  # pass | fail | abstain
    score: float | None  # None when the cue abstained
    reason: str

    @classmethod
    def of(cls, c: CueResult) -> CueOut:
        return cls(c.cue, str(c.decision), _finite(c.score), c.reason)


@dataclass(frozen=True, slots=True)
class FrameOut:
    """One frame pair: the faces camera 1 saw, its PAD verdict and cues, its face's quality."""

    index: int
    faces_seen: int
    verdict: str
    score: float | None  # the fused score (None: a gate refused or nothing was scored)
    reason: str
    decided_by: tuple[str, ...]
    cues: tuple[CueOut, ...]
    quality: float | None  # camera 1's face's quality score (None: no face)


@dataclass(frozen=True, slots=True)
class PadOut:
    """The PAD decision over the attempt's frames."""

    verdict: str  # bona_fide | attack | retry
    score: float | None
    reason: str
    decided_by: tuple[str, ...]
    frames: int
    policy: str  # the policy's version
    cues: tuple[CueOut, ...]  # the last frame's

    @classmethod
    def of(cls, d: PadDecision, policy: PadPolicy) -> PadOut:
        cues = tuple(CueOut.of(c) for c in d.cues)
        return cls(
            str(d.verdict), _finite(d.score), d.reason, d.decided_by, d.frames, policy.version, cues
        )


@dataclass(frozen=True, slots=True)
class VerificationOut:
    """The 1:1 comparison of camera 1's face with the subject's templates or the ID photo."""

    target: Target
    score: float
    threshold: float
    threshold_name: str
    threshold_source: str
    match: bool
    model: str
    gallery: str | None = None
    subject: str | None = None
    template_id: int | None = None  # the subject's best-matching template


@dataclass(frozen=True, slots=True)
class AttemptResult:
    station: str
    outcome: Outcome
    reasons: tuple[str, ...]
    pad: PadOut
    verification: VerificationOut | None
    frames: tuple[FrameOut, ...]
    quality: Mapping[str, float] | None  # the measures of the face that was (or would be) verified
    timings_ms: Mapping[str, float]
    stored_template_id: int | None = None  # profile store = true: the accepted face's template

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


@dataclass(frozen=True, slots=True, eq=False)
class AttemptAnalysis:
    """What the worker returns (pickled: plain dicts, no mapping proxies): everything but
    the gallery comparison. `probe` is camera 1's face, embedded only when the attempt got as
    far as verification; `outcome` is set when the attempt ended before a gallery is needed
    (attack, retry, no face, or an ID photo compared)."""

    station: str
    pad: PadOut
    frames: tuple[FrameOut, ...]
    probe: Face | None
    probe_sha256: str | None  # of the chosen frame's bytes, when known (a stored template's source)
    quality: Mapping[str, float] | None
    outcome: Outcome | None
    reasons: tuple[str, ...]
    verification: VerificationOut | None
    timings_ms: Mapping[str, float]


# -- the station's models, once per profile file in a process ---------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Station:
    """A profile with what it runs on: rectification, detector, texture cue, PAD policy."""

    profile: StationProfile
    rect: Rectification | None
    policy: PadPolicy
    texture: Any  # liveness.texture.TextureCue | None (its ONNX sessions load on first use)
    detector: Any  # a yingyan.detection Detector with five landmarks (YuNet), or None: the engine's

    def detect(self, engine: Engine) -> Detect:
        if self.detector is not None:
            return self.detector.detect  # type: ignore[no-any-return]
        return engine.detect


def open_station(profile: StationProfile, engine: Engine | None = None) -> Station:
    """The station's models and policy (loaded lazily where they can be). Its detector is the
    engine's when the engine runs YuNet (five landmarks), else YuNet from the profile or the
    model folder: the geometry cues need landmarks in both cameras."""
    from yingyan.liveness.texture import TextureCue

    policy = station_policy(profile)
    texture = TextureCue(profile.texture) if profile.texture is not None else None
    detector = None
    uses_yunet = engine is not None and engine.config.detector == "yunet"
    if profile.yunet_model is not None or not uses_yunet:
        from yingyan.config import EngineConfig
        from yingyan.detection import make_detector

        model_dir = engine.config.model_dir if engine is not None else None
        limits = engine.config.limits if engine is not None else EngineConfig().limits
        config = EngineConfig(
            detector="yunet", yunet_model=profile.yunet_model, model_dir=model_dir, limits=limits
        )
        detector = make_detector(config)
    rect = rectify(profile.calibration) if profile.calibration is not None else None
    return Station(profile, rect, policy, texture, detector)


def station_policy(profile: StationProfile) -> PadPolicy:
    """The profile's PAD policy (its file or a shipped one) restricted to the station's cues,
    with the profile's multi-frame rule; ConfigError when it cannot decide within max_frames.

    Shipped: an RGB + NIR station gets the policy fitted on rendered image pairs (its cues are
    image-level ones); the others the point simulator's, the only one fitted for them."""
    from yingyan.liveness.fusion import default_policy, rendered_policy

    if profile.policy_path:
        policy = PadPolicy.load(profile.policy_path)
    else:
        policy = rendered_policy() if profile.cameras == "rgb+nir" else default_policy()
    policy = policy.for_cues(_station_cues(profile))
    if profile.pad_window is not None or profile.pad_min_frames is not None:
        window = profile.pad_window or max(policy.window, profile.pad_min_frames or 1)
        min_frames = profile.pad_min_frames or min(policy.min_frames, window)
        policy = replace(policy, window=window, min_frames=min_frames)
    if policy.min_frames > profile.max_frames:
        raise ConfigError(
            f"{profile.path}: the PAD policy decides on {policy.min_frames} frames; max_frames "
            f"is {profile.max_frames}: raise it, or set pad.min_frames"
        )
    return policy


def _station_cues(profile: StationProfile) -> tuple[str, ...]:
    """The cues `station.analysis` measures on this station's cameras, by their names (kept
    here so the service process needs no scipy to read a profile; a test checks them)."""
    names = list(GEOMETRY_CUES) if profile.stereo else []
    if profile.cameras == "rgb+nir":
        names += list(NIR_CUES)
    if profile.texture is not None:
        names.append("rgb_texture")
    return tuple(names)


# The one cache: a worker's stations, by profile file (its size and mtime: an edited file is
# loaded again), so a job loads the MiniFASNet sessions and the rectification once.
_STATIONS: dict[tuple[str, int, int, str], Station] = {}


def cached_station(path: str | Path, engine: Engine) -> Station:
    p = Path(path)
    st = p.stat() if p.is_file() else None
    key = (
        str(p.resolve()),
        st.st_mtime_ns if st else 0,
        st.st_size if st else 0,
        str(engine.model_id),
    )
    station = _STATIONS.get(key)
    if station is None:
        station = open_station(load_profile(p, engine.config.model_dir), engine)
        for old in [k for k in _STATIONS if k[0] == key[0] and k[3] == key[3]]:
            del _STATIONS[old]  # the same file as it was before an edit
        _STATIONS[key] = station
    return station


# -- frames ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptFrames:
    """An attempt's images as sent (encoded bytes): `rgb` camera 1, `second` camera 2 (none for
    an rgb-only station), `second_off` camera 2 with the illuminator off (optional)."""

    rgb: tuple[bytes, ...]
    second: tuple[bytes, ...] = ()
    second_off: tuple[bytes, ...] = ()


def check_counts(profile: StationProfile, frames: AttemptFrames) -> None:
    """Refuse (AttemptInputError) an attempt whose frame counts do not fit the station."""
    n = len(frames.rgb)
    second = "nir" if profile.cameras == "rgb+nir" else "second rgb"
    if n == 0:
        raise AttemptInputError("an attempt needs at least one camera-1 (rgb) frame")
    if n > profile.max_frames:
        raise AttemptInputError(
            f"{n} frames sent; station {profile.name} takes at most {profile.max_frames}"
        )
    if not profile.stereo:
        if frames.second or frames.second_off:
            raise AttemptInputError(f"station {profile.name} has one colour camera: send rgb only")
        return
    if len(frames.second) != n:
        raise AttemptInputError(
            f"{n} rgb frame(s) and {len(frames.second)} {second} frame(s): a station with two "
            "cameras needs one of each per frame pair"
        )
    if frames.second_off and len(frames.second_off) != n:
        raise AttemptInputError(
            f"{len(frames.second_off)} illuminator-off frame(s) for {n} pair(s): one per pair"
        )
    if frames.second_off and profile.cameras != "rgb+nir":
        raise AttemptInputError("illuminator-off frames are for an NIR camera")


def decode_pairs(
    station: Station, frames: AttemptFrames, engine: Engine
) -> list[FramePair] | list[RGBImage]:
    """The frames decoded (the engine's image limits) and checked against the calibration."""
    profile = station.profile
    check_counts(profile, frames)
    rgb = [engine.load(b) for b in frames.rgb]
    if not profile.stereo:
        return rgb
    assert profile.calibration is not None
    kind = "nir" if profile.cameras == "rgb+nir" else "rgb"
    second = [_second(engine.load(b), kind) for b in frames.second]
    off: list[Image | None] = [_second(engine.load(b), kind) for b in frames.second_off]
    off = off or [None] * len(rgb)
    width, height = profile.calibration.image_size
    pairs = []
    for i, (a, b, c) in enumerate(zip(rgb, second, off, strict=True)):
        for what, im in (("rgb", a), (kind, b), ("illuminator-off", c)):
            if im is not None and (im.shape[1], im.shape[0]) != (width, height):
                raise AttemptInputError(
                    f"frame {i}: the {what} image is {im.shape[1]}x{im.shape[0]}; the station's "
                    f"calibration is for {width}x{height}"
                )
        try:
            pairs.append(FramePair(a, b, "rgb", kind, second_off=c))
        except ConfigError as e:
            raise AttemptInputError(f"frame {i}: {e.message}") from None
    return pairs


def _second(image: RGBImage, kind: str) -> Image:
    if kind == "rgb":
        return image
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), dtype=np.uint8)


# -- one attempt -----------------------------------------------------------------------------


def analyse_attempt(
    station: Station,
    frames: Sequence[FramePair] | Sequence[RGBImage],
    engine: Engine,
    *,
    id_photo: RGBImage | None = None,
    embed: bool = True,
    frame_sha256: Sequence[str] | None = None,
) -> AttemptAnalysis:
    """PAD over the frames, the quality gate, and (PAD bona fide, quality good) camera 1's face
    embedded and, with `id_photo`, compared with the ID photo's face. The gallery comparison,
    if any, is `conclude`'s, in the process that holds the gallery."""
    from yingyan.extras import require

    analysis_module = require("yingyan.station.analysis", "station", "a face station's analysis")
    analyse_pair, analyse_rgb = analysis_module.analyse_pair, analysis_module.analyse_rgb
    profile = station.profile
    clock: dict[str, float] = {}
    window = PadWindow(station.policy)
    detect = station.detect(engine)
    out_frames: list[FrameOut] = []
    decision: PadDecision | None = None
    candidates: list[tuple[Face, int]] = []
    for i, frame in enumerate(frames):
        started = time.perf_counter()
        if isinstance(frame, FramePair):
            assert station.rect is not None
            analysis = analyse_pair(frame, station.rect, detect, station.texture)
            image = frame.first
        else:
            image = np.asarray(frame, dtype=np.uint8)
            analysis = analyse_rgb(image, detect, station.texture)
        _tick(clock, "analysis", started)
        for name, seconds in analysis.timings.items():
            if name == "total":
                continue
            clock[f"analysis.{name}"] = clock.get(f"analysis.{name}", 0.0) + float(seconds)
        cues = _for_policy(analysis.cues, station.policy)
        verdict = judge_frame(cues, station.policy)
        decision = window.add(verdict)
        started = time.perf_counter()
        face = None
        if analysis.face is not None:
            (face,) = engine.faces(image, [analysis.face], embed=False)
            candidates.append((face, i))
        _tick(clock, "quality", started)
        out_frames.append(
            FrameOut(
                i,
                analysis.faces_seen,
                str(verdict.verdict),
                _finite(verdict.score),
                verdict.reason,
                verdict.decided_by,
                tuple(CueOut.of(c) for c in verdict.cues),
                round(face.quality.score, 4) if face is not None else None,
            )
        )
    if decision is None:
        raise AttemptInputError("an attempt needs at least one frame")
    pad = PadOut.of(decision, station.policy)
    base = dict(station=profile.name, pad=pad, frames=tuple(out_frames))
    judged = judged_faces(candidates, out_frames)
    best = max(judged or candidates, key=lambda fc: fc[0].quality.score, default=None)

    def ended(
        outcome: Outcome | None,
        reasons: Sequence[str],
        probe: Face | None = None,
        verification: VerificationOut | None = None,
        chosen: int | None = None,
    ) -> AttemptAnalysis:
        quality = None if best is None else best[0].quality.as_dict()
        sha = frame_sha256[chosen] if frame_sha256 is not None and chosen is not None else None
        return AttemptAnalysis(
            **base,  # type: ignore[arg-type]
            probe=probe,
            probe_sha256=sha,
            quality=quality or None,
            outcome=outcome,
            reasons=tuple(reasons),
            verification=verification,
            timings_ms=_ms(clock),
        )

    if decision.verdict is Verdict.ATTACK:
        return ended("attack", [decision.reason])
    if best is None:
        return ended("no_face", [NO_FACE])
    gate = quality_reasons(best[0].quality, profile)
    if decision.verdict is Verdict.RETRY or gate:
        pad_reason = [decision.reason] if decision.verdict is Verdict.RETRY else []
        return ended("retry", [*gate, *pad_reason])
    if not judged:  # bona fide, yet no judged frame shows a face: never verify such a face
        return ended("retry", [HOLD_STILL])
    if not embed:
        return ended(None, [], chosen=best[1])
    face, chosen = best
    started = time.perf_counter()
    (probe,) = engine.faces(frames_image(frames[chosen]), [face.detection])
    _tick(clock, "embed", started)
    if id_photo is None:
        return ended(None, [], probe, chosen=chosen)
    started = time.perf_counter()
    verification = compare_id_photo(probe, id_photo, engine, profile.threshold)
    _tick(clock, "id_photo", started)
    outcome: Outcome = "accepted" if verification.match else "no_match"
    return ended(outcome, _verification_reasons(verification), probe, verification, chosen)


def judged_faces(
    candidates: Sequence[tuple[Face, int]], frames: Sequence[FrameOut]
) -> list[tuple[Face, int]]:
    """The faces (with their frame) that may be verified: those of frames the PAD judged bona
    fide, else of frames the combination scored; never of a frame a gate refused or that
    asked to retry, so live frames around it cannot carry a print shown in one of them."""
    bona = [fc for fc in candidates if frames[fc[1]].verdict == "bona_fide"]
    return bona or [fc for fc in candidates if frames[fc[1]].score is not None]


def frames_image(frame: FramePair | RGBImage) -> RGBImage:
    return frame.first if isinstance(frame, FramePair) else frame


def _for_policy(cues: Sequence[CueResult], policy: PadPolicy) -> list[CueResult]:
    """The frame's cues the policy reads, once each (the first of a name)."""
    seen: dict[str, CueResult] = {}
    for c in cues:
        seen.setdefault(c.cue, c)
    return list(seen.values())


def quality_reasons(q: Quality, profile: StationProfile) -> list[str]:
    """Why camera 1's face is not good enough to verify, as something the person can do
    (empty: good enough). The measures are the engine's (`quality.assess_quality`)."""
    if q.inter_eye_px < profile.min_inter_eye_px:
        need = profile.min_inter_eye_px
        return [f"{COME_CLOSER} (eyes {q.inter_eye_px:.0f} px apart, {need:g} needed)"]
    if q.score >= profile.min_quality:
        return []
    hints = []
    if abs(q.yaw_deg) > 15 or abs(q.roll_deg) > 15:
        hints.append(LOOK_AT_CAMERA)
    if q.sharpness < 60:
        hints.append(HOLD_STILL)
    if q.brightness < 70:
        hints.append("the face is too dark: face the light")
    elif q.brightness > 200:
        hints.append("the face is too bright: step out of the glare")
    if q.contrast < 20 and not hints:
        hints.append("the face has too little contrast: face the light")
    hint = "; ".join(hints) or LOOK_AT_CAMERA
    return [f"{hint} (face quality {q.score:.2f} < {profile.min_quality:g})"]


def compare_id_photo(
    probe: Face, id_photo: RGBImage, engine: Engine, threshold_name: str
) -> VerificationOut:
    """Camera 1's face against the largest face of the ID photo, both of this engine."""
    detections = engine.detect(id_photo)
    main = largest(detections)
    if main is None:
        raise NoFaceError("no face found in the ID photo")
    (reference,) = engine.faces(id_photo, [main])
    assert probe.template is not None and reference.template is not None
    model = str(probe.template.model)
    t = get_threshold(model, threshold_name)
    score = compare(probe.template, reference.template).score
    return _verification("id_document", score, t, model)


def _verification(
    target: Target, score: float, t: Threshold, model: str, **where: Any
) -> VerificationOut:
    return VerificationOut(
        target, round(score, 6), t.score, t.name, t.source, score >= t.score, model, **where
    )


def _verification_reasons(v: VerificationOut) -> list[str]:
    against = "the ID photo" if v.target == "id_document" else f"subject {v.subject!r}"
    if v.match:
        return [f"verified against {against}: score {v.score:.3f} >= {v.threshold:.3f}"]
    return [f"not the same person as {against}: score {v.score:.3f} < {v.threshold:.3f}"]


def subject_threshold(model: str, gallery: tuple[float, str] | None, name: str) -> Threshold:
    """The gallery's threshold when it has one (its own, or its calibration profile's: those
    scores are on another scale), else the profile's named threshold of the model."""
    if gallery is not None:
        return Threshold("gallery", gallery[0], model, gallery[1])
    return get_threshold(model, name)


def verify_against_subject(
    galleries: Any, gallery: str, subject: str, probe: Face, threshold_name: str
) -> VerificationOut:
    """`GalleryService.verify_subject` and its threshold (ModelMismatchError when the gallery
    holds another model's templates; NotFound when the subject is unknown)."""
    assert probe.template is not None
    best = galleries.verify_subject(gallery, subject, probe.template)
    if best is None:
        raise NoTemplatesError(f"subject {subject!r} has no enrolled face")
    model = str(probe.template.model)
    t = subject_threshold(model, galleries.decision_threshold(gallery), threshold_name)
    template_id, score = best
    return _verification(
        "subject", score, t, model, gallery=gallery, subject=subject, template_id=template_id
    )


class NoTemplatesError(YingyanError):
    code = "no_templates"


def conclude(
    analysis: AttemptAnalysis,
    verification: VerificationOut | None = None,
    timings_ms: Mapping[str, float] | None = None,
    stored_template_id: int | None = None,
) -> AttemptResult:
    """The attempt's result: the analysis's own outcome, or the gallery verification's."""
    outcome, reasons = analysis.outcome, list(analysis.reasons)
    v = analysis.verification or verification
    if outcome is None:
        if verification is None:
            raise ValueError("the attempt needs its verification")
        outcome = "accepted" if verification.match else "no_match"
        reasons = _verification_reasons(verification)
    timings = dict(analysis.timings_ms) | dict(timings_ms or {})
    return AttemptResult(
        station=analysis.station,
        outcome=outcome,
        reasons=tuple(reasons),
        pad=analysis.pad,
        verification=v,
        frames=analysis.frames,
        quality=analysis.quality,
        timings_ms=timings,
        stored_template_id=stored_template_id,
    )


def attempt_job(
    profile_path: str,
    frames: AttemptFrames,
    id_photo: bytes | None,
    embed: bool,
    engine: Engine,
) -> AttemptAnalysis:
    """The inference job of one attempt (module-level and picklable: the worker's engine comes
    last): decode, analyse, gate, embed, and compare with the ID photo if one was sent."""
    started = time.perf_counter()
    station = cached_station(profile_path, engine)
    loaded = time.perf_counter()
    pairs = decode_pairs(station, frames, engine)
    photo = engine.load(id_photo) if id_photo is not None else None
    decoded = time.perf_counter()
    shas = [hashlib.sha256(b).hexdigest() for b in frames.rgb]
    analysis = analyse_attempt(
        station, pairs, engine, id_photo=photo, embed=embed, frame_sha256=shas
    )
    extra = {"station": (loaded - started) * 1000, "decode": (decoded - loaded) * 1000}
    return replace(analysis, timings_ms=dict(analysis.timings_ms) | _round(extra))


def run_attempt(
    station: Station,
    frames: Sequence[FramePair] | Sequence[RGBImage],
    engine: Engine,
    *,
    id_photo: RGBImage | None = None,
    subject: str | None = None,
    galleries: Any = None,
) -> AttemptResult:
    """One attempt in this process (the CLI, benchmarks): the same steps as the service, with
    the gallery service (`galleries`) for a subject. Exactly one of `id_photo`, `subject`."""
    profile = station.profile
    check_target(profile, subject, id_photo is not None)
    started = time.perf_counter()
    analysis = analyse_attempt(station, frames, engine, id_photo=id_photo)
    total = {"total": (time.perf_counter() - started) * 1000}
    if analysis.outcome is not None or subject is None:
        return conclude(analysis, timings_ms=_round(total))
    assert analysis.probe is not None and profile.gallery is not None
    begun = time.perf_counter()
    v = verify_against_subject(
        galleries, profile.gallery, subject, analysis.probe, profile.threshold
    )
    done = time.perf_counter()
    timings = {"verify": (done - begun) * 1000, "total": (done - started) * 1000}
    return conclude(analysis, v, _round(timings))


def check_target(profile: StationProfile, subject: str | None, id_photo: bool) -> None:
    """Exactly one target, and one the profile allows (AttemptInputError otherwise)."""
    if (subject is None) == (not id_photo):
        raise AttemptInputError("give either a subject (with its gallery) or an ID photo")
    if subject is not None and profile.gallery is None:
        raise AttemptInputError(
            f"station {profile.name} verifies against ID photos only, not enrolled subjects"
        )
    if id_photo and not profile.id_photo:
        raise AttemptInputError(f"station {profile.name} does not accept ID photos")


def audit_details(result: AttemptResult) -> dict[str, Any]:
    """What the audit log keeps of an attempt: outcome, reasons, the PAD decision with each
    cue's decision and score per frame, the verification's score, threshold and ids; never an
    image, a template or a vector."""
    pad = result.pad
    details: dict[str, Any] = {
        "station": result.station,
        "outcome": result.outcome,
        "reasons": list(result.reasons),
        "pad": {
            "verdict": pad.verdict,
            "score": pad.score,
            "reason": pad.reason,
            "decided_by": list(pad.decided_by),
            "frames": pad.frames,
            "policy": pad.policy,
            "per_frame": [
                {
                    "verdict": f.verdict,
                    "score": f.score,
                    "cues": [[c.cue, c.decision, c.score] for c in f.cues],
                }
                for f in result.frames
            ],
        },
        "quality": round(result.quality["score"], 4) if result.quality else None,
    }
    v = result.verification
    if v is not None:
        details["verification"] = {
            "target": v.target,
            "subject": v.subject,
            "template_id": v.template_id,
            "score": v.score,
            "threshold": v.threshold,
            "threshold_name": v.threshold_name,
            "match": v.match,
            "model": v.model,
        }
    if result.stored_template_id is not None:
        details["stored_template_id"] = result.stored_template_id
    return details


def _finite(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def _tick(clock: dict[str, float], name: str, started: float) -> None:
    clock[name] = clock.get(name, 0.0) + (time.perf_counter() - started)


def _ms(clock: Mapping[str, float]) -> Mapping[str, float]:
    return _round({k: v * 1000 for k, v in clock.items()})


def _round(values: Mapping[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in values.items()}


__all__ = [
    "AttemptAnalysis",
    "AttemptFrames",
    "AttemptInputError",
    "AttemptResult",
    "CueOut",
    "FrameOut",
    "PadOut",
    "Station",
    "VerificationOut",
    "analyse_attempt",
    "attempt_job",
    "audit_details",
    "cached_station",
    "conclude",
    "open_station",
    "run_attempt",
]
