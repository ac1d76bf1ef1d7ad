"""ISO/IEC 30107-3 PAD metrics on small score lists whose answers are computed by hand in the
comments, including ties at a threshold and presentations the subsystem did not score; the
scores file reader and `yingyan eval pad` on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from yingyan.cli import pad as pad_cli
from yingyan.errors import DatasetError
from yingyan.evaluation import pad
from yingyan.evaluation.pad import BONA_FIDE, Presentation

# bona fide: 5 scored (ascending 0.3, 0.6, 0.8, 0.8, 0.9), 1 abstain, 1 failure to acquire
# print:     4 scored (0.1, 0.2, 0.6, 0.7), 1 abstain
# replay:    4 scored (0.2, 0.5, 0.5, 0.55), 1 failure to acquire; two ties at 0.5
BONA = [0.9, 0.8, 0.8, 0.6, 0.3]
PRINT = [0.1, 0.2, 0.6, 0.7]
REPLAY = [0.5, 0.5, 0.55, 0.2]


def presentations() -> list[Presentation]:
    out = [Presentation(BONA_FIDE, "scored", s) for s in BONA]
    out += [Presentation(BONA_FIDE, "abstain"), Presentation(BONA_FIDE, "fta")]
    out += [Presentation("print", "scored", s) for s in PRINT]
    out += [Presentation("print", "abstain", 0.99)]  # an abstain's score is not used
    out += [Presentation("replay", "scored", s) for s in REPLAY]
    out += [Presentation("replay", "fta")]
    return out


def report(**kw: object) -> pad.PadReport:
    return pad.evaluate(presentations(), threshold=0.5, **kw)  # type: ignore[arg-type]


def test_rates_at_the_threshold_count_ties_as_bona_fide_and_leave_non_responses_out() -> None:
    r = report()
    by = {s.species: s for s in r.species}
    # BPCER: bona fide below 0.5: only 0.3 -> 1/5 (the abstain and the FTA are not errors)
    assert r.bpcer == pytest.approx(1 / 5)
    # print at or above 0.5: 0.6, 0.7 -> 2/4; replay: 0.5, 0.5 (ties accepted), 0.55 -> 3/4
    assert by["print"].apcer == pytest.approx(2 / 4)
    assert by["replay"].apcer == pytest.approx(3 / 4)
    assert (r.worst_species, r.apcer_max) == ("replay", pytest.approx(3 / 4))
    # non-response: bona fide 2/7 (BPNRR), print 1/5, replay 1/5 (APNRR); all: 4/17
    assert r.bona_fide.non_response_rate == pytest.approx(2 / 7)
    assert (r.bona_fide.abstains, r.bona_fide.failures_to_acquire) == (1, 1)
    assert by["print"].counts.non_response_rate == pytest.approx(1 / 5)
    assert (by["replay"].counts.abstains, by["replay"].counts.failures_to_acquire) == (0, 1)
    assert r.non_response_rate == pytest.approx(4 / 17)


def test_bpcer_at_apcer_per_species_and_for_the_worst_species() -> None:
    r = report(apcer_targets=(0.25, 0.05))
    by = {s.species: s for s in r.species}
    # print, APCER <= 25% of 4 allows 1 attack: just above the 2nd highest (0.6); APCER 1/4
    # (0.7). BPCER there: bona fide below 0.6+: 0.3 and 0.6 itself -> 2/5.
    p25 = by["print"].bpcer_at_apcer[0]
    assert 0.6 < p25.threshold < 0.6 + 1e-9
    assert (p25.apcer, p25.bpcer, p25.resolved) == (0.25, pytest.approx(2 / 5), True)
    # replay: the 2nd highest is 0.5, tied with the 3rd: both rejected above it; APCER 1/4
    # (0.55). BPCER just above 0.5: only 0.3 -> 1/5.
    r25 = by["replay"].bpcer_at_apcer[0]
    assert 0.5 < r25.threshold < 0.5 + 1e-9
    assert (r25.apcer, r25.bpcer) == (0.25, pytest.approx(1 / 5))
    # every species at APCER <= 25%: the higher threshold (0.6+) decides; there print has
    # 1/4 and replay 0/4, so APCER_max 1/4 and BPCER 2/5.
    j25 = r.bpcer_at_apcer[0]
    assert j25.threshold == p25.threshold
    assert (j25.apcer, j25.bpcer) == (0.25, pytest.approx(2 / 5))
    # 5% of 4 attacks allows none: above the highest attack of each (0.7, 0.55). Bona fide
    # below 0.7+: 0.3, 0.6 -> 2/5; below 0.55+: 0.3 -> 1/5. Fewer than 20 attacks: unresolved.
    assert by["print"].bpcer_at_apcer[1].bpcer == pytest.approx(2 / 5)
    assert by["replay"].bpcer_at_apcer[1].bpcer == pytest.approx(1 / 5)
    j5 = r.bpcer_at_apcer[1]
    assert 0.7 < j5.threshold < 0.7 + 1e-9 and j5.apcer == 0.0
    assert j5.bpcer == pytest.approx(2 / 5) and not j5.resolved
    assert any("fewer than 20 scored attacks" in n for n in r.notes)


def test_apcer_at_bpcer_keeps_tied_bona_fide_scores_together() -> None:
    r = report(bpcer_targets=(0.2, 0.01, 0.5))
    at20, at1, at50 = r.apcer_at_bpcer
    # BPCER <= 20% of 5 allows 1 rejection: threshold = the 2nd lowest bona fide score, 0.6
    # (0.3 rejected). print at 0.6: 0.6, 0.7 -> 2/4; replay: none -> 0. Worst: print.
    assert (at20.threshold, at20.bpcer) == (0.6, pytest.approx(1 / 5))
    assert at20.apcer == {"print": 0.5, "replay": 0.0}
    assert (at20.worst_species, at20.apcer_max, at20.resolved) == ("print", 0.5, True)
    # 1% of 5 allows none: threshold 0.3, BPCER 0. print: 0.6, 0.7 -> 2/4; replay: 0.5, 0.5,
    # 0.55 -> 3/4. Unresolved (fewer than 100 bona fide presentations).
    assert (at1.threshold, at1.bpcer) == (0.3, 0.0)
    assert (at1.worst_species, at1.apcer_max, at1.resolved) == ("replay", 0.75, False)
    # 50% of 5 allows 2: threshold = the 3rd lowest, 0.8, rejecting 0.3 and 0.6 (2/5); going
    # higher would reject both tied 0.8s too (4/5), so 0.8 it stays. print at 0.8: 0/4.
    assert (at50.threshold, at50.bpcer) == (0.8, pytest.approx(2 / 5))
    assert at50.apcer_max == 0.0


def test_det_curve_per_species_at_every_distinct_threshold() -> None:
    r = report()
    curve = next(c for c in r.det if c.species == "print")
    # thresholds: bona fide and print scores merged, + "above everything" (None)
    assert curve.thresholds == [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, None]
    # at 0.6: print 0.6, 0.7 accepted (2/4); bona fide 0.3 rejected (1/5)
    k = curve.thresholds.index(0.6)
    assert (curve.apcer[k], curve.bpcer[k]) == (0.5, pytest.approx(0.2))
    assert (curve.apcer[0], curve.bpcer[0]) == (1.0, 0.0)
    assert (curve.apcer[-1], curve.bpcer[-1]) == (0.0, 1.0)
    assert {c.species for c in r.det} == {"print", "replay"}


def test_threshold_targets_survive_floating_point() -> None:
    attacks = np.arange(100) / 100  # 0.00 .. 0.99
    # 0.29 * 100 is 28.999999999999996: still 29 attacks allowed, i.e. 0.71 .. 0.99
    t = pad.threshold_for_apcer(attacks, 0.29)
    assert pad.apcer(attacks, t) == pytest.approx(0.29)
    assert 0.70 < t <= 0.71


def test_a_species_never_scored_is_named_and_left_out_of_the_worst() -> None:
    rows = [*presentations(), Presentation("mask", "abstain"), Presentation("mask", "fta")]
    r = pad.evaluate(rows)
    mask = next(s for s in r.species if s.species == "mask")
    assert mask.apcer is None and mask.counts.non_response_rate == 1.0
    assert r.worst_species == "replay"
    assert any(n.startswith("mask: no presentation was scored") for n in r.notes)


def test_missing_bona_fide_or_attacks_or_bad_targets_are_clear_errors() -> None:
    attacks_only = [p for p in presentations() if not p.bona_fide]
    with pytest.raises(DatasetError, match="bona fide"):
        pad.evaluate(attacks_only)
    bona_only = [p for p in presentations() if p.bona_fide]
    with pytest.raises(DatasetError, match="attack"):
        pad.evaluate(bona_only)
    with pytest.raises(DatasetError, match="between 0 and 1"):
        pad.evaluate(presentations(), apcer_targets=(1.0,))
    with pytest.raises(DatasetError, match="finite score"):
        Presentation("print", "scored", None)
    with pytest.raises(DatasetError, match="outcome"):
        Presentation("print", "maybe", 0.5)  # type: ignore[arg-type]


def test_scores_files_json_and_csv(tmp_path: Path) -> None:
    rows = pad.presentation_rows(presentations())
    as_list = tmp_path / "scores.json"
    as_list.write_text(json.dumps(rows))
    as_object = tmp_path / "wrapped.json"
    as_object.write_text(json.dumps({"presentations": rows}))
    assert pad.read_presentations(as_list) == presentations()
    assert pad.read_presentations(as_object) == presentations()
    csv_file = tmp_path / "scores.csv"
    csv_file.write_text(
        "species,score,outcome\nBona Fide,0.9,\nprint,,abstain\nreplay,0.4,scored\n"
    )
    assert pad.read_presentations(csv_file) == [
        Presentation(BONA_FIDE, "scored", 0.9),
        Presentation("print", "abstain", None),
        Presentation("replay", "scored", 0.4),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.json", "{not json", "not valid JSON"),
        ("b.json", '{"rows": []}', "list of presentation objects"),
        ("c.json", "[]", "no presentations"),
        ("d.json", '[{"score": 0.5}]', "presentation 0: 'species'"),
        ("e.json", '[{"species": "print", "score": "high"}]', "'score' must be a number"),
        ("f.json", '[{"species": "print", "score": NaN}]', "finite score"),
        ("g.json", '[{"species": "print"}]', "no score and no outcome"),
        ("h.csv", "species,score\nprint,abc\n", "line 2: score 'abc'"),
        ("i.csv", "kind,score\nprint,0.1\n", "header with species"),
        ("j.csv", "species,score,outcome\nprint,0.1,later\n", "line 2: outcome"),
        ("k.txt", "species,score\n", "must be .json or .csv"),
    ],
)
def test_bad_scores_files_are_refused_with_the_place(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        pad.read_presentations(path)


def _app() -> typer.Typer:
    app = typer.Typer()
    sub = typer.Typer()
    pad_cli.register(sub)
    app.add_typer(sub, name="eval")
    return app


def test_eval_pad_writes_json_and_html(tmp_path: Path) -> None:
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps(pad.presentation_rows(presentations())))
    out = tmp_path / "report"
    r = CliRunner().invoke(_app(), ["eval", "pad", str(scores), "--out-dir", str(out)])
    assert r.exit_code == 0, r.output
    assert "APCER_max 75.00% (replay), BPCER 20.00%" in r.stdout
    data = json.loads((out / "report.json").read_text())
    assert data["worst_species"] == "replay" and data["bpcer"] == pytest.approx(0.2)
    assert data["bona_fide"]["non_response_rate"] == pytest.approx(2 / 7)
    assert data["det"][0]["thresholds"][-1] is None  # valid JSON: no Infinity
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "BPCER20" in page
    assert (out / "det.png").stat().st_size > 1000


def test_eval_pad_bad_input_exits_2_without_a_traceback(tmp_path: Path) -> None:
    scores = tmp_path / "scores.csv"
    scores.write_text("species,score\nprint,0.2\n")
    app, out = _app(), str(tmp_path / "o")
    r = CliRunner().invoke(app, ["eval", "pad", str(scores), "--out-dir", out])
    assert r.exit_code == 2 and "no scored bona fide" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(
        app, ["eval", "pad", str(scores), "--out-dir", out, "--apcer-targets", "5%"]
    )
    assert r.exit_code == 2 and "--apcer-targets" in r.output
    r = CliRunner().invoke(app, ["eval", "pad", str(tmp_path / "none.json"), "--out-dir", out])
    assert r.exit_code == 2 and "cannot read" in r.output
