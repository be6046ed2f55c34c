"""The CLI skeleton: help, version, subcommands, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from galmerge import __version__
from galmerge.cli import app

runner = CliRunner()

SUBCOMMANDS = ("simulate", "train", "evaluate", "export", "classify", "report")


def test_help_lists_every_subcommand() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"galmerge {__version__}"


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "galmerge", "--version"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert __version__ in proc.stdout
