"""`galmerge classify` end to end: real catalogues, real cutouts, real ONNX Runtime, real files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import onnx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from typer.testing import CliRunner

from galmerge.cli import app
from galmerge.data.dataset import write_dataset
from galmerge.data.images import prepare, read_image
from galmerge.export import sdss_example_convention
from galmerge.inference.cutouts import NO_SOURCE_DETAIL, LocalFileSource
from galmerge.inference.engine import OnnxClassifier
from galmerge.inference.pipeline import ClassifyOptions, classify_catalog
from tests.conftest import ROOT

MODEL = ROOT / "models" / "deepmerge-sdss.onnx"
#: One of the 24 bundled GZ1 JPEGs is an SDSS ImgCutout error page ("getFrames() has
#: failed"): white text on black, nothing where the model looks. It must come out `blank`.
ERROR_JPEG_ID = "587729387686002878"
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["classify", "--quiet", *args])
    return res.exit_code, res.output  # stdout and stderr, interleaved


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galmerge", "classify", "--quiet", *args],
                          capture_output=True, text=True, check=False, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def direct_probabilities(files: list[Path]) -> np.ndarray:
    """The model on the same files, through the public building blocks, no pipeline."""
    clf = OnnxClassifier(MODEL, device="cpu")
    conv = clf.convention
    imgs = np.stack([prepare(read_image(f).pixels, conv.size, conv.crop_fraction)
                     for f in files])
    return clf.predict(imgs)


@pytest.fixture
def example(tmp_path: Path, example_dir: Path) -> Path:
    """A writable copy of the bundled example catalogue and its cutouts."""
    dest = tmp_path / "sdss_example"
    shutil.copytree(example_dir, dest)
    return dest / "sdss_example.csv"


# --- the two "done when" runs --------------------------------------------------------------

def test_darg_csv_with_an_empty_cutouts_folder_gives_3003_missing_file(
        tmp_path: Path, darg_dir: Path) -> None:
    empty = tmp_path / "cutouts"
    empty.mkdir()
    out = tmp_path / "darg_scores.csv"
    proc = run_cli("--catalog", str(darg_dir / "darg_mergers.csv"), "--cutouts", str(empty),
                   "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    got = pd.read_csv(out, dtype=str, keep_default_na=False)
    src = pd.read_csv(darg_dir / "darg_mergers.csv", dtype=str, keep_default_na=False)
    assert len(got) == 3003
    assert (got["status"] == "missing_file").all()
    assert (got["p_merger"] == "").all() and (got["is_merger"] == "").all()
    # Every input column, every row, in order, exactly as written in the input.
    pd.testing.assert_frame_equal(got[src.columns], src)
    meta = json.loads(Path(str(out) + ".meta.json").read_text())
    assert meta["status_counts"]["missing_file"] == 3003 and meta["rows"] == 3003
    assert "missing_file" in proc.stdout and "3,003" in proc.stdout


def test_bundled_example_gets_a_probability_for_every_real_galaxy(example: Path) -> None:
    code, text = invoke("--catalog", str(example))
    assert code == 0, text
    out = example.with_name("sdss_example_scores.csv")
    got = pd.read_csv(out, dtype={"objid": str})
    assert len(got) == 24
    ok = got[got["status"] == "ok"]
    assert len(ok) == 23
    err = got[got["objid"] == ERROR_JPEG_ID].iloc[0]
    assert err["status"] == "blank" and np.isnan(err["p_merger"])
    assert ok["p_merger"].between(0, 1).all()
    files = [example.parent / f for f in ok["file_loc"]]
    raw = direct_probabilities(files).astype(np.float64)
    assert np.allclose(ok["p_merger_raw"].to_numpy(), raw, atol=1e-6)
    # p_merger: the model's score map (Platt), then Bayes' rule from the map's reference
    # fraction to the default 2 % (by hand)
    shipped = onnx.load(str(ROOT / "models" / "deepmerge-sdss.onnx"))
    props = {m.key: m.value for m in shipped.metadata_props}
    smap = json.loads(props["galmerge.score_map"])
    q = 1 / (1 + np.exp(-(smap["a"] * np.log(raw / (1 - raw)) + smap["b"])))
    ref = smap["reference_merger_fraction"]
    odds = q / (1 - q) * (0.02 / 0.98) / (ref / (1 - ref))
    assert np.allclose(ok["p_merger"].to_numpy(), odds / (1 + odds), atol=1e-6)
    # is_merger is the model's own label-free threshold on the raw score (issue 10)
    cut = float(props["galmerge.decision_threshold"])
    assert 0.0 < cut < 0.5
    assert (ok["is_merger"] == (ok["p_merger_raw"] >= cut)).all()
    # every ok row has its uncertainty and OOD flag; the others have neither
    assert ok["p_merger_spread"].notna().all() and (ok["p_merger_spread"] >= 0).all()
    assert ok["ood"].notna().all() and not ok["ood"].any()  # real SDSS galaxies
    assert np.isnan(err["p_merger_spread"]) and pd.isna(err["ood"])
    assert "PLACEHOLDER" not in text  # the shipped model is the trained one (issue 6)


def test_make_demo_command_writes_the_example_scores(tmp_path: Path, example: Path) -> None:
    # The Makefile's demo target, run from the repository root as `make demo` does.
    make = (ROOT / "Makefile").read_text()
    assert "classify --catalog catalogs/sdss_example/sdss_example.csv" in make
    proc = run_cli("--catalog", str(example))
    assert proc.returncode == 0, proc.stderr
    assert example.with_name("sdss_example_scores.csv").is_file()


# --- formats in and out -----------------------------------------------------------------------

def _example_table(example: Path) -> Table:
    t = Table.read(example, format="ascii.csv", converters={"objid": np.int64})
    t["objid"] = t["objid"].astype(np.int64)
    t["file_loc"] = [str(example.parent / f) for f in t["file_loc"]]
    return t


@pytest.mark.parametrize("ext", ["csv", "parquet", "fits", "ecsv", "vot", "h5"])
def test_every_output_format_round_trips_with_metadata(example: Path, ext: str) -> None:
    out = example.with_name(f"scores.{ext}")
    code, text = invoke("--catalog", str(example), "--output", str(out), "--threshold", "0.489")
    assert code == 0, text
    kw = {"path": "table"} if ext == "h5" else {}
    t = Table.read(out, **kw)
    assert len(t) == 24
    ids = [v.decode() if isinstance(v, bytes) else str(v) for v in t["objid"]]
    src = pd.read_csv(example, dtype=str)
    assert ids == list(src["objid"])  # 18-digit SDSS objIDs, exact, in input order
    status = [v.decode() if isinstance(v, bytes) else str(v) for v in t["status"]]
    assert status.count("ok") == 23 and status.count("blank") == 1
    p = np.ma.filled(np.ma.asarray(t["p_merger"]).astype(np.float64), np.nan)
    assert np.isnan(p[ids.index(ERROR_JPEG_ID)]) and np.isfinite(np.delete(
        p, ids.index(ERROR_JPEG_ID))).all()
    col = t["is_merger"]
    is_m = (np.array([str(v) in ("True", "true", "T") for v in col]) if col.dtype.kind in "USO"
            else np.ma.filled(np.ma.asarray(col), False).astype(bool))
    ok = np.array([s == "ok" for s in status])
    raw = np.ma.filled(np.ma.asarray(t["p_merger_raw"]).astype(np.float64), np.nan)
    assert (is_m[ok] == (raw[ok] >= 0.489)).all()
    # run metadata where each format keeps it
    if ext == "csv":
        meta = json.loads(Path(str(out) + ".meta.json").read_text())
        assert meta["model_sha256"] == OnnxClassifier(MODEL).sha256
        assert meta["status_counts"]["ok"] == 23
    elif ext == "parquet":
        meta = json.loads(pq.read_schema(out).metadata[b"galmerge"])
        assert meta["status_counts"]["blank"] == 1 and meta["threshold"] == 0.489
    elif ext == "fits":
        h = fits.getheader(out, 1)
        assert h["GALMERGE STATUS COUNTS OK"] == 23
        assert h["GALMERGE MODEL SHA256"] == OnnxClassifier(MODEL).sha256
        assert h["GALMERGE VERSION"]
    elif ext == "ecsv":
        assert t.meta["galmerge"]["status_counts"]["ok"] == 23
    elif ext == "vot":
        raw = out.read_text()
        assert 'name="galmerge_run"' in raw and "model_sha256" in raw
    elif ext == "h5":
        with h5py.File(out) as f:
            meta = json.loads(f["table"].attrs["galmerge_run"])
        assert meta["rows"] == 24


@pytest.mark.parametrize("ext", ["ecsv", "fits", "vot", "parquet", "h5"])
def test_every_input_format_gives_the_same_scores(example: Path, ext: str) -> None:
    t = _example_table(example)
    cat = example.with_name(f"typed.{ext}")
    if ext == "h5":
        t.write(cat, format="hdf5", path="table")
    elif ext == "parquet":
        t.to_pandas().to_parquet(cat)
    else:
        t.write(cat, format={"ecsv": "ascii.ecsv", "vot": "votable"}.get(ext, ext))
    code, text = invoke("--catalog", str(cat), "--output", str(example.with_name("o.csv")))
    assert code == 0, text
    got = pd.read_csv(example.with_name("o.csv"), dtype={"objid": str})
    ref_code, _ = invoke("--catalog", str(example), "--output", str(example.with_name("r.csv")))
    ref = pd.read_csv(example.with_name("r.csv"), dtype={"objid": str})
    assert ref_code == 0
    assert list(got["objid"]) == list(ref["objid"])
    assert np.allclose(got["p_merger"], ref["p_merger"], equal_nan=True)
    assert list(got["status"]) == list(ref["status"])


def test_typed_output_from_a_csv_catalogue_infers_column_types(example: Path) -> None:
    out = example.with_name("s.parquet")
    assert invoke("--catalog", str(example), "--output", str(out))[0] == 0
    schema = pq.read_schema(out)
    assert str(schema.field("objid").type) == "string"  # ids stay text
    assert str(schema.field("gz1_class").type) == "int64"
    assert str(schema.field("p_merger").type) == "float"
    assert str(schema.field("is_merger").type) == "bool"


# --- resume -----------------------------------------------------------------------------------

def _big_catalogue(example: Path, rows: int) -> Path:
    src = pd.read_csv(example, dtype=str)
    src = src[src["objid"] != ERROR_JPEG_ID]
    reps = src.iloc[np.arange(rows) % len(src)].reset_index(drop=True)
    reps["objid"] = [str(587700000000000000 + i) for i in range(rows)]
    path = example.with_name("big.csv")
    reps.to_csv(path, index=False)
    return path


def _kill_after_parts(args: tuple[str, ...], env: dict[str, str], work: Path, parts: int) -> None:
    """Start ``classify`` with ``args`` and kill -9 it once ``parts`` part files exist."""
    proc = subprocess.Popen([sys.executable, "-m", "galmerge", "classify", "--quiet", *args],
                            cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list(work.glob("part-*.parquet"))) >= parts:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_run_resumes_to_a_byte_identical_output(example: Path) -> None:
    cat = _big_catalogue(example, 2000)
    out = example.with_name("big_scores.csv")
    args = ("--catalog", str(cat), "--output", str(out), "--chunk-size", "100",
            "--batch-size", "32", "--threads", "1")
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    full = run_cli(*args, env=env)
    assert full.returncode == 0, full.stderr
    want = out.read_bytes()
    want_meta = Path(str(out) + ".meta.json").read_bytes()
    out.unlink()
    Path(str(out) + ".meta.json").unlink()

    work = out.with_name(out.name + ".parts")
    _kill_after_parts(args, env, work, 3)
    done = len(list(work.glob("part-*.parquet")))
    assert 3 <= done < 20 and not out.exists()

    resumed = run_cli(*args, "--resume", env={"SOURCE_DATE_EPOCH": "1800000000"})
    assert resumed.returncode == 0, resumed.stderr
    reused = re.search(r"(\d+) chunks reused", " ".join(resumed.stdout.split()))
    assert reused is not None and int(reused.group(1)) == done
    assert out.read_bytes() == want
    assert Path(str(out) + ".meta.json").read_bytes() == want_meta
    assert not work.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("ext", "kill_after"), [("parquet", 2), ("fits", 3), ("ecsv", 4),
                                                 ("vot", 2), ("h5", 3)])
def test_killed_run_resumes_byte_identical_in_every_format(example: Path, ext: str,
                                                           kill_after: int) -> None:
    """kill -9 after a few parts, then --resume: the same bytes as an uninterrupted run
    (the run metadata, in the order the manifest gives it, included)."""
    cat = _big_catalogue(example, 300)
    out = example.with_name(f"big_scores.{ext}")
    args = ("--catalog", str(cat), "--output", str(out), "--chunk-size", "30",
            "--batch-size", "32", "--threads", "1")
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    assert run_cli(*args, env=env).returncode == 0
    want = out.read_bytes()
    out.unlink()
    work = out.with_name(out.name + ".parts")
    _kill_after_parts(args, env, work, kill_after)
    assert not out.exists()
    resumed = run_cli(*args, "--resume", env={"SOURCE_DATE_EPOCH": "1800000000"})
    assert resumed.returncode == 0, resumed.stderr
    assert "chunks reused" in " ".join(resumed.stdout.split())
    assert out.read_bytes() == want
    assert not work.exists()


@pytest.mark.parametrize("ext", ["parquet", "fits", "ecsv", "vot", "h5"])
def test_every_output_format_is_byte_reproducible(example: Path, ext: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of the same command write the same bytes (what --resume relies on)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    out = example.with_name(f"rep.{ext}")
    args = ("--catalog", str(example), "--output", str(out), "--chunk-size", "5")
    assert invoke(*args)[0] == 0
    first = out.read_bytes()
    out.unlink()
    assert invoke(*args)[0] == 0
    assert out.read_bytes() == first


def test_resume_refuses_changed_settings(example: Path) -> None:
    cat = _big_catalogue(example, 50)
    out = example.with_name("o.csv")
    opts = ClassifyOptions(chunk_size=10)
    work = out.with_name(out.name + ".parts")
    work.mkdir()
    # An interrupted run's manifest, as the runner writes it, then a different threshold.
    classify_catalog(cat, output=out, options=opts)
    assert not work.exists()
    proc = subprocess.Popen([sys.executable, "-c", (
        "import sys; from galmerge.inference.pipeline import *; "
        "from galmerge.inference import run as R; "
        "R.empty_work_dir = lambda *a, **k: None; "  # keep the work folder, as after a kill
        f"classify_catalog({str(cat)!r}, output={str(out)!r}, "
        "options=ClassifyOptions(chunk_size=10))")], cwd=ROOT)
    assert proc.wait() == 0
    assert (work / "manifest.json").is_file()
    code, text = invoke("--catalog", str(cat), "--output", str(out), "--chunk-size", "10",
                        "--threshold", "0.7", "--resume")
    assert code == 2 and "cannot resume" in text and "settings" in text


# --- cutouts of every kind, and statuses ----------------------------------------------------

def test_decals_fits_cutouts_real_quirks(tmp_path: Path, decals_dir: Path) -> None:
    npy = tmp_path / "flux.npy"
    np.save(npy, np.ones((3, 64, 64), dtype=np.float32))
    (tmp_path / "notes.txt").write_text("not an image")
    rows = [("a", decals_dir / "example_a.fits"), ("d", decals_dir / "example_d.fits"),
            ("small", decals_dir / "temp_small.fits"),
            ("truncated", decals_dir / "example_incomplete.fits"),
            ("halfempty", decals_dir / "example_bad_pix.fits"),
            ("gone", tmp_path / "absent.fits"), ("flux", npy), ("txt", tmp_path / "notes.txt")]
    cat = tmp_path / "decals.csv"
    pd.DataFrame({"id_str": [r[0] for r in rows], "file_loc": [str(r[1]) for r in rows]}).to_csv(
        cat, index=False)
    code, text = invoke("--catalog", str(cat))
    assert code == 0, text
    got = pd.read_csv(tmp_path / "decals_scores.csv").set_index("id_str")
    # DECaLS nanomaggies are converted to the SDSS colour convention (Lupton) and classified.
    assert list(got.loc[["a", "d", "small"], "status"]) == ["ok"] * 3
    assert got.loc[["a", "d", "small"], "p_merger"].between(0, 1).all()
    assert got.loc["truncated", "status"] == "unreadable"
    assert "truncated" in got.loc["truncated", "status_detail"]
    assert got.loc["halfempty", "status"] == "blank"
    assert got.loc["gone", "status"] == "missing_file"
    assert got.loc["flux", "status"] == "unsupported_pixels"
    assert "no conversion" in got.loc["flux", "status_detail"]
    assert got.loc["txt", "status"] == "unreadable"


def test_hdf5_cube_from_a_dataset_file(tmp_path: Path, example_dir: Path) -> None:
    conv = sdss_example_convention()
    files = sorted((example_dir / "cutouts").iterdir())[:10]
    imgs = np.stack([prepare(read_image(f).pixels, conv.size, conv.crop_fraction)
                     for f in files])
    ids = [f.stem for f in files]
    cube = write_dataset(tmp_path / "cube.h5", imgs, np.full(len(files), -1), conv, ids=ids)
    cat = tmp_path / "ids.csv"
    # Rows in another order than the file, one unknown id, and one row by file_loc index.
    order = [3, 1, 2, 0, 4, 5, 6, 7, 8, 9]
    pd.DataFrame({"objid": [ids[i] for i in order] + ["123"],
                  "file_loc": [""] * 10 + ["cube.h5#2"]}).to_csv(cat, index=False)
    code, text = invoke("--catalog", str(cat), "--cutouts", str(cube), "--output",
                        str(tmp_path / "o.csv"))
    assert code == 0, text
    got = pd.read_csv(tmp_path / "o.csv", dtype={"objid": str})
    ref = direct_probabilities(files)
    blank = [i for i, f in enumerate(files) if f.stem == ERROR_JPEG_ID]
    for row, i in enumerate(order):
        if i in blank:
            assert got["status"][row] == "blank"
        else:
            assert got["status"][row] == "ok"
            assert abs(got["p_merger_raw"][row] - ref[i]) < 1e-6
    assert got["status"][10] == "ok" and abs(got["p_merger_raw"][10] - ref[2]) < 1e-6
    # Same catalogue, id not in the cube
    pd.DataFrame({"objid": ["999"]}).to_csv(cat, index=False)
    assert invoke("--catalog", str(cat), "--cutouts", str(cube), "--output",
                  str(tmp_path / "o2.csv"))[0] == 0
    assert pd.read_csv(tmp_path / "o2.csv")["status"][0] == "missing_file"


def test_cutouts_folder_with_a_pattern_and_limit(tmp_path: Path, example_dir: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in sorted((example_dir / "cutouts").iterdir())[:3]:
        shutil.copy(f, folder / f"gal_{f.stem}.jpg")
    cat = tmp_path / "c.csv"
    ids = [f.stem for f in sorted((example_dir / "cutouts").iterdir())[:5]]
    pd.DataFrame({"objid": ids, "ra": [10.0] * 5, "dec": [1.0] * 5}).to_csv(cat, index=False)
    code, text = invoke("--catalog", str(cat), "--cutouts", str(folder), "--pattern",
                        "gal_{id}.jpg", "--limit", "4")
    assert code == 0, text
    got = pd.read_csv(tmp_path / "c_scores.csv", dtype={"objid": str})
    assert list(got["objid"]) == ids[:4]
    assert list(got["status"]) == ["ok", "ok", "ok", "missing_file"]


def test_darg_fits_sentinels_and_bad_coordinates(tmp_path: Path, darg_dir: Path,
                                                 example_dir: Path) -> None:
    t = Table.read(darg_dir / "darg_mergers.fits")[:40]
    # Real -9999 sentinels from the catalogue (specz2, plate2) moved into the coordinates,
    # plus NaN and out-of-range values.
    t["ra1"][0:3] = t["specz2"][0:3]
    t["dec1"][3] = t["plate2"][3]
    t["ra1"][4], t["dec1"][5], t["ra1"][6], t["dec1"][7] = np.nan, np.nan, 360.0, -90.5
    jpeg = sorted((example_dir / "cutouts").iterdir())[0]
    t["file_loc"] = np.array([""] * 40, dtype="U300")
    t["file_loc"][0] = str(jpeg)  # a bad-coordinate row that still has a local cutout
    t["file_loc"][30] = str(jpeg)
    cat = tmp_path / "darg.fits"
    t.write(cat)
    code, text = invoke("--catalog", str(cat))
    assert code == 0, text
    got = Table.read(tmp_path / "darg_scores.fits")
    status = list(got["status"])
    assert status[0] == "ok" and "coordinates ignored" in got["status_detail"][0]
    assert status[1:8] == ["bad_coordinates"] * 7
    assert "sentinel" in got["status_detail"][1] and "outside [0, 360)" in got["status_detail"][6]
    assert status[30] == "ok"
    assert set(status[8:30] + status[31:]) == {"no_cutout_source"}
    # set in bulk (the source says so for every row without file_loc), with the source's words
    assert set(got["status_detail"][8:30]) == {NO_SOURCE_DETAIL}
    # The other columns, sentinels included, are carried exactly; 64-bit ids too.
    assert got["object1"].dtype.str[1:] == "i8" and list(got["object1"]) == list(t["object1"])
    assert list(got["specz2"]) == list(t["specz2"]) and (got["specz2"] == -9999).any()


def test_duplicate_ids_are_classified_and_flagged(tmp_path: Path, example: Path) -> None:
    src = pd.read_csv(example, dtype=str)
    dup = pd.concat([src.iloc[:5], src.iloc[[1, 3]]], ignore_index=True)
    cat = example.with_name("dup.csv")
    dup.to_csv(cat, index=False)
    code, text = invoke("--catalog", str(cat), "--chunk-size", "3")
    assert code == 0, text
    got = pd.read_csv(example.with_name("dup_scores.csv"), dtype={"objid": str},
                      keep_default_na=False)
    assert list(got["status_detail"][5:]) == ["duplicate id (first at row 1)",
                                              "duplicate id (first at row 3)"]
    assert (got["status_detail"][:5] == "").all()
    assert got["p_merger"][5] == got["p_merger"][1]
    assert "repeat an earlier id" in text


# --- whole-run problems: one line, exit 2 ------------------------------------------------------

def _one_line_error(code: int, text: str, needle: str) -> None:
    assert code == 2, text
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], text


def test_whole_run_problems_are_one_line_errors(tmp_path: Path, example: Path) -> None:
    _one_line_error(*invoke("--catalog", str(tmp_path / "absent.csv")), "not found")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _one_line_error(*invoke("--catalog", str(empty)), "empty")
    header = tmp_path / "header.csv"
    header.write_text("objid,file_loc\n")
    _one_line_error(*invoke("--catalog", str(header)), "no rows")
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(os.urandom(5000))
    _one_line_error(*invoke("--catalog", str(garbage)), "FITS")
    noid = tmp_path / "noid.csv"
    noid.write_text("ra,dec,file_loc\n1,2,x.jpg\n")
    _one_line_error(*invoke("--catalog", str(noid)), "no id column")
    nocoord = tmp_path / "nocoord.csv"
    nocoord.write_text("objid,mag\n1,17.2\n")
    _one_line_error(*invoke("--catalog", str(nocoord)), "no coordinate columns")
    coords_only = tmp_path / "coords.csv"
    coords_only.write_text("objid,ra,dec\n1,10,2\n")
    _one_line_error(*invoke("--catalog", str(coords_only)), "nothing to read cutouts from")
    notonnx = tmp_path / "model.onnx"
    notonnx.write_text("hello")
    _one_line_error(*invoke("--catalog", str(example), "--model", str(notonnx)),
                    "not a loadable ONNX model")
    _one_line_error(*invoke("--catalog", str(example), "--output",
                            str(tmp_path / "no" / "such" / "dir.csv")), "does not exist")
    (tmp_path / "taken.csv").mkdir()
    _one_line_error(*invoke("--catalog", str(example), "--output", str(tmp_path / "taken.csv")),
                    "is a directory")
    _one_line_error(*invoke("--catalog", str(example), "--output", str(tmp_path / "x.xlsx")),
                    "unknown output extension")
    _one_line_error(*invoke("--catalog", str(example), "--device", "cuda"), "CUDA")


def test_model_with_a_non_image_input_is_a_one_line_error(tmp_path: Path, example: Path) -> None:
    from tests.test_engine import _tiny_model

    model = _tiny_model(tmp_path / "vec.onnx", ["N", 3])
    _one_line_error(*invoke("--catalog", str(example), "--model", str(model)), "N×3×H×W")


def test_default_model_is_found_via_galmerge_models(tmp_path: Path, example: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(MODEL, models / "deepmerge-sdss.onnx")
    proc = run_cli("--catalog", str(example), "--output", str(tmp_path / "o.csv"),
                   env={"GALMERGE_MODELS": str(models)})
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("--catalog", str(example), "--output", str(tmp_path / "o.csv"),
                   "--model", "deepmerge-sdss", env={"GALMERGE_MODELS": str(models)})
    assert proc.returncode == 0, proc.stderr


# --- no torch in the inference path ---------------------------------------------------

BLOCKER = '''
import importlib.abc, os, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            with open(os.environ["TORCH_ATTEMPTS"], "a") as f:
                f.write(name + "\\n")
            raise ImportError(f"torch is blocked in this test ({name})")
        return None
sys.meta_path.insert(0, _NoTorch())
'''


def test_classify_runs_with_torch_unimportable(tmp_path: Path, example: Path) -> None:
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    attempts = tmp_path / "attempts.txt"
    attempts.write_text("")
    env = {"PYTHONPATH": os.pathsep.join([str(block), str(ROOT)]),
           "TORCH_ATTEMPTS": str(attempts)}
    check = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, **env},
                           capture_output=True, text=True, check=False)
    assert check.returncode != 0 and "blocked" in check.stderr  # the blocker works
    attempts.write_text("")
    out = tmp_path / "o.parquet"
    proc = run_cli("--catalog", str(example), "--output", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_parquet(out)) == 24
    assert attempts.read_text() == ""  # nothing even tried to import torch


def test_inference_sources_never_import_torch() -> None:
    import ast

    for folder in ("galmerge/inference", "galmerge/data"):
        for path in (ROOT / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n == "torch" or n.startswith(("torch.", "galmerge.training",
                                                              "galmerge.export"))
                               for n in names), f"{path}: imports {names}"


def test_local_source_says_in_bulk_only_when_it_has_nowhere_to_look(tmp_path: Path,
                                                                   example_dir: Path) -> None:
    assert LocalFileSource(base_dir=tmp_path).without_location() == (
        "no_cutout_source", NO_SOURCE_DETAIL)
    # with a cutouts folder a row without file_loc is looked up by its id: no bulk answer
    folder = LocalFileSource(base_dir=tmp_path, cutouts=example_dir / "cutouts")
    assert folder.without_location() is None
