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
def fetch(
    catalog: Annotated[Path, typer.Option(
        "--catalog", help="Catalogue (CSV, Parquet or FITS) with RA/Dec in degrees.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Cache directory to fill (created; reused by reruns and by "
        "`classify --cutouts DIR`).")],
    service: Annotated[str, typer.Option(
        "--fetch", help="Cutout service: sdss (SkyServer ImgCutout), legacy (Legacy Surveys "
        "viewer) or hips (CDS hips2fits).")] = "sdss",
    model: Annotated[Path | None, typer.Option(
        "--model", help="ONNX model whose metadata gives the cutout size and scale.")] = None,
    scale: Annotated[float | None, typer.Option(
        "--scale", help="Arcsec per pixel of the fetched cutout (overrides the model's).")] = None,
    pixels: Annotated[int | None, typer.Option(
        "--pixels", min=1, help="Width = height of the fetched cutout in pixels "
        "(default: the model's size / crop fraction; 128 without a model).")] = None,
    scale_column: Annotated[str | None, typer.Option(
        "--scale-column", help="Per-row scale from this column (e.g. petroR90_r) x "
        "--scale-factor, Galaxy Zoo style.")] = None,
    scale_factor: Annotated[float | None, typer.Option(
        "--scale-factor", help="Multiplies --scale-column (default: the model's "
        "petro_scale_factor, else 1).")] = None,
    release: Annotated[str | None, typer.Option(
        "--release", help="sdss: data release (default dr17).")] = None,
    layer: Annotated[str | None, typer.Option(
        "--layer", help="legacy: layer (default ls-dr10).")] = None,
    bands: Annotated[str | None, typer.Option(
        "--bands", help="legacy: bands (default grz).")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="legacy: fits (default) or jpeg; hips: jpeg (default), png or "
        "fits.")] = None,
    hips: Annotated[str | None, typer.Option(
        "--hips", help="hips: HiPS id (default CDS/P/SDSS9/color).")] = None,
    service_url: Annotated[str | None, typer.Option(
        "--service-url", help="Service base URL (mirrors separated by commas; sdss may "
        "contain {release}). Default: $GALMERGE_SDSS_URL / $GALMERGE_LEGACY_URL / "
        "$GALMERGE_HIPS_URL, else the public service.")] = None,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", min=1, max=256, help="Requests in flight at once.")] = 8,
    max_rps: Annotated[float | None, typer.Option(
        "--max-rps", help="At most this many requests per second.")] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", help="Read timeout per request, seconds.")] = 30.0,
    retries: Annotated[int, typer.Option(
        "--retries", min=0, help="Retries per cutout after connection errors, timeouts, "
        "429 and 5xx.")] = 4,
    backoff: Annotated[float, typer.Option(
        "--backoff", min=0.0, help="First retry waits about this many seconds, doubling "
        "each time (with jitter; a 429's Retry-After is always honoured).")] = 1.0,
    ra_column: Annotated[str | None, typer.Option("--ra-column")] = None,
    dec_column: Annotated[str | None, typer.Option("--dec-column")] = None,
    id_column: Annotated[str | None, typer.Option("--id-column")] = None,
    status_out: Annotated[Path | None, typer.Option(
        "--status-out", help="Per-row status table (CSV; default "
        "OUT/<catalogue>.fetch-status.csv).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Skip rows the previous status table records as done.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing status table.")] = False,
) -> None:
    """Prefetch every row's cutout into a cache directory, without classifying."""
    from galmerge.inference.fetch import FetchConfig, fetch_catalog

    cfg = FetchConfig(
        catalog=catalog, out=out, service=service, status_out=status_out, model=model,
        scale=scale, pixels=pixels, scale_column=scale_column, scale_factor=scale_factor,
        release=release, layer=layer, bands=bands, fmt=fmt, hips=hips, service_url=service_url,
        concurrency=concurrency, max_rps=max_rps, timeout=timeout, retries=retries,
        backoff=backoff,
        ra_column=ra_column, dec_column=dec_column, id_column=id_column, resume=resume,
        overwrite=overwrite)
    summary = fetch_catalog(cfg)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.by_status.items()))
    st = summary.stats
    typer.echo(f"{summary.rows} rows in {summary.seconds:.1f} s: {counts}")
    typer.echo(f"requests {st['requests']} (retries {st['retries']}, rate-limited "
               f"{st['rate_limited']}), cache hits {st['cache_hits']}, resumed "
               f"{summary.skipped_done}")
    typer.echo(f"status table: {summary.status_table}")


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
