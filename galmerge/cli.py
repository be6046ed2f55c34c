"""The ``galmerge`` command line: a thin typer layer over library functions.

Each subcommand parses its options, calls one library function, and prints.
Problems a user can fix surface as :class:`~galmerge.errors.GalmergeError`
and are printed as one line (``error: ...``) with exit status 2. Heavy
imports (torch) happen inside the commands that need them, so ``classify``
never loads torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from galmerge import __version__
from galmerge.errors import GalmergeError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="galmerge",
    help=(
        "Find merging galaxies in survey images.\n\n"
        "Typical use: `galmerge classify --catalog my_galaxies.csv` scores every row of a "
        "catalogue with the shipped SDSS merger model and writes a catalogue with a "
        "merger probability and a status per row.\n\n"
        "To build your own model: `galmerge simulate` (training images), `galmerge train` "
        "(domain-adapted DeepMerge), `galmerge evaluate`, `galmerge export` (ONNX), "
        "`galmerge report` (diagnostic plots)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors(fn: F) -> F:
    """Turn GalmergeError into a one-line message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GalmergeError as exc:
            typer.echo(f"error: {exc.one_line()}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def not_implemented(command: str) -> None:
    """Clear message for a subcommand whose stage is not built yet."""
    raise GalmergeError(f"`galmerge {command}` is not implemented in galmerge {__version__} yet")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"galmerge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True,
                           help="Print the version and exit.")
    ] = False,
) -> None:
    """galmerge: find merging galaxies in survey images."""


@app.command()
@user_errors
def simulate(
    out: Annotated[Path, typer.Option(
        "--out", help="Output directory for source.h5 and target.h5.")],
    n: Annotated[int, typer.Option("--n", help="Images per domain (at least 2).")] = 6000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same bytes).")] = 1,
    survey: Annotated[str, typer.Option(
        "--survey", help="'hst' (paper §4.1 sim->sim: pristine vs noisy) or 'sdss' (SDSS-like "
        "colour JPEG source for sim->real).")] = "hst",
    backgrounds: Annotated[Path | None, typer.Option(
        "--backgrounds", help="--survey sdss only: a directory of real 423-px SDSS GZ1 JPEGs "
        "(e.g. the unlabelled target pool) whose sky replaces the synthetic sky.")] = None,
) -> None:
    """Simulate labelled galaxy images (balanced mergers / non-mergers, 3x75x75).

    --survey hst writes OUT/source.h5 (pristine: PSF-convolved) and OUT/target.h5 (noisy: the
    same galaxies plus sky noise), as in the paper's sim->sim experiment. --survey sdss writes
    OUT/source.h5 with SDSS-like colour-JPEG images for training against real SDSS cutouts.
    """
    import time

    from galmerge.data.simulator import simulate as run_simulation

    t0 = time.perf_counter()
    result = run_simulation(out, n=n, seed=seed, survey=survey, backgrounds=backgrounds)
    took = time.perf_counter() - t0
    for path in result.paths:
        typer.echo(f"wrote {path}")
    typer.echo(f"{result.n} images per file, seed {result.seed}, survey {result.survey}, "
               f"{took:.1f} s")


@app.command()
@user_errors
def train() -> None:
    """Train a domain-adapted DeepMerge/ResNet18 (MMD, DANN, Fisher, entropy)."""
    not_implemented("train")


@app.command()
@user_errors
def evaluate() -> None:
    """Report AUC, accuracy, precision, recall, F1, Brier and the confusion matrix."""
    not_implemented("evaluate")


@app.command()
@user_errors
def export() -> None:
    """Export a checkpoint to a self-describing ONNX model (checked against PyTorch)."""
    not_implemented("export")


@app.command()
@user_errors
def classify() -> None:
    """Score every row of a catalogue; write probabilities and a status per row."""
    not_implemented("classify")


@app.command()
@user_errors
def report() -> None:
    """Diagnostic plots (ROC, histograms, t-SNE, Grad-CAM, curves) and an HTML summary."""
    not_implemented("report")


def main() -> None:
    """Console entry point."""
    app(prog_name="galmerge")


if __name__ == "__main__":  # pragma: no cover
    main()
