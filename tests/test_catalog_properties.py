"""Property-based tests of the CSV and ECSV readers (Hypothesis): whatever the ids, the
delimiter, the quoting, the line ends or a byte-order mark, every row comes back with its
id exactly as written. Read-only use of the public reader API."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
from astropy.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from galmerge.inference.catalog import id_strings, open_catalog

#: Characters that make ids awkward: delimiters, quotes, '#', spaces inside, non-ASCII.
AWKWARD = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"),
                        exclude_characters="\x00\ufeff\x85")
TEXT_IDS = st.text(AWKWARD, min_size=1, max_size=24).map(str.strip).filter(bool)
#: SDSS-like 19-digit objIDs, ids with leading zeros, negative numbers, sentinel-looking text.
NUMBER_IDS = st.one_of(
    st.integers(10**18, 2**63 - 1).map(str),
    st.integers(0, 10**6).map(lambda i: f"{i:08d}"),
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.sampled_from(["nan", "NA", "null", "-9999", "1e5", "0x1F", "TRUE", "#1"]),
)
IDS = st.lists(st.one_of(TEXT_IDS, NUMBER_IDS), min_size=1, max_size=30)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def read_ids(path: Path, chunk: int) -> tuple[list[str], list[str]]:
    reader = open_catalog(path)
    ids: list[str] = []
    for _, frame in reader.chunks(chunk):
        ids.extend(id_strings(frame["objid"])[0])
    return ids, list(reader.columns)


@SETTINGS
@given(ids=IDS, tsv=st.booleans(), crlf=st.booleans(), bom=st.booleans(),
       quote_all=st.booleans(), chunk=st.integers(1, 7))
def test_csv_ids_round_trip_exactly(ids: list[str], tsv: bool, crlf: bool, bom: bool,
                                    quote_all: bool, chunk: int) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t" if tsv else ",", lineterminator="\r\n" if crlf else "\n",
                   quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    w.writerow(["objid", "mag"])
    for i, ident in enumerate(ids):
        w.writerow([ident, f"{i * 0.5:.1f}"])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("cat.tsv" if tsv else "cat.csv")
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8"))
        got, columns = read_ids(path, chunk)
    assert columns == ["objid", "mag"]
    assert got == ids


@SETTINGS
@given(ids=IDS, chunk=st.integers(1, 7))
def test_ecsv_ids_round_trip_exactly(ids: list[str], chunk: int) -> None:
    t = Table({"objid": np.array(ids, dtype=str), "mag": np.arange(len(ids)) * 0.5})
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cat.ecsv"
        t.write(path, format="ascii.ecsv")
        got, columns = read_ids(path, chunk)
    assert columns == ["objid", "mag"]
    assert got == ids
