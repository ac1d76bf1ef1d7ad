"""`yingyan embed` over folders that mix faces, photos without a detectable face and unreadable
files: each file is reported, none is fatal; a run that finds no face at all exits 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from yingyan.cli.main import app

runner = CliRunner()


def _no_face_photos(folder: Path, stills: Path) -> list[Path]:
    """A real photo crop with no face (a suit below the faces) and a blank grey image."""
    folder.mkdir(parents=True, exist_ok=True)
    suit, blank = folder / "suit.png", folder / "blank.png"
    Image.open(stills / "knn/test/obama_and_biden.jpg").crop((0, 900, 550, 1428)).save(suit)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)
    return [blank, suit]


def test_embed_reports_files_without_a_face_and_keeps_the_others(
    tmp_path: Path, stills: Path
) -> None:
    folder = tmp_path / "photos"
    no_face = _no_face_photos(folder, stills)
    (folder / "obama.jpg").write_bytes((stills / "obama.jpg").read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "faces.npz"
    r = runner.invoke(app, ["embed", str(folder), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and r.exception is None
    assert "4 image(s), 1 face(s), 2 without a face, 1 failed" in r.stdout
    assert all(f"no face: {p}" in r.stderr for p in no_face), r.stderr
    with np.load(out) as z:
        assert z["paths"].tolist() == [str(folder / "obama.jpg")]
        assert z["templates"].shape == (1, 128) and z["boxes"].shape == (1, 4)
        assert sorted(z["no_face_paths"].tolist()) == [str(p) for p in no_face]
        assert z["failed_paths"].tolist() == [str(folder / "broken.jpg")]


def test_embed_with_no_face_anywhere_exits_2_and_writes_nothing(
    tmp_path: Path, stills: Path
) -> None:
    folder = tmp_path / "photos"
    _no_face_photos(folder, stills)
    out = tmp_path / "faces.npz"
    r = runner.invoke(app, ["embed", str(folder), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "no face found in any of 2 image file(s)" in r.stderr
    assert "Traceback" not in r.output and not out.exists()
