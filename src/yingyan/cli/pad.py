"""`yingyan eval pad`: ISO/IEC 30107-3 error rates of a file of PAD scores, as a JSON and a
self-contained HTML report (a thin layer over `evaluation.pad`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from yingyan.cli.options import JsonOpt, handles_errors
from yingyan.errors import ConfigError

out = Console()


def _rates(text: str, option: str) -> list[float]:
    try:
        rates = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{option}: not a list of numbers: {text!r}") from None
    if not rates or not all(0 < r < 1 for r in rates):
        raise ConfigError(f"{option}: rates must lie strictly between 0 and 1")
    return rates


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


@handles_errors
def eval_pad(
    scores: Annotated[
        Path, typer.Argument(help="JSON or CSV of presentations: species, score, outcome")
    ],
    out_dir: Annotated[Path, typer.Option(help="where report.html, report.json, det.png go")],
    threshold: Annotated[
        float, typer.Option(help="classified bona fide at or above this score")
    ] = 0.5,
    apcer_targets: Annotated[
        str, typer.Option(help="report BPCER at these APCERs (comma-separated)")
    ] = "0.01,0.05",
    bpcer_targets: Annotated[
        str, typer.Option(help="report APCER at these BPCERs (comma-separated)")
    ] = "0.01",
    name: Annotated[str | None, typer.Option(help="title (default: the file's name)")] = None,
    json_output: JsonOpt = False,
) -> None:
    """APCER per attack species and of the worst one, BPCER, BPCER at APCER 1% / 5%
    (BPCER20), APCER at BPCER 1%, non-response rates, DET curves per species."""
    from yingyan.evaluation.pad import evaluate, read_presentations
    from yingyan.evaluation.pad_report import write_report

    apcers = _rates(apcer_targets, "--apcer-targets")
    bpcers = _rates(bpcer_targets, "--bpcer-targets")
    presentations = read_presentations(scores)
    report = evaluate(
        presentations,
        threshold=threshold,
        apcer_targets=apcers,
        bpcer_targets=bpcers,
        name=name or scores.name,
    )
    page = write_report(report, out_dir)
    if json_output:
        summary = {
            "apcer_max": report.apcer_max,
            "worst_species": report.worst_species,
            "bpcer": report.bpcer,
            "non_response_rate": report.non_response_rate,
            "report": str(page),
        }
        out.print_json(json.dumps(summary))
        return
    table = Table("species", "presentations", "scored", "non-response", "APCER")
    b = report.bona_fide
    table.add_row("bona fide", str(b.presentations), str(b.scored), _pct(b.non_response_rate), "-")
    for s in report.species:
        c = s.counts
        table.add_row(
            s.species,
            str(c.presentations),
            str(c.scored),
            _pct(c.non_response_rate),
            _pct(s.apcer),
        )
    out.print(table)
    out.print(
        f"threshold {report.threshold:g}: APCER_max {_pct(report.apcer_max)} "
        f"({report.worst_species}), BPCER {_pct(report.bpcer)}",
        markup=False,
    )
    for op in report.bpcer_at_apcer:
        out.print(
            f"BPCER at APCER {100 * op.target:g}%: {_pct(op.bpcer)} (threshold {op.threshold:.4g})"
        )
    for ap in report.apcer_at_bpcer:
        out.print(
            f"APCER_max at BPCER {100 * ap.target:g}%: {_pct(ap.apcer_max)} ({ap.worst_species}, "
            f"threshold {ap.threshold:.4g})",
            markup=False,
        )
    for note in report.notes:
        out.print(f"note: {note}", markup=False)
    out.print(f"report: {page}", markup=False)


def register(eval_app: typer.Typer) -> None:
    """Add `pad` to the `eval` group."""
    eval_app.command("pad")(eval_pad)
