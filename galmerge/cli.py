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
    n: Annotated[int, typer.Option("--n", min=2, help="Images per domain.")] = 6000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same bytes).")] = 1,
    survey: Annotated[str, typer.Option(
        "--survey", help="'hst' (paper §4.1 sim->sim: pristine vs noisy) or 'sdss' (SDSS-like "
        "colour JPEG source for sim->real).")] = "hst",
) -> None:
    """Simulate labelled galaxy images: a pristine source and a noisy target domain."""
    not_implemented("simulate")


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
def export(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint (best.pt) written by `galmerge train`.")],
    out: Annotated[Path, typer.Argument(help="ONNX file to write (a model card OUT.md is "
                                              "written beside it).")],
    domain: Annotated[str, typer.Option(
        "--domain", help="Whose pixel convention and normalisation the model takes: 'target' "
        "(the survey images it will classify) or 'source'.")] = "target",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 18,
    features: Annotated[bool, typer.Option(
        "--features", help="Also output the latent features (N, F).")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", help="Model name recorded in the metadata (default: the file stem).")] = None,
) -> None:
    """Export a checkpoint to a self-describing ONNX model (checked against PyTorch)."""
    from galmerge.export import PARITY_TOLERANCE, export_onnx  # torch: only here

    res = export_onnx(ckpt, out, domain=domain, opset=opset, with_features=features,
                      model_name=name)
    worst = res.parity.get("max", float("nan"))
    typer.echo(f"wrote {res.path} (sha256 {res.sha256[:16]}…) and {res.card}")
    typer.echo(f"ONNX Runtime vs PyTorch: max |Δp| = {worst:.1e} (limit {PARITY_TOLERANCE:g}) "
               f"at batch 1 and 1000; " + "; ".join(res.notes))


@app.command()
@user_errors
def classify(
    catalog: Annotated[Path, typer.Option(
        "--catalog", help="Catalogue: CSV, ECSV, FITS, VOTable, Parquet or HDF5 table.")],
    model: Annotated[str | None, typer.Option(
        "--model", help="ONNX model (path or name); default: the shipped deepmerge-sdss.onnx "
        "(searched in $GALMERGE_MODELS, models/, <prefix>/share/galmerge/models).")] = None,
    cutouts: Annotated[Path | None, typer.Option(
        "--cutouts", help="Folder of cutout files named by id (any image extension), or an "
        "HDF5 cube from `galmerge simulate`. Without it, the file_loc column is used.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output catalogue; format by extension (.csv .parquet .fits "
        ".ecsv .vot .h5). Default: <catalogue stem>_scores.<ext> beside the catalogue.")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="Catalogue format when the extension does not tell (csv, ecsv, fits, "
        "votable, parquet, hdf5).")] = None,
    id_col: Annotated[str | None, typer.Option("--id-col", help="Id column.")] = None,
    ra_col: Annotated[str | None, typer.Option("--ra-col", help="RA column.")] = None,
    dec_col: Annotated[str | None, typer.Option("--dec-col", help="Dec column.")] = None,
    file_loc_col: Annotated[str | None, typer.Option(
        "--file-loc-col", help="Column of cutout paths (default: file_loc).")] = None,
    pattern: Annotated[str | None, typer.Option(
        "--pattern", help="Cutout file name in --cutouts, with {id} and/or {row}, e.g. "
        "'{id}.jpeg'.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1,
                                            help="Images per model call.")] = 256,
    chunk_size: Annotated[int, typer.Option(
        "--chunk-size", min=1, help="Rows per chunk (unit of work and of --resume).")] = 8192,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="ONNX Runtime threads (default: cores available).")] = None,
    threshold: Annotated[float, typer.Option(
        "--threshold", min=0.0, max=1.0, help="is_merger = p_merger >= threshold.")] = 0.5,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run from its last completed chunk.")] = False,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Classify only the first N rows.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Score every row of a catalogue; write probabilities and a status per row."""
    import sys

    from galmerge.inference.pipeline import ClassifyOptions, classify_catalog
    from galmerge.inference.progress import RunProgress, print_summary

    opts = ClassifyOptions(
        threshold=threshold, batch_size=batch_size, chunk_size=chunk_size, id_col=id_col,
        ra_col=ra_col, dec_col=dec_col, file_loc_col=file_loc_col,
        cutouts=str(cutouts) if cutouts else None, pattern=pattern, format=fmt, limit=limit,
        device=device, threads=threads)
    with RunProgress(enabled=not quiet) as prog:
        summary = classify_catalog(catalog, model=model, output=output, options=opts,
                                   resume=resume, command=["galmerge", *sys.argv[1:]],
                                   progress=prog)
    print_summary(summary)


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
