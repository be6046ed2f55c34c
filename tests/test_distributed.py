"""classify on a real Dask LocalCluster (2 worker processes, loopback); a worker killed mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from galmerge.errors import GalmergeError
from galmerge.inference.pipeline import ClassifyOptions, classify_catalog
from tests.dask_tools import run_and_kill_a_worker

distributed = pytest.importorskip("distributed")

from galmerge.inference.distributed import DaskRunner, _parse_resources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "catalogs" / "sdss_example" / "sdss_example.csv"


@pytest.fixture(scope="module")
def client():
    """Two worker processes (one thread each) on 127.0.0.1; both declare one GPU slot."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  resources={"GPU": 1}) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def survey(tmp_path: Path, repeats: int) -> Path:
    """The example catalogue repeated (unique ids), plus rows whose file is missing."""
    base = pd.read_csv(EXAMPLE, dtype=str)
    rows = pd.concat([base] * repeats, ignore_index=True)
    rows["objid"] = [str(10**17 + i) for i in range(len(rows))]
    rows["file_loc"] = [str(EXAMPLE.parent / f) for f in rows["file_loc"]]
    rows.loc[rows.index % 37 == 5, "file_loc"] = str(tmp_path / "no-such-file.jpeg")
    path = tmp_path / "survey.csv"
    rows.to_csv(path, index=False)
    return path


def test_dask_run_is_identical_to_local_run(client, tmp_path: Path) -> None:
    cat = survey(tmp_path, repeats=5)
    opts = ClassifyOptions(chunk_size=16, batch_size=32)
    local = classify_catalog(cat, output=tmp_path / "local.parquet", options=opts)
    dask = classify_catalog(cat, output=tmp_path / "dask.parquet", options=opts,
                            runner=DaskRunner(client=client))
    a, b = pd.read_parquet(local.output), pd.read_parquet(dask.output)
    pd.testing.assert_frame_equal(a, b)
    assert len(b) == 120 and set(b["status"]) == {"ok", "blank", "missing_file"}
    assert dask.status_counts == local.status_counts
    assert not (tmp_path / "dask.parquet.parts").exists()


def test_gpu_resource_routes_tasks_to_workers_that_offer_it(client, tmp_path: Path) -> None:
    cat = survey(tmp_path, repeats=2)
    opts = ClassifyOptions(chunk_size=8, device="cpu")
    local = classify_catalog(cat, output=tmp_path / "local.csv", options=opts)
    gpu = classify_catalog(cat, output=tmp_path / "gpu.csv", options=opts,
                           runner=DaskRunner(client=client, resources={"GPU": 1}))
    assert local.output.read_bytes() == gpu.output.read_bytes()
    with pytest.raises(GalmergeError, match="no Dask worker offers the resource TPU=1"):
        classify_catalog(cat, output=tmp_path / "tpu.csv", options=opts,
                         runner=DaskRunner(client=client, resources={"TPU": 1}))


def test_worker_killed_mid_run_loses_and_duplicates_nothing(client, tmp_path: Path) -> None:
    cat = survey(tmp_path, repeats=60)  # 1440 rows
    opts = ClassifyOptions(chunk_size=40, batch_size=40)  # 36 chunks
    local = classify_catalog(cat, output=tmp_path / "local.parquet", options=opts)

    out = tmp_path / "dask.parquet"
    work = out.with_name(out.name + ".parts")
    killed, result = run_and_kill_a_worker(client, lambda: classify_catalog(
        cat, output=out, options=opts, runner=DaskRunner(client=client)), work, max_parts=30)
    assert killed is not None, "the run finished before a worker could be killed"
    assert result, "the Dask run did not finish"

    pd.testing.assert_frame_equal(pd.read_parquet(local.output), pd.read_parquet(out))
    assert result[0].rows == 1440
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
    assert killed not in client.run(os.getpid).values()


def test_cli_with_scheduler_address(client, tmp_path: Path) -> None:
    cat = survey(tmp_path, repeats=2)
    address = client.scheduler.address
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}

    def run(*extra: str, out: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "galmerge", "classify", "--catalog", str(cat), "--output",
             str(tmp_path / out), "--chunk-size", "10", "--quiet", *extra],
            cwd=ROOT, capture_output=True, text=True, env=env, check=False)

    local = run(out="local.csv")
    dask = run("--dask", address, out="dask.csv")
    assert local.returncode == 0, local.stderr
    assert dask.returncode == 0, dask.stderr
    assert (tmp_path / "local.csv").read_bytes() == (tmp_path / "dask.csv").read_bytes()
    meta_local = json.loads((tmp_path / "local.csv.meta.json").read_text())
    meta_dask = json.loads((tmp_path / "dask.csv.meta.json").read_text())
    # The recorded command leaves out --dask (it changes how, not what).
    assert meta_dask["command"] == meta_local["command"].replace("local.csv", "dask.csv")
    assert "--dask" not in meta_dask["command"]


def test_bad_dask_options() -> None:
    with pytest.raises(GalmergeError, match="not both"):
        DaskRunner.from_cli("tcp://127.0.0.1:1", 2, None)
    with pytest.raises(GalmergeError, match="NAME=NUMBER"):
        _parse_resources("GPU=one")
    assert _parse_resources("GPU=1, MEM=2.5") == {"GPU": 1.0, "MEM": 2.5}


def test_unreachable_scheduler_is_one_line(tmp_path: Path) -> None:
    cat = survey(tmp_path, repeats=1)
    proc = subprocess.run(
        [sys.executable, "-m", "galmerge", "classify", "--catalog", str(cat), "--output",
         str(tmp_path / "x.csv"), "--quiet", "--dask", "tcp://127.0.0.1:9"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")


def test_fetch_on_dask_workers_matches_the_local_run(client, fake, tmp_path: Path) -> None:
    """--fetch on workers: each worker opens its own service client and cache."""
    from galmerge.inference.fetch import FetchOptions

    cat = tmp_path / "cat.csv"
    pd.DataFrame({"objid": ["587724199889666224", "2", "3", "4", "5", "6"],
                  "ra": [150.0, 151.0, 152.0, 153.0, -1.0, 154.0],
                  "dec": [2.0, 3.0, -45.0, 4.0, 1.0, 5.0]}).to_csv(cat, index=False)

    def opts(cache: str) -> ClassifyOptions:
        return ClassifyOptions(chunk_size=2, fetch=FetchOptions(
            service="sdss", scale=0.4, service_url=fake.sdss_url, retries=1, backoff=0.01,
            cache=str(tmp_path / cache)))

    local = classify_catalog(cat, output=tmp_path / "local.csv", options=opts("cache-local"))
    sent = fake.count()
    dask = classify_catalog(cat, output=tmp_path / "dask.csv", options=opts("cache-dask"),
                            runner=DaskRunner(client=client))
    assert fake.count() == 2 * sent  # the workers fetched for themselves
    a, b = (pd.read_csv(r.output, dtype=str, keep_default_na=False) for r in (local, dask))
    # The local run prefetches the next chunk into its cache, so some of its messages say
    # "(cached)": where a cutout came from, not what it is. Everything else is identical.
    for frame in (a, b):
        frame["status_detail"] = frame["status_detail"].str.replace(" (cached)", "")
    pd.testing.assert_frame_equal(a, b)
    assert pd.read_csv(dask.output)["status"].tolist() == [
        "ok", "ok", "no_coverage", "ok", "bad_coordinates", "ok"]
