"""SIMULATED presentation-attack figures of the stereo geometry cues (issue 12).

Every number this prints comes from `yingyan.liveness.simulator` (an analytic mean face, sheets
and screens, two pinhole cameras with Gaussian pixel noise), not from real presentations.

- The geometry decision: the epipolar and size-against-distance gates at their default
  thresholds, then the relief score at the threshold giving BPCER <= 1% on simulated bona fide
  faces across the working range (chosen on one seeded set, measured on another).
- Per species: APCER (attacks accepted / attacks decided), the non-response rate (a cue
  abstained), and APCER of the relief and distance cues alone. Screens are shown twice: as an
  RGB + NIR station sees them (camera 2 finds no face: no geometry; the NIR cue refuses them)
  and as an RGB + RGB station would (both cameras see the screen).
- Where it starts to fail: bent and folded prints on a grid of distance x radius / fold angle.
- An adversarial search over bend radius, fold angle, distance, tilt and its axis for the
  attack with the highest score, then that attack's APCER over fresh noise.
- The FUSED decision (`yingyan.liveness.fusion`): a policy fitted on one seed's bona fide and
  attack frames (gates epipolar, distance, NIR; the `--cues` scores, relief by default,
  standardised and combined by a logistic regression; the threshold for BPCER <= 1% on the
  bona fide fit frames alone),
  measured on another seed: per species APCER, the worst species, BPCER, non-response, single
  frame and over several frames of one presentation (the same object, fresh pixel noise).
  Screens at an RGB + RGB station use `policy.for_cues` without the NIR cue.

    .venv/bin/python benchmarks/pad_simulated.py [--seed 12] [--n 300] [--rig default|coarse]
        [--only geometry|fused] [--fit-n 300] [--frames 3] [--window 3] [--min-frames 2]
        [--policy-out policy.json] [--policy default|policy.json] [--fused-adversarial]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from yingyan.evaluation.pad import apcer, bpcer, threshold_for_bpcer
from yingyan.liveness.cues import CueResult, Decision
from yingyan.liveness.fusion import (
    PadPolicy,
    PadWindow,
    Verdict,
    default_policy,
    fit_policy,
    judge_frame,
)
from yingyan.liveness.geometry import GeometryConfig, distance_cue, epipolar_cue
from yingyan.liveness.nir import NirConfig, nir_cue
from yingyan.liveness.relief import ReliefConfig, relief_cue
from yingyan.liveness.simulator import (
    ATTACKS,
    SCREENS,
    Sample,
    SimulatorConfig,
    Species,
    default_rig,
    mean_face,
    simulate,
    simulate_many,
)
from yingyan.station import Rectification, StereoCalibration, rectify

MODEL = mean_face().points
RIGS: dict[str, tuple[dict[str, float], float, float]] = {
    # f 1000 px, B 50 mm, facial points matched to 0.3 px, landmarks to 1 px
    "default": (dict(focal=1000.0, baseline=0.05), 0.3, 1.0),
    # the design note's station: f 800 px, B 40 mm, 1 px matches
    "coarse": (dict(focal=800.0, baseline=0.04), 1.0, 1.0),
}


class Station:
    def __init__(self, rig: StereoCalibration, point_noise: float, landmark_noise: float):
        self.rig = rig
        self.rect: Rectification = rectify(rig)
        self.relief = ReliefConfig(point_noise=point_noise)
        self.geometry = GeometryConfig(landmark_noise=landmark_noise)
        self.sim = SimulatorConfig(point_noise=point_noise, landmark_noise=landmark_noise)
        self.nir = NirConfig(gain=self.sim.nir_gain)

    def cues(self, s: Sample) -> tuple[CueResult, CueResult, CueResult]:
        return (
            epipolar_cue(self.rect, s.landmarks1, s.landmarks2, self.geometry),
            distance_cue(self.rect, s.landmarks1, s.landmarks2, self.geometry),
            relief_cue(self.rect, s.pixels1, s.pixels2, MODEL, self.relief),
        )


def fused(results: tuple[CueResult, CueResult, CueResult]) -> float | None:
    """Hard gates first (a failed gate: -inf), then the relief score; None = no response."""
    epi, dist, rel = results
    if Decision.FAIL in (epi.decision, dist.decision):
        return -math.inf
    if Decision.ABSTAIN in (epi.decision, dist.decision, rel.decision):
        return None
    return rel.score


def _scores(results: list[tuple[CueResult, CueResult, CueResult]]) -> tuple[list[float], int]:
    got = [fused(r) for r in results]
    return [g for g in got if g is not None], sum(g is None for g in got)


def _cue_scores(results: list[tuple[CueResult, CueResult, CueResult]], k: int) -> list[float]:
    return [r[k].score for r in results if r[k].decision is not Decision.ABSTAIN]


def _pct(x: float) -> str:
    return "   n/a" if math.isnan(x) else f"{100 * x:5.1f}%"


def species_table(
    st: Station, n: int, seed: int, threshold: float, relief_threshold: float
) -> dict[str, float]:
    print(f"\n{'species':<28}{'n':>5}{'no resp.':>10}{'APCER':>8}{'relief':>8}{'distance':>9}")
    worst: dict[str, float] = {}
    rows = [(sp, "nir") for sp in ATTACKS] + [(sp, "rgb") for sp in SCREENS]
    for sp, second in rows:
        cfg = SimulatorConfig(st.sim.point_noise, st.sim.landmark_noise, second_camera=second)
        results = [st.cues(s) for s in simulate_many(sp, n, seed + 1, st.rig, cfg)]
        scores, no_response = _scores(results)
        rate = apcer(scores, threshold) if scores else math.nan
        name = sp.value + (" (RGB+RGB)" if second == "rgb" else "")
        relief = _cue_scores(results, 2)
        dist = _cue_scores(results, 1)
        print(
            f"{name:<28}{n:>5}{_pct(no_response / n):>10}{_pct(rate):>8}"
            f"{_pct(apcer(relief, relief_threshold) if relief else math.nan):>8}"
            f"{_pct(apcer(dist, 0.0) if dist else math.nan):>9}"
        )
        if scores:
            worst[name] = rate
    return worst


def grid_table(
    st: Station,
    species: Species,
    key: str,
    values: Sequence[float],
    n: int,
    seed: int,
    threshold: float,
) -> None:
    distances = (0.3, 0.45, 0.6, 0.7, 0.8)
    print(f"\n{species.value}: APCER by {key} (rows) and distance (columns), {n} each")
    print(f"{key:>12}" + "".join(f"{d:>8.2f}" for d in distances))
    for v in values:
        cells = []
        for d in distances:
            samples = simulate_many(
                species, n, seed, st.rig, st.sim, distance=d, overrides={key: v}
            )
            scores, _ = _scores([st.cues(s) for s in samples])
            cells.append(_pct(apcer(scores, threshold) if scores else math.nan))
        print(f"{v:>12g}" + "".join(f"{c:>8}" for c in cells))


def adversarial(
    st: Station,
    species: Species,
    bounds: dict[str, tuple[float, float]],
    fixed: dict[str, float],
    threshold: float,
    seed: int,
    draws: int = 6,
    budget: int = 90,
    score: Callable[[Sample], float | None] | None = None,
    config: SimulatorConfig | None = None,
    floor: float = -5.0,
) -> None:
    """Random search then a shrinking local search for the parameters maximising the mean
    fused score over the same `draws` noise seeds (common random numbers); the best is then
    measured on 200 fresh draws. `score` (None: no response) defaults to the geometry rule;
    scores below `floor` (a gate's -inf) count as `floor` in the mean."""
    rng = np.random.default_rng([seed, 77, list(Species).index(species)])
    keys = list(bounds)
    sim = config or st.sim

    def geometry(s: Sample) -> float | None:
        return fused(st.cues(s))

    score_fn = score or geometry

    def objective(x: np.ndarray, reps: int = draws, base: int = 0) -> tuple[float, float]:
        params = dict(zip(keys, map(float, x), strict=True)) | fixed
        distance = params.pop("distance")
        got = []
        for k in range(reps):
            r = np.random.default_rng([seed, 991, base + k])
            s = simulate(species, r, st.rig, sim, distance=distance, overrides=params)
            got.append(score_fn(s))
        vals = [g for g in got if g is not None]
        mean = float(np.mean(np.maximum(vals, floor))) if vals else -math.inf
        return mean, apcer(vals, threshold) if vals else 0.0

    lo = np.array([bounds[k][0] for k in keys])
    hi = np.array([bounds[k][1] for k in keys])
    candidates = [lo + rng.random(len(keys)) * (hi - lo) for _ in range(budget * 2 // 3)]
    scored = [(objective(x)[0], x) for x in candidates]
    best_val, best = max(scored, key=lambda t: t[0])
    step = 0.25
    for _ in range(budget // 3):
        x = np.clip(best + rng.normal(0, step, len(keys)) * (hi - lo), lo, hi)
        val = objective(x)[0]
        if val > best_val:
            best_val, best = val, x
        else:
            step = max(0.03, step * 0.9)
    mean, rate = objective(best, reps=200, base=10_000)
    shown = ", ".join(f"{k}={v:.3g}" for k, v in zip(keys, best, strict=True))
    print(
        f"  hardest {species.value}: {shown}; mean score {mean:.2f} (threshold "
        f"{threshold:.2f}); APCER over 200 fresh draws {_pct(rate)}"
    )


def nir_table(st: Station, n: int, seed: int) -> None:
    cfg = SimulatorConfig(st.sim.point_noise, st.sim.landmark_noise, render=True)
    nir_cfg = NirConfig(gain=cfg.nir_gain)
    print(f"\nNIR cue at its default bands (rendered camera-2 frames, {n} each)")
    for sp in (Species.BONA_FIDE, *ATTACKS):
        decisions = []
        for s in simulate_many(sp, n, seed + 2, st.rig, cfg):
            if s.landmarks2 is not None:
                d = distance_cue(st.rect, s.landmarks1, s.landmarks2, st.geometry).details.get(
                    "distance_disparity_m", s.distance
                )
            else:
                a = st.rect.rectify_points(s.landmarks1[:2], 1)
                d = st.rect.focal * 0.063 / float(np.linalg.norm(a[0] - a[1]))
            assert s.nir is not None
            decisions.append(nir_cue(s.nir, st.rect, s.landmarks1, d, s.nir_off, nir_cfg).decision)
        share = decisions.count(Decision.PASS) / n
        label = "BPCER" if sp is Species.BONA_FIDE else "APCER"
        value = 1 - share - decisions.count(Decision.ABSTAIN) / n if label == "BPCER" else share
        print(
            f"  {sp.value:<22}{label} {_pct(value)}  no response "
            f"{_pct(decisions.count(Decision.ABSTAIN) / n)}"
        )


# --- the fused decision ---------------------------------------------------------------------

# The simulator renders no colour images: no RGB texture cue at either station.
NIR_STATION = ("epipolar", "distance", "relief", "nir")
RGB_STATION = ("epipolar", "distance", "relief")  # camera 2 colour: no NIR cue


def frame_cues(st: Station, s: Sample) -> list[CueResult]:
    """Every cue the station measures on one frame (the NIR cue when camera 2's frame is NIR)."""
    epi, dist, rel = st.cues(s)
    out = [epi, dist, rel]
    if s.nir is not None:
        d = dist.details.get("distance_disparity_m")
        if d is None:  # no face in camera 2: the distance from camera 1's apparent size
            a = st.rect.rectify_points(s.landmarks1[:2], 1)
            d = st.rect.focal * 0.063 / float(np.linalg.norm(a[0] - a[1]))
        out.append(nir_cue(s.nir, st.rect, s.landmarks1, d, s.nir_off, st.nir))
    return out


def reframe(st: Station, s: Sample, rng: np.random.Generator) -> Sample:
    """Another frame of the same presentation: the same object where it was, fresh pixel noise
    on the points, the landmarks and the NIR frames (not re-rendered: the same shading)."""
    zero = np.zeros(3)
    px1 = cv2.projectPoints(s.points, zero, zero, st.rig.k1, st.rig.d1)[0].reshape(-1, 2)
    rvec = cv2.Rodrigues(st.rig.r)[0]
    px2 = cv2.projectPoints(s.points, rvec, st.rig.t, st.rig.k2, st.rig.d2)[0].reshape(-1, 2)
    seen = np.isfinite(s.pixels1).all(axis=1)
    p1 = px1 + rng.normal(0, st.sim.point_noise, px1.shape)
    p2 = px2 + rng.normal(0, st.sim.point_noise, px2.shape)
    p1[~seen] = np.nan
    p2[~seen] = np.nan
    lm = mean_face().landmarks
    lm1 = px1[lm] + rng.normal(0, st.sim.landmark_noise, (5, 2))
    lm2 = px2[lm] + rng.normal(0, st.sim.landmark_noise, (5, 2))
    sees = s.pixels2 is not None

    def noisy(img: np.ndarray | None) -> np.ndarray | None:
        if img is None:
            return None
        out = img + rng.normal(0, st.sim.image_noise, img.shape)
        return np.clip(np.round(out), 0, 255).astype(np.uint8)

    return dataclasses.replace(
        s,
        pixels1=p1,
        pixels2=p2 if sees else None,
        landmarks1=lm1,
        landmarks2=lm2 if sees else None,
        nir=noisy(s.nir),
        nir_off=noisy(s.nir_off),
    )


@dataclasses.dataclass
class Outcome:
    verdict: Verdict
    decided_by: tuple[str, ...]
    frames: int = 1  # frames fed before the decision


def presentations(
    st: Station, sp: Species, n: int, seed: int, second: str, frames: int
) -> list[list[list[CueResult]]]:
    """n presentations of a species, each `frames` frames of cue results."""
    render = second == "nir"
    cfg = dataclasses.replace(st.sim, second_camera=second, render=render)
    rng = np.random.default_rng([seed, 4242, list(Species).index(sp)])
    out = []
    for s in simulate_many(sp, n, seed, st.rig, cfg):
        shots = [s] + [reframe(st, s, rng) for _ in range(frames - 1)]
        out.append([frame_cues(st, x) for x in shots])
    return out


def single(policy: PadPolicy, pres: Sequence[Sequence[Sequence[CueResult]]]) -> list[Outcome]:
    out = []
    for p in pres:
        v = judge_frame(p[0], policy)
        out.append(Outcome(v.verdict, v.decided_by))
    return out


def windowed(policy: PadPolicy, pres: Sequence[Sequence[Sequence[CueResult]]]) -> list[Outcome]:
    """Frames fed one by one until the window decides (a kiosk stops there) or they run out."""
    out = []
    for p in pres:
        window = PadWindow(policy)
        fed = 0
        for frame in p:
            d = window.add(judge_frame(frame, policy))
            fed += 1
            if d.final:
                break
        out.append(Outcome(d.verdict, d.decided_by, fed))
    return out


def rates(outcomes: list[Outcome]) -> tuple[float, float, float, float]:
    """(accepted / responded, refused / responded, no response / all, responded count)."""
    acc = sum(o.verdict is Verdict.BONA_FIDE for o in outcomes)
    ref = sum(o.verdict is Verdict.ATTACK for o in outcomes)
    resp = acc + ref
    nan = math.nan
    return (
        acc / resp if resp else nan,
        ref / resp if resp else nan,
        1 - resp / len(outcomes),
        resp,
    )


def refused_by(outcomes: list[Outcome], policy: PadPolicy) -> str:
    c = Counter(
        "fused score" if o.decided_by == policy.cues else "+".join(o.decided_by)
        for o in outcomes
        if o.verdict is Verdict.ATTACK
    )
    return ", ".join(f"{k} {v}" for k, v in c.most_common(3))


def fused_tables(
    st: Station,
    n: int,
    n_fit: int,
    seed: int,
    frames: int,
    policy_out: str | None,
    window: int,
    min_frames: int,
    adversarial_search: bool = False,
    policy_in: str | None = None,
    cues: tuple[str, ...] = ("relief",),
) -> None:
    t0 = time.perf_counter()
    if policy_in:  # a given policy ("default": the shipped one) instead of a fit
        given = default_policy() if policy_in == "default" else PadPolicy.load(policy_in)
        given = dataclasses.replace(given, window=window, min_frames=min_frames)
        print(f"\nFUSED decision: policy {given.version} ({given.fitted_on})")
        fused_species(st, given, n, seed, frames, adversarial_search, t0)
        return
    n_att = max(20, n_fit // 2)
    fit_bona = [p[0] for p in presentations(st, Species.BONA_FIDE, n_fit, seed + 20, "nir", 1)]
    fit_att = [p[0] for sp in ATTACKS for p in presentations(st, sp, n_att, seed + 25, "nir", 1)]
    policy = fit_policy(
        fit_bona,
        fit_att,
        target_bpcer=0.01,
        cues=cues,
        fitted_on=(
            f"SIMULATED station (yingyan.liveness.simulator, rig {st.rect.focal:.0f} px, "
            f"B {1000 * st.rect.baseline:.0f} mm): {n_fit} bona fide frames (seed {seed + 20}), "
            f"{n_att} per attack species ({', '.join(a.value for a in ATTACKS)}; seed "
            f"{seed + 25}), NIR rendered. The rgb_texture gate is not fitted here (the simulator "
            "renders no colour images): its own rule, TextureConfig's mean P(live) >= 0.5 over "
            "its window, with its BPCER on top of this fit's"
        ),
        window=window,
        min_frames=min_frames,
    )
    if policy_out:
        policy.save(policy_out)
        print(f"\npolicy written to {policy_out}")
    print(
        f"\nFUSED decision: policy {policy.version}, fitted in {time.perf_counter() - t0:.0f} s "
        f"on {len(fit_bona)} bona fide + {len(fit_att)} attack frames (seeds {seed + 20}, "
        f"{seed + 25})"
    )
    print(f"  gates {', '.join(policy.gates)}; combined {', '.join(policy.cues)}")
    for name, m, sd, w in zip(policy.cues, policy.means, policy.stds, policy.weights, strict=True):
        print(f"    {name:<10} bona fide mean {m:7.3f} sd {sd:6.3f}  weight {w:6.3f}")
    print(
        f"  bias {policy.bias:.3f}; threshold {policy.threshold:.3f} (target BPCER 1%, fit "
        f"BPCER {_pct(policy.fit_bpcer)}); window {policy.window}, min_frames "
        f"{policy.min_frames}"
    )
    for alt in policy.alternatives:
        ws = ", ".join(f"{c} {w:.2f}" for c, w in zip(alt.cues, alt.weights, strict=True))
        print(f"    alternative ({ws}): threshold {alt.threshold:.3f}")
    fused_species(st, policy, n, seed, frames, adversarial_search, t0)


def fused_species(
    st: Station,
    policy: PadPolicy,
    n: int,
    seed: int,
    frames: int,
    adversarial_search: bool,
    t0: float,
) -> None:
    nir = policy.for_cues(NIR_STATION)
    rgb = policy.for_cues(RGB_STATION)
    for lab, pol in (("RGB + NIR", nir), ("RGB + RGB", rgb)):
        print(f"  {lab} station: gates {', '.join(pol.gates)}; combined {', '.join(pol.cues)}")
    label = f"{frames} frames"
    rows = [(Species.BONA_FIDE, "nir")] + [(sp, "nir") for sp in ATTACKS]
    rows += [(sp, "rgb") for sp in SCREENS]
    if n:
        head = f"species (fresh seed {seed + 1})"
        print(
            f"\n{head:<28}{'n':>5}{'no resp.':>10}{'APCER 1fr':>11}{'no resp.':>10}"
            f"{'APCER ' + label:>16}  refused by (1 frame)"
        )
    else:
        rows = []
    worst1: dict[str, float] = {}
    worstk: dict[str, float] = {}
    for sp, second in rows:
        pol = nir if second == "nir" else rgb
        pres = presentations(st, sp, n, seed + 1, second, frames)
        one, many = single(pol, pres), windowed(pol, pres)
        a1, r1, nr1, _ = rates(one)
        ak, rk, nrk, _ = rates(many)
        name = sp.value + (" (RGB+RGB)" if second == "rgb" else "")
        if sp is Species.BONA_FIDE:
            name = "BONA FIDE: BPCER"
            a1, ak = r1, rk
        else:
            if not math.isnan(a1):
                worst1[name] = a1
            if not math.isnan(ak):
                worstk[name] = ak
        print(
            f"{name:<28}{n:>5}{_pct(nr1):>10}{_pct(a1):>11}{_pct(nrk):>10}{_pct(ak):>16}  "
            f"{refused_by(one, pol)}; {label}: mean "
            f"{np.mean([o.frames for o in many]):.1f} frames fed"
        )
    for lab, worst in (("1 frame", worst1), (label, worstk)):
        if worst:
            name, rate = max(worst.items(), key=lambda kv: kv[1])
            if rate > 0:
                print(f"worst species ({lab}): {name}, APCER {_pct(rate)}")
            else:
                print(f"worst species ({lab}): none accepted (APCER 0.0% for every species)")
    if adversarial_search:
        fused_adversarial(st, nir, seed)
    print(f"fused section: {time.perf_counter() - t0:.0f} s")


def fused_adversarial(st: Station, policy: PadPolicy, seed: int) -> None:
    """The adversarial search of the geometry section, on the fused score of one frame (NIR
    rendered; a gate refusal counts as -10 in the mean it maximises)."""
    render = dataclasses.replace(st.sim, render=True)

    def score(s: Sample) -> float | None:
        v = judge_frame(frame_cues(st, s), policy)
        return None if v.verdict is Verdict.RETRY else v.score

    near, far = st.rig.working_range
    print("\nadversarial search on the FUSED score (one frame; 6 common noise draws)")
    common = {"distance": (near, far), "tilt": (0.0, 45.0), "tilt_axis": (0.0, 180.0)}
    searches: list[tuple[Species, dict[str, tuple[float, float]], dict[str, float], int]] = [
        (
            Species.BENT_PRINT,
            {"radius": (0.03, 0.4), **common, "axis_offset": (-0.02, 0.02)},
            {"convex": 1.0, "scale": 1.0},
            seed,
        ),
        (
            Species.BENT_PRINT,
            {"radius": (0.03, 0.4), **common},
            {"convex": 0.0, "scale": 1.0, "axis_offset": 0.0},
            seed + 1,
        ),
        (
            Species.FOLDED_PRINT,
            {"fold_angle": (90.0, 179.0), **common, "crease_offset": (-0.02, 0.02)},
            {"mountain": 1.0, "scale": 1.0},
            seed,
        ),
        (Species.NIR_PRINT, dict(common), {"scale": 1.0}, seed),
    ]
    for species, bounds, fixed, s in searches:
        adversarial(
            st,
            species,
            bounds,
            fixed,
            policy.threshold,
            s,
            score=score,
            config=render,
            floor=-10.0,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--n", type=int, default=300, help="presentations per species")
    ap.add_argument("--rig", choices=sorted(RIGS), default="default")
    ap.add_argument("--grid-n", type=int, default=40)
    ap.add_argument("--nir-n", type=int, default=100)
    ap.add_argument("--only", choices=("geometry", "fused"), help="run one part only")
    ap.add_argument("--fit-n", type=int, help="bona fide frames to fit the fused policy on")
    ap.add_argument("--frames", type=int, default=3, help="frames per presentation (fused)")
    ap.add_argument("--window", type=int, default=3, help="the fused policy's window")
    ap.add_argument("--min-frames", type=int, default=2, help="the fused policy's min_frames")
    ap.add_argument(
        "--fused-adversarial", action="store_true", help="the adversarial search, fused score"
    )
    ap.add_argument(
        "--cues",
        default="relief",
        help="combined cues of the fitted policy, comma-separated (e.g. relief,nir,distance)",
    )
    ap.add_argument("--policy", help="a policy file (or 'default') instead of fitting one")
    ap.add_argument("--policy-out", help="write the fitted fused policy (JSON) here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rig_kw, point_noise, landmark_noise = RIGS[args.rig]
    st = Station(default_rig(rig_kw["focal"], rig_kw["baseline"]), point_noise, landmark_noise)
    print(
        f"SIMULATED figures (yingyan.liveness.simulator), seed {args.seed}, rig {args.rig}: "
        f"f {st.rect.focal:.0f} px, B {1000 * st.rect.baseline:.0f} mm, point noise "
        f"{point_noise} px, landmark noise {landmark_noise} px, working range "
        f"{st.rig.working_range[0]}-{st.rig.working_range[1]} m"
    )
    near, far = st.rig.working_range
    print(
        f"expected depth noise σ_Z: {1000 * st.rect.depth_noise(near, point_noise):.1f} mm at "
        f"{near} m, {1000 * st.rect.depth_noise(far, point_noise):.1f} mm at {far} m"
    )
    if args.only != "geometry":
        fused_tables(
            st,
            args.n,
            args.fit_n or args.n,
            args.seed,
            args.frames,
            args.policy_out,
            args.window,
            args.min_frames,
            args.fused_adversarial,
            args.policy,
            tuple(args.cues.split(",")),
        )
    if args.only == "fused":
        print(f"\n{time.perf_counter() - t0:.0f} s")
        return
    calib = [
        st.cues(s) for s in simulate_many(Species.BONA_FIDE, args.n, args.seed, st.rig, st.sim)
    ]
    test = [
        st.cues(s) for s in simulate_many(Species.BONA_FIDE, args.n, args.seed + 1, st.rig, st.sim)
    ]
    cal_scores, cal_nr = _scores(calib)
    threshold = threshold_for_bpcer(cal_scores, 0.01)
    if not math.isfinite(threshold):  # the gates alone use up the 1%: accept every other face
        threshold = min(x for x in cal_scores if math.isfinite(x))
    relief_threshold = threshold_for_bpcer(_cue_scores(calib, 2), 0.01)
    test_scores, test_nr = _scores(test)
    gates = float(np.mean(np.isneginf(cal_scores)))
    if gates > 0.01:
        print(
            f"WARNING: the gates alone refuse {_pct(gates)} of the calibration faces (> 1%): "
            "the relief threshold accepts every other one"
        )
    relief = np.array(_cue_scores(calib, 2))
    q = np.quantile(relief, [0.01, 0.05, 0.5])
    print(
        f"bona fide relief scores: 1% {q[0]:.2f}, 5% {q[1]:.2f}, median {q[2]:.2f}; "
        f"gates refuse {_pct(gates)}"
    )
    print(
        f"relief threshold for BPCER <= 1% (geometry decision, {args.n} calibration faces): "
        f"{threshold:.3f}; relief alone: {relief_threshold:.3f}"
    )
    print(
        f"bona fide (fresh {args.n}): BPCER {_pct(bpcer(test_scores, threshold))}, "
        f"no response {_pct(test_nr / args.n)} (calibration set: {_pct(cal_nr / args.n)})"
    )
    worst = species_table(st, args.n, args.seed, threshold, relief_threshold)
    if worst:
        name, rate = max(worst.items(), key=lambda kv: kv[1])
        print(f"worst species (of those decided): {name}, APCER {_pct(rate)}")
    grid_table(
        st,
        Species.BENT_PRINT,
        "radius",
        (0.04, 0.06, 0.08, 0.12, 0.2),
        args.grid_n,
        args.seed + 3,
        threshold,
    )
    grid_table(
        st,
        Species.FOLDED_PRINT,
        "fold_angle",
        (100, 130, 150, 165, 175),
        args.grid_n,
        args.seed + 4,
        threshold,
    )
    print("\nadversarial search (random + local, mean fused score over 6 common noise draws)")
    dist = (near, far)
    adversarial(
        st,
        Species.BENT_PRINT,
        {
            "radius": (0.03, 0.4),
            "distance": dist,
            "tilt": (0, 45),
            "tilt_axis": (0, 180),
            "axis_offset": (-0.02, 0.02),
        },
        {"convex": 1.0, "scale": 1.0},
        threshold,
        args.seed,
    )
    adversarial(
        st,
        Species.BENT_PRINT,
        {"radius": (0.03, 0.4), "distance": dist, "tilt": (0, 45), "tilt_axis": (0, 180)},
        {"convex": 0.0, "scale": 1.0, "axis_offset": 0.0},
        threshold,
        args.seed + 1,
    )
    adversarial(
        st,
        Species.FOLDED_PRINT,
        {
            "fold_angle": (90, 179),
            "distance": dist,
            "tilt": (0, 45),
            "tilt_axis": (0, 180),
            "crease_offset": (-0.02, 0.02),
        },
        {"mountain": 1.0, "scale": 1.0},
        threshold,
        args.seed,
    )
    if args.nir_n:
        nir_table(st, args.nir_n, args.seed)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
