"""The ``galmerge`` command line: a thin typer layer over library functions.

Each subcommand parses its options, calls one library function, and prints.
Problems a user can fix surface as :class:`~galmerge.errors.GalmergeError`
and are printed as one line (``error: ...``) with exit status 2. Library
imports happen inside the commands that need them, so ``galmerge --help``
starts fast and ``classify`` never loads torch; none of them works around a
cycle (``cli`` is the top layer of the import contract in pyproject.toml).
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from galmerge import __version__
from galmerge.errors import GalmergeError, GalmergeWarning

__all__ = [
    "CLASSIFY_OPTIONS",
    "FETCH_OPTIONS",
    "TRAIN_OPTIONS",
    "BackoffOpt",
    "BandsOpt",
    "ConcurrencyOpt",
    "CutoutFormatOpt",
    "HipsOpt",
    "LayerOpt",
    "MaxRpsOpt",
    "OldOutOpt",
    "OptionTable",
    "OutputOpt",
    "PixelsOpt",
    "ReleaseOpt",
    "RetriesOpt",
    "ScaleColOpt",
    "ScaleFactorOpt",
    "ScaleOpt",
    "ServiceOpt",
    "ServiceUrlOpt",
    "TimeoutOpt",
    "app",
    "classify",
    "doctor",
    "evaluate",
    "export",
    "fetch",
    "main",
    "not_implemented",
    "report",
    "simulate",
    "survey_check",
    "train",
    "user_errors",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

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


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that clean-up runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def user_errors(fn: F) -> F:
    """Turn GalmergeError into a one-line message and exit status 2.

    SIGTERM is handled like Ctrl-C (temporary files removed, exit 143); a full
    disk is one line too.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import errno
        import signal
        import threading

        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return fn(*args, **kwargs)
        except GalmergeError as exc:
            typer.echo(f"error: {exc.one_line()}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, _Terminated)
            typer.echo("terminated" if terminated else "interrupted", err=True)
            raise typer.Exit(143 if terminated else 130) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            typer.echo(f"error: {where}no space left on device (free some disk space and "
                       "rerun; --resume keeps finished chunks)", err=True)
            raise typer.Exit(2) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def not_implemented(command: str) -> None:
    """Clear message for a subcommand whose stage is not built yet."""
    raise GalmergeError(f"`galmerge {command}` is not implemented in galmerge {__version__} yet")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"galmerge {__version__}")
        raise typer.Exit(0)


# --- one rule for inputs and outputs --------------------------------------------------
# Every input is a named option (--catalog, --checkpoint, --data, --source, --run ...) and
# what a command writes is --output/-o. The spellings of the previous release (positional
# paths of evaluate/export/report, --out) still work for one release: the command notes
# the new spelling on stderr when it succeeds (a failing command still prints one line).

OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="What the command writes.")]
OldOutOpt = Annotated[Path | None, typer.Option("--out", hidden=True)]


def _spelled(new: T | None, old: T | None, new_flag: str, old_flag: str,
             notes: list[str]) -> T:
    """The value given as ``new_flag``, or for one more release as ``old_flag`` (noted)."""
    value = _maybe_spelled(new, old, new_flag, old_flag, notes)
    if value is None:
        raise GalmergeError(f"missing option {new_flag}")
    return value


def _maybe_spelled(new: T | None, old: T | None, new_flag: str, old_flag: str,
                   notes: list[str]) -> T | None:
    """As :func:`_spelled`, for an option that may be left out."""
    if old is None:
        return new
    if new is not None:
        raise GalmergeError(f"give {new_flag} once (not also as {old_flag})")
    notes.append(f"{old_flag} is deprecated and goes in the next release; use {new_flag}")
    return old


def _say_deprecated(notes: list[str]) -> None:
    for note in notes:
        typer.echo(f"warning: {note}", err=True)


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
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output directory for source.h5 and target.h5.")] = None,
    out: OldOutOpt = None,
    n: Annotated[int, typer.Option("--n", help="Images per domain (at least 2).")] = 6000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same bytes).")] = 1,
    survey: Annotated[str, typer.Option(
        "--survey", help="'hst' (paper §4.1 sim->sim: pristine vs noisy) or 'sdss' (SDSS-like "
        "colour JPEG source for sim->real).")] = "hst",
    backgrounds: Annotated[Path | None, typer.Option(
        "--backgrounds", help="--survey sdss only: a directory of real 423-px SDSS GZ1 JPEGs "
        "(e.g. the unlabelled target pool) whose sky replaces the synthetic sky.")] = None,
    hosts: Annotated[Path | None, typer.Option(
        "--hosts", help="--survey sdss only: a directory of real 423-px SDSS GZ1 JPEGs used as "
        "host galaxies (the simulated companion, debris or projection is painted onto them); "
        "never labelled evaluation images.")] = None,
    host_fraction: Annotated[float | None, typer.Option(
        "--host-fraction", help="With --hosts: fraction of the images on real hosts "
        "[default: 0.5].")] = None,
) -> None:
    """Simulate labelled galaxy images (balanced mergers / non-mergers, 3x75x75).

    --survey hst writes OUT/source.h5 (pristine: PSF-convolved) and OUT/target.h5 (noisy: the
    same galaxies plus sky noise), as in the paper's sim->sim experiment. --survey sdss writes
    OUT/source.h5 with SDSS-like colour-JPEG images for training against real SDSS cutouts.
    """
    import time

    from galmerge.data.simulator import simulate as run_simulation

    notes: list[str] = []
    target = _spelled(output, out, "--output", "--out", notes)
    t0 = time.perf_counter()
    result = run_simulation(target, n=n, seed=seed, survey=survey, backgrounds=backgrounds,
                            hosts=hosts, host_fraction=host_fraction)
    took = time.perf_counter() - t0
    for path in result.paths:
        typer.echo(f"wrote {path}")
    typer.echo(f"{result.n} images per file, seed {result.seed}, survey {result.survey}, "
               f"{took:.1f} s")
    _say_deprecated(notes)


#: A group of options a command receives as one dict: parameter name (the library's field
#: name, so that ``Options(**values)`` takes them) -> (typer annotation, default).
OptionTable = dict[str, tuple[Any, Any]]


def _option_group(group: str, table: OptionTable) -> Callable[[F], F]:
    """Put ``table``'s options where the command has the parameter ``group``.

    The command then receives them as one dict under that name, in table order: one
    definition of a group serves every command that takes it and the options dataclass
    it fills.
    """

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            if p.name != group:
                params.append(p)
                continue
            params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                         annotation=annotation, default=default)
                       for name, (annotation, default) in table.items()]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[group] = {name: kwargs.pop(name) for name in table}
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


_TRAIN_HELP = (
    "Train a domain-adapted DeepMerge/ResNet18 (MMD, DANN, Fisher, entropy).\n\n"
    "SOURCE must be labelled; TARGET may be unlabelled (its labels, if any, are used only for "
    "the test metrics). Both may be any dataset layout galmerge reads (.h5, paper .npy pair, "
    "directory of cutouts). Hyper-parameters come from the paper's Table A2 row matching "
    "--method/--fisher/--entropy/--arch, or from --preset; options you give override them.\n\n"
    "Writes OUTPUT/best.pt, config.json, history.csv and metrics.json.\n\n"
    "Example: galmerge train --source sim/source.h5 --target sim/target.h5 --method mmd "
    "--output runs/mmd"
)


#: `train`'s overrides of the preset, named as TrainConfig fields (build_config checks them).
TRAIN_OPTIONS: OptionTable = {
    "method": (Annotated[str | None, typer.Option(
        "--method", help="Transfer loss: none, mmd, dann or sinkhorn.")], None),
    "fisher": (Annotated[bool | None, typer.Option(
        "--fisher/--no-fisher", help="Add the Fisher loss (Eq. 10).", show_default=False)], None),
    "entropy": (Annotated[bool | None, typer.Option(
        "--entropy/--no-entropy", help="Add entropy minimisation on target (Eq. 11).",
        show_default=False)], None),
    "arch": (Annotated[str | None, typer.Option(
        "--arch", help="deepmerge (Table A1) or resnet18.")], None),
    "init_from": (Annotated[Path | None, typer.Option(
        "--init-from", help="Start from this checkpoint's weights (transfer learning).")], None),
    "freeze": (Annotated[str | None, typer.Option(
        "--freeze", help="none or conv (freeze conv+BN layers of --init-from).")], None),
    "epochs": (Annotated[int | None, typer.Option("--epochs", help="Maximum epochs.")], None),
    "batch_size": (Annotated[int | None, typer.Option(
        "--batch-size", help="Images per domain per step.")], None),
    "lr": (Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")], None),
    "weight_decay": (Annotated[float | None, typer.Option("--weight-decay")], None),
    "cycle_length": (Annotated[float | None, typer.Option(
        "--cycle-length", help="One-cycle LR period in epochs.")], None),
    "patience": (Annotated[int | None, typer.Option(
        "--patience", help="Early-stopping patience in epochs.")], None),
    "lambda_tl": (Annotated[float | None, typer.Option(
        "--lambda-tl", help="Transfer-loss weight (Eq. 2).")], None),
    "lambda_w": (Annotated[float | None, typer.Option(
        "--lambda-w", help="Fisher intra-class weight.")], None),
    "lambda_b": (Annotated[float | None, typer.Option(
        "--lambda-b", help="Fisher inter-class weight.")], None),
    "lambda_em": (Annotated[float | None, typer.Option(
        "--lambda-em", help="Entropy weight (Eq. 2).")], None),
    "fisher_kind": (Annotated[str | None, typer.Option(
        "--fisher-kind", help="tr (trace ratio) or td (trace difference).")], None),
    "mmd_kernels": (Annotated[str | None, typer.Option(
        "--mmd-kernels", help="batch (widths 2^k x mean distance) or paper (19 fixed).")], None),
    "grl_schedule": (Annotated[str | None, typer.Option(
        "--grl-schedule", help="ganin (warm-up) or constant.")], None),
    "dc_lr_mult": (Annotated[float | None, typer.Option(
        "--dc-lr-mult", help="Domain classifier LR multiplier.")], None),
    "dropout": (Annotated[float | None, typer.Option(
        "--dropout", help="Dropout before the ResNet18 head.")], None),
    "selection": (Annotated[str | None, typer.Option(
        "--selection", help="Best-epoch criterion: auto, source-loss, source-loss+mmd.")], None),
    "augment": (Annotated[bool | None, typer.Option(
        "--augment/--no-augment", help="Random flips and 90-degree rotations.",
        show_default=False)], None),
    "swa_start": (Annotated[int | None, typer.Option(
        "--swa-start", help="Average the weights of epochs SWA_START..EPOCHS (stochastic weight "
        "averaging) and deliver the average instead of selecting an epoch; 0 = off.")], None),
    "align_classes": (Annotated[str | None, typer.Option(
        "--align-classes", help="Source images the transfer loss aligns with the target: all "
        "(paper) or non-mergers (class-aware, for a merger-poor survey target).")], None),
    "source_merger_fraction": (Annotated[float | None, typer.Option(
        "--source-merger-fraction", help="Fraction of mergers in every source batch (default: "
        "as the data come); set it near the target's expected merger fraction.")], None),
    "source_labels": (Annotated[Path | None, typer.Option(
        "--source-labels", help="Labels file for a .npy or directory source.")], None),
    "target_labels": (Annotated[Path | None, typer.Option(
        "--target-labels", help="Labels file for a .npy or directory target.")], None),
    "source_crop": (Annotated[float | None, typer.Option(
        "--source-crop", help="Central fraction of directory cutouts (source).")], None),
    "target_crop": (Annotated[float | None, typer.Option(
        "--target-crop", help="Central fraction of directory cutouts (target).")], None),
    "seed": (Annotated[int | None, typer.Option("--seed", help="Random seed (paper: 1).")], None),
    "device": (Annotated[str | None, typer.Option(
        "--device", help="auto, cpu or cuda.")], None),
    "threads": (Annotated[int | None, typer.Option("--threads", help="CPU threads.")], None),
}


@app.command(help=_TRAIN_HELP)
@user_errors
@_option_group("settings", TRAIN_OPTIONS)
def train(
    source: Annotated[Path, typer.Option("--source", help="Labelled source dataset.")],
    target: Annotated[Path, typer.Option("--target", help="Target dataset (labels optional).")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Run directory for best.pt etc.")] = None,
    out: OldOutOpt = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Named paper setting, e.g. paper-simsim-mmd (see README).")] = None,
    settings: dict[str, Any] | None = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Allow an OUT that already holds best.pt.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No per-epoch lines.")] = False,
) -> None:
    from galmerge.training.presets import build_config
    from galmerge.training.trainer import train as run_training

    notes: list[str] = []
    run_dir = _spelled(output, out, "--output", "--out", notes)
    given = {"source": source, "target": target, **(settings or {})}
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in given.items()}
    overrides["out"] = str(run_dir)
    config = build_config(overrides, preset)
    show = sys.stderr.isatty() and not quiet
    result = run_training(config, log=None if quiet else (lambda m: typer.echo(m, err=True)),
                          progress=show, overwrite=overwrite)
    _print_training(result)
    _say_deprecated(notes)


def _print_training(result: Any) -> None:
    m = result.metrics
    typer.echo(f"best epoch {result.best_epoch} of {result.epochs_run}; wrote {result.checkpoint}")
    for role in ("source", "target"):
        t = m.get(f"{role}_test")
        if t:
            auc = "n/a" if t["auc"] is None else f"{t['auc']:.3f}"
            typer.echo(f"{role} test: accuracy {t['accuracy']:.3f}  AUC {auc}  "
                       f"F1 {t['f1']:.3f}  Brier {t['brier']:.3f}  (n={t['n']})")
        else:
            typer.echo(f"{role} test: no labels")



@app.command()
@user_errors
def evaluate(
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="best.pt from `galmerge train`.")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="A labelled dataset (.h5, .npy pair, directory).")] = None,
    old_checkpoint: Annotated[Path | None, typer.Argument(hidden=True)] = None,
    old_data: Annotated[Path | None, typer.Argument(hidden=True)] = None,
    split: Annotated[str, typer.Option(
        "--split", help="train, val, test or all.")] = "test",
    domain: Annotated[str | None, typer.Option(
        "--domain", help="Use the source or target normalisation (default: the domain whose "
        "data or pixel convention matches, else target).")] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Labels file for a .npy array or a directory of cutouts.")] = None,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", help="Bootstrap resamples for 95% intervals (0 = none).")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 256,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Report AUC, accuracy, precision, recall, F1, Brier and the confusion matrix."""
    import json

    from galmerge.training.evaluate import evaluate_checkpoint
    from galmerge.training.metrics import format_metrics

    notes: list[str] = []
    checkpoint = _spelled(checkpoint, old_checkpoint, "--checkpoint", "a positional CHECKPOINT",
                          notes)
    data = _spelled(data, old_data, "--data", "a positional DATA", notes)
    res = evaluate_checkpoint(checkpoint, data, split=split, domain=domain, labels=labels,
                              batch_size=batch_size, device=device, bootstrap=bootstrap)
    _say_deprecated(notes)
    if as_json:
        typer.echo(json.dumps(res, indent=2, sort_keys=True))
        return
    typer.echo(f"{res['checkpoint']} ({res['arch']}, epoch {res['epoch']}) on {res['data']} "
               f"split {res['split']}, {res['domain']} normalisation ({res['domain_reason']})")
    if res["n_unlabelled_skipped"]:
        typer.echo(f"  skipped {res['n_unlabelled_skipped']} unlabelled images")
    typer.echo(format_metrics(res))
    if "ci95" in res:
        typer.echo("  95% bootstrap intervals (stratified): " + ", ".join(
            f"{k} [{lo:.3f}, {hi:.3f}]" for k, (lo, hi) in res["ci95"].items()))


#: Options shared by the commands that judge a model on a survey-like check.
CheckDev = Annotated[Path, typer.Option("--dev", help="Directory of labelled cutouts.")]
CheckLabels = Annotated[Path, typer.Option(
    "--labels", help="CSV with an id column and a 0/1 merger label (-1 = leave out).")]
CheckBackground = Annotated[Path, typer.Option(
    "--background", help="Directory of unlabelled survey cutouts counted as non-mergers "
    "(never images the model(s) trained on).")]
CheckExclude = Annotated[list[str] | None, typer.Option(
    "--exclude", help="Labelled id to leave out (repeatable).")]


@app.command("survey-check")
@user_errors
def survey_check(
    model: Annotated[list[str], typer.Option(
        "--model", help="An ONNX model to judge: PATH, or NAME=PATH[,PATH...] for several "
        "training seeds of one recipe (averaged). Repeat for a paired comparison.")],
    dev: CheckDev,
    labels: CheckLabels,
    background: CheckBackground,
    merger_fraction: Annotated[float, typer.Option(
        "--merger-fraction", help="Survey merger fraction the non-mergers are weighted to.")
    ] = 0.01,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", help="Stratified bootstrap resamples for the intervals.")] = 2000,
    exclude: CheckExclude = None,
    keep_set_aside: Annotated[bool, typer.Option(
        "--keep-set-aside", help="Rank cutouts with a bright star near the centre or no sky "
        "along the border like the rest; by default they are set aside (ranked last), as "
        "classify does.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Also write the full result as JSON here.")] = None,
) -> None:
    """Rank labelled galaxies among survey galaxies: purity at a survey's merger fraction.

    Reports ROC AUC, top-k purity (k = labelled mergers) and precision at recall 0.5 with the
    non-mergers weighted so that mergers make --merger-fraction of the sample, the fraction
    of the background flagged by is_merger and the labelled recall at each model's threshold,
    with stratified bootstrap intervals and paired differences (docs/survey-check.md).
    """
    import json

    from galmerge.survey_check import SurveyCheckOptions, format_survey_table, run_survey_check

    models: dict[str, list[Path]] = {}
    for spec in model:
        name, _, paths = spec.rpartition("=") if "=" in spec else ("", "", spec)
        files = [Path(x) for x in paths.split(",") if x]
        models[name or files[0].stem] = files
    opts = SurveyCheckOptions(dev=dev, labels=labels, background=background,
                              merger_fraction=merger_fraction, bootstrap=bootstrap,
                              exclude=tuple(exclude or ()),
                              keep_set_aside=keep_set_aside)
    res = run_survey_check(models, opts)
    names = list(models)
    typer.echo(format_survey_table(res, [(a, b) for a in names[:1] for b in names[1:]]))
    if output is not None:
        output.write_text(json.dumps(res, indent=2) + "\n")
        typer.echo(f"wrote {output}")


@app.command()
@user_errors
def calibrate(
    model: Annotated[Path, typer.Option("--model", help="The ONNX model to calibrate.")],
    dev: CheckDev,
    labels: CheckLabels,
    background: CheckBackground,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The calibrated copy of the model to write.")],
    merger_fraction: Annotated[float, typer.Option(
        "--merger-fraction", help="Merger fraction the curve's purities are stated at.")
    ] = 0.01,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", help="Stratified bootstrap resamples for the curve's intervals.")] = 500,
    exclude: CheckExclude = None,
) -> None:
    """Measure a model's probabilities on labelled survey galaxies and store them in a copy.

    Fits the score map (Platt scaling: p_merger becomes a probability on real images) and
    the calibration curve (purity / completeness per threshold, for --target-purity) on the
    survey-like check, reports the cross-fitted ECE, Brier score and EM estimate, and writes
    the model with both in its metadata (docs/output-columns.md).
    """
    from galmerge.survey_check import SurveyCheckOptions, fit_calibration, write_calibrated

    opts = SurveyCheckOptions(dev=dev, labels=labels, background=background,
                              merger_fraction=merger_fraction, bootstrap=bootstrap,
                              exclude=tuple(exclude or ()))
    fitted = fit_calibration(model, opts)
    cal = write_calibrated(model, output, fitted)
    m = cal.score_map
    if m is None:
        typer.echo(f"no score map: {fitted['probability_check']['skipped']}")
        typer.echo(f"wrote {output} (calibration curve only)")
        return
    check = fitted["probability_check"]["mean"]
    typer.echo(f"score map: p = sigmoid({m.a:.4f} logit(p_raw) {m.b:+.4f}) at merger fraction "
               f"{m.reference_merger_fraction:.4f}")
    typer.echo(f"cross-fitted (2 folds): ECE raw {check['ece_raw']:.3f} -> "
               f"{check['ece_mapped_shifted']:.3f}, Brier {check['brier_raw']:.3f} -> "
               f"{check['brier_mapped_shifted']:.3f}")
    typer.echo(f"wrote {output}")


@app.command()
@user_errors
def export(
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="Checkpoint (best.pt) written by `galmerge train`.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="ONNX file to write (a model card OUTPUT.md is written beside "
        "it).")] = None,
    old_checkpoint: Annotated[Path | None, typer.Argument(hidden=True)] = None,
    old_output: Annotated[Path | None, typer.Argument(hidden=True)] = None,
    domain: Annotated[str, typer.Option(
        "--domain", help="Whose pixel convention and normalisation the model takes: 'target' "
        "(the survey images it will classify) or 'source'.")] = "target",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 18,
    features: Annotated[bool, typer.Option(
        "--features", help="Also output the latent features (N, F).")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", help="Model name recorded in the metadata (default: the file stem).")] = None,
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="JSON with train_merger_fraction, decision_threshold, "
        "decision_rule, calibration (curve) and ood_ranges, stored in the model's metadata "
        "(docs/output-columns.md).")] = None,
) -> None:
    """Export a checkpoint to a self-describing ONNX model (checked against PyTorch)."""
    from galmerge.export import PARITY_TOLERANCE, export_onnx  # torch: only here
    from galmerge.inference.calibration import ModelCalibration

    notes: list[str] = []
    ckpt = _spelled(checkpoint, old_checkpoint, "--checkpoint", "a positional CHECKPOINT", notes)
    out = _spelled(output, old_output, "--output", "a positional OUTPUT", notes)
    cal = ModelCalibration.from_json_file(calibration) if calibration is not None else None
    res = export_onnx(ckpt, out, domain=domain, opset=opset, with_features=features,
                      model_name=name, calibration=cal)
    _say_deprecated(notes)
    worst = res.parity.get("max", float("nan"))
    typer.echo(f"wrote {res.path} (sha256 {res.sha256[:16]}…) and {res.card}")
    typer.echo(f"ONNX Runtime vs PyTorch: max |Δp| = {worst:.1e} (limit {PARITY_TOLERANCE:g}) "
               f"at batch 1 and 1000; " + "; ".join(res.notes))


# Options shared by `fetch` and `classify --fetch` (one definition each).
ServiceOpt = Annotated[str | None, typer.Option(
    "--fetch", help="Fetch cutouts from a survey service: sdss (SkyServer ImgCutout), legacy "
    "(Legacy Surveys viewer) or hips (CDS hips2fits).")]
ServiceUrlOpt = Annotated[str | None, typer.Option(
    "--service-url", help="Service base URL (mirrors separated by commas; sdss may contain "
    "{release}). Default: $GALMERGE_SDSS_URL / $GALMERGE_LEGACY_URL / $GALMERGE_HIPS_URL, else "
    "the public service.")]
ReleaseOpt = Annotated[str | None, typer.Option(
    "--release", help="sdss: data release (default dr17).")]
LayerOpt = Annotated[str | None, typer.Option("--layer", help="legacy: layer (default ls-dr10).")]
BandsOpt = Annotated[str | None, typer.Option("--bands", help="legacy: bands (default grz).")]
CutoutFormatOpt = Annotated[str | None, typer.Option(
    "--cutout-format", help="legacy: fits (default) or jpeg; hips: jpeg (default), png or fits.")]
HipsOpt = Annotated[str | None, typer.Option(
    "--hips", help="hips: HiPS id (default CDS/P/SDSS9/color).")]
ScaleOpt = Annotated[float | None, typer.Option(
    "--scale", help="Arcsec per pixel of the fetched cutout (overrides the model's).")]
PixelsOpt = Annotated[int | None, typer.Option(
    "--pixels", min=1, help="Width = height of the fetched cutout in pixels (default: the "
    "model's size / crop fraction; 128 without a model).")]
ScaleColOpt = Annotated[str | None, typer.Option(
    "--scale-col", help="Per-row cutout scale from this column (e.g. petroR90_r) x "
    "--scale-factor, Galaxy Zoo style.")]
ScaleFactorOpt = Annotated[float | None, typer.Option(
    "--scale-factor", help="Multiplies --scale-col (default: the model's petro_scale_factor, "
    "else 1).")]
ConcurrencyOpt = Annotated[int, typer.Option(
    "--concurrency", min=1, max=256, help="Requests in flight at once.")]
MaxRpsOpt = Annotated[float | None, typer.Option(
    "--max-rps", help="At most this many requests per second (evenly spaced).")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", min=0.01, help="Read timeout per request, seconds.")]
RetriesOpt = Annotated[int, typer.Option(
    "--retries", min=0, help="Retries per cutout after connection errors, timeouts, truncated "
    "bodies, 429 and 5xx.")]
BackoffOpt = Annotated[float, typer.Option(
    "--backoff", min=0.0, help="First retry waits about this many seconds, doubling each time "
    "(with jitter); a 429's Retry-After is always honoured.")]




#: The options of `galmerge fetch` and `galmerge classify --fetch`, named as FetchOptions
#: fields (one definition: both commands take them, and FetchOptions(**values) their values).
FETCH_OPTIONS: OptionTable = {
    "service": (ServiceOpt, None),
    "scale": (ScaleOpt, None),
    "pixels": (PixelsOpt, None),
    "scale_col": (ScaleColOpt, None),
    "scale_factor": (ScaleFactorOpt, None),
    "release": (ReleaseOpt, None),
    "layer": (LayerOpt, None),
    "bands": (BandsOpt, None),
    "cutout_format": (CutoutFormatOpt, None),
    "hips": (HipsOpt, None),
    "service_url": (ServiceUrlOpt, None),
    "concurrency": (ConcurrencyOpt, 8),
    "max_rps": (MaxRpsOpt, None),
    "timeout": (TimeoutOpt, 30.0),
    "retries": (RetriesOpt, 4),
    "backoff": (BackoffOpt, 1.0),
}


#: `classify`'s run settings, named as ClassifyOptions fields.
CLASSIFY_OPTIONS: OptionTable = {
    "format": (Annotated[str | None, typer.Option(
        "--format", help="Catalogue format when the extension does not tell (csv, ecsv, fits, "
        "votable, parquet, hdf5).")], None),
    "id_col": (Annotated[str | None, typer.Option("--id-col", help="Id column.")], None),
    "ra_col": (Annotated[str | None, typer.Option("--ra-col", help="RA column.")], None),
    "dec_col": (Annotated[str | None, typer.Option("--dec-col", help="Dec column.")], None),
    "file_loc_col": (Annotated[str | None, typer.Option(
        "--file-loc-col", help="Column of cutout paths (default: file_loc).")], None),
    "pattern": (Annotated[str | None, typer.Option(
        "--pattern", help="Cutout file name in --cutouts, with {id} and/or {row}, e.g. "
        "'{id}.jpeg'.")], None),
    "batch_size": (Annotated[int, typer.Option("--batch-size", min=1,
                                            help="Images per model call.")], 256),
    "chunk_size": (Annotated[int, typer.Option(
        "--chunk-size", min=1, help="Rows per chunk (unit of work and of --resume).")], 8192),
    "device": (Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")], "auto"),
    "threads": (Annotated[int | None, typer.Option(
        "--threads", min=1, help="ONNX Runtime threads (default: cores available).")], None),
    "threshold": (Annotated[float | None, typer.Option(
        "--threshold", min=0.0, max=1.0, help="is_merger = p_merger_raw >= threshold (default: "
        "the model's decision threshold, else 0.5).")], None),
    "merger_fraction": (Annotated[str, typer.Option(
        "--merger-fraction", help="The catalogue's merger fraction that p_merger is stated for "
        "(Bayes' rule from the model's score map or training fraction), or 'estimate' (EM over "
        "the scores). "
        "Default 0.02: Darg et al. 2010a, 1-3 per cent of local galaxies.")], "0.02"),
    "target_purity": (Annotated[float | None, typer.Option(
        "--target-purity", min=0.0, max=1.0, help="Choose the threshold on the model's "
        "calibration curve: the smallest one with this purity at the merger fraction.")], None),
    "target_completeness": (Annotated[float | None, typer.Option(
        "--target-completeness", min=0.0, max=1.0, help="Choose the threshold on the model's "
        "calibration curve: the largest one with this completeness.")], None),
    "views": (Annotated[int | None, typer.Option(
        "--views", help="Views per cutout for p_merger_spread: 2 (identity + mirror, 2x model "
        "time) or 8 (all flips/rotations, 8x); 1 for a seed ensemble (spread over its members "
        "at no extra cost). Default: 1 for ensembles, else 2.")], None),
    "limit": (Annotated[int | None, typer.Option(
        "--limit", min=1, help="Classify only the first N rows.")], None),
    "max_pixels": (Annotated[int | None, typer.Option(
        "--max-pixels", min=1, help="Largest cutout (height x width pixels) decoded; larger "
        "ones get status too_large. Default: 8x what the model needs across, at least "
        "2048x2048.")], None),
}


@app.command()
@user_errors
@_option_group("settings", CLASSIFY_OPTIONS)
@_option_group("fetching", FETCH_OPTIONS)
def classify(
    catalog: Annotated[Path, typer.Option(
        "--catalog", help="Catalogue: CSV, ECSV, FITS, VOTable, Parquet or HDF5 table, a "
        "Parquet dataset directory or a HATS catalogue.")],
    model: Annotated[str | None, typer.Option(
        "--model", help="ONNX model (path or name); default: the shipped deepmerge-sdss.onnx "
        "(searched in $GALMERGE_MODELS, the package's galmerge/models, "
        "<prefix>/share/galmerge/models).")] = None,
    cutouts: Annotated[Path | None, typer.Option(
        "--cutouts", help="Folder of cutout files named by id (any image extension), or an "
        "HDF5 cube from `galmerge simulate`. Without it, the file_loc column is used.")] = None,
    output: Annotated[str | None, typer.Option(  # str: a trailing / means a dataset
        "--output", "-o", help="Output catalogue; format by extension (.csv .parquet .fits "
        ".ecsv .vot .h5), or DIR/ for a partitioned Parquet dataset (HATS for HATS input). "
        "Default: <catalogue stem>_scores.<ext> beside the catalogue.")] = None,
    settings: dict[str, Any] | None = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run from its last completed chunk.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    fetching: dict[str, Any] | None = None,
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="With --fetch: the cutout cache directory (default $GALMERGE_CACHE, "
        "else ~/.cache/galmerge/cutouts).")] = None,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="With --fetch: keep nothing on disk.")] = False,
    dask: Annotated[str | None, typer.Option(
        "--dask", help="Run the chunks on a Dask cluster: scheduler address, e.g. "
        "tcp://scheduler:8786 (workers must see the same paths).")] = None,
    dask_workers: Annotated[int | None, typer.Option(
        "--dask-workers", min=1, help="Run the chunks on a local Dask cluster of N worker "
        "processes.")] = None,
    dask_resources: Annotated[str | None, typer.Option(
        "--dask-resources", help="Resources each chunk task needs, e.g. GPU=1 (only workers "
        "started with --resources GPU=1 run them).")] = None,
) -> None:
    """Score every row of a catalogue; write probabilities and a status per row.

    Cutouts come from the file_loc column, from --cutouts (a folder of files, an HDF5 cube, or a
    cache directory filled by `galmerge fetch`), or from a survey service with --fetch.
    """
    from galmerge.inference.progress import RunProgress, print_summary
    from galmerge.inference.run import classify_catalog

    opts = _classify_options(settings or {}, fetching or {}, cutouts=cutouts, cache=cache,
                             no_cache=no_cache)
    runner = None
    if dask or dask_workers or dask_resources:
        from galmerge.inference.distributed import DaskRunner

        runner = DaskRunner.from_cli(dask, dask_workers, dask_resources)
    with RunProgress(enabled=not quiet) as prog, warnings.catch_warnings():
        warnings.simplefilter("ignore", GalmergeWarning)  # print_summary shows them
        summary = classify_catalog(catalog, model=model, output=output, options=opts,
                                   resume=resume, command=["galmerge", *sys.argv[1:]],
                                   progress=prog, runner=runner)
    print_summary(summary)


def _classify_options(settings: dict[str, Any], fetching: dict[str, Any], *,
                      cutouts: Path | None, cache: Path | None, no_cache: bool) -> Any:
    """``classify``'s ClassifyOptions: its settings, and where its cutouts come from."""
    from galmerge.inference.cache import is_cache_dir
    from galmerge.inference.fetch import FetchOptions
    from galmerge.inference.options import ClassifyOptions

    fetch_opts = None
    offline = fetching["service"] is None and cutouts is not None and is_cache_dir(cutouts)
    if fetching["service"] is not None or offline:
        if cutouts is not None and is_cache_dir(cutouts):
            if cache is not None and cache != cutouts:
                raise GalmergeError("give the cache once: --cutouts CACHE_DIR or --cache DIR")
            # --fetch: fetch what the cache lacks, into it; otherwise read it offline.
            cache, cutouts = cutouts, None
        fetch_opts = FetchOptions(**fetching, cache=str(cache) if cache else None,
                                  use_cache=not no_cache, offline=offline)
    elif fetching["scale_col"] is not None or fetching["scale"] is not None:
        raise GalmergeError("--scale and --scale-col apply to fetched or cached cutouts",
                            hint="add --fetch SERVICE, or --cutouts CACHE_DIR")
    return ClassifyOptions(**settings, cutouts=str(cutouts) if cutouts else None,
                           fetch=fetch_opts)


@app.command()
@user_errors
@_option_group("fetching", FETCH_OPTIONS)
def fetch(
    catalog: Annotated[Path, typer.Option(
        "--catalog", help="Catalogue: CSV, ECSV, FITS, VOTable, Parquet or HDF5 table, with "
        "RA/Dec.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Cache directory to fill (created; reused by reruns, by "
        "`classify --fetch ... --cache DIR` and by `classify --cutouts DIR`).")] = None,
    out: OldOutOpt = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="ONNX model whose metadata gives the cutout size and scale (default: "
        "classify's default model).")] = None,
    fetching: dict[str, Any] | None = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="Catalogue format when the extension does not tell.")] = None,
    id_col: Annotated[str | None, typer.Option("--id-col", help="Id column.")] = None,
    ra_col: Annotated[str | None, typer.Option("--ra-col", help="RA column.")] = None,
    dec_col: Annotated[str | None, typer.Option("--dec-col", help="Dec column.")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Fetch only the first N rows.")] = None,
    status_out: Annotated[Path | None, typer.Option(
        "--status-out", help="Per-row status table (CSV; default "
        "OUT/<catalogue>.fetch-status.csv).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Skip rows the previous status table records as done; ask again "
        "for the others.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing status table (the cache is kept).")] = False,
) -> None:
    """Prefetch every row's cutout into a cache directory, without classifying."""
    from galmerge.inference.fetch import FetchConfig, FetchOptions, fetch_catalog

    notes: list[str] = []
    out = _spelled(output, out, "--output", "--out", notes)
    opts = FetchOptions(**{**(fetching or {}), "service": (fetching or {})["service"] or "sdss"},
                        cache=str(out) if out else None)
    cfg = FetchConfig(catalog=catalog, out=out, options=opts, model=model, status_out=status_out,
                      format=fmt, id_col=id_col, ra_col=ra_col, dec_col=dec_col, limit=limit,
                      resume=resume, overwrite=overwrite)
    summary = fetch_catalog(cfg)
    _say_deprecated(notes)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.by_status.items()))
    st = summary.stats
    typer.echo(f"{summary.rows} rows in {summary.seconds:.1f} s: {counts}")
    typer.echo(f"requests {st['requests']} (retries {st['retries']}, rate-limited "
               f"{st['rate_limited']}), cache hits {st['cache_hits']}, resumed "
               f"{summary.skipped_done}")
    typer.echo(f"status table: {summary.status_table}")


@app.command()
@user_errors
def report(
    run: Annotated[Path | None, typer.Option(
        "--run", help="A `galmerge train` output directory.")] = None,
    old_run: Annotated[Path | None, typer.Argument(hidden=True)] = None,
    compare: Annotated[list[Path] | None, typer.Option(
        "--compare", help="Other run directories to draw beside it (repeat).")] = None,
    name: Annotated[list[str] | None, typer.Option(
        "--name", help="Legend names: one for --run then one per --compare (repeat).")] = None,
    source_data: Annotated[Path | None, typer.Option(
        "--source-data", help="Score this source dataset instead of the run's own.")] = None,
    source_labels: Annotated[Path | None, typer.Option(
        "--source-labels", help="Labels file for --source-data.")] = None,
    source_split: Annotated[str, typer.Option(
        "--source-split", help="Split of the source data: train/val/test/all.")] = "test",
    target_data: Annotated[Path | None, typer.Option(
        "--target-data", help="Score this (labelled) target dataset instead of the run's own, "
        "e.g. real SDSS dev images.")] = None,
    target_labels: Annotated[Path | None, typer.Option(
        "--target-labels", help="Labels file for --target-data.")] = None,
    target_split: Annotated[str | None, typer.Option(
        "--target-split", help="Split of the target data (default: test for the run's own "
        "target, all for --target-data).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output folder (default RUN/report).")] = None,
    out: OldOutOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    tsne_per_domain: Annotated[int, typer.Option(
        "--tsne-per-domain", min=10, help="Latent vectors per domain in the t-SNE.")] = 300,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", min=0, help="Bootstrap resamples for 95% intervals (0 = none).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling and t-SNE.")] = 0,
) -> None:
    """Diagnostic plots (ROC, histograms, t-SNE, Grad-CAM, curves) and an HTML summary."""
    from galmerge.training.report import DataChoice, build_report

    notes: list[str] = []
    rundir = _spelled(run, old_run, "--run", "a positional RUNDIR", notes)
    folder = _maybe_spelled(output, out, "--output", "--out", notes)
    src = (DataChoice(str(source_data), str(source_labels) if source_labels else None,
                      source_split) if source_data else None)
    tgt = (DataChoice(str(target_data), str(target_labels) if target_labels else None,
                      target_split or "all") if target_data else None)
    page = build_report(rundir, compare=list(compare or []), names=list(name or []) or None,
                        source_data=src, target_data=tgt, out=folder, device=device,
                        tsne_per_domain=tsne_per_domain, bootstrap=bootstrap, seed=seed,
                        own_splits={"source": source_split, "target": target_split or "test"})
    typer.echo(f"wrote {page} (and the PNG figures beside it)")
    _say_deprecated(notes)


@app.command()
@user_errors
def doctor(
    models: Annotated[Path | None, typer.Option(
        "--models", help="Model file or directory of .onnx models to check (default: "
        "$GALMERGE_MODELS, else the checkout's models/).")] = None,
    device: Annotated[str, typer.Option(
        "--device", help="'auto' (CUDA optional), 'cuda' (CUDA must work) or 'cpu'.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the installation: ONNX Runtime build, providers (does CUDA really run?), models.

    Exit status 0 when healthy, 1 with a one-line reason otherwise (the container's
    HEALTHCHECK runs this).
    """
    import json

    from galmerge.inference.doctor import format_report, run_doctor

    report = run_doctor(models=models, device=device)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(format_report(report))
    if not report.healthy:
        typer.echo(f"unhealthy: {report.reason}", err=True)
        raise typer.Exit(1)


def main() -> None:
    """Console entry point."""
    app(prog_name="galmerge")


if __name__ == "__main__":  # pragma: no cover
    main()
