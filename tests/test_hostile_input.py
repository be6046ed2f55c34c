"""Hostile and broken input (issue 16), built on the fly: tiny files, a loopback server.

One bad row never ends a run, a small file never eats the machine (peak RSS of the
child process is measured), no input is ever overwritten, a model is not trusted
with anything it has not shown, and an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from PIL import Image

from galmerge.data.dataset import write_dataset
from galmerge.data.images import prepare, read_image
from galmerge.data.limits import ImageLimits, ImageTooLarge, NotARegularFile, open_regular
from galmerge.errors import GalmergeError
from galmerge.export import sdss_example_convention
from galmerge.inference.cache import CutoutCache
from galmerge.inference.cutouts import CutoutRequest, LocalFileSource
from galmerge.inference.http import HttpSettings
from galmerge.inference.pipeline import ClassifyOptions, classify_catalog
from galmerge.inference.services import Geometry, SdssCutoutSource
from tests.conftest import EXAMPLE, ROOT

MODEL = ROOT / "models" / "deepmerge-sdss.onnx"
#: Peak resident memory allowed to a classify run over bomb-like inputs.
RSS_LIMIT_KB = 1024 * 1024
#: Runs `galmerge` in a child and writes its peak RSS (KiB) to argv[1] on exit.
RSS_WRAPPER = (
    "import atexit, resource, sys\n"
    "out = sys.argv[1]\n"
    "atexit.register(lambda: open(out, 'w').write("
    "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n"
    "sys.argv = ['galmerge', *sys.argv[2:]]\n"
    "from galmerge.cli import main\n"
    "main()\n")


def run_galmerge(args: list[str], tmp: Path, *, nofile: int | None = None,
                 fsize: int | None = None, timeout: float = 300
                 ) -> tuple[subprocess.CompletedProcess[str], int]:
    """``galmerge ARGS`` in a child process; returns it and its peak RSS in KiB."""
    rss_file = tmp / f"rss-{time.monotonic_ns()}.txt"

    def limits() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    proc = subprocess.run([sys.executable, "-c", RSS_WRAPPER, str(rss_file), *args],
                          capture_output=True, text=True, check=False, cwd=ROOT,
                          timeout=timeout, preexec_fn=limits,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    rss = int(rss_file.read_text()) if rss_file.exists() else -1
    return proc, rss


def snapshot(folder: Path, skip: set[str] = frozenset()) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` (sparse giants: size and mtime)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.is_file() or p.name in skip:
            continue
        st = p.stat()
        if st.st_size > 50 * 2**20:
            out[str(p)] = f"{st.st_size}:{st.st_mtime_ns}"
        else:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def example_files() -> list[Path]:
    cat = pd.read_csv(EXAMPLE / "sdss_example.csv", dtype=str)
    return [EXAMPLE / f for f in cat["file_loc"]]


def jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF header patched to claim ``width`` x ``height``."""
    j = bytearray(data)
    at = j.find(b"\xff\xc0")
    if at < 0:
        at = j.find(b"\xff\xc2")
    struct.pack_into(">HH", j, at + 5, height, width)
    return bytes(j)


def tiny_jpeg(size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (120, 60, 30)).save(buf, "JPEG")
    return buf.getvalue()


# --- the hostile kinds, each with the status it must get ------------------------------------

def build_hostile(d: Path) -> list[tuple[str, str, str, str]]:
    """Write hostile cutouts into ``d``; returns ``(id, file_loc, status, detail word)``."""
    real = example_files()[0].read_bytes()
    rows: list[tuple[str, str, str, str]] = []

    def put(name: str, data: bytes) -> Path:
        p = d / name
        p.write_bytes(data)
        return p

    rows.append(("sof30000", str(put("sof30000.jpeg", jpeg_claiming(real, 30000, 30000))),
                 "too_large", "30000x30000"))
    rows.append(("jpeg12000", str(put("small12000.jpeg", jpeg_claiming(tiny_jpeg(), 12000,
                                                                        12000))),
                 "too_large", "12000x12000"))
    hdr = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2),
                       ("NAXIS1", 10**6), ("NAXIS2", 10**6)])
    rows.append(("fits1e6", str(put("huge.fits", hdr.tostring().encode("ascii"))),
                 "too_large", "pixels"))
    with (d / "huge.npy").open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (3, 10**31, 10**31)})
    rows.append(("npy1e62", str(d / "huge.npy"), "too_large", "pixels"))
    with h5py.File(d / "huge.h5", "w") as h5:
        h5.create_dataset("images", shape=(2, 3, 10**6, 10**6), dtype="f4",
                          chunks=(1, 1, 64, 64))
    rows.append(("h5huge", f"{d / 'huge.h5'}#0", "too_large", "pixels"))
    sparse = d / "sparse.jpeg"
    with sparse.open("wb") as fh:
        fh.truncate(20 * 2**30)
    if sparse.stat().st_blocks * 512 > 2**20:  # no sparse files here: do not fill the disk
        sparse.unlink()
    else:
        rows.append(("sparse20g", str(sparse), "too_large", "bytes"))
    rows.append(("longname", str(d / ("a" * 300 + ".jpeg")), "unreadable", "too long"))
    os.mkfifo(d / "p.h5")
    rows.append(("fifo_h5", f"{d / 'p.h5'}#0", "unreadable", "FIFO"))
    os.mkfifo(d / "f.jpeg")
    rows.append(("fifo_jpeg", str(d / "f.jpeg"), "unreadable", "FIFO"))
    (d / "folder.jpeg").mkdir()
    rows.append(("folder", str(d / "folder.jpeg"), "unreadable", "folder"))
    (d / "null.jpeg").symlink_to("/dev/null")
    rows.append(("device", str(d / "null.jpeg"), "unreadable", "device"))
    rows.append(("empty", str(put("empty.png", b"")), "unreadable", "JPEG or PNG"))
    rows.append(("text", str(put("text.jpeg", b"hello, not an image\n" * 10)), "unreadable",
                 "JPEG or PNG"))
    rows.append(("truncated", str(put("truncated.jpeg", real[:1500])), "unreadable",
                 "truncated"))
    with (d / "obj.npy").open("wb") as fh:
        np.save(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    rows.append(("pickle", str(d / "obj.npy"), "unreadable", "objects"))
    if os.geteuid() != 0:  # root reads anything
        noread = put("noread.jpeg", real)
        noread.chmod(0)
        rows.append(("noread", str(noread), "unreadable", "permission"))
    return rows


def build_cubes(d: Path, n: int) -> list[tuple[str, str, str, str]]:
    """``n`` one-image HDF5 cubes (more than the open-file limit of the child)."""
    conv = sdss_example_convention()
    img = prepare(read_image(example_files()[1]).pixels, conv.size, conv.crop_fraction)
    cubes = d / "cubes"
    cubes.mkdir()
    first = write_dataset(cubes / "c000.h5", img[None], np.array([-1]), conv)
    rows = [("cube000", f"{first}#0", "ok", "")]
    for i in range(1, n):  # byte copies of one dataset file: fast to make
        dest = cubes / f"c{i:03d}.h5"
        shutil.copyfile(first, dest)
        rows.append((f"cube{i:03d}", f"{dest}#0", "ok", ""))
    return rows


def test_mixed_catalogue_every_row_out_good_rows_unchanged_memory_bounded(tmp_path: Path
                                                                          ) -> None:
    d = tmp_path / "in"
    d.mkdir()
    good = [(f"good{i}", str(f), "ok", "") for i, f in enumerate(example_files())
            if f.stem != "587729387686002878"]  # the bundled error-page JPEG is `blank`
    rows = good[:6] + build_hostile(d) + good[6:] + build_cubes(d, 400)
    cat = d / "mixed.csv"
    pd.DataFrame({"objid": [r[0] for r in rows], "file_loc": [r[1] for r in rows]}).to_csv(
        cat, index=False)
    before = snapshot(d)
    out = tmp_path / "mixed_scores.csv"
    proc, rss = run_galmerge(["classify", "--quiet", "--catalog", str(cat), "--output",
                              str(out), "--threads", "1", "--batch-size", "64"], tmp_path,
                             nofile=256)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert 0 < rss < RSS_LIMIT_KB, f"peak RSS {rss} KiB"
    got = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(got) == len(rows) and list(got["objid"]) == [r[0] for r in rows]
    for (ident, _, status, word), (_, row) in zip(rows, got.iterrows(), strict=True):
        assert row["status"] == status, (ident, row["status"], row["status_detail"])
        assert word in row["status_detail"], (ident, row["status_detail"])
        assert not re.search(r"\b0x[0-9a-fA-F]{6,}|\.tmp", row["status_detail"]), ident
    assert snapshot(d) == before  # inputs unchanged
    # Good rows get exactly what a clean run of them alone gives.
    clean_cat = tmp_path / "clean.csv"
    pd.DataFrame({"objid": [r[0] for r in good], "file_loc": [r[1] for r in good]}).to_csv(
        clean_cat, index=False)
    clean = tmp_path / "clean_scores.csv"
    classify_catalog(clean_cat, model=MODEL, output=clean,
                     options=ClassifyOptions(threads=1, batch_size=64))
    want = pd.read_csv(clean, dtype={"objid": str}).set_index("objid")["p_merger"]
    have = got.set_index("objid").loc[want.index, "p_merger"].astype(float)
    np.testing.assert_allclose(have.to_numpy(), want.to_numpy(), atol=1e-6)


def test_limits_are_scaled_to_the_model_and_an_option_raises_them(tmp_path: Path) -> None:
    conv = sdss_example_convention()
    lim = ImageLimits.for_model(conv.size, conv.crop_fraction)
    assert lim.max_pixels == 2048 * 2048  # a 75-px model never needs more than the floor
    big = ImageLimits.for_model(512, 0.5)
    assert big.max_pixels == (8 * 1024) ** 2
    p = tmp_path / "b.jpeg"
    Image.new("RGB", (3000, 20), (9, 9, 9)).save(p)
    with pytest.raises(ImageTooLarge):
        read_image(p, limits=ImageLimits.from_pixels(3000 * 19))
    assert read_image(p, limits=ImageLimits.from_pixels(3000 * 20)).pixels.shape == (3, 20,
                                                                                     3000)
    # --max-pixels reaches the source: a lower limit turns a real cutout into too_large.
    cat = tmp_path / "c.csv"
    pd.DataFrame({"objid": ["a"], "file_loc": [str(example_files()[0])]}).to_csv(cat,
                                                                                  index=False)
    out = tmp_path / "c_scores.csv"
    classify_catalog(cat, model=MODEL, output=out, options=ClassifyOptions(max_pixels=10_000))
    row = pd.read_csv(out).iloc[0]
    assert row["status"] == "too_large" and "--max-pixels" in row["status_detail"]


def test_open_regular_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "x.fits"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(NotARegularFile, match="FIFO"):
        open_regular(fifo)
    assert time.monotonic() - t0 < 1


def test_open_hdf5_cubes_are_bounded(tmp_path: Path) -> None:
    rows = build_cubes(tmp_path, LocalFileSource.MAX_OPEN_CUBES + 10)
    src = LocalFileSource(base_dir=tmp_path)
    for i, (ident, loc, _, _) in enumerate(rows):
        assert src.get(CutoutRequest(row=i, id=ident, file_loc=loc)).ok
        assert len(src._cubes) <= LocalFileSource.MAX_OPEN_CUBES
    src.close()
    assert not src._cubes


# --- models are not trusted -----------------------------------------------------------------

def tiny_model(path: Path, *, value: float | None = None, output_dims: str = "N",
               meta: dict[str, str] | None = None) -> Path:
    """An ONNX model with the shipped model's metadata that returns ``value`` per image.

    ``output_dims``: ``N`` (one per image), ``N3`` (three per image) or ``scalar``.
    """
    import onnx
    from onnx import TensorProto, helper

    shipped = onnx.load(str(MODEL))
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 75, 75])
    axes, shape = {"N": ([1, 2, 3], ["N"]), "N3": ([2, 3], ["N", 3]),
                   "scalar": ([0, 1, 2, 3], [])}[output_dims]
    c = helper.make_tensor("c", TensorProto.FLOAT, [], [0.0 if value is None else value])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=axes, keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["z", "c"], ["p_merger"])]
    out = helper.make_tensor_value_info("p_merger", TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "tiny", [inp], [out], initializer=[c, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {p.key: p.value for p in shipped.metadata_props}
    props.update(meta or {})
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def _small_catalogue(tmp: Path, n: int = 3) -> Path:
    cat = tmp / "three.csv"
    files = [f for f in example_files() if f.stem != "587729387686002878"][:n]
    pd.DataFrame({"objid": [f.stem for f in files],
                  "file_loc": [str(f) for f in files]}).to_csv(cat, index=False)
    return cat


@pytest.mark.parametrize("value", [5.0, -3.0, 43.0, float("nan"), float("inf")])
def test_model_outputs_that_are_not_probabilities_get_a_status(tmp_path: Path,
                                                               value: float) -> None:
    model = tiny_model(tmp_path / "m.onnx", value=value)
    cat = _small_catalogue(tmp_path)
    out = tmp_path / "o.csv"
    summary = classify_catalog(cat, model=model, output=out)
    got = pd.read_csv(out, keep_default_na=False)
    assert (got["status"] == "bad_model_output").all()
    assert (got["p_merger"] == "").all() and (got["is_merger"] == "").all()
    assert any("not probabilities" in w for w in summary.warnings)


def test_a_model_returning_probabilities_is_trusted(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx", value=0.75)
    out = tmp_path / "o.csv"
    classify_catalog(_small_catalogue(tmp_path), model=model, output=out)
    got = pd.read_csv(out)
    assert (got["status"] == "ok").all() and np.allclose(got["p_merger_raw"], 0.75)


@pytest.mark.parametrize(("kw", "words"), [
    ({"output_dims": "N3"}, "one probability per image"),
    ({"output_dims": "scalar"}, "one probability per image"),
    ({"meta": {"galmerge.size": "75.5"}}, "whole number"),
    ({"meta": {"galmerge.size": "100000"}}, "8 to 1024"),
    ({"meta": {"galmerge.convention_extra": "{not json"}}, "JSON object"),
    ({"meta": {"galmerge.convention_extra": "[1, 2]"}}, "JSON object"),
    ({"meta": {"galmerge.crop_fraction": "half"}}, "a number"),
    ({"meta": {"galmerge.pixel_scale_arcsec": "-1"}}, "positive"),
])
def test_malformed_models_are_refused_at_load_with_one_line(tmp_path: Path, kw: dict,
                                                            words: str) -> None:
    model = tiny_model(tmp_path / "bad.onnx", value=0.5, **kw)
    cat = _small_catalogue(tmp_path)
    proc, _ = run_galmerge(["classify", "--quiet", "--catalog", str(cat), "--model",
                            str(model)], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("three_scores*"))


def test_batch_size_is_capped_by_the_rows(tmp_path: Path) -> None:
    cat = _small_catalogue(tmp_path)
    summary = classify_catalog(cat, model=MODEL, output=tmp_path / "o.csv",
                               options=ClassifyOptions(batch_size=20000))
    assert summary.model["batch_size"] == 3 and summary.rows == 3


# --- inputs are sacred ------------------------------------------------------------------------

def _refused(args: list[str], tmp: Path, protected: list[Path]) -> str:
    before = {p: p.read_bytes() for p in protected}
    proc, _ = run_galmerge(args, tmp)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for p in protected:
        assert p.read_bytes() == before[p], p
    return proc.stderr


def test_output_never_replaces_the_cube_the_catalogue_or_the_model(tmp_path: Path) -> None:
    conv = sdss_example_convention()
    img = prepare(read_image(example_files()[1]).pixels, conv.size, conv.crop_fraction)
    cube = write_dataset(tmp_path / "sims.h5", np.stack([img, img]), np.array([0, 1]), conv,
                         ids=["a", "b"])
    cat = tmp_path / "c.csv"
    pd.DataFrame({"objid": ["a", "b"]}).to_csv(cat, index=False)
    err = _refused(["classify", "--quiet", "--catalog", str(cat), "--cutouts", str(cube),
                    "-o", str(cube)], tmp_path, [cube, cat])
    assert "would replace the cutouts" in err
    # A symbolic link and a hard link to the catalogue are the catalogue.
    (tmp_path / "link.csv").symlink_to(cat)
    err = _refused(["classify", "--quiet", "--catalog", str(cat), "--cutouts", str(cube),
                    "-o", str(tmp_path / "link.csv")], tmp_path, [cube, cat])
    assert "catalogue" in err
    os.link(cat, tmp_path / "hard.csv")
    _refused(["classify", "--quiet", "--catalog", str(cat), "--cutouts", str(cube),
              "-o", str(tmp_path / "hard.csv")], tmp_path, [cube, cat])
    # The model, copied under a table's name.
    model = tmp_path / "model.csv"
    model.write_bytes(MODEL.read_bytes())
    err = _refused(["classify", "--quiet", "--catalog", str(cat), "--cutouts", str(cube),
                    "--model", str(model), "-o", str(model)], tmp_path, [cube, cat, model])
    assert "model" in err


def test_output_never_replaces_a_file_loc_target(tmp_path: Path) -> None:
    target = tmp_path / "cut.fits"
    target.write_bytes((ROOT / "tests" / "data" / "decals" / "example_a.fits").read_bytes())
    cat = tmp_path / "c.csv"
    pd.DataFrame({"objid": ["a"], "file_loc": ["cut.fits"]}).to_csv(cat, index=False)
    err = _refused(["classify", "--quiet", "--catalog", str(cat), "-o", str(target)],
                   tmp_path, [target, cat])
    assert "file_loc" in err and "cut.fits" in err


def test_fetch_status_table_never_replaces_the_catalogue(fake, tmp_path: Path) -> None:
    cat = tmp_path / "c.csv"
    pd.DataFrame({"objid": ["a"], "ra": [150.0], "dec": [2.0]}).to_csv(cat, index=False)
    err = _refused(["fetch", "--catalog", str(cat), "--out", str(tmp_path / "cache"),
                    "--service-url", fake.sdss_url, "--scale", "0.4", "--pixels", "64",
                    "--status-out", str(cat), "--overwrite"], tmp_path, [cat])
    assert "catalogue" in err and "--status-out" in err


# --- interruption and disk full ---------------------------------------------------------------

def _many_rows(tmp: Path, n: int) -> Path:
    files = [f for f in example_files() if f.stem != "587729387686002878"]
    cat = tmp / "many.csv"
    pd.DataFrame({"objid": [str(587700000000000000 + i) for i in range(n)],
                  "file_loc": [str(files[i % len(files)]) for i in range(n)]}).to_csv(
        cat, index=False)
    return cat


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    cat = _many_rows(tmp_path, 3000)
    out = tmp_path / "many_scores.csv"
    proc = subprocess.Popen([sys.executable, "-m", "galmerge", "classify", "--quiet",
                             "--catalog", str(cat), "--output", str(out), "--chunk-size",
                             "100", "--threads", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    work = out.with_name(out.name + ".parts")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(
            work.glob("part-*.parquet")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip() == "terminated"
    assert not list(tmp_path.glob(".*.tmp")) and not out.exists()


def test_disk_full_while_writing_the_manifest_is_one_line_and_leaves_nothing(
        tmp_path: Path) -> None:
    cat = _small_catalogue(tmp_path)
    out = tmp_path / "o.csv"
    proc, _ = run_galmerge(["classify", "--quiet", "--catalog", str(cat), "-o", str(out)],
                           tmp_path, fsize=512)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "manifest" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    work = out.with_name(out.name + ".parts")
    assert not work.exists() and not out.exists()


# --- the network ---------------------------------------------------------------------------------

class _Hostile(http.server.BaseHTTPRequestHandler):
    body_jpeg = b""

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", "10000")
            self.end_headers()
            try:
                for _ in range(10000):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                return
        elif path == "/gzip":
            self._send(gzip.compress(self.body_jpeg), {"Content-Encoding": "gzip"})
        elif path == "/gzipbomb":
            self._send(gzip.compress(b"\xff\xd8\xff" + bytes(50 * 2**20)),
                       {"Content-Encoding": "gzip"})
        elif path == "/bomb":
            self._send(jpeg_claiming(tiny_jpeg(), 12000, 12000))
        else:  # /garbage
            self._send(b"\xff\xd8\xff" + bytes(range(256)) * 4)


@pytest.fixture
def hostile_server():
    _Hostile.body_jpeg = example_files()[0].read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _source(url: str, cache: CutoutCache | None = None, **http: float) -> SdssCutoutSource:
    settings = HttpSettings(max_attempts=1, backoff_base=0.01, **http)
    return SdssCutoutSource(Geometry(64, 0.4), url=url, settings=settings, cache=cache)


REQ = CutoutRequest(row=0, id="x", ra=150.0, dec=2.0)


def test_a_trickling_server_is_cut_off_at_the_deadline(hostile_server: str) -> None:
    src = _source(f"{hostile_server}/trickle", read_timeout=1.0, total_timeout=1.5)
    t0 = time.monotonic()
    cut = src.get(REQ)
    assert time.monotonic() - t0 < 4
    assert cut.status == "fetch_failed" and "within 1.5 s" in cut.detail
    src.close()


def test_gzip_content_encoding_is_decoded_and_capped(hostile_server: str) -> None:
    src = _source(f"{hostile_server}/gzip")
    cut = src.get(REQ)
    assert cut.status == "ok", cut.detail
    assert cut.raw is not None and cut.raw.pixels.shape[0] == 3
    src.close()
    bomb = _source(f"{hostile_server}/gzipbomb", max_body_bytes=4 * 2**20)
    cut = bomb.get(REQ)
    assert cut.status == "fetch_failed" and "larger than" in cut.detail
    bomb.close()


def test_a_pixel_bomb_from_a_service_is_too_large_and_never_cached(hostile_server: str,
                                                                    tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "cache")
    src = _source(f"{hostile_server}/bomb", cache=cache)
    cut = src.get(REQ)
    assert cut.status == "too_large" and "12000x12000" in cut.detail
    assert len(cache) == 0
    src.close()
    cache.close()


def test_details_of_unreadable_bodies_are_stable(hostile_server: str) -> None:
    details = []
    for _ in range(2):
        src = _source(f"{hostile_server}/garbage")
        cut = src.get(REQ)
        src.close()
        assert cut.status == "fetch_failed"
        details.append(cut.detail)
    assert details[0] == details[1] and "0x" not in details[0] and "object" not in details[0]


def test_a_galmerge_error_in_a_row_is_that_rows_status(tmp_path: Path) -> None:
    with pytest.raises(GalmergeError):
        read_image(tmp_path / "x.txt")
    src = LocalFileSource(base_dir=tmp_path)
    cut = src.get(CutoutRequest(row=0, id="x", file_loc="x.txt"))
    assert cut.status == "unreadable" and "unsupported image type" in cut.detail
    assert json.dumps(cut.detail)


@pytest.mark.parametrize("ext", ["csv", "parquet", "ecsv", "fits", "vot", "h5"])
def test_a_resumed_run_writes_the_bytes_of_an_uninterrupted_one(
        tmp_path: Path, ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The column metadata come from the manifest in the order a resumed run reads it back."""
    from galmerge.inference import run

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    cat = _small_catalogue(tmp_path, 12)
    out = tmp_path / f"o.{ext}"
    opts = ClassifyOptions(chunk_size=5, threads=1)
    classify_catalog(cat, model=MODEL, output=out, options=opts)
    want = out.read_bytes()
    out.unlink()
    with monkeypatch.context() as m:  # keep the work folder, as after a kill -9
        m.setattr(run, "empty_work_dir", lambda *a, **k: None)
        classify_catalog(cat, model=MODEL, output=out, options=opts)
    out.unlink()
    summary = classify_catalog(cat, model=MODEL, output=out, options=opts, resume=True)
    assert summary.resumed_chunks == 3
    assert out.read_bytes() == want
