"""The fairness report as files: JSON, a per-group plot (PNG) and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from yingyan.evaluation.fairness import Curves, FairnessReport
from yingyan.evaluation.plots import RATE_TICKS, det_plot, probit, pyplot


def group_plot(curves: dict[str, Curves], out: Path, title: str) -> None:
    """DET curves per group where genuine pairs exist; otherwise (data without identities has
    impostor pairs only) the same-group FMR against the score threshold."""
    if all(gen.size for gen, _ in curves.values()):
        det_plot(curves, out, title)
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    for group, (_, imp) in curves.items():
        if imp.size:
            t = np.sort(imp)[::-1]
            ax.plot(t, probit(np.arange(1, t.size + 1) / t.size), label=group)
    ticks = probit(np.array(RATE_TICKS))
    ax.set_yticks(ticks, [f"{t:g}" for t in RATE_TICKS])
    ax.set_ylim(ticks[0], ticks[-1])
    ax.set_xlabel("score threshold")
    ax.set_ylabel("same-group false match rate (FMR)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.3g}%"


def render_html(report: FairnessReport, plot_png: bytes) -> str:
    """A page with no external resources: tables, and the plot inlined as base64."""
    e = html.escape
    targets = list(report.thresholds)
    head = "".join(f"<th>FMR @ {e(t)}</th><th>FNMR @ {e(t)}</th>" for t in targets)
    rows = []
    for g in report.groups:
        q = (
            "n/a"
            if g.quality_p50 is None
            else (f"{g.quality_p10:.2f} / {g.quality_p50:.2f} / {g.quality_p90:.2f}")
        )
        cells = "".join(f"<td>{_pct(g.fmr[t])}</td><td>{_pct(g.fnmr[t])}</td>" for t in targets)
        rows.append(
            f"<tr><td>{e(g.group)}</td><td>{g.images}</td><td>{_pct(g.fta)}</td><td>{q}</td>"
            f"<td>{g.impostor_pairs:,}</td><td>{g.genuine_pairs:,}</td>{cells}</tr>"
        )
    diffs = "".join(
        f"<tr><td>{d.target:g}</td><td>{report.thresholds[f'{d.target:g}']:.4f}</td>"
        f"<td>{d.ratio:.2f}×</td><td>{d.low:.2f}–{d.high:.2f}</td><td>{e(d.worst)}</td>"
        f"<td>{e(d.best)}</td></tr>"
        for d in report.differentials
    )
    img = base64.b64encode(plot_png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Yingyan fairness report: {e(report.dataset)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>Demographic differentials: {e(report.dataset)}</h1>
<p>Score normalisation: <b>{e(report.normalisation)}</b>. Engine: {e(json.dumps(report.engine))}.
Groups are labels of the evaluation data only; Yingyan never classifies anyone's race or gender.
Same-group impostor pairs are scored at the global thresholds that give each target FMR over
all impostor pairs. Ratios floor a group's rate at half an error.</p>
<h2>FMR differential (worst / best group)</h2>
<table><tr><th>target FMR</th><th>threshold</th><th>ratio</th><th>95% CI (bootstrap)</th>
<th>worst group</th><th>best group</th></tr>{diffs}</table>
<p>Failure to acquire, worst / best group: {report.fta_ratio:.2f}×</p>
<h2>Per group</h2>
<table><tr><th>group</th><th>images</th><th>failure to acquire</th>
<th>quality p10 / p50 / p90</th><th>impostor pairs</th><th>genuine pairs</th>{head}</tr>
{"".join(rows)}</table>
<h2>Curves per group</h2><img alt="per-group curves" src="data:image/png;base64,{img}">
</body></html>
"""


def write_report(report: FairnessReport, curves: dict[str, Curves], out_dir: Path) -> Path:
    """report.json, groups.png and report.html (self-contained) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2))
    png = out_dir / "groups.png"
    group_plot(curves, png, f"{report.dataset} ({report.normalisation})")
    page = out_dir / "report.html"
    page.write_text(render_html(report, png.read_bytes()))
    return page
