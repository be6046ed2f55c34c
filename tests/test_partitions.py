"""Issue 15: partitions read by the workers themselves; Parquet dataset and HATS in and out.

Real components only: a LocalCluster of 2 worker processes on 127.0.0.1, the
shipped model through ONNX Runtime, real Parquet/HATS files written with
pyarrow and hats, the CLI in a child process that is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galmerge.inference.partitions import Partition, open_input, plan_partitions
from galmerge.inference.pipeline import ClassifyOptions, classify_catalog
from tests.dask_tools import run_and_kill_a_worker

distributed = pytest.importorskip("distributed")
hats = pytest.importorskip("hats")

from galmerge.inference.distributed import DaskRunner  # noqa: E402
from galmerge.inference.hats_io import pixel_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "catalogs" / "sdss_example" / "sdss_example.csv"
OPTS = ClassifyOptions(chunk_size=16, batch_size=16)


@pytest.fixture(scope="module")
def client():
    """Two worker processes (one thread each) on 127.0.0.1."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def rows(repeats: int, tmp_path: Path) -> pd.DataFrame:
    """The example catalogue repeated with unique ids, sky positions and a missing file."""
    base = pd.read_csv(EXAMPLE, dtype=str)
    out = pd.concat([base] * repeats, ignore_index=True)
    rng = np.random.default_rng(repeats)
    out["objid"] = np.arange(len(out), dtype=np.int64) + 10**17
    out["ra"] = rng.uniform(0, 360, len(out))
    out["dec"] = np.degrees(np.arcsin(rng.uniform(-0.9, 0.9, len(out))))
    out["file_loc"] = [str(EXAMPLE.parent / f) for f in out["file_loc"]]
    out.loc[out.index % 37 == 5, "file_loc"] = str(tmp_path / "no-such-file.jpeg")
    return out


def parquet_catalogue(tmp_path: Path, repeats: int, row_group: int = 10,
                      name: str = "cat.parquet") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / name
    pq.write_table(pa.Table.from_pandas(rows(repeats, tmp_path), preserve_index=False), path,
                   row_group_size=row_group)
    return path


def hats_catalogue(tmp_path: Path, repeats: int, order: int = 0) -> Path:
    """A HATS catalogue written with hats: one pixel file per occupied pixel of ``order``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math import HealpixPixel, compute_spatial_index

    frame = rows(repeats, tmp_path)
    frame["_healpix_29"] = compute_spatial_index(frame["ra"].to_numpy(),
                                                 frame["dec"].to_numpy())
    frame = frame.sort_values("_healpix_29", kind="stable").reset_index(drop=True)
    folder = tmp_path / "cat_hats"
    pix = (frame["_healpix_29"].to_numpy() >> (2 * (29 - order))).astype(int)
    pixels = sorted(set(pix.tolist()))
    for p in pixels:
        dest = pixel_file(folder, order, p)
        dest.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame[pix == p], preserve_index=False), dest)
    hats.io.write_parquet_metadata(folder)
    PartitionInfo([HealpixPixel(order, p) for p in pixels]).write_to_file(catalog_path=folder)
    TableProperties(catalog_name="cat_hats", catalog_type="object", total_rows=len(frame),
                    ra_column="ra", dec_column="dec", healpix_column="_healpix_29",
                    healpix_order=29).to_properties_file(folder)
    return folder


def read_dataset(folder: Path) -> pd.DataFrame:
    """A dataset output read with pyarrow.dataset, in file order."""
    import pyarrow.dataset as ds

    return ds.dataset(folder, format="parquet").to_table().to_pandas()


def test_plan_follows_row_groups_and_pixels(tmp_path: Path) -> None:
    cat = parquet_catalogue(tmp_path, repeats=2, row_group=10)  # 48 rows, groups of 10
    plan = plan_partitions(open_input(cat), chunk_size=16)
    assert plan == [Partition(0, 0, 10), Partition(1, 10, 20), Partition(2, 20, 30),
                    Partition(3, 30, 40), Partition(4, 40, 48)]
    plan = plan_partitions(open_input(cat), chunk_size=25)
    assert [(p.start, p.stop) for p in plan] == [(0, 20), (20, 40), (40, 48)]
    one_group = parquet_catalogue(tmp_path, repeats=2, row_group=48, name="one.parquet")
    plan = plan_partitions(open_input(one_group), chunk_size=20)  # cut into chunk-size pieces
    assert [(p.start, p.stop) for p in plan] == [(0, 20), (20, 40), (40, 48)]
    hcat = hats_catalogue(tmp_path, repeats=2)
    hplan = plan_partitions(open_input(hcat), chunk_size=5)
    assert all(p.pixel is not None and p.pixel[0] == 0 for p in hplan)
    assert sum(p.rows for p in hplan) == 48  # one partition per pixel, whatever the chunk size


def test_parquet_dataset_output_on_two_workers_is_the_local_run(client, tmp_path: Path
                                                                 ) -> None:
    cat = parquet_catalogue(tmp_path, repeats=4)  # 96 rows in groups of 10: 9 partitions
    single = classify_catalog(cat, output=tmp_path / "single.parquet", options=OPTS)
    local = classify_catalog(cat, output=f"{tmp_path / 'local'}/", options=OPTS)
    dask = classify_catalog(cat, output=f"{tmp_path / 'dask'}/", options=OPTS,
                            runner=DaskRunner(client=client))
    assert dask.format == "parquet-dataset" and dask.rows == 96
    a = pd.read_parquet(single.output)
    pd.testing.assert_frame_equal(read_dataset(local.output), a)
    pd.testing.assert_frame_equal(read_dataset(dask.output), a)
    files = sorted(p.name for p in dask.output.iterdir())
    assert files == ["_common_metadata", "_metadata",
                     *(f"part-{k:06d}.parquet" for k in range(9))]
    for k in range(9):  # the same rows in the same files
        assert (dask.output / f"part-{k:06d}.parquet").read_bytes() == \
            (local.output / f"part-{k:06d}.parquet").read_bytes()
    assert dask.status_counts == single.status_counts
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    assert len(dd.read_parquet(str(dask.output))) == 96
    assert pq.read_metadata(dask.output / "_metadata").num_rows == 96
    assert b"galmerge" in pq.read_schema(dask.output / "_common_metadata").metadata


def test_no_summary_file_beyond_its_part_limit(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    from galmerge.inference import dataset_writer

    cat = parquet_catalogue(tmp_path, repeats=4)  # 9 partitions
    small = classify_catalog(cat, output=f"{tmp_path / 'small'}/", options=OPTS)
    monkeypatch.setattr(dataset_writer, "SUMMARY_MAX_PARTS", 8)
    big = classify_catalog(cat, output=f"{tmp_path / 'big'}/", options=OPTS)
    assert (small.output / "_metadata").is_file() and not (big.output / "_metadata").exists()
    meta = json.loads(pq.read_schema(big.output / "_common_metadata").metadata[b"galmerge"])
    assert meta["summary_file"].startswith("none: 9 parts > 8")
    pd.testing.assert_frame_equal(read_dataset(big.output), read_dataset(small.output))
    import dask.dataframe as dd

    assert len(dd.read_parquet(str(big.output))) == 96


def test_csv_partitions_are_byte_ranges_read_by_the_workers(client, tmp_path: Path
                                                            ) -> None:
    cat = tmp_path / "cat.csv"
    rows(3, tmp_path).to_csv(cat, index=False)  # 72 rows, no quotes: an index of line ends
    reader = open_input(cat)
    plan = plan_partitions(reader, chunk_size=16)
    assert reader.layout is not None and [(p.start, p.stop) for p in plan] == \
        [(0, 16), (16, 32), (32, 48), (48, 64), (64, 72)]
    single = classify_catalog(cat, output=tmp_path / "single.csv", options=OPTS)
    dask = classify_catalog(cat, output=f"{tmp_path / 'dask'}/", options=OPTS,
                            runner=DaskRunner(client=client))
    assert dask.rows == 72 and dask.status_counts == single.status_counts
    got = read_dataset(dask.output)
    want = pd.read_csv(single.output, dtype={"objid": str, "ra": str, "dec": str})
    assert got["objid"].tolist() == want["objid"].tolist()  # ids exact, order kept
    assert got["ra"].tolist() == want["ra"].tolist()  # text columns carried as text
    np.testing.assert_allclose(got["p_merger"].to_numpy(float),
                               want["p_merger"].to_numpy(float), rtol=1e-6)


def test_hats_in_hats_out_opens_in_lsdb_and_crossmatches(client, tmp_path: Path) -> None:
    lsdb = pytest.importorskip("lsdb")
    cat = hats_catalogue(tmp_path, repeats=4)
    local = classify_catalog(cat, output=tmp_path / "local_hats", options=OPTS)
    dask = classify_catalog(cat, output=tmp_path / "dask_hats", options=OPTS,
                            runner=DaskRunner(client=client))
    assert dask.format == "hats" and dask.rows == 96
    for out in (local.output, dask.output):
        assert (out / "properties").is_file() and (out / "partition_info.csv").is_file()
    pd.testing.assert_frame_equal(read_dataset(dask.output / "dataset"),
                                  read_dataset(local.output / "dataset"))
    inp = hats.read_hats(cat)
    res = hats.read_hats(dask.output)
    assert res.get_healpix_pixels() == inp.get_healpix_pixels()
    scored = lsdb.read_hats(dask.output)
    assert {"p_merger", "status", "objid"} <= set(scored.columns)
    matched = lsdb.read_hats(cat).crossmatch(scored, radius_arcsec=0.1, n_neighbors=1,
                                              suffixes=("_in", "_out")).compute()
    assert len(matched) == 96
    assert (matched["objid_in"].to_numpy() == matched["objid_out"].to_numpy()).all()


def test_unreadable_pixel_marks_its_rows_and_the_run_goes_on(client, tmp_path: Path) -> None:
    cat = hats_catalogue(tmp_path, repeats=2)
    plan = plan_partitions(open_input(cat), chunk_size=16)
    broken = pixel_file(cat, *plan[1].pixel)
    data = bytearray(broken.read_bytes())
    data[4:len(data) // 2] = b"\xff" * (len(data) // 2 - 4)  # data pages gone, footer kept
    broken.write_bytes(bytes(data))
    result = classify_catalog(cat, output=f"{tmp_path / 'out'}/", options=OPTS,
                              runner=DaskRunner(client=client))
    out = read_dataset(result.output / "dataset")  # files in path order, not pixel order
    assert len(out) == 48 == result.rows
    where = f"partition 1 (HEALPix pixel 0/{plan[1].pixel[1]}, rows "
    bad = out[out["status_detail"].str.startswith(where)]
    assert len(bad) == plan[1].rows == result.status_counts["unreadable"]
    assert (bad["status"] == "unreadable").all() and bad["p_merger"].isna().all()


def test_worker_killed_mid_partition_costs_one_retry(client, tmp_path: Path) -> None:
    cat = parquet_catalogue(tmp_path, repeats=20, row_group=16)  # 480 rows, 30 partitions
    local = classify_catalog(cat, output=f"{tmp_path / 'local'}/", options=OPTS)
    out = tmp_path / "dask"
    work = tmp_path / "dask.parts"
    killed, _ = run_and_kill_a_worker(client, lambda: classify_catalog(
        cat, output=f"{out}/", options=OPTS, runner=DaskRunner(client=client)), work,
        max_parts=25)
    assert killed is not None, "the run finished before a worker could be killed"
    pd.testing.assert_frame_equal(read_dataset(out), read_dataset(local.output))
    client.wait_for_workers(2, timeout=120)


def test_client_killed_then_resumed_loses_and_duplicates_nothing(client, tmp_path: Path
                                                                  ) -> None:
    cat = parquet_catalogue(tmp_path, repeats=20, row_group=16)  # 480 rows, 30 partitions
    local = classify_catalog(cat, output=f"{tmp_path / 'local'}/", options=OPTS)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    args = ["--catalog", str(cat), "--output", f"{tmp_path / 'dask'}/", "--chunk-size", "16",
            "--batch-size", "16", "--dask", client.scheduler.address, "--quiet"]
    work = tmp_path / "dask.parts"
    proc = subprocess.Popen([sys.executable, "-m", "galmerge", "classify", *args], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None and len(list(work.glob("part-*"))) < 5:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before the client could be killed"
    proc.kill()
    proc.wait()
    assert len(list(work.glob("part-*"))) < 30
    again = subprocess.run([sys.executable, "-m", "galmerge", "classify", *args, "--resume"],
                           cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    out = read_dataset(tmp_path / "dask")
    pd.testing.assert_frame_equal(out, read_dataset(local.output))
    assert out["objid"].is_unique and len(out) == 480
