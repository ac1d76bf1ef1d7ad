"""The PAD report as files: JSON, the DET curves per species (PNG) and a self-contained HTML
page, in the layout of the fairness report."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from yingyan.evaluation.pad import PadReport
from yingyan.evaluation.plots import probit, pyplot

RATE_TICKS = [1e-3, 1e-2, 0.05, 0.2, 0.5, 0.9]


def det_plot(report: PadReport, out: Path) -> None:
    """BPCER against APCER per species on normal-deviate axes (ISO/IEC 30107-3's DET).
    Rates outside the axes (0 with few presentations) are drawn on the axis edge."""
    plt = pyplot()
    lo, hi = RATE_TICKS[0], RATE_TICKS[-1]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    for curve in report.det:
        x = probit(np.clip(np.array(curve.apcer), lo, hi))
        y = probit(np.clip(np.array(curve.bpcer), lo, hi))
        ax.plot(x, y, marker=".", markersize=3, label=curve.species)
    ticks = probit(np.array(RATE_TICKS))
    ax.set_xticks(ticks, [f"{t:g}" for t in RATE_TICKS])
    ax.set_yticks(ticks, [f"{t:g}" for t in RATE_TICKS])
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_ylim(ticks[0], ticks[-1])
    ax.set_xlabel("APCER (attacks accepted)")
    ax.set_ylabel("BPCER (bona fide rejected)")
    ax.set_title(f"DET per attack species: {report.name}" if report.name else "DET per species")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.3g}%"


def _thr(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "above every score"


def render_html(report: PadReport, plot_png: bytes) -> str:
    """A page with no external resources: tables, and the plot inlined as base64."""
    e = html.escape
    targets = [op.target for op in report.bpcer_at_apcer]
    head = "".join(f"<th>BPCER @ APCER {_pct(t)} (threshold)</th>" for t in targets)
    rows = []
    for s in report.species:
        c = s.counts
        own = "".join(
            f"<td>{_pct(op.bpcer)} ({_thr(op.threshold)})</td>" for op in s.bpcer_at_apcer
        )
        own = own or "<td>n/a</td>" * len(targets)
        rows.append(
            f"<tr><td>{e(s.species)}</td><td>{c.presentations}</td><td>{c.scored}</td>"
            f"<td>{c.abstains}</td><td>{c.failures_to_acquire}</td>"
            f"<td>{_pct(c.non_response_rate)}</td><td>{_pct(s.apcer)}</td>{own}</tr>"
        )
    joint = "".join(
        f"<tr><td>{_pct(op.target)}</td><td>{_thr(op.threshold)}</td><td>{_pct(op.bpcer)}</td>"
        f"<td>{_pct(op.apcer)}</td><td>{op.attacks}</td><td>{'yes' if op.resolved else 'no'}</td>"
        "</tr>"
        for op in report.bpcer_at_apcer
    )
    at_bpcer = "".join(
        f"<tr><td>{_pct(ap.target)}</td><td>{_thr(ap.threshold)}</td><td>{_pct(ap.bpcer)}</td>"
        f"<td>{_pct(ap.apcer_max)} ({e(ap.worst_species)})</td>"
        f"<td>{e(', '.join(f'{s} {_pct(v)}' for s, v in ap.apcer.items()))}</td>"
        f"<td>{'yes' if ap.resolved else 'no'}</td></tr>"
        for ap in report.apcer_at_bpcer
    )
    b = report.bona_fide
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    img = base64.b64encode(plot_png).decode()
    title = e(report.name) if report.name else "scores"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Yingyan PAD report: {title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>Presentation-attack detection (ISO/IEC 30107-3): {title}</h1>
<p>A presentation is classified bona fide when its score is at or above the threshold.
Error rates count only the presentations the subsystem scored; abstains and failures to
acquire are the non-response rates (APNRR per species, BPNRR), never errors.</p>
<h2>At the threshold {report.threshold:.4g}</h2>
<p>APCER of the worst species (APCER_max): <b>{_pct(report.apcer_max)}</b>
({e(report.worst_species)}); BPCER: <b>{_pct(report.bpcer)}</b>; non-response rate over
every presentation: {_pct(report.non_response_rate)}.</p>
<table><tr><th>species</th><th>presentations</th><th>scored</th><th>abstains</th>
<th>failures to acquire</th><th>non-response rate</th><th>APCER</th>{head}</tr>
<tr><td>bona fide</td><td>{b.presentations}</td><td>{b.scored}</td><td>{b.abstains}</td>
<td>{b.failures_to_acquire}</td><td>{_pct(b.non_response_rate)}</td><td>BPCER
{_pct(report.bpcer)}</td>{"<td></td>" * len(targets)}</tr>
{"".join(rows)}</table>
<h2>BPCER at APCER = target, every species held to it (the worst decides)</h2>
<p>BPCER at APCER = 5% is BPCER20.</p>
<table><tr><th>APCER target</th><th>threshold</th><th>BPCER</th><th>APCER_max achieved</th>
<th>fewest scored attacks of a species</th><th>resolved</th></tr>{joint}</table>
<h2>APCER at BPCER = target</h2>
<table><tr><th>BPCER target</th><th>threshold</th><th>BPCER achieved</th><th>APCER_max</th>
<th>APCER per species</th><th>resolved</th></tr>{at_bpcer}</table>
<ul>{notes}</ul>
<h2>DET curves per species</h2><img alt="DET curves per species"
src="data:image/png;base64,{img}">
</body></html>
"""


def write_report(report: PadReport, out_dir: Path) -> Path:
    """report.json, det.png and report.html (self-contained) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2))
    png = out_dir / "det.png"
    det_plot(report, png)
    page = out_dir / "report.html"
    page.write_text(render_html(report, png.read_bytes()))
    return page
