"""The one exception type for problems a user can cause and fix.

Library code raises :class:`GalmergeError` with a message that names the file,
row or column and says what to do; the CLI prints it as one line and exits
with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["EXIT_USAGE", "GalmergeError", "GalmergeWarning"]

EXIT_USAGE = 2


class GalmergeError(Exception):
    """A user-facing error: bad input, missing file, impossible request."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")

    def one_line(self) -> str:
        """The message as a single line, for the CLI."""
        text = str(self)
        return " ".join(text.split())


class GalmergeWarning(UserWarning):
    """Something the user should know about a run that still succeeded (a placeholder
    model, renamed input columns, ...): issued with :func:`warnings.warn` and kept in
    the run summary."""
