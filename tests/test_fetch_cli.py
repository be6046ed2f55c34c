"""`galmerge fetch` end to end: a real CLI process against the local fake services."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from galmerge.inference.cache import CutoutCache
from galmerge.inference.cutouts import (
    BAD_COORDINATES,
    FETCH_FAILED,
    MISSING_FILE,
    NO_COVERAGE,
    OK,
    STATUSES,
    CutoutRequest,
)
from galmerge.inference.services import open_cached_source
from tests.conftest import ROOT
from tests.fake_services import FAULT_READ_TIMEOUT, expected_status, faulty_catalog, pos_key


def run_fetch(fake, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "GALMERGE_SDSS_URL": fake.sdss_url,
                "GALMERGE_LEGACY_URL": fake.legacy_url, **(env or {})}
    return subprocess.run([sys.executable, "-m", "galmerge", "fetch", *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=300)


def test_fetch_writes_a_status_per_row_and_resumes(fake, tmp_path: Path) -> None:
    cat = tmp_path / "cat.csv"
    pd.DataFrame({
        "objid": ["587724199889666224", "587724232639905893", "3", "4", "5"],
        "RA": [150.0, 151.0, 152.0, float("nan"), 153.0],
        "Dec": [2.0, 3.0, -45.0, 1.0, 4.0],
        "petroR90_r": [10.0, 20.0, 10.0, 10.0, 15.0],
    }).to_csv(cat, index=False)
    fake.add_fault(153.0, 4.0, "503")
    out = tmp_path / "cache"
    args = ["--catalog", str(cat), "--out", str(out), "--scale-col", "petroR90_r",
            "--scale-factor", "0.02", "--pixels", "100", "--retries", "1",
            "--backoff", "0.01"]
    first = run_fetch(fake, *args)
    assert first.returncode == 0, first.stderr
    assert "5 rows" in first.stdout
    table = pd.read_csv(out / "cat.csv.fetch-status.csv", dtype={"id": str})
    assert table["id"].tolist()[:2] == ["587724199889666224", "587724232639905893"]
    assert table["status"].tolist() == [OK, OK, NO_COVERAGE, BAD_COORDINATES, FETCH_FAILED]
    assert "HTTP 503" in table["status_detail"][4] and "footprint" in table["status_detail"][2]
    scales = {e.key: float(e.params["scale"]) for e in fake.log}
    # per-row scales: 0.02 x petroR90_r
    assert [scales[pos_key(r, d)] for r, d in [(150, 2), (151, 3), (152, -45), (153, 4)]] == \
        pytest.approx([0.2, 0.4, 0.2, 0.3])
    sent = fake.count()
    assert sent == 3 + 2  # the 503 row was tried twice

    again = run_fetch(fake, *args)
    assert again.returncode == 2 and "exists" in again.stderr and "--resume" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    resumed = run_fetch(fake, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert fake.count() - sent == 2  # only the failed row, again twice
    rerun = run_fetch(fake, *args, "--overwrite")
    assert rerun.returncode == 0 and fake.count() - sent == 4  # the cache served the rest

    # classify --cutouts DIR reads the cache offline through the recorded configuration.
    offline = open_cached_source(str(out))
    assert offline.get(CutoutRequest(0, "a", 150.0, 2.0, scale=0.2)).ok
    assert offline.get(CutoutRequest(4, "e", 153.0, 4.0, scale=0.3)).status == MISSING_FILE


def test_fetch_rejects_bad_options_in_one_line(fake, tmp_path: Path,
                                              unscaled_model: Path) -> None:
    cat = tmp_path / "c.csv"
    pd.DataFrame({"id": ["a"], "ra": [1.0], "dec": [1.0]}).to_csv(cat, index=False)
    no_scale = run_fetch(fake, "--catalog", str(cat), "--out", str(tmp_path / "o"),
                         "--model", str(unscaled_model))
    assert no_scale.returncode == 2 and "--scale" in no_scale.stderr
    bad_service = run_fetch(fake, "--catalog", str(cat), "--out", str(tmp_path / "o"),
                            "--scale", "0.4", "--fetch", "panstarrs")
    assert bad_service.returncode == 2 and "sdss, legacy, hips" in bad_service.stderr
    no_col = run_fetch(fake, "--catalog", str(cat), "--out", str(tmp_path / "o"), "--scale",
                       "0.4", "--ra-col", "RAJ", "--dec-col", "DEJ")
    assert no_col.returncode == 2 and "RAJ" in no_col.stderr


@pytest.mark.slow  # ~40 s on 2 shared cores; classify's 2,000-row run is in test_classify_fetch
def test_fetch_1000_rows_with_10_percent_faults_then_resume(fake, tmp_path: Path) -> None:
    n = 1000
    data, planned = faulty_catalog(fake, n)  # every 10th row faulty, every kind of fault
    rows = pd.DataFrame(data, columns=["objid", "ra", "dec"])
    cat = tmp_path / "big.csv"
    rows.to_csv(cat, index=False)
    fake.latency = 0.002
    args = ["--catalog", str(cat), "--out", str(tmp_path / "cache"), "--scale", "0.4",
            "--pixels", "64", "--concurrency", "16", "--retries", "2",
            "--timeout", str(FAULT_READ_TIMEOUT), "--backoff", "0.02"]
    first = run_fetch(fake, *args)
    assert first.returncode == 0, first.stderr
    table = pd.read_csv(tmp_path / "cache" / "big.csv.fetch-status.csv")
    assert len(table) == n and table["row"].tolist() == list(range(n))  # none lost
    assert set(table["status"]) <= set(STATUSES)
    failed = table[table.status != OK]
    assert (failed["status_detail"].fillna("").str.len() > 0).all()  # every failure explained
    want = [expected_status(planned.get(i)) for i in range(n)]
    assert table.status.tolist() == want
    counts = Counter(table.status)

    before = len(fake.log)
    resumed = run_fetch(fake, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    second = fake.log[before:]
    failed_keys = {pos_key(rows.ra[i], rows.dec[i]) for i in table.index[table.status ==
                                                                          FETCH_FAILED]}
    assert {e.key for e in second} == failed_keys  # re-fetched only the failed rows
    again = pd.read_csv(tmp_path / "cache" / "big.csv.fetch-status.csv")
    assert len(again) == n and (again.status == table.status).all()
    with CutoutCache(tmp_path / "cache") as cache:
        assert len(cache) == counts[OK] + counts[NO_COVERAGE]


def test_one_definition_of_the_fetch_options() -> None:
    """`fetch` and `classify --fetch` take the same options, named and defaulted as FetchOptions."""
    import dataclasses

    from galmerge.cli import FETCH_OPTIONS, classify, fetch
    from galmerge.inference.fetch import FetchOptions

    fields = {f.name: f.default for f in dataclasses.fields(FetchOptions)}
    for name, (_, default) in FETCH_OPTIONS.items():
        assert name in fields
        assert name == "service" or default == fields[name], name
    for command in (classify, fetch):
        assert set(FETCH_OPTIONS) <= set(inspect.signature(command).parameters)
