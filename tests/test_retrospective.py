"""Retrospective search on the shared clip: Alex Lacamoire's photo finds his part of the clip
(0-2.7 s, as the watchlist clip test expects) with crops of his tracks only; a person who is
not in the clip finds nothing and nothing is written; the audit entry names the case and the
files by sha256 and holds nothing biometric; the command runs end to end, and missing,
truncated and corrupt files, a photo without a face and an enrolment gallery end with a
message and exit 2.

As in tests/test_watch_clip.py: only the CNN detector (upsample 0, stride 4) finds Alex, and
dlib's model scores him 0.888-0.900 against his one photo, below the automatic threshold for
one subject at FPIR 1e-3, so the search gets the explicit threshold 0.885."""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from yingyan.audit import entries
from yingyan.audit.log import AuditEntry
from yingyan.cli.main import app
from yingyan.engine import Engine
from yingyan.errors import ConfigError
from yingyan.gallery.factory import open_gallery_service
from yingyan.gallery.service import EnrollItem
from yingyan.settings import Settings
from yingyan.store import create_gallery, open_database
from yingyan.store.tables import AlertRow, TemplateRow
from yingyan.video.pipeline import PipelineSettings
from yingyan.watch.camera import video_engine_config
from yingyan.watch.retrospective import (
    EXPLICIT_SOURCE,
    Case,
    RetroResult,
    Span,
    TrackMatch,
    VideoFile,
    merge_spans,
    probe_from_photos,
    probe_from_subject,
    search_threshold,
    search_videos,
)
from yingyan.watch.sessions import NotWatchlistError
from yingyan.watch.threshold import threshold_for_fpir

from .conftest import shared_path

pytestmark = pytest.mark.shared
runner = CliRunner()
THRESHOLD = 0.885
ALEX_ENDS = 2.8  # Alex's part of the clip ends by then
JPEG = b"\xff\xd8\xff"
CASE = Case("W-1", "find the pianist named in warrant W-1", "court order W-1")
CNN_ARGS = ("--detector", "cnn", "--upsample", "0", "--detect-every", "4")


def _clip() -> Path:
    return shared_path("datasets", "video", "short_hamilton_clip.mp4")


def _photo(person: str) -> Path:
    folder = shared_path("datasets", "video", "knn", "train", person)
    return sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".jpeg"))[0]


def _search_args(
    out: Path, data: Path, *files: Path, probe: Path | None = None, who: list[str] | None = None
) -> list[str]:
    """`video search` with the case; `who` (e.g. ["--subject", "g/s"], or []) replaces the
    probe photo (default Alex's)."""
    if who is None:
        who = ["--probe", str(probe or _photo("alex_lacamoire"))]
    return [
        "video",
        "search",
        *who,
        "--case",
        CASE.reference,
        "--purpose",
        CASE.purpose,
        "--legal-basis",
        CASE.legal_basis,
        "--out",
        str(out),
        "--data-dir",
        str(data),
        *map(str, files),
    ]


def _audit(data: Path) -> list[AuditEntry]:
    with open_database(None, data) as db, db.read() as s:
        return entries(s)


def _no_jpeg_in(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert JPEG not in path.read_bytes(), path


@pytest.fixture(scope="module")
def hog_engine() -> Engine:
    """The video default (HOG on the frame as it is, one thread), loaded once."""
    return Engine(video_engine_config(Settings(workers=0)))


@dataclass(frozen=True)
class CliRun:
    output: str
    out: Path
    data: Path
    report: dict[str, Any]


@pytest.fixture(scope="module")
def alex_run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """One end-to-end command over the clip (the expensive part: CNN over 275 frames)."""
    root = tmp_path_factory.mktemp("retro")
    out, data = root / "case-W-1", root / "data"
    args = _search_args(out, data, _clip())
    result = runner.invoke(app, [*args, *CNN_ARGS, "--threshold", str(THRESHOLD)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    return CliRun(result.output, out, data, report)


def test_the_command_finds_alex_in_his_part_of_the_clip(alex_run: CliRun) -> None:
    report = alex_run.report
    assert report["spans"], report
    for span in report["spans"]:
        assert span["file"] == "short_hamilton_clip.mp4"
        assert 0.0 <= span["from_s"] <= span["to_s"] < ALEX_ENDS
        assert span["score"] >= THRESHOLD
    assert report["threshold"]["score"] == THRESHOLD
    assert report["threshold"]["source"] == EXPLICIT_SOURCE
    (searched,) = report["files"]
    assert searched["frames_processed"] == 275 and searched["tracks_searched"] >= 3
    assert searched["tracks_matched"] == len(report["tracks"]) < searched["tracks_searched"]
    assert "short_hamilton_clip.mp4" in alex_run.output
    assert f"{len(report['tracks'])} matched" in alex_run.output
    assert "mode 0600" in alex_run.output


def test_crops_only_for_the_matching_tracks_private(alex_run: CliRun) -> None:
    tracks = alex_run.report["tracks"]
    crops = {t["crop_file"] for t in tracks}
    assert {p.name for p in alex_run.out.iterdir()} == crops | {"report.json"}
    assert stat.S_IMODE(alex_run.out.stat().st_mode) == 0o700
    for path in alex_run.out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for t in tracks:
        with Image.open(alex_run.out / t["crop_file"]) as crop:
            assert crop.format == "JPEG" and min(crop.size) >= 40
        assert t["to_s"] < ALEX_ENDS
    span_tracks = sorted(i for s in alex_run.report["spans"] for i in s["tracks"])
    assert span_tracks == sorted(t["track_id"] for t in tracks)


def test_the_search_is_audited_with_file_hashes_and_nothing_biometric(alex_run: CliRun) -> None:
    (entry,) = _audit(alex_run.data)
    assert entry.operation == "video.search" and entry.outcome == "ok"
    assert entry.case_reference == CASE.reference and entry.purpose == CASE.purpose
    details = dict(entry.details)
    assert details["legal_basis"] == CASE.legal_basis
    sha = hashlib.sha256(_clip().read_bytes()).hexdigest()
    assert [(f["name"], f["sha256"]) for f in details["files"]] == [
        ("short_hamilton_clip.mp4", sha)
    ]
    photo_sha = hashlib.sha256(_photo("alex_lacamoire").read_bytes()).hexdigest()
    assert details["probe"] == {"kind": "photo", "sha256": [photo_sha]}
    assert alex_run.report["probe"] == details["probe"]
    assert details["tracks_searched"] == alex_run.report["files"][0]["tracks_searched"]
    assert details["tracks_matched"] == len(alex_run.report["tracks"])
    assert details["threshold"]["score"] == THRESHOLD
    assert entry.seq == alex_run.report["audit_seq"]
    text = json.dumps(details)
    assert str(_clip().parent) not in text  # file names and hashes, not paths
    assert len(text) < 4000  # ids, counts and hashes only: no encoded image or vector
    with open_database(None, alex_run.data) as db, db.read() as s:
        assert s.scalar(select(func.count()).select_from(TemplateRow)) == 0
    _no_jpeg_in(alex_run.data)


def test_someone_not_in_the_clip_is_found_nowhere_and_nothing_is_written(
    tmp_path: Path, hog_engine: Engine
) -> None:
    # The video default (HOG, no upsampling) follows the other people in the clip.
    data, engine = tmp_path / "data", hog_engine
    probe = probe_from_photos(engine, [_photo("biden")])
    frames: list[int] = []
    with open_database(None, data) as db:
        before = {p.name for p in data.iterdir()}
        result = search_videos(
            engine,
            db,
            probe,
            [_clip()],
            CASE,
            actor="test:investigator",
            threshold=THRESHOLD,
            pipeline=PipelineSettings(adaptive=False, detect_every=3),
            progress=lambda p: frames.append(p.frames_done),
        )
        with db.read() as s:
            assert s.scalar(select(func.count()).select_from(TemplateRow)) == 0
            assert s.scalar(select(func.count()).select_from(AlertRow)) == 0
    assert isinstance(result, RetroResult)
    assert result.matches == () and result.spans == ()
    assert result.tracks_searched >= 2  # people were tracked and compared
    assert frames[0] == 0 and frames[-1] == 275 == result.files[0].frames
    assert {p.name for p in data.iterdir()} <= before | {"yingyan.db-wal", "yingyan.db-shm"}
    _no_jpeg_in(data)
    (entry,) = _audit(data)
    assert entry.details["tracks_matched"] == 0 and entry.details["spans"] == []
    assert entry.details["tracks_searched"] == result.tracks_searched


def test_a_watchlist_subject_is_a_probe_an_enrolment_subject_is_not(
    tmp_path: Path, hog_engine: Engine
) -> None:
    engine = hog_engine
    photo = probe_from_photos(engine, [_photo("alex_lacamoire")])
    service = open_gallery_service(Settings(data_dir=tmp_path / "data", workers=0))
    try:
        for name, kind in (("sought", "watchlist"), ("staff", "enrollment")):
            service.write(
                lambda s, name=name, kind=kind: create_gallery(
                    s,
                    name=name,
                    kind=kind,
                    purpose="warrant W-1" if kind == "watchlist" else "door access",
                    legal_basis="court order W-1" if kind == "watchlist" else "consent",
                    model=str(engine.model_id),
                )
            )
            item = EnrollItem("alex", photo.templates[0], 0.9, "0" * 64)
            service.enroll(name, [item])
        probe = probe_from_subject(service, "sought", "alex")
        assert probe.reference["template_ids"] and probe.gallery == "sought"
        assert probe.score(photo.templates[0]) == pytest.approx(1.0, abs=1e-5)
        with pytest.raises(NotWatchlistError):
            probe_from_subject(service, "staff", "alex")
    finally:
        service.close()
        service.db.close()
    args = _search_args(tmp_path / "o", tmp_path / "data", _clip(), who=["--subject", "staff/alex"])
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "watchlist" in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_bad_input_is_a_message_and_exit_2(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(_clip().read_bytes()[:300_000])  # its index (moov) is at the end
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    cases = [
        (_search_args(out, data, truncated), "cannot open video file"),
        (_search_args(out, data, tmp_path / "missing.mp4"), "no such video file"),
        (_search_args(out, data, _clip(), probe=blank), "no face"),
        (_search_args(out, data, _clip(), _clip()), "same file"),
        (_search_args(out, data, _clip(), who=[]), "--probe"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
    assert not out.exists()  # nothing written
    assert not data.exists() or _audit(data) == []  # nothing was searched


def test_a_file_that_breaks_midway_fails_and_the_attempt_is_audited(tmp_path: Path) -> None:
    # Remuxed with its index first (as recorders often write), then cut: it opens, half decodes.
    whole, cut = tmp_path / "faststart.mp4", tmp_path / "cut.mp4"
    with (
        av.open(str(_clip())) as src,
        av.open(str(whole), "w", options={"movflags": "faststart"}) as dst,
    ):
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    blob = whole.read_bytes()
    cut.write_bytes(blob[: len(blob) // 2])
    data, out = tmp_path / "data", tmp_path / "out"
    args = _search_args(out, data, cut, probe=_photo("biden"))
    result = runner.invoke(app, [*args, "--detect-every", "8"])
    assert result.exit_code == 2 and "truncated or corrupt" in result.output, result.output
    assert not out.exists()
    (entry,) = _audit(data)
    assert entry.outcome == "error" and "truncated" in entry.details["error"]
    assert entry.details["files"][0]["sha256"] == hashlib.sha256(cut.read_bytes()).hexdigest()


# -- pure parts ----------------------------------------------------------------------------------


def _file(name: str) -> VideoFile:
    return VideoFile(Path(name), name, hashlib.sha256(name.encode()).hexdigest(), 1, 0, None)


def _match(file: VideoFile, track: int, first: float, last: float, score: float) -> TrackMatch:
    return TrackMatch(file, track, first, last, score, 0.5, b"")


def test_close_or_overlapping_tracks_of_a_file_merge_into_spans() -> None:
    a, b = _file("a.mp4"), _file("b.mp4")
    matches = [
        _match(a, 3, 10.0, 12.0, 0.90),
        _match(a, 1, 0.0, 2.0, 0.89),
        _match(a, 2, 1.5, 4.0, 0.91),  # overlaps track 1
        _match(b, 1, 4.5, 5.0, 0.95),  # another file: never merged with a's
        _match(a, 4, 13.9, 15.0, 0.88),  # 1.9 s after track 3
    ]
    spans = merge_spans(matches, 2.0)
    assert spans == [
        Span(a, 0.0, 4.0, 0.91, (1, 2)),
        Span(a, 10.0, 15.0, 0.90, (3, 4)),
        Span(b, 4.5, 5.0, 0.95, (1,)),
    ]
    assert len(merge_spans(matches, 0.0)) == 4  # only the overlap merges
    with pytest.raises(ConfigError):
        merge_spans(matches, -1.0)


def test_the_threshold_is_explicit_or_for_a_target_fpir_over_one_subject() -> None:
    model = "dlib_resnet_v1@55533b28a958"
    auto = search_threshold(model)  # FPIR 1e-3 over one subject
    assert auto.watchlist_size == 1 and auto.target_fpir == 1e-3
    assert auto.score == threshold_for_fpir(model, 1, 1e-3).score  # a 1-subject watchlist's
    assert auto.score > THRESHOLD  # Alex's 0.887 is below the automatic threshold
    assert "FPIR 0.001 over 1 subject" in auto.source
    stricter = search_threshold(model, target_fpir=1e-4)
    assert stricter.score > auto.score
    explicit = search_threshold(model, threshold=THRESHOLD)
    assert explicit.score == THRESHOLD and explicit.source == EXPLICIT_SOURCE
    assert 0 < explicit.fmr < 1
    for bad in ({"threshold": 1.5}, {"target_fpir": 0.5}, {"threshold": 0.9, "target_fpir": 1e-3}):
        with pytest.raises(ConfigError):
            search_threshold(model, **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Case("W-1", " ", "court order")
