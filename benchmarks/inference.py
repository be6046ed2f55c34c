"""Inference speed: ONNX Runtime vs PyTorch eager, and end-to-end `classify` throughput.

Measures, in one run on one machine:

1. images/s of the same DeepMerge weights (normalisation + softmax included) in
   ONNX Runtime and in PyTorch eager, at several batch sizes, with the same
   number of threads;
2. end-to-end ``classify_catalog`` rows/s (catalogue read, cutout read, preprocessing,
   model, part files, final CSV) from 423-px SDSS JPEG files, DECaLS FITS files and an
   HDF5 cube, against the model-only throughput at the same batch size;
3. where a JPEG/FITS row's time goes, stage by stage on one core (read, decode,
   crop + convention + resize, model, the rest of the pipeline);
4. decoding in parallel: threads vs processes over the same files (no model).

3. the cost of the per-row uncertainty (issue 11): model work per batch with one view,
   the default two views and all eight, and end-to-end with ``--views 8``
   (``--views-only MODEL`` measures just the model work, on a given model).

Targets (issue 4, 2-core machine): ORT >= 3x PyTorch eager; end-to-end from HDF5 >= 70%
of model-only throughput. Issue 13: classify from 423-px GZ1 JPEG files >= 2,000 rows/s
and >= 30% of model-only.

Usage (hold the CPU lock)::

    flock /tmp/galmerge-cpu.lock python benchmarks/inference.py [--threads 2] \\
        [--update-docs docs/benchmarks.md] [--skip-torch]
    flock /tmp/galmerge-cpu.lock python benchmarks/inference.py \\
        --views-only models/deepmerge-sdss.onnx
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galmerge.conventions import Normalisation  # noqa: E402
from galmerge.data.dataset import DatasetWriter  # noqa: E402
from galmerge.data.images import (  # noqa: E402
    decode_fits_bytes,
    decode_rgb8_bytes,
    image_suffix,
    prepare,
    read_image,
)
from galmerge.export import export_onnx, sdss_example_convention  # noqa: E402
from galmerge.inference.cutouts import OK, Cutout, CutoutRequest, LocalFileSource  # noqa: E402
from galmerge.inference.engine import OnnxClassifier  # noqa: E402
from galmerge.inference.ood import ood_flags  # noqa: E402
from galmerge.inference.pipeline import ClassifyOptions, classify_catalog  # noqa: E402
from galmerge.inference.preprocess import prepare_cutout  # noqa: E402
from galmerge.inference.views import DEFAULT_VIEWS, VIEW_CHOICES, score_views  # noqa: E402

EXAMPLE = ROOT / "catalogs" / "sdss_example"
SHARED = Path(os.environ.get("GALMERGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
NORM = Normalisation((20.5599, 17.5258, 12.9599), (32.2234, 26.4984, 21.4642))


def rate(fn: Callable[[], int], *, min_seconds: float = 2.0, repeats: int = 3) -> float:
    """Best items/s over ``repeats`` timed rounds of at least ``min_seconds`` each."""
    fn()  # warm-up
    best = 0.0
    for _ in range(repeats):
        n = 0
        t0 = time.perf_counter()
        while True:
            n += fn()
            dt = time.perf_counter() - t0
            if dt >= min_seconds:
                break
        best = max(best, n / dt)
    return best


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) so far."""
    import resource

    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    me = resource.getrusage(resource.RUSAGE_SELF)
    return busy / os.sysconf("SC_CLK_TCK"), me.ru_utime + me.ru_stime


def machine() -> str:
    """CPU model and core count (lscpu)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name")), platform.processor())
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor()
    return f"{model}, {len(os.sched_getaffinity(0))} cores available, {platform.python_version()}"


def model_vs_torch(onnx_path: Path, wrapper: object, threads: int, batches: list[int]
                   ) -> list[tuple[int, float, float]]:
    import torch

    torch.set_num_threads(threads)
    rows = []
    rng = np.random.default_rng(0)
    for b in batches:
        x = rng.uniform(0, 255, (b, 3, 75, 75)).astype(np.float32)
        clf = OnnxClassifier(onnx_path, device="cpu", batch_size=b, threads=threads)
        xt = torch.from_numpy(x)

        def run_ort(clf: OnnxClassifier = clf, x: np.ndarray = x) -> int:
            clf.run_batch(x)
            return len(x)

        def run_torch(xt: torch.Tensor = xt) -> int:
            with torch.inference_mode():
                wrapper(xt)  # type: ignore[operator]
            return xt.shape[0]

        rows.append((b, rate(run_ort), rate(run_torch)))
    return rows


def real_files() -> tuple[list[Path], list[Path]]:
    """423-px GZ1 JPEGs (the shared dev set, else the bundled example) and DECaLS FITS cubes."""
    gz1 = SHARED / "sdss_gz1" / "dev"
    jpegs = sorted(gz1.glob("*.jpeg")) if gz1.is_dir() else sorted((EXAMPLE / "cutouts").iterdir())
    jpegs = [f for f in jpegs if f.stem != "587729387686002878"]  # the SDSS error JPEG
    decals = SHARED / "decals_fits"
    folder = decals if decals.is_dir() else ROOT / "tests" / "data" / "decals"
    fits = [f for f in sorted(folder.glob("*.fits"))
            if "incomplete" not in f.name and "bad_pix" not in f.name]  # unreadable, blank
    return jpegs, fits


def file_catalog(path: Path, files: list[Path], rows: int, first_id: int) -> Path:
    pd.DataFrame({"objid": [str(first_id + i) for i in range(rows)],
                  "file_loc": [str(files[i % len(files)]) for i in range(rows)]}
                 ).to_csv(path, index=False)
    return path


def end_to_end(onnx_path: Path, tmp: Path, threads: int, batch: int, jpeg_rows: int,
               h5_rows: int, fits_rows: int) -> dict[str, list[float]]:
    conv = sdss_example_convention()
    jpegs, fits = real_files()
    jcat = file_catalog(tmp / "jpeg.csv", jpegs, jpeg_rows, 587700000000000000)
    fcat = file_catalog(tmp / "fits.csv", fits, fits_rows, 587600000000000000)
    # HDF5: a dataset file of model-ready images (the real JPEGs, prepared, tiled).
    prepared = np.stack([prepare(read_image(f).pixels, conv.size, conv.crop_fraction)
                         for f in jpegs[:64]])
    cube = tmp / "cube.h5"
    ids = [str(587800000000000000 + i) for i in range(h5_rows)]
    with DatasetWriter(cube, h5_rows, conv, labels=np.full(h5_rows, -1), ids=ids,
                       chunk_images=64) as w:
        step = 1024
        for s in range(0, h5_rows, step):
            k = min(step, h5_rows - s)
            w.write(s, prepared[np.arange(s, s + k) % len(prepared)])
    hcat = tmp / "h5.csv"
    pd.DataFrame({"objid": ids}).to_csv(hcat, index=False)

    # Warm the page cache: the numbers are about the read path, not the disk.
    for f in [cube, *jpegs, *fits]:
        f.read_bytes()
    opts = dict(batch_size=batch, threads=threads, device="cpu")
    clf = OnnxClassifier(onnx_path, device="cpu", batch_size=batch, threads=threads)
    x = np.ascontiguousarray(prepared[np.arange(batch) % len(prepared)])
    out: dict[str, list[float]] = {"jpeg": [], "fits": [], "hdf5": [], "model_only": []}
    # Interleaved rounds, best of each: a burst of load from another process on the
    # shared machine then lowers one round, not one side of the comparison.
    for _ in range(3):
        out["model_only"].append(rate(lambda: (clf.run_batch(x), batch)[1], repeats=1))
        for label, cat, extra in (("hdf5", hcat, {"cutouts": str(cube)}), ("jpeg", jcat, {}),
                                  ("fits", fcat, {})):
            o = tmp / f"{label}_scores.csv"
            s = classify_catalog(cat, model=onnx_path, output=o,
                                 options=ClassifyOptions(**opts, **extra))
            assert s.status_counts.get("ok") == s.rows, s.status_counts
            out[label].append(s.rows / s.seconds)
    return out


def _decode(data: bytes, path: Path) -> Cutout:
    if image_suffix(path) == ".fits":
        return Cutout(OK, decode_fits_bytes(data, source=str(path)))
    return Cutout(OK, decode_rgb8_bytes(data, source=str(path)))


def stages(files: list[Path], onnx_path: Path, batch: int) -> dict[str, float]:
    """CPU milliseconds per row of each stage, one after the other on one thread (best of 3).

    CPU time of this thread (ONNX Runtime with 1 thread runs in it), so that other jobs on a
    shared machine slow the run down but change the shares little. "OOD/uncertainty" is what
    the issue-11 defaults add to the model: the second (mirrored) view and the OOD statistics;
    "write" is the result columns of a chunk written as CSV.
    """
    conv = sdss_example_convention()
    clf = OnnxClassifier(onnx_path, device="cpu", batch_size=batch, threads=1)
    best: dict[str, float] = {}
    clock = time.thread_time
    for _ in range(3):
        t: dict[str, float] = {"read": 0.0, "decode": 0.0, "crop/convention/resize": 0.0}
        imgs = []
        for f in files:
            t0 = clock()
            data = f.read_bytes()
            t1 = clock()
            cut = _decode(data, f)
            t2 = clock()
            st, _, img = prepare_cutout(cut, conv)
            t3 = clock()
            assert st == OK and img is not None
            imgs.append(img)
            t["read"] += t1 - t0
            t["decode"] += t2 - t1
            t["crop/convention/resize"] += t3 - t2
        x = np.stack(imgs)[np.arange(batch) % len(imgs)]
        per_file = len(files) / batch
        t0 = clock()
        p = clf.run_batch(x)
        t1 = clock()
        _, spread = score_views(clf.run_batch, x, DEFAULT_VIEWS)
        t2 = clock()
        ood_flags(x, conv.pixel_convention)
        t3 = clock()
        frame = pd.DataFrame({"objid": [str(587700000000000000 + i) for i in range(batch)],
                              "p_merger": p, "p_merger_raw": p, "p_merger_spread": spread,
                              "is_merger": p > 0.5, "ood": False, "status": "ok",
                              "status_detail": ""})
        frame.to_csv(io.StringIO(), index=False)
        t4 = clock()
        t["model (1 view)"] = (t1 - t0) * per_file
        t["OOD/uncertainty (2nd view + OOD)"] = ((t2 - t1) - (t1 - t0) + (t3 - t2)) * per_file
        t["write (CSV)"] = (t4 - t3) * per_file
        for k, v in t.items():
            best[k] = min(best.get(k, np.inf), v / len(files) * 1e3)
    return best


def uncertainty_cost(clf: OnnxClassifier, x: np.ndarray, convention: str
                     ) -> dict[str, list[float]]:
    """images/s per batch (the run's threads): model only, the default two views, and the
    two views + the OOD statistics (what classify does per batch); 3 interleaved rounds."""
    n = len(x)
    out: dict[str, list[float]] = {"model": [], "views": [], "views+ood": []}
    for _ in range(3):
        out["model"].append(rate(lambda: (clf.run_batch(x), n)[1], repeats=1))
        out["views"].append(rate(lambda: (score_views(clf.run_batch, x, DEFAULT_VIEWS), n)[1],
                                 repeats=1))
        out["views+ood"].append(rate(lambda: (score_views(clf.run_batch, x, DEFAULT_VIEWS),
                                              ood_flags(x, convention), n)[2], repeats=1))
    return out


def _read_prepare(path: str) -> np.ndarray | None:
    """One row's work without the model (module level: runs in worker processes too)."""
    source = LocalFileSource()
    _, _, img = prepare_cutout(source.get(CutoutRequest(row=0, id="x", file_loc=path)),
                               sdss_example_convention())
    return img


def decode_parallelism(files: list[Path], rows: int) -> list[tuple[str, float]]:
    """Rows/s of read + decode + prepare (no model) with threads and with processes."""
    from concurrent.futures import ProcessPoolExecutor

    from galmerge.inference.concurrency import ordered_map

    paths = [str(files[i % len(files)]) for i in range(rows)]
    out = []
    for w in (1, 2, 4):
        def threads(w: int = w) -> int:
            return sum(1 for _ in ordered_map(_read_prepare, paths, workers=w, window=4 * w))
        out.append((f"{w} thread{'s' if w > 1 else ''}", rate(threads, min_seconds=1.0,
                                                                repeats=2)))
    for w in (2,):
        with ProcessPoolExecutor(w) as pool:
            def procs(pool: ProcessPoolExecutor = pool) -> int:
                return sum(1 for _ in pool.map(_read_prepare, paths, chunksize=32))
            out.append((f"{w} processes (chunks of 32 rows)", rate(procs, min_seconds=1.0,
                                                                    repeats=2)))
    return out


def int8_vs_fp32(onnx_path: Path, tmp: Path, batch: int, threads: int
                 ) -> tuple[float, float]:
    """Model-only images/s of the fp32 export and of its ONNX Runtime dynamic int8 quantization.

    Dynamic quantization needs no calibration set; it is the cheap way to learn whether int8
    pays on this CPU at all before calibrating a static one on real pixels.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = tmp / "bench-int8.onnx"
    quantize_dynamic(str(onnx_path), str(q), weight_type=QuantType.QInt8)
    x = np.random.default_rng(0).uniform(0, 255, (batch, 3, 75, 75)).astype(np.float32)
    rates = []
    for path in (onnx_path, q):
        clf = OnnxClassifier(path, device="cpu", batch_size=batch, threads=threads)
        rates.append(rate(lambda clf=clf: (clf.run_batch(x), batch)[1], repeats=2))
    return rates[0], rates[1]


def views_cost(clf: OnnxClassifier, x: np.ndarray) -> dict[str, float]:
    """images/s of the model work classify does per batch for ``p_merger_spread`` (issue 11):
    ``views1`` = one model call (before issue 11), ``views2`` (default), ``views8``."""
    n = len(x)
    out = {"views1": rate(lambda: (clf.run_batch(x), n)[1], repeats=1)}
    for v in VIEW_CHOICES:
        out[f"views{v}"] = rate(lambda v=v: (score_views(clf.run_batch, x, v), n)[1], repeats=1)
    return out


def views_only(model: Path, threads: int, batch: int) -> None:
    """``--views-only MODEL``: the cost of the views on a real model, 3 interleaved rounds."""
    conv = sdss_example_convention()
    files = [f for f in sorted((EXAMPLE / "cutouts").iterdir()) if f.stem != "587729387686002878"]
    prepared = np.stack([prepare(read_image(f).pixels, conv.size, conv.crop_fraction)
                         for f in files])
    x = np.ascontiguousarray(prepared[np.arange(batch) % len(prepared)])
    clf = OnnxClassifier(model, device="cpu", batch_size=batch, threads=threads)
    rounds = [views_cost(clf, x) for _ in range(3)]
    best = {k: max(r[k] for r in rounds) for k in rounds[0]}
    print(f"Machine: {machine()}; model {model.name}, batch {batch}, {threads} threads; "
          "best of 3 interleaved rounds")
    print("\n| model work | images/s (best) | cost vs one view |\n|---|---:|---:|")
    for k, label in (("views1", "one view (no spread; before issue 11)"),
                     ("views2", "`--views 2` (default: identity + mirror)"),
                     ("views8", "`--views 8` (all flips/rotations)")):
        print(f"| {label} | {best[k]:,.0f} | {best['views1'] / best[k]:.2f}× |")


def main() -> None:
    if "--views-only" in sys.argv:
        ap = argparse.ArgumentParser(description="cost of p_merger_spread (issue 11)")
        ap.add_argument("--views-only", type=Path, required=True, metavar="MODEL")
        ap.add_argument("--threads", type=int, default=2)
        ap.add_argument("--batch", type=int, default=256)
        a = ap.parse_args()
        views_only(a.views_only, a.threads, a.batch)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="64,256,1024")
    ap.add_argument("--batch", type=int, default=256, help="classify batch size")
    ap.add_argument("--jpeg-rows", type=int, default=3000)
    ap.add_argument("--fits-rows", type=int, default=300)
    ap.add_argument("--h5-rows", type=int, default=20000)
    ap.add_argument("--skip-torch", action="store_true",
                    help="leave out the ONNX Runtime vs PyTorch table")
    ap.add_argument("--int8", action="store_true",
                    help="also time an ONNX Runtime dynamic int8 quantization of the model")
    ap.add_argument("--update-docs", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from galmerge.export import _ExportWrapper
    from galmerge.training.checkpoint import save_checkpoint
    from galmerge.training.models import DeepMerge

    t_start, (busy0, mine0) = time.perf_counter(), cpu_seconds()
    jpegs, fits = real_files()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        torch.manual_seed(0)
        model = DeepMerge().eval()
        conv = sdss_example_convention()
        ck = save_checkpoint(tmp / "bench.pt", model, arch="deepmerge", config={"bench": 1},
                             normalisation={"target": NORM}, conventions={"target": conv})
        onnx_path = export_onnx(ck, tmp / "bench.onnx").path
        wrapper = _ExportWrapper(model, NORM, 1, False).eval()
        batches = [int(b) for b in args.batches.split(",")]
        mt = [] if args.skip_torch else model_vs_torch(onnx_path, wrapper, args.threads,
                                                       batches)
        e2e = end_to_end(onnx_path, tmp, args.threads, args.batch, args.jpeg_rows,
                         args.h5_rows, args.fits_rows)
        st_j = stages(jpegs[:100], onnx_path, args.batch)
        st_f = stages(fits, onnx_path, args.batch)
        par = decode_parallelism(jpegs, 400)
        clf = OnnxClassifier(onnx_path, device="cpu", batch_size=args.batch, threads=args.threads)
        unc = uncertainty_cost(clf, model_ready(jpegs, args.batch), conv.pixel_convention)
        q8 = int8_vs_fp32(onnx_path, tmp, args.batch, args.threads) if args.int8 else None

    busy1, mine1 = cpu_seconds()
    foreign = max(0.0, (busy1 - busy0) - (mine1 - mine0))
    wall = time.perf_counter() - t_start
    lines = [
        f"Machine: {machine()}; torch {torch.__version__}, onnxruntime "
        f"{__import__('onnxruntime').__version__}; {args.threads} threads for both engines.",
        "Reproduce: `nice -n 19 python benchmarks/inference.py "
        f"--threads {args.threads}`. Best of 3 interleaved rounds; other processes used "
        f"{foreign:.0f} CPU-s during this {wall:.0f}-s run (0 = the machine was ours).",
    ]
    if mt:
        lines += [
            "",
            "| batch | ONNX Runtime (images/s) | PyTorch eager (images/s) | ratio |",
            "|---:|---:|---:|---:|",
        ]
        lines += [f"| {b} | {o:,.0f} | {t:,.0f} | {o / t:.1f}× |" for b, o, t in mt]
    lines += e2e_lines(e2e, args, len(jpegs), len(fits))
    lines += stage_lines(st_j, st_f, len(jpegs[:100]), len(fits), args.batch)
    lines += ["", "Read + decode + crop/resize of the JPEG files without the model "
              "(400 rows, best of 2):", "", "| workers | rows/s |", "|---|---:|"]
    lines += [f"| {name} | {r:,.0f} |" for name, r in par]
    lines += uncertainty_lines(unc, args)
    if q8 is not None:
        fp, i8 = q8
        lines += ["", f"int8 (ONNX Runtime dynamic quantization, QInt8 weights) vs fp32, model "
                      f"only, batch {args.batch}: {i8:,.0f} vs {fp:,.0f} images/s = "
                      f"{i8 / fp:.2f}× (keep only at ≥ 1.5×: "
                      f"{'would be kept' if i8 / fp >= 1.5 else 'not kept'})."]
    if mt:
        worst = min(o / t for _, o, t in mt)
        lines += ["", f"ONNX Runtime ≥ 3× PyTorch eager: {'met' if worst >= 3 else 'MISSED'} "
                      f"at every batch size (lowest ratio {worst:.1f}×)."]
    if foreign > 0.05 * wall:
        lines += ["", f"WARNING: other processes used {foreign:.0f} CPU-s: timings are not clean; "
                      "rerun when the machine is quiet."]
    text = "\n".join(lines)
    print(text)
    if args.update_docs:
        doc = args.update_docs.read_text()
        start = doc.index("<!-- section: inference -->")
        end = doc.index("<!-- end section: inference -->")
        body = ("<!-- section: inference -->\n## Inference: ONNX Runtime vs PyTorch eager, "
                "end-to-end classify, stages\n\n" + text + "\n")
        args.update_docs.write_text(doc[:start] + body + doc[end:])


def e2e_lines(e2e: dict[str, list[float]], args: argparse.Namespace, n_jpeg: int,
              n_fits: int) -> list[str]:
    m, h, j, f = (max(e2e[k]) for k in ("model_only", "hdf5", "jpeg", "fits"))

    def spread(k: str) -> str:
        return f"{min(e2e[k]):,.0f}–{max(e2e[k]):,.0f}"

    return [
        "",
        f"End-to-end `classify` (batch {args.batch}, CSV catalogue in, CSV out; whole run "
        "including start-up and writing the output; page cache warm):",
        "",
        "| input | rows/s (best) | rounds | fraction of model-only |",
        "|---|---:|---:|---:|",
        f"| model only (ONNX Runtime, batch {args.batch}) | {m:,.0f} | {spread('model_only')} "
        "| 100% |",
        f"| HDF5 cube ({args.h5_rows:,} rows, 75×75 model-ready) | {h:,.0f} | {spread('hdf5')} | "
        f"{h / m:.0%} |",
        f"| SDSS GZ1 JPEG files ({args.jpeg_rows:,} rows over {n_jpeg} files, 423×423, decode + "
        f"crop 0.5 + area resize) | {j:,.0f} | {spread('jpeg')} | {j / m:.0%} |",
        f"| DECaLS FITS files ({args.fits_rows:,} rows over {n_fits} files, 3×424², astropy + "
        f"Lupton stretch + resize) | {f:,.0f} | {spread('fits')} | {f / m:.0%} |",
        "",
        f"Issue 13 target, JPEG files ≥ 2,000 rows/s and ≥ 30% of model-only: "
        f"{'met' if j >= 2000 and j / m >= 0.3 else 'MISSED'} ({j:,.0f} rows/s, {j / m:.0%}).",
    ]


def model_ready(files: list[Path], batch: int) -> np.ndarray:
    """A batch of real model inputs (the JPEGs, prepared, tiled)."""
    conv = sdss_example_convention()
    prepared = np.stack([prepare(read_image(f).pixels, conv.size, conv.crop_fraction)
                         for f in files[:64]])
    return np.ascontiguousarray(prepared[np.arange(batch) % len(prepared)])


def uncertainty_lines(unc: dict[str, list[float]], args: argparse.Namespace) -> list[str]:
    m = max(unc["model"])
    out = ["", f"Cost of the issue-11 defaults per batch of {args.batch} ({args.threads} ORT "
               "threads, best of 3 interleaved rounds):", "",
           "| model work per batch | images/s (best) | cost vs model only |", "|---|---:|---:|"]
    for k, label in (("model", "model only (one view)"),
                     ("views", "default two views (`p_merger_spread`)"),
                     ("views+ood", "two views + OOD statistics (classify's default)")):
        out.append(f"| {label} | {max(unc[k]):,.0f} | {m / max(unc[k]):.2f}× |")
    worst = m / max(unc["views+ood"])
    out += ["", f"Issue 11 budget, default uncertainty ≤ 2× model-only: "
                f"{'met' if worst <= 2 else 'MISSED'} ({worst:.2f}×)."]
    return out


def stage_lines(st_j: dict[str, float], st_f: dict[str, float], n_j: int, n_f: int,
                batch: int) -> list[str]:
    out = ["", f"Where a row's time goes, one stage after the other on one thread (CPU ms per "
               f"row, best of 3; {n_j} JPEG files, {n_f} FITS files; model at batch {batch}, "
               "1 ORT thread):", "",
           "| stage | JPEG ms/row | JPEG share | FITS ms/row | FITS share |",
           "|---|---:|---:|---:|---:|"]
    tj, tf = sum(st_j.values()), sum(st_f.values())
    for k in st_j:
        out.append(f"| {k} | {st_j[k]:.3f} | {st_j[k] / tj:.0%} | {st_f[k]:.3f} | "
                   f"{st_f[k] / tf:.0%} |")
    out.append(f"| **sum** | {tj:.3f} | | {tf:.3f} | |")
    return out


if __name__ == "__main__":
    main()
