"""The one progress bar (rich) of galmerge: classify's rows/s bar and train's epoch bar.

A :class:`ProgressBar` is a context manager around :class:`rich.progress.Progress`
that does nothing when disabled, so callers need no ``if`` around each update.
Torch-free; imported by both rooms.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID

__all__ = ["ProgressBar"]


class ProgressBar:
    """Rich progress bar with the given columns; every call is a no-op when disabled."""

    def __init__(self, *columns: str | ProgressColumn, enabled: bool = True,
                 transient: bool = False, console: Console | None = None,
                 refresh_per_second: float = 10) -> None:
        self.enabled = enabled
        self._columns = columns
        self._transient = transient
        self._console = console
        self._refresh = refresh_per_second
        self.progress: Progress | None = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self.progress = Progress(*self._columns, console=self._console,
                                     transient=self._transient,
                                     refresh_per_second=self._refresh)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def add(self, description: str, total: float | None, **fields: Any) -> TaskID | None:
        """A new task (a bar line); None when disabled."""
        if self.progress is None:
            return None
        return self.progress.add_task(description, total=total, **fields)

    def advance(self, task: TaskID | None, n: float = 1, **fields: Any) -> None:
        """Move a task on by ``n`` and update its fields."""
        if self.progress is not None and task is not None:
            self.progress.update(task, advance=n, **fields)

    def set_total(self, task: TaskID | None, total: float | None) -> None:
        """Change a task's total."""
        if self.progress is not None and task is not None:
            self.progress.update(task, total=total)

    def completed(self, task: TaskID | None) -> float:
        """How far a task has got (0 when disabled)."""
        if self.progress is None or task is None:
            return 0.0
        return next(t.completed for t in self.progress.tasks if t.id == task)

    def remove(self, task: TaskID | None) -> None:
        """Take a finished task's line away."""
        if self.progress is not None and task is not None:
            self.progress.remove_task(task)
