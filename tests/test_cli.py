"""The CLI end to end: real images in, clear messages and exit codes for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yingyan.cli.main import app

runner = CliRunner()


def test_detect_json_lists_every_face(stills: Path) -> None:
    r = runner.invoke(app, ["detect", str(stills / "two_people.jpg"), "--json"])
    assert r.exit_code == 0, r.output
    faces = json.loads(r.stdout)["faces"]
    assert len(faces) == 2
    assert all(0 <= f["quality"]["score"] <= 1 for f in faces)


def test_verify_json_gives_score_decision_and_threshold(stills: Path) -> None:
    r = runner.invoke(
        app, ["verify", str(stills / "obama.jpg"), str(stills / "obama2.jpg"), "--json"]
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    # the default is the strict threshold (FMR 1e-4 for the worst group's look-alikes)
    assert d["threshold"]["name"] == "strict" and d["threshold"]["fmr"] == 1e-4
    assert d["match"] is (d["score"] >= d["threshold"]["score"])
    assert d["model"].startswith("dlib_resnet_v1@")

    legacy = ["--threshold", "lfw-devtrain", "--json"]
    r = runner.invoke(
        app, ["verify", str(stills / "obama.jpg"), str(stills / "obama2.jpg"), *legacy]
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["match"] is True
    r = runner.invoke(app, ["verify", str(stills / "obama.jpg"), str(stills / "biden.jpg")])
    assert r.exit_code == 0 and "NO MATCH" in r.stdout


def test_verify_with_explicit_threshold(stills: Path) -> None:
    args = ["verify", str(stills / "obama.jpg"), str(stills / "biden.jpg"), "--json"]
    r = runner.invoke(app, [*args, "--threshold-score", "0.5"])
    assert json.loads(r.stdout)["match"] is True  # a lax threshold lets anyone through
    r = runner.invoke(app, [*args, "--threshold-score", "3"])
    assert r.exit_code == 2 and "[-1, 1]" in r.stderr


def test_bad_inputs_exit_2_with_a_message_and_no_traceback(
    tmp_path: Path, stills: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YINGYAN_MODEL_DIR", str(tmp_path))  # no YuNet installed there
    text = tmp_path / "notes.jpg"
    text.write_text("not a jpeg")
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes((stills / "obama.jpg").read_bytes()[:5000])
    cases = [
        (["detect", str(text)], "not an image"),
        (["detect", str(tmp_path / "missing.png")], "no such image"),
        (["verify", str(truncated), str(stills / "obama.jpg")], "truncated"),
        (["detect", str(stills / "obama.jpg"), "--detector", "sift"], "unknown detector"),
        (["detect", str(stills / "obama.jpg"), "--detector", "yunet"], "model path"),
        (["eval", "lfw", "--root", str(tmp_path)], "no LFW image folder"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.output


def test_verify_without_a_face_is_a_clear_error(tmp_path: Path, stills: Path) -> None:
    from PIL import Image

    crop = tmp_path / "suit.png"
    Image.open(stills / "knn/test/obama_and_biden.jpg").crop((0, 900, 550, 1428)).save(crop)
    r = runner.invoke(app, ["verify", str(crop), str(stills / "obama.jpg")])
    assert r.exit_code == 2 and "no face" in r.stderr


def test_eval_lfw_small_protocol_writes_json_and_det_plot(lfw_root: Path, tmp_path: Path) -> None:
    # Four pairs of the development split, as a one-fold pairs file.
    lines = (lfw_root / "pairsDevTest.txt").read_text().splitlines()
    pairs = tmp_path / "pairs4.txt"
    pairs.write_text("\n".join(["2", *lines[1:3], *lines[501:503]]) + "\n")
    out_json, out_png = tmp_path / "r.json", tmp_path / "det.png"
    r = runner.invoke(
        app,
        [
            "eval",
            "lfw",
            "--root",
            str(lfw_root),
            "--pairs",
            str(pairs),
            "--workers",
            "1",
            "--json-out",
            str(out_json),
            "--det-plot",
            str(out_png),
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads(out_json.read_text())
    assert report["n_pairs"] == 4
    assert report["variants"][0]["variant"] == "flip"
    assert report["variants"][0]["accuracy_mean"] == 1.0
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_embed_writes_one_row_per_face_and_reports_bad_files(tmp_path: Path, stills: Path) -> None:
    import numpy as np

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "obama.jpg").write_bytes((stills / "obama.jpg").read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "faces.npz"
    r = runner.invoke(
        app,
        ["embed", str(folder), str(stills / "two_people.jpg"), "--out", str(out), "--threads", "2"],
    )
    assert r.exit_code == 0, r.output
    d = np.load(out)
    assert len(d["paths"]) == 3 and d["templates"].shape == (3, 128)  # 1 + 2 faces
    assert sorted(set(d["paths"])) == sorted(
        [str(folder / "sub/obama.jpg"), str(stills / "two_people.jpg")]
    )
    assert np.allclose(np.linalg.norm(d["templates"], axis=1), 1, atol=1e-5)
    assert list(d["failed_paths"]) == [str(folder / "broken.png")]
    assert str(d["backend"]) == "onnxruntime"
    assert "broken.png" in r.stderr

    r = runner.invoke(app, ["embed", str(folder), "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and ".npz" in r.stderr
    r = runner.invoke(app, ["embed", str(tmp_path / "nowhere"), "--out", str(out)])
    assert r.exit_code == 2 and "no such file or folder" in r.stderr


def test_models_convert_writes_both_onnx_files_and_info_names_the_backend(
    tmp_path: Path,
) -> None:
    r = runner.invoke(app, ["models", "convert", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    names = sorted(p.name.split("-")[0] for p in tmp_path.glob("*.onnx"))
    assert names == ["dlib_mmod", "dlib_resnet_v1"]
    r = runner.invoke(app, ["models", "info", "--detector", "cnn"])
    assert r.exit_code == 0, r.output
    assert "mmod-onnx" in r.stdout and "CPUExecutionProvider" in r.stdout
    r = runner.invoke(app, ["models", "info", "--backend", "tpu"])
    assert r.exit_code == 2 and "unknown backend" in r.stderr
