"""The shared clip's watchlist set-up, for the tests that watch it (in process, through a
camera worker, through the runtime and the CLI): Alex Lacamoire's photo on a watchlist, the
CNN detector without upsampling at stride 4, and the session's explicit threshold (dlib's model
scores his track 0.888-0.900, below the automatic threshold for one subject; see
tests/test_watch_clip.py and the README)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from yingyan.engine import Engine
from yingyan.gallery.service import EnrollItem, GalleryService
from yingyan.settings import Settings
from yingyan.store import create_gallery
from yingyan.watch.camera import video_engine_config

from .conftest import shared_path

ACTOR = "test:lead"
ENGINE = {"detector": "cnn", "upsample": 0}
PIPELINE = {"adaptive": False, "detect_every": 4}
THRESHOLD = 0.885
WATCHLIST = "sought"
ALEX = "alex_lacamoire"
ALEX_UNTIL_PTS = 2.8  # he is in the first 2.7 s of the clip

_ENGINE: Engine | None = None


def clip_engine() -> Engine:
    """One engine per test process: models load once."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Engine(video_engine_config(Settings(workers=0), ENGINE))
    return _ENGINE


def clip_path() -> Path:
    return shared_path("datasets", "video", "short_hamilton_clip.mp4")


def alex_photos() -> list[Path]:
    return sorted(shared_path("datasets", "video", "knn", "train", ALEX).glob("*.jpg"))


def enroll_watchlist(service: GalleryService, people: dict[str, list[Path]]) -> None:
    """The watchlist gallery WATCHLIST with the largest face of each photo of each person."""
    engine = clip_engine()
    model = str(engine.model_id)

    def work(s: Any) -> None:
        create_gallery(
            s,
            name=WATCHLIST,
            kind="watchlist",
            purpose="find the people named in warrant W-1",
            legal_basis="court order W-1",
            model=model,
        )

    service.write(work)
    items = []
    for person, photos in people.items():
        for photo in photos:
            faces = engine.faces(engine.load(photo))
            face = max(faces, key=lambda f: f.detection.box.area)
            assert face.template is not None
            sha = hashlib.sha256(photo.read_bytes()).hexdigest()
            items.append(EnrollItem(person, face.template, face.quality.score, sha))
    if items:
        service.enroll(WATCHLIST, items)


def slowed_clip(target: Path, *, until_s: float = 1.6, factor: int = 4) -> Path:
    """The clip's first `until_s` seconds (the CNN finds Alex in about 0.7-1.4 s) played
    `factor` times slower, as a temporary file for the RTSP camera: the same H.264 packets
    remuxed with stretched timestamps (no re-encoding). A live worker keeps only the freshest
    frame; on a loaded test machine it processes a third of a 30 fps stream or less and misses
    him, which is what a slow machine does, but not what the runtime tests are about
    (reconnects, restarts, alerts not duplicated). Slowed down, it sees about as many of his
    frames as from the file, and the short clip shows him again every few seconds (the server
    plays it once per connection, the worker reconnects at its end)."""
    import av

    with av.open(str(clip_path())) as source, av.open(str(target), "w", format="mp4") as out:
        stream = source.streams.video[0]
        copy = out.add_stream_from_template(stream)
        start, base = stream.start_time or 0, stream.time_base
        assert base is not None
        for packet in source.demux(stream):
            if packet.dts is None or packet.pts is None:
                continue  # the demuxer's final flush packet
            if float((packet.pts - start) * base) > until_s:
                break
            packet.pts = (packet.pts - start) * factor
            packet.dts = (packet.dts - start) * factor
            packet.duration = (packet.duration or 0) * factor
            packet.stream = copy
            out.mux(packet)
    return target
