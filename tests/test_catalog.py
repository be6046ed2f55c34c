"""Catalogue reading: every format, chunked; column finding; ids exact; coordinates."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import MaskedColumn, Table

from galmerge.errors import GalmergeError
from galmerge.inference import catalog as catmod
from galmerge.inference.catalog import (
    find_columns,
    id_strings,
    open_catalog,
    parse_coordinates,
    read_catalog,
)

IDS = [587722952231026744, 1237648720693755918, 587722952231026688, 9223372036854775807,
       587724199889666224]


def _table() -> Table:
    t = Table()
    t["objid"] = np.array(IDS, dtype=np.int64)
    t["RA"] = [238.20399, 241.7177, 0.0, 359.999, 12.5]
    t["DEC"] = [-0.52655691, -0.0052314941, 89.9, -90.0, 1.0]
    t["name"] = ["a, with comma", 'q"uote', "two words", "", "plain"]
    t["stage"] = MaskedColumn([1, 2, 3, 0, 2], mask=[False, False, False, True, False],
                              dtype=np.int32)
    t["flag"] = [True, False, True, False, True]
    return t


def _write(t: Table, path: Path) -> Path:
    fmt = path.suffix
    if fmt == ".csv":
        t.write(path, format="ascii.csv")
    elif fmt == ".ecsv":
        t.write(path, format="ascii.ecsv")
    elif fmt == ".fits":
        t.write(path, format="fits")
    elif fmt == ".vot":
        t.write(path, format="votable")
    elif fmt == ".parquet":
        pq.write_table(pa.Table.from_pandas(t.to_pandas(), preserve_index=False), path)
    elif fmt == ".h5":
        t.write(path, format="hdf5", path="table", serialize_meta=False)
    return path


@pytest.mark.parametrize("ext", [".csv", ".ecsv", ".fits", ".vot", ".parquet", ".h5"])
def test_every_format_streams_in_chunks_with_exact_ids(tmp_path: Path, ext: str) -> None:
    path = _write(_table(), tmp_path / f"cat{ext}")
    reader = open_catalog(path)
    assert reader.format == {".vot": "votable", ".h5": "hdf5"}.get(ext, ext[1:])
    assert reader.n_rows == 5
    chunks = list(reader.chunks(2))
    assert [s for s, _ in chunks] == [0, 2, 4]
    assert [len(f) for _, f in chunks] == [2, 2, 1]
    frame = pd.concat([f for _, f in chunks], ignore_index=True)
    cols = find_columns(list(frame.columns), where=str(path))
    assert (cols.id, cols.ra, cols.dec) == ("objid", "RA", "DEC")
    ids, was_float = id_strings(frame["objid"])
    assert list(ids) == [str(i) for i in IDS] and not was_float
    ra, dec, problem = parse_coordinates(frame["RA"], frame["DEC"])
    assert np.allclose(ra, _table()["RA"]) and np.allclose(dec, _table()["DEC"])
    assert list(problem) == [""] * 5
    names = catmod.text_values(frame["name"])
    assert list(names[:3]) == ["a, with comma", 'q"uote', "two words"]


def test_csv_columns_are_carried_as_their_original_text(tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    p.write_text("id,ra,dec,z\n007,10.10,-5.50,1e-3\n8,,3,-9999\n")
    frame = read_catalog(p)
    assert list(frame["id"]) == ["007", "8"]
    assert list(frame["ra"]) == ["10.10", ""] and list(frame["z"]) == ["1e-3", "-9999"]
    assert open_catalog(p).text_columns


def test_skyserver_csv_with_table_line_and_bom(tmp_path: Path) -> None:
    # SkyServer/CasJobs CSV downloads start with a "#Table1" line; Excel adds a BOM.
    p = tmp_path / "sky.csv"
    p.write_bytes("\ufeff#Table1\nobjID,ra,dec\n1237648720693755918,185.0,0.5\n".encode())
    reader = open_catalog(p)
    assert reader.columns == ["objID", "ra", "dec"] and reader.n_rows == 1
    assert read_catalog(p)["objID"][0] == "1237648720693755918"


def test_compressed_csv_and_explicit_format(tmp_path: Path) -> None:
    gz = tmp_path / "c.csv.gz"
    with gzip.open(gz, "wt") as f:
        f.write("objid,ra,dec\n587722952231026744,1,2\n")
    assert read_catalog(gz)["objid"][0] == "587722952231026744"
    odd = tmp_path / "c.dat"  # an extension that says little: recognised by content
    odd.write_text("objid,ra,dec\n1,2,3\n")
    assert open_catalog(odd).format == "csv"
    assert len(read_catalog(odd, "csv")) == 1
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x00\x01\x02 binary junk \x03")
    with pytest.raises(GalmergeError, match=r"no known table format \(tried FITS"):
        open_catalog(junk)
    prose = tmp_path / "notes.txt"
    prose.write_text("just one line of prose\n")
    with pytest.raises(GalmergeError, match=r"cannot tell the table format \(tried whitespace"):
        open_catalog(prose)


def test_darg_fits_keeps_sentinels_and_64_bit_ids(darg_dir: Path) -> None:
    fits_frame = read_catalog(darg_dir / "darg_mergers.fits")
    csv_frame = read_catalog(darg_dir / "darg_mergers.csv")
    assert len(fits_frame) == len(csv_frame) == 3003
    assert fits_frame["object1"].dtype == np.int64
    assert list(id_strings(fits_frame["object1"])[0]) == list(csv_frame["object1"])
    assert (fits_frame["specz2"] == -9999).sum() == (csv_frame["specz2"].astype(float)
                                                      == -9999).sum() > 0
    cols = find_columns(list(fits_frame.columns), where="darg")
    assert (cols.id, cols.ra, cols.dec) == ("object1", "ra1", "dec1")


@pytest.mark.parametrize(("names", "expect"), [
    (["objID", "RAJ2000", "DEJ2000"], ("objID", "RAJ2000", "DEJ2000")),
    (["id_str", "ra_deg", "dec_deg", "file_loc"], ("id_str", "ra_deg", "dec_deg")),
    (["Object1", "RA1", "DEC1", "ra2", "dec2"], ("Object1", "RA1", "DEC1")),
    (["id", "ra"], ("id", None, None)),  # RA without Dec is no coordinate pair
])
def test_columns_are_found_by_common_names(names: list[str], expect: tuple) -> None:
    cols = find_columns(names, where="cat")
    assert (cols.id, cols.ra, cols.dec) == expect


def test_explicit_columns_and_missing_id() -> None:
    cols = find_columns(["gal", "alpha_x", "delta_x"], where="cat", id_col="gal",
                        ra_col="alpha_x", dec_col="delta_x")
    assert (cols.id, cols.ra, cols.dec) == ("gal", "alpha_x", "delta_x")
    with pytest.raises(GalmergeError, match="no id column"):
        find_columns(["ra", "dec"], where="cat")
    with pytest.raises(GalmergeError, match="no column 'nope'"):
        find_columns(["id", "ra", "dec"], where="cat", ra_col="nope", dec_col="dec")


def test_coordinates_degrees_sexagesimal_and_problems() -> None:
    ra = pd.Series(["12:30:49.42", "12h30m49.42s", "187.7059", "", "abc", "-9999", "360",
                    "10", "nan"], dtype=object)
    dec = pd.Series(["+12:23:28.0", "12d23m28s", "12.3911", "1", "2", "3", "4", "-90.5", "5"],
                    dtype=object)
    r, d, problem = parse_coordinates(ra, dec)
    assert np.allclose(r[:3], 187.7059, atol=1e-3) and np.allclose(d[:3], 12.3911, atol=1e-3)
    assert list(problem[:3]) == ["", "", ""]
    assert "missing" in problem[3] and "not a number" in problem[4]
    assert "sentinel" in problem[5] and "outside [0, 360)" in problem[6]
    assert "outside [-90, 90]" in problem[7] and "missing" in problem[8]
    assert np.isnan(r[3:]).all()


def test_bad_catalogues_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GalmergeError, match="not found"):
        open_catalog(tmp_path / "absent.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(GalmergeError, match="empty"):
        open_catalog(empty)
    header = tmp_path / "header.csv"
    header.write_text("objid,ra,dec\n")
    with pytest.raises(GalmergeError, match="no rows"):
        open_catalog(header)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"\x00\x01 definitely not parquet" * 10)
    with pytest.raises(GalmergeError, match="cannot read as Parquet"):
        open_catalog(junk)
    fits_junk = tmp_path / "junk.fits"
    fits_junk.write_bytes(b"SIMPLE  =  garbage" * 200)
    with pytest.raises(GalmergeError, match="FITS"):
        open_catalog(fits_junk)


def test_truncated_fits_table_is_refused(tmp_path: Path, darg_dir: Path) -> None:
    data = (darg_dir / "darg_mergers.fits").read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(GalmergeError, match="truncated"):
        open_catalog(cut)


def test_votable_does_not_stream_and_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    path = _write(_table(), tmp_path / "cat.vot")
    monkeypatch.setattr(catmod, "VOTABLE_MAX_BYTES", path.stat().st_size - 1)
    with pytest.raises(GalmergeError, match="parsed whole"):
        open_catalog(path)


def test_limit_stops_early(tmp_path: Path) -> None:
    path = _write(_table(), tmp_path / "cat.fits")
    got = list(open_catalog(path).chunks(2, limit=3))
    assert [len(f) for _, f in got] == [2, 1]


def test_one_format_table_names_the_extensions_readers_and_writers(tmp_path: Path) -> None:
    """catalog, writers and the default output all take their formats from formats.py."""
    from galmerge.inference import writers
    from galmerge.inference.formats import TABLE_FORMATS
    from galmerge.inference.run import default_output

    assert set(writers._WRITERS) == {f.name for f in TABLE_FORMATS if f.written}
    for f in TABLE_FORMATS:
        for ext in f.extensions:
            assert catmod.detect_format(tmp_path / f"x{ext}") == f.name
        for ext in f.output:
            assert writers.output_format(tmp_path / f"x{ext}") == f.name
    assert default_output("a/x.xml", "votable").name == "x_scores.vot"
    assert default_output("a/x.fts", "fits").name == "x_scores.fits"
    assert default_output("a/x.tsv.gz", "tsv").name == "x_scores.csv"
