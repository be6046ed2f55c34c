"""One rule for the CLI: inputs are named options, what a command writes is --output/-o;
the previous release's spellings (--out, positional paths) still work, with a note."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from galmerge.cli import app

runner = CliRunner()


def test_output_and_the_old_out_write_the_same_files(tmp_path: Path) -> None:
    new = runner.invoke(app, ["simulate", "-o", str(tmp_path / "new"), "--n", "20"])
    old = runner.invoke(app, ["simulate", "--out", str(tmp_path / "old"), "--n", "20"])
    assert new.exit_code == 0 and old.exit_code == 0, old.output
    assert "deprecated" not in new.output
    assert "warning: --out is deprecated and goes in the next release; use --output" in old.output
    for name in ("source.h5", "target.h5"):
        assert (tmp_path / "new" / name).read_bytes() == (tmp_path / "old" / name).read_bytes()


def test_both_spellings_or_none_is_one_line_error(tmp_path: Path) -> None:
    both = runner.invoke(app, ["simulate", "-o", str(tmp_path / "a"), "--out", str(tmp_path)])
    assert both.exit_code == 2
    assert both.output.strip() == "error: give --output once (not also as --out)"
    missing = runner.invoke(app, ["evaluate", "--data", str(tmp_path)])
    assert missing.exit_code == 2 and missing.output.strip() == "error: missing option --checkpoint"


def test_every_writing_command_takes_output_and_named_inputs() -> None:
    for command, flags in (("simulate", ["--output"]), ("train", ["--source", "--output"]),
                           ("evaluate", ["--checkpoint", "--data"]),
                           ("export", ["--checkpoint", "--output"]),
                           ("classify", ["--catalog", "--output"]),
                           ("fetch", ["--catalog", "--output"]), ("report", ["--run", "--output"])):
        res = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert res.exit_code == 0, command
        for flag in flags:
            assert flag in res.output, (command, flag)
        assert "--out " not in res.output, command  # the old spelling is hidden
