"""The fused PAD decision: gates first, a combination calibrated for a target BPCER on bona fide
frames, a decision over several frames, a colour-only station deciding by texture alone; the
policy file; and the shipped policy on seeded simulator presentations (simulated, not real)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from yingyan.errors import ConfigError
from yingyan.evaluation.pad import threshold_for_bpcer
from yingyan.liveness.cues import COME_CLOSER, CueResult
from yingyan.liveness.fusion import (
    FrameVerdict,
    PadPolicy,
    PadWindow,
    Verdict,
    default_policy,
    fit_policy,
    judge_frame,
)
from yingyan.liveness.geometry import distance_cue, epipolar_cue
from yingyan.liveness.nir import NirConfig, nir_cue
from yingyan.liveness.relief import relief_cue
from yingyan.liveness.simulator import (
    Sample,
    SimulatorConfig,
    Species,
    default_rig,
    mean_face,
    simulate_many,
)
from yingyan.liveness.texture import FrameScore, decide
from yingyan.station import rectify

RIG = default_rig()
RECT = rectify(RIG)
MODEL = mean_face().points
NIR_STATION = ("epipolar", "distance", "relief", "nir")
RGB_STATION = ("epipolar", "distance", "relief")
THREE = ("relief", "nir", "distance")


def _cues(s: Sample) -> list[CueResult]:
    """What the simulated station measures on one frame (no colour images: no texture cue)."""
    dist = distance_cue(RECT, s.landmarks1, s.landmarks2)
    out = [
        epipolar_cue(RECT, s.landmarks1, s.landmarks2),
        dist,
        relief_cue(RECT, s.pixels1, s.pixels2, MODEL),
    ]
    if s.nir is not None:
        d = dist.details.get("distance_disparity_m")
        if d is None:
            a = RECT.rectify_points(s.landmarks1[:2], 1)
            d = RECT.focal * 0.063 / float(np.linalg.norm(a[0] - a[1]))
        out.append(nir_cue(s.nir, RECT, s.landmarks1, d, s.nir_off, NirConfig()))
    return out


def _ok(cue: str, score: float) -> CueResult:
    return CueResult.judge(cue, score, 0.0, f"{cue} refuses", f"{cue} passes")


def _frame(relief: float = 1.5, nir: float = 0.4, distance: float = 2.0) -> list[CueResult]:
    return [_ok("epipolar", 2.0), _ok("distance", distance), _ok("relief", relief), _ok("nir", nir)]


def _synthetic_fit(rng: np.random.Generator, n: int = 400, **kw: object) -> PadPolicy:
    bona = [
        _frame(rng.normal(1.3, 0.6), rng.normal(0.4, 0.15), rng.normal(2, 0.6)) for _ in range(n)
    ]
    att = [_frame(rng.normal(-2, 1), rng.normal(0.2, 0.3), rng.normal(2, 0.6)) for _ in range(n)]
    return fit_policy(
        bona,
        att,
        gates=("epipolar", "distance", "nir"),
        cues=("relief", "nir", "distance"),
        fitted_on="synthetic",
        **kw,  # type: ignore[arg-type]
    )


# --- gates ------------------------------------------------------------------------------------


def test_a_failed_gate_refuses_with_its_reason_whatever_the_other_cues_say() -> None:
    policy = default_policy().for_cues(NIR_STATION)
    face = simulate_many(Species.BONA_FIDE, 5, seed=501, config=SimulatorConfig(render=True))
    for s in face:
        assert judge_frame(_cues(s), policy).verdict is Verdict.BONA_FIDE
        # The same face with camera 2's landmarks 8 px off their rows: an unsynchronised pair.
        moved = [
            epipolar_cue(RECT, s.landmarks1, s.landmarks2 + np.array([0.0, 8.0])),
            *_cues(s)[1:],
        ]
        v = judge_frame(moved, policy)
        assert v.verdict is Verdict.ATTACK
        assert v.decided_by == ("epipolar",)
        assert v.reason == moved[0].reason and "epipolar rows" in v.reason
        assert v.score == -math.inf


def test_abstain_is_a_retry_with_its_reason_never_a_pass() -> None:
    policy = default_policy().for_cues(NIR_STATION)
    far = CueResult.abstain("distance", COME_CLOSER)
    v = judge_frame([_ok("epipolar", 3.0), far, _ok("relief", 9.0), _ok("nir", 1.0)], policy)
    assert (v.verdict, v.reason, v.decided_by) == (Verdict.RETRY, COME_CLOSER, ("distance",))
    assert math.isnan(v.score)
    # A combined cue abstaining, or a cue not measured at all: retry too.
    no_relief = [
        _ok("epipolar", 3.0),
        _ok("distance", 3.0),
        CueResult.abstain("relief", COME_CLOSER),
        _ok("nir", 1.0),
    ]
    assert judge_frame(no_relief, policy).verdict is Verdict.RETRY
    missing = judge_frame([_ok("epipolar", 3.0), _ok("distance", 3.0), _ok("relief", 9.0)], policy)
    assert missing.verdict is Verdict.RETRY and missing.reason == "nir not measured"
    # A gate that fails beats a gate that abstains: a screen (no face in NIR, so no geometry).
    screen = [
        CueResult.abstain("epipolar", "no face found in the second camera"),
        CueResult.abstain("distance", "no face found in the second camera"),
        CueResult.abstain("relief", "no face found in the second camera"),
        CueResult.judge("nir", -1.7, 0.0, "no face in the NIR image", ""),
    ]
    assert judge_frame(screen, policy).decided_by == ("nir",)
    # Retries never add up to a pass, however many.
    window = PadWindow(policy)
    for _ in range(10):
        d = window.add(v)
    assert d.verdict is Verdict.RETRY and d.reason == COME_CLOSER and not d.final
    # Simulated faces beyond the working range: asked to come closer, never accepted.
    far_faces = simulate_many(Species.BONA_FIDE, 20, seed=502, distance=0.95)
    got = [judge_frame(_cues(s), policy.for_cues(RGB_STATION)) for s in far_faces]
    assert all(g.verdict is Verdict.RETRY for g in got)
    assert {g.reason for g in got} == {COME_CLOSER}


# --- the combination and its threshold --------------------------------------------------------


def test_threshold_is_a_bona_fide_quantile_giving_bpcer_at_most_the_target() -> None:
    rng = np.random.default_rng(7)
    bona = [
        _frame(rng.normal(1.3, 0.6), rng.normal(0.4, 0.15), rng.normal(2, 0.6)) for _ in range(400)
    ]
    att = [_frame(rng.normal(-2, 1), rng.normal(0.2, 0.3), rng.normal(2, 0.6)) for _ in range(400)]
    for target in (0.01, 0.05):
        policy = fit_policy(
            bona, att, target_bpcer=target, gates=("epipolar",), cues=THREE, fitted_on="synthetic"
        )
        scores = [judge_frame(f, policy).score for f in bona]
        rejected = [judge_frame(f, policy).verdict is Verdict.ATTACK for f in bona]
        assert np.mean(rejected) <= target
        assert np.mean(rejected) == pytest.approx(policy.fit_bpcer)
        # Chosen on the bona fide scores alone: the threshold is one of them, the one the
        # target allows (threshold_for_bpcer), whatever the attacks scored.
        assert policy.threshold == pytest.approx(threshold_for_bpcer(scores, target))
        att_scores = [judge_frame(f, policy).score for f in att]
        assert np.mean(np.asarray(att_scores) >= policy.threshold) < 0.1
    # Gate refusals of bona fide frames count in the budget: with 2% of them refused, a 1%
    # target accepts every other face, and says what it got.
    gated = bona[:392] + [[_ok("epipolar", -1.0), *f[1:]] for f in bona[392:]]
    policy = fit_policy(gated, att, gates=("epipolar",), cues=THREE, fitted_on="synthetic")
    assert policy.fit_bpcer == pytest.approx(0.02)
    assert all(judge_frame(f, policy).verdict is Verdict.BONA_FIDE for f in gated[:392])


def test_a_cue_whose_attacks_look_more_bona_fide_gets_no_weight() -> None:
    rng = np.random.default_rng(8)
    bona = [_frame(rng.normal(1.3, 0.6), distance=rng.normal(2, 0.5)) for _ in range(300)]
    att = [_frame(rng.normal(-2, 1), distance=rng.normal(2.5, 0.5)) for _ in range(300)]
    policy = fit_policy(bona, att, gates=(), cues=("relief", "distance"), fitted_on="synthetic")
    weights = dict(zip(policy.cues, policy.weights, strict=True))
    assert weights["distance"] == 0.0 and weights["relief"] > 0


# --- several frames ---------------------------------------------------------------------------


def _verdict(policy: PadPolicy, **scores: float) -> FrameVerdict:
    return judge_frame(_frame(**scores), policy)


def test_the_decision_needs_min_frames_and_a_majority_of_gate_refusals() -> None:
    policy = _synthetic_fit(np.random.default_rng(9))
    assert (policy.window, policy.min_frames) == (3, 2)
    good, bad = _verdict(policy, relief=2.0), _verdict(policy, relief=-3.0)
    assert good.verdict is Verdict.BONA_FIDE and bad.verdict is Verdict.ATTACK
    gate = _verdict(policy, distance=-1.0)
    assert gate.verdict is Verdict.ATTACK and gate.decided_by == ("distance",)

    w = PadWindow(policy)
    first = w.add(good)
    assert first.verdict is Verdict.RETRY and first.reason == "hold still"
    second = w.add(good)
    assert second.verdict is Verdict.BONA_FIDE and second.frames == 2
    assert second.decided_by == ("epipolar", "distance", "nir", "relief")
    # One gate refusal among three frames is outvoted; two are a majority and refuse.
    w.reset()
    assert w.add(gate).verdict is Verdict.RETRY
    assert w.add(good).verdict is Verdict.RETRY  # one refused, one scored: neither has 2
    assert w.add(good).verdict is Verdict.BONA_FIDE
    w.reset()
    w.add(gate), w.add(good)
    d = w.add(gate)
    assert d.verdict is Verdict.ATTACK and d.decided_by == ("distance",)
    assert d.reason == gate.reason and d.frames == 2
    # The mean score over the scored frames decides, not the last frame.
    w.reset()
    w.add(bad)
    candidates = (_verdict(policy, relief=r) for r in np.linspace(-1, 2, 301))
    middling = next(v for v in candidates if v.verdict is Verdict.BONA_FIDE)  # just passes
    d = w.add(middling)
    assert middling.verdict is Verdict.BONA_FIDE
    assert d.score == pytest.approx((bad.score + middling.score) / 2)
    assert d.score < policy.threshold
    assert d.verdict is Verdict.ATTACK and d.decided_by == policy.cues
    # The window forgets: three frames later the bad one is out of it.
    w.add(good)
    assert w.add(good).verdict is Verdict.BONA_FIDE


# --- stations without some camera ----------------------------------------------------------------


def _texture(scores: list[float]) -> CueResult:
    return decide([FrameScore("scored", s, "") for s in scores], 0.5, 3)


def test_a_colour_only_station_decides_by_texture_alone_and_says_so() -> None:
    policy = default_policy().for_cues(["rgb_texture"])
    assert policy.gates == ("rgb_texture",) and policy.cues == ()
    live, replay = _texture([0.97, 0.95, 0.9]), _texture([0.02, 0.1, 0.04])
    v = judge_frame([live], policy)
    assert (v.verdict, v.decided_by) == (Verdict.BONA_FIDE, ("rgb_texture",))
    v = judge_frame([replay], policy)
    assert (v.verdict, v.decided_by) == (Verdict.ATTACK, ("rgb_texture",))
    assert v.reason == replay.reason
    hold = judge_frame([_texture([0.97])], policy)  # the texture cue's own window not full yet
    assert hold.verdict is Verdict.RETRY
    w = PadWindow(policy)
    w.add(judge_frame([live], policy))
    d = w.add(judge_frame([live], policy))
    assert (d.verdict, d.decided_by) == (Verdict.BONA_FIDE, ("rgb_texture",))
    w.reset()
    w.add(judge_frame([replay], policy))
    assert w.add(judge_frame([replay], policy)).decided_by == ("rgb_texture",)
    # A colour + colour station keeps the geometry, with the combination fitted without NIR.
    rgb = default_policy().for_cues(["rgb_texture", *RGB_STATION])
    assert "nir" not in rgb.gates + rgb.cues and rgb.cues
    with pytest.raises(ConfigError, match="none of its cues"):
        default_policy().for_cues(["face_count"])
    # A policy combining three cues, on a station without NIR: the combination refitted at fit
    # time without the NIR cue (and without its gate), with its own threshold.
    three = _synthetic_fit(np.random.default_rng(11), n=200)
    no_nir = three.for_cues(RGB_STATION)
    assert (no_nir.gates, no_nir.cues) == (("epipolar", "distance"), ("relief", "distance"))
    alt = next(a for a in three.alternatives if a.cues == ("relief", "distance"))
    assert (no_nir.threshold, no_nir.weights) == (alt.threshold, alt.weights)
    assert no_nir.threshold != three.threshold
    v = judge_frame(_frame()[:3], no_nir)
    assert v.verdict is Verdict.BONA_FIDE and "nir" not in v.decided_by


# --- the policy file --------------------------------------------------------------------------


def test_policy_round_trip_and_corrupted_files_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    policy = default_policy()
    policy.save(path)
    assert PadPolicy.load(path) == policy
    fitted = _synthetic_fit(np.random.default_rng(10), n=100)
    fitted.save(path)
    back = PadPolicy.load(path)
    assert back == fitted and back.version.startswith("pad-")
    raw = json.loads(path.read_text())
    bad = {
        "truncated": path.read_text()[:-40],
        "format": json.dumps(raw | {"format": "something else"}),
        "std": json.dumps(raw | {"stds": [-1.0] * len(raw["cues"])}),
        "weights": json.dumps(raw | {"weights": raw["weights"][:1]}),
        "frames": json.dumps(raw | {"min_frames": 5}),
        "missing": json.dumps({k: v for k, v in raw.items() if k != "threshold"}),
        "threshold": json.dumps(raw | {"threshold": "high"}),
        "alternative": json.dumps(raw | {"alternatives": [{"cues": ["relief"]}]}),
    }
    for name, text in bad.items():
        p = tmp_path / f"{name}.json"
        p.write_text(text)
        with pytest.raises(ConfigError, match=name if name != "truncated" else "JSON") as exc:
            PadPolicy.load(p)
        assert str(p) in exc.value.message
    with pytest.raises(ConfigError, match="not found"):
        PadPolicy.load(tmp_path / "absent.json")


def test_the_default_policy_loads_without_models_or_scipy() -> None:
    code = (
        "import sys; from yingyan.liveness.fusion import default_policy; p = default_policy(); "
        "print(p.version, 'scipy' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version, scipy, ort = out.stdout.split()
    assert (scipy, ort) == ("False", "False")
    assert "SIMULATED" in default_policy().fitted_on and version == default_policy().version


# --- simulated presentations ------------------------------------------------------------------


def test_on_the_simulator_the_default_policy_refuses_prints_and_screens_and_passes_faces() -> None:
    """SIMULATED presentations (other seeds than the policy's fit): every flat print, phone
    replay and small photo refused, faces accepted within the 1% budget's sampling noise."""
    render = SimulatorConfig(render=True)
    nir = default_policy().for_cues(NIR_STATION)
    faces = [
        judge_frame(_cues(s), nir) for s in simulate_many(Species.BONA_FIDE, 40, 503, RIG, render)
    ]
    assert sum(f.verdict is Verdict.ATTACK for f in faces) <= 1
    assert sum(f.verdict is Verdict.BONA_FIDE for f in faces) >= 39
    for species, n in (
        (Species.FLAT_PRINT, 30),
        (Species.PHONE_REPLAY, 8),
        (Species.SMALL_PHOTO, 8),
    ):
        got = [judge_frame(_cues(s), nir) for s in simulate_many(species, n, 504, RIG, render)]
        assert all(g.verdict is Verdict.ATTACK for g in got), species
    # A colour + colour station (no NIR cue): the relief combination refuses the prints.
    rgb = default_policy().for_cues(RGB_STATION)
    prints = [judge_frame(_cues(s), rgb) for s in simulate_many(Species.FLAT_PRINT, 30, 505)]
    assert all(p.verdict is Verdict.ATTACK for p in prints)
    assert sum(p.decided_by == rgb.cues for p in prints) >= 28  # the fused score, not a gate


def test_a_policy_fitted_on_simulated_frames_holds_on_a_fresh_seed() -> None:
    """Fit on one seed (colour + colour station, so no rendering), measure on another."""
    species = (Species.FLAT_PRINT, Species.TILTED_PRINT, Species.BENT_PRINT, Species.FOLDED_PRINT)
    bona = [_cues(s) for s in simulate_many(Species.BONA_FIDE, 60, 506)]
    att = [_cues(s) for sp in species for s in simulate_many(sp, 8, 507)]
    policy = fit_policy(
        bona, att, gates=("epipolar", "distance"), cues=("relief", "distance"), fitted_on="sim"
    )
    assert policy.fit_bpcer <= 0.01
    fresh = [judge_frame(_cues(s), policy) for s in simulate_many(Species.BONA_FIDE, 60, 508)]
    assert sum(f.verdict is Verdict.ATTACK for f in fresh) <= 3
    for sp in species:
        got = [judge_frame(_cues(s), policy) for s in simulate_many(sp, 12, 509)]
        assert not any(g.verdict is Verdict.BONA_FIDE for g in got), sp
