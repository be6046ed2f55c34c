"""Progress bar (rows/s, ETA) and the end-of-run summary table, with rich.

Used by the CLI only; the library reports progress through a plain callback
``progress(kind, n)`` (see :func:`galmerge.inference.run.classify_catalog`).

Torch-free.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from galmerge.inference.run import RunSummary
from galmerge.inference.status import OK, STATUS_MEANING
from galmerge.progressbar import ProgressBar

__all__ = [
    "RunProgress",
    "calibration_lines",
    "print_summary",
]


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "– rows/s", style="progress.data.speed")


class RunProgress:
    """The classify progress bar fed by ``progress(kind, n)`` calls (on stderr)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._bar = ProgressBar(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            enabled=enabled, console=self.console, refresh_per_second=4)
        self._rows: TaskID | None = None
        self._write: TaskID | None = None

    def __enter__(self) -> RunProgress:
        self._bar.__enter__()
        self._rows = self._bar.add("classify", total=None)
        return self

    def __call__(self, kind: str, n: int) -> None:
        bar = self._bar
        if kind == "total":
            bar.set_total(self._rows, n)
        elif kind == "rows":
            bar.advance(self._rows, n)
        elif kind == "assemble" and bar.enabled:
            if self._write is None:
                done = bar.completed(self._rows)
                bar.set_total(self._rows, done)
                self._write = bar.add("write", total=done)
            bar.advance(self._write, n)

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)


def print_summary(summary: RunSummary, console: Console | None = None) -> None:
    """The final table: rows per status, mergers, output, throughput, warnings."""
    out = console or Console()
    err = Console(stderr=True)
    for w in summary.warnings:
        err.print(f"[bold yellow]warning:[/] {w}", soft_wrap=True)
    table = Table(title=f"galmerge classify → {summary.output}", title_justify="left")
    table.add_column("status")
    table.add_column("rows", justify="right")
    table.add_column("meaning")
    for status, count in summary.status_counts.items():
        if count or status == OK:
            table.add_row(status, f"{count:,}", STATUS_MEANING.get(status, ""))
    table.add_row("[bold]total", f"[bold]{summary.rows:,}", "")
    out.print(table)
    m = summary.model
    lines = [
        f"mergers (p_merger_raw >= {summary.metadata.get('threshold', 0.5):.4g}: "
        f"{summary.metadata.get('threshold_rule', '')}): "
        f"{summary.mergers:,} of {summary.classified:,} classified",
        *calibration_lines(summary.metadata),
        f"model {m['name']} (sha256 {m['sha256'][:12]}…) on {m['device']} "
        f"({m['threads']} threads, batch {m['batch_size']})",
        f"{summary.rows:,} rows in {summary.seconds:.1f} s ({summary.rows_per_second:,.0f} rows/s)"
        + (f"; {summary.resumed_chunks} chunks reused from the interrupted run"
           if summary.resumed_chunks else ""),
    ]
    if summary.duplicate_ids:
        lines.append(f"{summary.duplicate_ids:,} rows repeat an earlier id (classified; noted "
                     "in status_detail)")
    if summary.sidecar is not None:
        lines.append(f"run metadata: {summary.sidecar}")
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


def calibration_lines(meta: dict[str, Any]) -> list[str]:
    """Summary lines on the prior used, its estimate and the threshold's expected quality."""
    smap = meta.get("probability_calibration")
    base = (f"score map at merger fraction {smap['reference_merger_fraction']:.4g}"
            if isinstance(smap, dict) else
            f"training fraction {meta.get('train_merger_fraction', 0.5):g}")
    lines = [f"p_merger stated for merger fraction {meta.get('prior_used', float('nan')):.4g} "
             f"({meta.get('prior_source', '')}; from the {base})"]
    est = meta.get("prior_estimate")
    if est:
        lo, hi = est["interval"]
        lines.append(f"estimated merger fraction {est['fraction']:.4f} "
                     f"[{lo:.4f}, {hi:.4f}] ({est['confidence']:.0%}, {est['n']:,} rows, EM)")
    exp = meta.get("threshold_expected")
    if exp:
        lines.append(f"expected at this threshold: purity {exp['purity']:.3f}, completeness "
                     f"{exp['completeness']:.3f}, flagged fraction {exp['flagged_fraction']:.4f}")
    return lines
