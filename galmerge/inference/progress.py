"""Progress bar (rows/s, ETA) and the end-of-run summary table, with rich.

Used by the CLI only; the library reports progress through a plain callback
``progress(kind, n)`` (see :func:`galmerge.inference.pipeline.classify_catalog`).

Torch-free.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from galmerge.inference.cutouts import OK
from galmerge.inference.pipeline import RunSummary

#: What each status means (the summary table and docs/statuses.md).
STATUS_MEANING = {
    "ok": "classified",
    "missing_file": "no cutout file at the row's location",
    "unreadable": "file could not be decoded, or wrong shape/bands",
    "blank": "cutout holds (almost) no data where the model looks",
    "bad_coordinates": "RA/Dec missing, unparseable, a sentinel, or out of range",
    "no_coverage": "survey has no data at these coordinates",
    "fetch_failed": "the cutout service failed after retries",
    "unsupported_pixels": "pixels of a kind that cannot be converted to the model's convention",
    "no_cutout_source": "no file_loc, no --cutouts, and nothing to fetch from",
}


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "– rows/s", style="progress.data.speed")


class RunProgress:
    """A rich progress bar fed by ``progress(kind, n)`` calls (on stderr)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._progress: Progress | None = None
        self._rows: Any = None
        self._write: Any = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False, refresh_per_second=4)
            self._progress.start()
            self._rows = self._progress.add_task("classify", total=None)
        return self

    def __call__(self, kind: str, n: int) -> None:
        prog = self._progress
        if prog is None:
            return
        if kind == "total":
            prog.update(self._rows, total=n)
        elif kind == "rows":
            prog.advance(self._rows, n)
        elif kind == "assemble":
            if self._write is None:
                task = prog.tasks[self._rows]
                prog.update(self._rows, total=task.completed)
                self._write = prog.add_task("write", total=task.completed)
            prog.advance(self._write, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


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
    lines = [f"p_merger stated for merger fraction {meta.get('prior_used', float('nan')):.4g} "
             f"({meta.get('prior_source', '')}; training fraction "
             f"{meta.get('train_merger_fraction', 0.5):g})"]
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
