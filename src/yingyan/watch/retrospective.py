"""Retrospective search: where does one sought person appear in a case's recorded videos.

The same camera pipeline as a live camera (`CameraPipeline`: the same tracker, best shots and
fused track templates, at most a few searches per track) runs flat out over each file, frame by
frame (no real-time pacing, no adaptive stride: there is no clock to keep up with, so nothing is
skipped), and each track template is compared with the probe's templates (photos of the person,
or an enrolled watchlist subject). Only tracks at or above the threshold come back, with their
time span on the stream's clock, their score and their best-shot crop (JPEG); a track that
matches nothing leaves nothing: its crop and template die with the pipeline's track state.
Matching tracks of one file that overlap or follow within `merge_gap_s` form one span.

The threshold is explicit, or chosen like a watchlist of one subject for a target FPIR per
track (`threshold_for_fpir`), and carried in the result with its source. One audit entry
"video.search" records the case, purpose and legal basis, the files by name and sha256, the
probe by its photos' sha256 or its subject and template ids, the counts and the threshold;
never an image or a template. It commits before the result is returned. Every file is hashed
and opened before any frame is searched; one that then breaks mid-way (truncated, corrupt)
fails the whole search rather than answer for part of it, and that attempt is audited too
(outcome "error": frames were searched).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from yingyan.audit.log import AuditRecord, append, check_record
from yingyan.detection.base import largest
from yingyan.engine import Engine
from yingyan.errors import ConfigError, ImageError, ModelMismatchError, NoFaceError, SourceError
from yingyan.extras import lazy, require
from yingyan.gallery.service import GalleryService
from yingyan.models import file_sha256
from yingyan.store import Database, get_gallery
from yingyan.types import ModelId, Template
from yingyan.video.pipeline import CameraPipeline, PipelineSettings, TrackQuery
from yingyan.video.source import SourceSpec, open_source
from yingyan.watch.alerts import encode_crop
from yingyan.watch.sessions import DEFAULT_TARGET_FPIR, NotWatchlistError
from yingyan.watch.threshold import (
    WatchThreshold,
    explicit_threshold,
    threshold_for_fpir,
)

if TYPE_CHECKING:
    import av
    from av.video.stream import VideoStream
else:  # PyAV is the [video] extra
    av = lazy("av", "video", "a video search")

OPERATION: Final = "video.search"
MERGE_GAP_S: Final = 2.0  # matching tracks this close (stream seconds) form one span
EXPLICIT_SOURCE: Final = "explicit threshold of the search"
# Flat out over a recording: every frame decoded, the base stride kept.
RETRO_PIPELINE: Final = PipelineSettings(adaptive=False)

ProbeKind = Literal["photo", "subject"]


@dataclass(frozen=True, slots=True)
class Case:
    """Why the search is made: all three are required and go into the audit entry."""

    reference: str
    purpose: str
    legal_basis: str

    def __post_init__(self) -> None:
        for what, value in (
            ("case reference", self.reference),
            ("purpose", self.purpose),
            ("legal basis", self.legal_basis),
        ):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"a retrospective search needs a {what}")


@dataclass(frozen=True, slots=True, eq=False)
class Probe:
    """The sought person's templates (one person: a track's score is its best against any of
    them) and how the audit entry names where they came from (hashes and ids only)."""

    templates: tuple[Template, ...]
    kind: ProbeKind
    reference: dict[str, Any]
    gallery: str | None = None

    def __post_init__(self) -> None:
        if not self.templates:
            raise NoFaceError("the probe has no template")
        for t in self.templates[1:]:
            self.templates[0].check_comparable(t)

    @property
    def model(self) -> str:
        return str(self.templates[0].model)

    def score(self, template: Template) -> float:
        """The best cosine score of `template` against the probe's templates."""
        for t in self.templates:
            t.check_comparable(template)
        return max(float(t.vector @ template.vector) for t in self.templates)


@dataclass(frozen=True, slots=True)
class VideoFile:
    path: Path
    name: str
    sha256: str
    size: int
    frames: int  # declared by the container, 0 when unknown
    duration_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "bytes": self.size,
            "frames": self.frames,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
        }


@dataclass(frozen=True, slots=True)
class FileProgress:
    """Handed to the progress callback after each frame (and once when a file starts)."""

    file_index: int  # 0-based
    files: int
    name: str
    frames_done: int
    frames_total: int  # 0 when the container does not say


@dataclass(frozen=True, slots=True, eq=False)
class TrackMatch:
    file: VideoFile
    track_id: int
    first_pts: float
    last_pts: float
    score: float  # best matching search of the track
    best_quality: float
    crop_jpeg: bytes  # the best shot of the matching search

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file.name,
            "track_id": self.track_id,
            "from_s": round(self.first_pts, 3),
            "to_s": round(self.last_pts, 3),
            "score": round(self.score, 4),
            "best_quality": round(self.best_quality, 3),
        }


@dataclass(frozen=True, slots=True)
class Span:
    """Consecutive matching tracks of one file, merged."""

    file: VideoFile
    first_pts: float
    last_pts: float
    score: float  # the best of its tracks
    tracks: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file.name,
            "from_s": round(self.first_pts, 3),
            "to_s": round(self.last_pts, 3),
            "score": round(self.score, 4),
            "tracks": list(self.tracks),
        }


@dataclass(frozen=True, slots=True)
class FileSearch:
    file: VideoFile
    frames: int  # decoded and processed
    tracks: int  # tracks the pipeline followed
    searched: int  # tracks compared with the probe
    matched: int
    seconds: float  # wall time, decoding included

    @property
    def realtime_factor(self) -> float | None:
        """Media seconds searched per wall second."""
        if not self.file.duration_s or self.seconds <= 0:
            return None
        return self.file.duration_s / self.seconds

    def as_dict(self) -> dict[str, Any]:
        factor = self.realtime_factor
        return self.file.as_dict() | {
            "frames_processed": self.frames,
            "tracks": self.tracks,
            "tracks_searched": self.searched,
            "tracks_matched": self.matched,
            "seconds": round(self.seconds, 2),
            "realtime_factor": None if factor is None else round(factor, 2),
        }


@dataclass(frozen=True, slots=True, eq=False)
class RetroResult:
    case: Case
    probe: dict[str, Any]  # the probe as the audit entry names it (hashes, ids)
    threshold: WatchThreshold
    files: tuple[FileSearch, ...]
    matches: tuple[TrackMatch, ...]  # by file, then time
    spans: tuple[Span, ...]
    merge_gap_s: float
    engine: dict[str, str]
    audit_seq: int

    @property
    def tracks_searched(self) -> int:
        return sum(f.searched for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, without the crops (the caller decides where those go)."""
        return {
            "case_reference": self.case.reference,
            "purpose": self.case.purpose,
            "legal_basis": self.case.legal_basis,
            "probe": self.probe,
            "threshold": threshold_dict(self.threshold),
            "merge_gap_s": self.merge_gap_s,
            "engine": self.engine,
            "files": [f.as_dict() for f in self.files],
            "spans": [s.as_dict() for s in self.spans],
            "tracks": [m.as_dict() for m in self.matches],
            "audit_seq": self.audit_seq,
        }


ProgressFn = Callable[[FileProgress], None]


# -- probes --------------------------------------------------------------------------------------


def probe_from_photos(engine: Engine, photos: Sequence[Path]) -> Probe:
    """The largest face of each photo (the subject of a portrait), with `engine`: the same
    models as the video, so the scores compare like for like. NoFaceError names a photo
    without a face; the audit entry will hold the photos' sha256, not their paths."""
    if not photos:
        raise ConfigError("give at least one probe photo")
    templates, hashes = [], []
    for path in photos:
        if not Path(path).is_file():
            raise ImageError(f"probe photo not found: {path}")
        image = engine.load(path)
        main = largest(engine.detect(image))
        if main is None:
            raise NoFaceError(f"{path}: no face found in the probe photo")
        face = engine.faces(image, [main])[0]
        if face.template is None:
            raise NoFaceError(f"{path}: the face could not be embedded")
        templates.append(face.template)
        hashes.append(file_sha256(Path(path)))
    return Probe(tuple(templates), "photo", {"kind": "photo", "sha256": hashes})


def probe_from_subject(service: GalleryService, gallery: str, external_id: str) -> Probe:
    """An enrolled subject's templates. Only a watchlist's subjects may be sought: people in an
    enrolment gallery consented to access control, not to being searched for in recordings."""
    with service.db.read() as s:
        row = get_gallery(s, name=gallery)
        kind, model = row.kind, row.model
    if kind != "watchlist":
        raise NotWatchlistError(
            f"gallery {gallery!r} is an {kind} gallery: only watchlist subjects can be sought"
        )
    vectors = service.subject_vectors(gallery, external_id)
    if not vectors:
        raise NoFaceError(f"subject {gallery}/{external_id} has no template")
    name, _, version = model.partition("@")
    templates = tuple(Template(v, ModelId(name, version), "gallery") for _, v in vectors)
    reference = {
        "kind": "subject",
        "gallery": gallery,
        "external_id": external_id,
        "template_ids": [tid for tid, _ in vectors],
    }
    return Probe(templates, "subject", reference, gallery)


# -- threshold -----------------------------------------------------------------------------------


def search_threshold(
    model: str, *, threshold: float | None = None, target_fpir: float | None = None
) -> WatchThreshold:
    """An explicit cosine threshold, or the one for `target_fpir` per track over one subject."""
    if threshold is not None and target_fpir is not None:
        raise ConfigError("give a threshold or a target FPIR, not both")
    if threshold is None:  # (threshold_for_fpir checks the target's range)
        fpir = DEFAULT_TARGET_FPIR if target_fpir is None else float(target_fpir)
        return threshold_for_fpir(model, 1, fpir)
    return explicit_threshold(model, float(threshold), 1, EXPLICIT_SOURCE)


def threshold_dict(threshold: WatchThreshold) -> dict[str, Any]:
    """As JSON (audit, report): an unknown FMR or FPIR is null, not NaN."""
    out = threshold.as_dict()
    if not math.isfinite(threshold.fmr):
        out["fmr"] = None
    if not math.isfinite(threshold.target_fpir):
        out["target_fpir"] = None
    return out


# -- files ---------------------------------------------------------------------------------------


def inspect_video(path: Path) -> VideoFile:
    """Hash a video file and check it opens as video, before any work starts (a missing file or
    one that is no video fails the whole search up front, not after an hour)."""
    require("av", "video", "a video search")  # the missing extra named before anything else
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"no such video file: {path}")
    try:
        with av.open(str(path), "r") as container:
            if not container.streams.video:
                raise SourceError(f"{path} has no video stream")
            stream = container.streams.video[0]
            frames = int(stream.frames or 0)
            duration = _duration(container.duration, stream)
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise SourceError(f"cannot open video file {path}: {exc}") from None
    return VideoFile(path, path.name, file_sha256(path), path.stat().st_size, frames, duration)


def inspect_videos(files: Sequence[Path | VideoFile]) -> list[VideoFile]:
    """`inspect_video` of each (inspected ones pass through); the same file twice is refused
    (its tracks would be counted twice)."""
    if not files:
        raise ConfigError("give at least one video file")
    videos = [f if isinstance(f, VideoFile) else inspect_video(Path(f)) for f in files]
    seen: dict[str, Path] = {}
    for v in videos:
        if v.sha256 in seen:
            raise ConfigError(f"{v.path} is the same file as {seen[v.sha256]}")
        seen[v.sha256] = v.path
    return videos


def _duration(container_us: int | None, stream: VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None if container_us is None else container_us / 1_000_000


def merge_spans(matches: Sequence[TrackMatch], gap_s: float) -> list[Span]:
    """Matching tracks of each file joined where one starts at most `gap_s` after the span so
    far ends (overlapping tracks included); files in the order given, spans by time."""
    if not gap_s >= 0:
        raise ConfigError("the merge gap must be >= 0 seconds")
    spans: list[Span] = []
    order: dict[str, int] = {}
    for m in matches:
        order.setdefault(m.file.sha256, len(order))
    for m in sorted(matches, key=lambda m: (order[m.file.sha256], m.first_pts, m.track_id)):
        last = spans[-1] if spans else None
        same_file = last is not None and last.file.sha256 == m.file.sha256
        if last is not None and same_file and m.first_pts <= last.last_pts + gap_s:
            spans[-1] = replace(
                last,
                last_pts=max(last.last_pts, m.last_pts),
                score=max(last.score, m.score),
                tracks=(*last.tracks, m.track_id),
            )
        else:
            spans.append(Span(m.file, m.first_pts, m.last_pts, m.score, (m.track_id,)))
    return spans


# -- the search ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _FileRun:
    """What one file's pass keeps: the matching tracks only."""

    file: VideoFile
    probe: Probe
    threshold: float
    hits: dict[int, TrackMatch] = field(default_factory=dict)
    searched: set[int] = field(default_factory=set)

    def search(self, query: TrackQuery) -> TrackMatch | None:
        self.searched.add(query.track_id)
        score = self.probe.score(query.template)
        if score < self.threshold:
            return None
        best = self.hits.get(query.track_id)
        if best is not None and best.score >= score:  # an earlier search matched better
            best = replace(best, last_pts=max(best.last_pts, query.last_pts))
        else:
            best = TrackMatch(
                self.file,
                query.track_id,
                query.first_pts,
                query.last_pts,
                score,
                query.best_quality,
                encode_crop(query.best_crop),
            )
        self.hits[query.track_id] = best
        return best

    def closed(self, track_id: int, pts: float) -> None:
        hit = self.hits.get(track_id)
        if hit is not None and pts > hit.last_pts:
            self.hits[track_id] = replace(hit, last_pts=pts)


def _search_file(
    engine: Engine,
    run: _FileRun,
    settings: PipelineSettings,
    position: tuple[int, int],
    progress: ProgressFn | None,
) -> FileSearch:
    start = time.perf_counter()
    pipeline = CameraPipeline(engine, settings, run.search, camera=run.file.name)
    index, total = position

    def report(done: int) -> None:
        if progress is not None:
            progress(FileProgress(index, total, run.file.name, done, run.file.frames))

    report(0)
    with open_source(SourceSpec(url=str(run.file.path))) as reader:
        for frame in reader.frames():
            for event in pipeline.process(frame):
                if event.kind == "closed":
                    run.closed(event.track_id, event.pts)
            report(pipeline.frames)
        stats = reader.stats()
    for event in pipeline.finish():
        if event.kind == "closed":
            run.closed(event.track_id, event.pts)
    if stats.state == "failed" or stats.errors:
        raise SourceError(f"{run.file.name}: {stats.last_error or 'decoding failed'}")
    return FileSearch(
        run.file,
        pipeline.frames,
        pipeline.tracks_seen,
        len(run.searched),
        len(run.hits),
        time.perf_counter() - start,
    )


def search_videos(
    engine: Engine,
    db: Database,
    probe: Probe,
    files: Sequence[Path | VideoFile],
    case: Case,
    *,
    actor: str,
    threshold: float | None = None,
    target_fpir: float | None = None,
    pipeline: PipelineSettings = RETRO_PIPELINE,
    merge_gap_s: float = MERGE_GAP_S,
    progress: ProgressFn | None = None,
) -> RetroResult:
    """Search `files` (paths, or files already inspected by `inspect_video`) for the person of
    `probe`; audited in `db` ("video.search")."""
    if str(engine.model_id) != probe.model:
        raise ModelMismatchError(
            f"the probe holds templates of {probe.model}, the engine makes {engine.model_id}"
        )
    if not merge_gap_s >= 0:
        raise ConfigError("the merge gap must be >= 0 seconds")
    chosen = search_threshold(probe.model, threshold=threshold, target_fpir=target_fpir)
    check_record(AuditRecord(actor, OPERATION, case_reference=case.reference))
    videos = inspect_videos(files)
    done: list[FileSearch] = []
    matches: list[TrackMatch] = []
    for i, video in enumerate(videos):
        run = _FileRun(video, probe, chosen.score)
        try:
            done.append(_search_file(engine, run, pipeline, (i, len(videos)), progress))
        except SourceError as exc:  # frames were searched: the attempt is on record too
            _audit(db, actor, case, probe, chosen, videos, done, [], "error", exc.message)
            raise
        matches += sorted(run.hits.values(), key=lambda m: (m.first_pts, m.track_id))
    spans = merge_spans(matches, merge_gap_s)
    seq = _audit(db, actor, case, probe, chosen, videos, done, spans, "ok", None)
    return RetroResult(
        case,
        dict(probe.reference),
        chosen,
        tuple(done),
        tuple(matches),
        tuple(spans),
        merge_gap_s,
        engine.describe(),
        seq,
    )


def _audit(
    db: Database,
    actor: str,
    case: Case,
    probe: Probe,
    threshold: WatchThreshold,
    videos: Sequence[VideoFile],
    done: Sequence[FileSearch],
    spans: Sequence[Span],
    outcome: str,
    error: str | None,
) -> int:
    details: dict[str, Any] = {
        "legal_basis": case.legal_basis,
        "probe": probe.reference,
        "files": [v.as_dict() for v in videos],
        "files_searched": len(done),
        "frames": sum(f.frames for f in done),
        "tracks_searched": sum(f.searched for f in done),
        "tracks_matched": sum(f.matched for f in done),
        "spans": [s.as_dict() for s in spans],
        "threshold": threshold_dict(threshold),
    }
    if error is not None:
        details["error"] = error
    record = AuditRecord(
        actor,
        OPERATION,
        outcome=outcome,
        gallery=probe.gallery,
        purpose=case.purpose,
        case_reference=case.reference,
        details=details,
    )
    return db.run(lambda s: append(s, record).seq)
