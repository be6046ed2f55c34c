"""Tables through `classify` and back: exact values, safe names, metadata kept in every format.

Real runs: the bundled SDSS example cutouts through the shipped model, outputs read back with
astropy, pyarrow and h5py (and STILTS where it is installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.dom.minidom
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table, validate
from astropy.table import Table

from galmerge.inference.pipeline import ClassifyOptions, classify_catalog
from tests.conftest import ROOT

BIG = [1237648720693755918, 1237648720693755919, 1237648720693755920, 1237648720693755921]
TYPED = ["parquet", "fits", "h5", "vot", "ecsv"]


@pytest.fixture
def example(tmp_path: Path, example_dir: Path) -> Path:
    dest = tmp_path / "sdss_example"
    shutil.copytree(example_dir, dest)
    return dest / "sdss_example.csv"


def _rows(example: Path, n: int = 4) -> pd.DataFrame:
    return pd.read_csv(example, dtype=str, keep_default_na=False).iloc[:n]


def _read(path: Path) -> Table:
    kw = {"path": "table"} if path.suffix == ".h5" else {}
    return Table.read(path, **kw)


def _run(cat: Path, out: Path, **opts) -> object:
    return classify_catalog(cat, output=out, options=ClassifyOptions(device="cpu", **opts))


def test_trailing_comma_on_every_row_is_not_an_index(example: Path) -> None:
    src = _rows(example)
    cat = example.with_name("trailing.csv")
    lines = [",".join(src.columns)] + [",".join(r) + "," for r in src.itertuples(index=False)]
    cat.write_text("\n".join(lines) + "\n")  # a spreadsheet export: one more comma per row
    out = example.with_name("trailing_scores.csv")
    _run(cat, out)
    got = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(got["objid"]) == list(src["objid"])
    assert list(got["file_loc"]) == list(src["file_loc"])
    assert list(got.columns[:4]) == list(src.columns)
    assert (got["status"] == "ok").all()


@pytest.mark.parametrize("ext", TYPED)
def test_19_digit_integers_stay_exact_in_typed_outputs(example: Path, ext: str) -> None:
    src = _rows(example)
    src["dr8objid"] = [str(v) for v in BIG]  # not the id column: typed as an integer
    src["huge"] = [str(2**64 - 1), "3", str(2**63), "0"]  # beyond int64: uint64
    cat = example.with_name("big.csv")
    src.to_csv(cat, index=False)
    out = example.with_name(f"big_scores.{ext}")
    _run(cat, out)
    t = _read(out)
    assert [int(v) for v in t["dr8objid"]] == BIG
    assert t["dr8objid"].dtype.kind == "i"
    assert [int(v) for v in t["huge"]] == [2**64 - 1, 3, 2**63, 0]
    # VOTable has no unsigned long: such a column is written as its exact text
    assert t["huge"].dtype.kind in ("OU" if ext == "vot" else "u")


def test_fits_unsigned_columns_round_trip_exactly(example: Path) -> None:
    src = _rows(example)
    t = Table.from_pandas(src)
    t["u64"] = np.array([2**64 - 1, 3, 2**63, 0], dtype=np.uint64)  # TZERO = 2**63
    t["u32"] = np.array([2**32 - 1, 3, 0, 1], dtype=np.uint32)
    cat = example.with_name("unsigned.fits")
    t.write(cat)
    for ext in ("fits", "parquet", "csv"):
        out = example.with_name(f"unsigned_scores.{ext}")
        _run(cat, out)
        got = (pd.read_csv(out, dtype=str) if ext == "csv" else _read(out))
        assert [int(v) for v in got["u64"]] == [2**64 - 1, 3, 2**63, 0], ext
        assert [int(v) for v in got["u32"]] == [2**32 - 1, 3, 0, 1], ext


def test_input_columns_named_like_results_or_repeated_are_renamed(example: Path) -> None:
    src = _rows(example)
    cat = example.with_name("clash.csv")
    header = ",".join([*src.columns, "status", "status_input", "gz1_class", "P_MERGER"])
    body = [",".join([*r, "queued", "old", f"x{i}", "0.9"])
            for i, r in enumerate(src.itertuples(index=False))]
    cat.write_text("\n".join([header, *body]) + "\n")
    for ext in ("csv", "fits", "vot"):
        out = example.with_name(f"clash_scores.{ext}")
        with pytest.warns(UserWarning, match="renamed"):
            summary = _run(cat, out)
        assert any("'status'" in w and "status_input_2" in w for w in summary.warnings)
        t = pd.read_csv(out, dtype=str) if ext == "csv" else _read(out).to_pandas()
        names = list(t.columns)
        assert len(names) == len({n.lower() for n in names})  # unique, even ignoring case
        assert {"status_input_2", "status_input", "gz1_class_2", "P_MERGER_input"} <= set(names)
        col = t["status_input_2"].astype(str).str.strip()
        assert list(col.str.replace("b'", "").str.strip("'")) == ["queued"] * 4
        assert set(t["status"].astype(str)) <= {"ok", "b'ok'"}


def test_nul_and_control_characters_keep_the_votable_well_formed(example: Path) -> None:
    src = _rows(example)
    src["note"] = ["a\x00b", "bell\x07", "tab\tok", "plain"]
    cat = example.with_name("nul.parquet")
    src.to_parquet(cat)
    out = example.with_name("nul_scores.vot")
    _run(cat, out)
    xml.dom.minidom.parse(str(out))  # well-formed XML
    assert validate(str(out), output=None)
    notes = list(parse_single_table(str(out)).to_table()["note"])
    assert notes == ["a\ufffdb", "bell\ufffd", "tab\tok", "plain"]


def test_fits_output_with_more_than_999_columns_is_one_line(example: Path) -> None:
    src = _rows(example, 2)
    wide = pd.concat([src, pd.DataFrame({f"c{i}": ["1", "2"] for i in range(1000)})], axis=1)
    cat = example.with_name("wide.csv")
    wide.to_csv(cat, index=False)
    out = example.with_name("wide_scores.fits")
    proc = subprocess.run([sys.executable, "-m", "galmerge", "classify", "--quiet", "--catalog",
                           str(cat), "--output", str(out)], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "at most 999 columns" in err
    assert "Traceback" not in err and not out.exists()


# --- metadata ------------------------------------------------------------------------------

def _described_votable(example: Path) -> Path:
    src = _rows(example, 6)
    t = Table.from_pandas(src)
    t["objid"] = np.array([int(v) for v in src["objid"]], dtype=np.int64)
    t["objid"].description = "SDSS DR7 objID"
    t["objid"].meta["ucd"] = "meta.id;meta.main"
    t["RAJ"] = np.linspace(150.0, 151.0, 6)
    t["RAJ"].unit, t["RAJ"].description = "deg", "Right ascension (J2000)"
    t["RAJ"].meta["ucd"] = "pos.eq.ra;meta.main"
    t["DEJ"] = np.linspace(1.0, 2.0, 6)
    t["DEJ"].unit, t["DEJ"].description = "deg", "Declination (J2000)"
    t["DEJ"].meta["ucd"] = "pos.eq.dec;meta.main"
    t["petroMag_r"] = np.linspace(15, 17, 6).astype(np.float32)
    t["petroMag_r"].unit, t["petroMag_r"].description = "mag", "Petrosian r magnitude"
    t["petroMag_r"].meta["ucd"] = "phot.mag;em.opt.R"
    cat = example.with_name("described.vot")
    t.write(cat, format="votable")
    return cat


WANT = {"objid": (None, "meta.id;meta.main", "SDSS DR7 objID"),
        "RAJ": ("deg", "pos.eq.ra;meta.main", "Right ascension (J2000)"),
        "DEJ": ("deg", "pos.eq.dec;meta.main", "Declination (J2000)"),
        "petroMag_r": ("mag", "phot.mag;em.opt.R", "Petrosian r magnitude"),
        "p_merger": (None, "stat.probability", "probability that the galaxy is a merger")}


def _meta_astropy(t: Table, name: str) -> tuple:
    col = t[name]
    return (None if col.unit is None else str(col.unit), col.meta.get("ucd"), col.description)


def _check(got: tuple, want: tuple, where: str) -> None:
    assert got[0] == want[0] and got[1] == want[1], where
    assert got[2] is not None and got[2].startswith(want[2]), where


@pytest.mark.parametrize("ext", ["ecsv", "vot", "parquet", "h5", "fits"])
def test_units_ucds_and_descriptions_survive_classify(example: Path, ext: str) -> None:
    cat = _described_votable(example)
    out = example.with_name(f"described_scores.{ext}")
    summary = _run(cat, out)
    assert summary.rows == 6
    if ext == "fits":
        h = fits.getheader(out, 1)
        names = [h[f"TTYPE{i}"] for i in range(1, h["TFIELDS"] + 1)]
        for name, want in WANT.items():
            i = names.index(name) + 1
            _check((h.get(f"TUNIT{i}"), h.get(f"TUCD{i}"), h.get(f"TCOMM{i}")), want, name)
        assert h["ORIGIN"] == "galmerge" and h["CREATOR"].startswith("galmerge ")
        assert h["DATE"] == summary.metadata["date"].removesuffix("Z")
    else:
        t = _read(out)
        for name, want in WANT.items():
            _check(_meta_astropy(t, name), want, name)
    if ext == "parquet":  # also plain Arrow field metadata, for non-astropy readers
        field = pq.read_schema(out).field("RAJ")
        assert field.metadata[b"unit"] == b"deg" and field.metadata[b"ucd"] == \
            b"pos.eq.ra;meta.main"
    if ext == "h5":
        with h5py.File(out) as f:
            assert f["table"].attrs["unit:RAJ"] == "deg"
    if ext == "vot":
        assert validate(str(out), output=None)  # astropy's validator: no warnings at all
    if shutil.which("stilts") and ext in ("vot", "fits"):
        meta = subprocess.run(["stilts", "tpipe", f"in={out}", "omode=meta"],
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "JAVA_TOOL_OPTIONS": "-Xmx256m"}).stdout
        assert "RAJ(Double)/deg - Right ascension (J2000)" in meta
        assert "p_merger(Float) - probability that the galaxy is a merger" in meta
        if ext == "vot":
            lint = subprocess.run(["stilts", "votlint", str(out)], capture_output=True,
                                  text=True, check=False)
            assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout


def test_csv_output_gets_the_column_metadata_in_its_sidecar(example: Path) -> None:
    cat = _described_votable(example)
    out = example.with_name("described_scores.csv")
    _run(cat, out)
    side = json.loads(Path(str(out) + ".meta.json").read_text())
    assert side["column_meta"]["RAJ"] == {"unit": "deg", "ucd": "pos.eq.ra;meta.main",
                                          "description": "Right ascension (J2000)"}
    assert side["column_meta"]["status"]["description"].endswith("(see docs/statuses.md)")


def test_columns_are_found_by_ucd_first(example: Path) -> None:
    cat = _described_votable(example)  # RAJ/DEJ: no name galmerge knows, but the UCDs say
    summary = _run(cat, example.with_name("by_ucd.parquet"))
    assert summary.metadata["columns"]["ra"] == "RAJ"
    assert summary.metadata["columns"]["dec"] == "DEJ"


# --- IAU designations -----------------------------------------------------------------------

DESIGNATIONS = {  # name -> (RA, Dec) it truncates, and the unit of its last digit (deg)
    "SDSS J155248.95-003135.6": (15 * (15 + 52 / 60 + 48.95 / 3600), -(31 / 60 + 35.6 / 3600),
                                 15 * 0.01 / 3600, 0.1 / 3600),
    "J094553.48+003332.1": (15 * (9 + 45 / 60 + 53.48 / 3600), 33 / 60 + 32.1 / 3600,
                            15 * 0.01 / 3600, 0.1 / 3600),
    "2MASX J12195800+0002418": (15 * (12 + 19 / 60 + 58.00 / 3600), 2 / 60 + 41.8 / 3600,
                                15 * 0.01 / 3600, 0.1 / 3600),
}


def test_designations_only_are_fetched_at_their_positions(fake, tmp_path: Path) -> None:
    cat = tmp_path / "names.csv"
    pd.DataFrame({"iauname": [*DESIGNATIONS, "not a designation"]}).to_csv(cat, index=False)
    out = tmp_path / "names_scores.csv"
    env = {**os.environ, "GALMERGE_SDSS_URL": fake.sdss_url,
           "GALMERGE_LEGACY_URL": fake.legacy_url, "GALMERGE_HIPS_URL": fake.hips_url}
    proc = subprocess.run([sys.executable, "-m", "galmerge", "classify", "--catalog", str(cat),
                           "--fetch", "sdss", "--scale", "0.4", "--cache", str(tmp_path / "c"),
                           "--retries", "0", "--output", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "derived from the IAU designations in column 'iauname'" in " ".join(
        (proc.stdout + proc.stderr).split())
    got = pd.read_csv(out, keep_default_na=False)
    assert list(got["iauname"]) == [*DESIGNATIONS, "not a designation"]
    assert list(got["status"]) == ["ok", "ok", "ok", "bad_coordinates"]
    asked = [(float(e.params["ra"]), float(e.params["dec"])) for e in fake.log]
    assert len(asked) == 3
    asked.sort()  # requests run concurrently: compare in RA order
    want = sorted(DESIGNATIONS.values())
    for (ra, dec), (ra0, dec0, dra, ddec) in zip(asked, want, strict=True):
        # truncation: the position lies in [value, value + one unit), away from zero in Dec
        assert ra0 <= ra < ra0 + dra
        assert abs(dec0) <= abs(dec) < abs(dec0) + ddec and np.sign(dec) == np.sign(dec0)
    assert sorted(float(v) for v in got["ra_from_name"][:3]) == pytest.approx(
        [a[0] for a in asked], abs=1e-6)  # the request sends 7 decimals
