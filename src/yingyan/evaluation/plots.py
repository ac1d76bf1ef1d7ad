"""DET curves (FNMR against FMR on normal-deviate axes, as ISO/IEC 19795-1 and NIST draw them)."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist
from types import ModuleType

import numpy as np

from yingyan.evaluation.metrics import error_curve
from yingyan.extras import require

RATE_TICKS = [1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5]


def probit(p: np.ndarray) -> np.ndarray:
    nd = NormalDist()
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    return np.array([nd.inv_cdf(float(x)) for x in clipped])


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the file-only Agg backend (MissingExtraError naming the [eval]
    extra when matplotlib is not installed)."""
    require("matplotlib", "eval", "plots (DET curves, the fairness report)").use("Agg")
    return require("matplotlib.pyplot", "eval", "plots (DET curves, the fairness report)")


def det_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, title: str) -> None:
    """One DET curve per named (genuine, impostor) score set, written as PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    for label, (genuine, impostor) in curves.items():
        c = error_curve(genuine, impostor)
        keep = (c.fmr > 0) & (c.fnmr > 0)
        ax.plot(probit(c.fmr[keep]), probit(c.fnmr[keep]), label=label)
    ticks = probit(np.array(RATE_TICKS))
    ax.set_xticks(ticks, [f"{t:g}" for t in RATE_TICKS])
    ax.set_yticks(ticks, [f"{t:g}" for t in RATE_TICKS])
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_ylim(ticks[0], ticks[-1])
    ax.set_xlabel("false match rate (FMR)")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
