"""A watchlist's alert threshold, chosen for a target false-positive identification rate.

Open-set 1:N (NIST FRVT 1:N): FPIR is the share of non-mated searches (passers not on the
watchlist) that raise any alert, i.e. whose best score over the watchlist's N subjects reaches
the threshold t. For one passer p whose comparisons with a random person exceed t with
probability q_p(t), a random watchlist of N people gives 1 - (1 - q_p)^N; FPIR is its mean over
passers. Passers differ (one who looks like somebody scores high against several subjects), so
the N comparisons of a passer are not independent draws from the pooled impostor tail q(t): the
rule 1 - (1 - q)^N overstates FPIR once N·q is not small. A gamma spread of q_p with shape α and
mean q(t) gives the closed form

    FPIR_N(t) = 1 - (1 + N·q(t)/α)^(-α)       (α → ∞: the independent rule)

That is the mean over watchlists. One watchlist's FPIR is a sum over its subjects of how many
passers each attracts, and attraction is very uneven (dlib's model scores some faces, notably
East Asian ones, high against many other people), so on LFW lists of 100 scatter from under
half to 1.7 times that mean (10th to 90th percentile). The threshold therefore targets the 90th
percentile over watchlists: the sum of N attractions with coefficient of variation c(t) is
taken as log-normal with σ² = ln(1 + c²/N) (Fenton-Wilkinson), which multiplies the mean by
exp(1.28σ - σ²/2), never by less than 1; c grows with the threshold (log10 c linear in decades
of q).

`FpirModel` holds q (a `Tail` of passer-versus-enrolled impostor scores), α and c, all fitted on
passers' best scores over watchlists drawn from a reference set of people disjoint from any
evaluation data (`benchmarks/fit_watch_threshold.py`, data in `watch/fpir_fits.py`). The
threshold solves FPIR_N(t) = target at that percentile; every alert carries it and where it
came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from yingyan.comparison.similarity import Tail
from yingyan.errors import ConfigError
from yingyan.watch import fpir_fits

MIN_FPIR = 1e-6
MAX_FPIR = 0.1
LEVEL = 0.9  # share of watchlists of a size whose FPIR the threshold keeps at the target
_Z = 1.2815515655446004  # the standard normal's 0.9 quantile


@dataclass(frozen=True, slots=True)
class WatchThreshold:
    score: float  # cosine; a candidate alerts when its score is >= this
    model: str
    target_fpir: float
    watchlist_size: int
    fmr: float  # the per-comparison false match rate it stands for
    source: str

    def as_dict(self) -> dict[str, object]:
        return {
            "score": round(self.score, 6),
            "model": self.model,
            "target_fpir": self.target_fpir,
            "watchlist_size": self.watchlist_size,
            "fmr": self.fmr,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class FpirModel:
    """FPIR of a passer's best score over N subjects: 1 - (1 + N·q(t)/α)^(-α)."""

    model: str
    tail: Tail  # q(t): passer-versus-enrolled impostor scores of the reference set
    alpha: float  # gamma shape of the passers' q_p: smaller is more uneven (hubs)
    source: str
    spread_at_4: float = 0.0  # log10 c, subjects' attraction CV, where q = 1e-4 (0: no margin)
    spread_slope: float = 0.0  # d log10 c / d decade of q

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError("the gamma shape alpha must be positive")

    def mean_fpir(self, score: float, watchlist_size: int) -> float:
        """FPIR at cosine `score` for `watchlist_size` subjects, mean over watchlists."""
        nq = max(1, watchlist_size) * min(1.0, 10.0 ** -float(self.tail.phi(score)))
        if math.isinf(self.alpha):
            return -math.expm1(-nq)
        return -math.expm1(-self.alpha * math.log1p(nq / self.alpha))

    def margin(self, score: float, watchlist_size: int) -> float:
        """90th percentile over watchlists / mean: exp(zσ - σ²/2), σ² = ln(1 + c²/N); at least 1
        (for very skewed sums that percentile falls below the mean, which stays the bound)."""
        if self.spread_at_4 == 0.0 and self.spread_slope == 0.0:
            return 1.0
        log_c = self.spread_at_4 + self.spread_slope * (float(self.tail.phi(score)) - 4.0)
        var = math.log1p(10.0 ** (2 * log_c) / max(1, watchlist_size))
        return max(1.0, math.exp(_Z * math.sqrt(var) - var / 2))

    def fpir(self, score: float, watchlist_size: int) -> float:
        """FPIR at cosine `score` that 90% of watchlists of `watchlist_size` stay below."""
        return min(1.0, self.margin(score, watchlist_size) * self.mean_fpir(score, watchlist_size))

    def score_for(self, target_fpir: float, watchlist_size: int) -> float:
        """The lowest cosine whose `fpir` is `target_fpir` (bisection on decades of q)."""
        _check_fpir(target_fpir)
        low, high = -2.0, 16.0
        for _ in range(80):
            mid = (low + high) / 2
            if self.fpir(self.tail.score_of(mid), watchlist_size) > target_fpir:
                low = mid
            else:
                high = mid
        return self.tail.score_of(high)


def _check_fpir(target_fpir: float) -> None:
    if not MIN_FPIR <= target_fpir <= MAX_FPIR:
        raise ConfigError(f"target FPIR must lie in [{MIN_FPIR:g}, {MAX_FPIR:g}]")


def comparison_fmr(target_fpir: float, watchlist_size: int) -> float:
    """The per-comparison FMR at which N independent comparisons give `target_fpir`: the rule
    thresholds used before `FpirModel` (it overshot its target; kept to compare with)."""
    _check_fpir(target_fpir)
    n = max(1, watchlist_size)
    return -math.expm1(math.log1p(-target_fpir) / n)


def _model_from_fit(fit: fpir_fits.Fit) -> FpirModel:
    tail = Tail(
        model=fit["model"],
        scores=tuple(fit["scores"]),
        decades=tuple(fit["decades"]),
        source=fit["source"],
    )
    return FpirModel(
        fit["model"], tail, fit["alpha"], fit["source"], fit["spread_at_4"], fit["spread_slope"]
    )


_MODELS = {fit["model"]: _model_from_fit(fit) for fit in fpir_fits.FITS}


def fpir_model(model: str) -> FpirModel | None:
    """The fitted FPIR model of a recognition model (its id, with or without `@version`)."""
    return _MODELS.get(model.split("@")[0])


def threshold_for_fpir(
    model: str, watchlist_size: int, target_fpir: float, *, tail: Tail | None = None
) -> WatchThreshold:
    """The cosine threshold that keeps FPIR at `target_fpir` for `watchlist_size` subjects.
    `tail` replaces the fitted q(t) (the model's α is kept; with no fitted model, α → ∞)."""
    _check_fpir(target_fpir)
    fitted = fpir_model(model)
    if tail is not None:
        fitted = FpirModel(
            model,
            tail,
            fitted.alpha if fitted is not None else math.inf,
            f"impostor tail of {tail.source}",
            fitted.spread_at_4 if fitted is not None else 0.0,
            fitted.spread_slope if fitted is not None else 0.0,
        )
    if fitted is None:
        raise ConfigError(
            f"model {model} has no fitted FPIR model: give the session an explicit threshold"
        )
    n = max(1, watchlist_size)
    score = fitted.score_for(target_fpir, n)
    fmr = 10.0 ** -float(fitted.tail.phi(score))
    alpha = "inf" if math.isinf(fitted.alpha) else f"{fitted.alpha:.3g}"
    return WatchThreshold(
        score=score,
        model=model,
        target_fpir=target_fpir,
        watchlist_size=n,
        fmr=fmr,
        source=(
            f"FPIR {target_fpir:g} over {n} subject(s) for {LEVEL:.0%} of watchlists: mean "
            f"1-(1+N*FMR/a)^-a (a={alpha}) x {fitted.margin(score, n):.2f} for uneven subjects, "
            f"FMR {fmr:.3g} per comparison; {fitted.source}"
        ),
    )


def explicit_threshold(
    model: str, score: float, watchlist_size: int, source: str, target_fpir: float = math.nan
) -> WatchThreshold:
    """An operator's cosine threshold, carried with the per-comparison FMR it stands for on the
    model's fitted impostor tail (NaN when the model has none): an alert says how loose it is."""
    if not (math.isfinite(score) and -1.0 <= score <= 1.0):
        raise ConfigError("an explicit threshold on the cosine score must lie in [-1, 1]")
    fitted = fpir_model(model)
    fmr = math.nan if fitted is None else min(1.0, 10.0 ** -float(fitted.tail.phi(score)))
    return WatchThreshold(
        score=float(score),
        model=model,
        target_fpir=target_fpir,
        watchlist_size=watchlist_size,
        fmr=fmr,
        source=source,
    )
