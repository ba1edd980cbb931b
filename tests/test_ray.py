"""lsm3.ray and the compactor's Ray executor, on a local Ray (the ``ray_cluster`` fixture).

Reads equal ``Table.to_arrow`` row for row; writes in every mode equal a dict model and make
one commit; a retried job lands once; a task failing mid-write commits nothing; compaction
through Ray, even with a worker killed mid-task, gives the table local compaction gives.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

ray = pytest.importorskip("ray")

import lsm3  # noqa: E402
from compactor import compact, remove_orphan_files  # noqa: E402
from compactor.executor import Job, write_outputs  # noqa: E402
from compactor.job import main as compactor_main  # noqa: E402
from compactor.ray_executor import RayExecutor  # noqa: E402
from lsm3.errors import InvalidInput, SchemaMismatch  # noqa: E402
from lsm3.ray import (  # noqa: E402
    Lsm3Datasink,
    Lsm3Datasource,
    read_lsm3,
    write_grouped,
    write_lsm3,
    write_part,
)
from lsm3.write.bulk import GROUP_COLUMN  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# One local Ray per test process: under ``make unit``'s workers (pytest-xdist, --dist
# loadgroup) every Ray test runs in the same one.
pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.xdist_group("ray")]

SCHEMA = pa.schema([("id", pa.int64()), ("p", pa.string()), ("v", pa.int64())])


def collect(ds: Any) -> pa.Table:
    """The dataset's rows in its order."""
    ordered = ray.data.Dataset.copy(ds, _deep_copy=True)
    ordered.context.execution_options.preserve_order = True
    return pa.concat_tables(ray.get(ordered.to_arrow_refs()))


def make_table(root: Path, commits: int = 4, rows: int = 3000) -> lsm3.Table:
    """Partitioned, 2 buckets, overlapping runs with updates and deletes."""
    t = lsm3.create_table(str(root), SCHEMA, ["id", "p"], partition_by="p", buckets=2)
    rng = random.Random(7)
    for c in range(commits):
        ids = rng.sample(range(rows * 2), rows)
        with t.writer() as w:
            w.upsert(
                pa.table(
                    {"id": ids, "p": [f"p{i % 2}" for i in ids], "v": [c * 10**6 + i for i in ids]}
                )
            )
            if c:
                gone = rng.sample(ids, rows // 10)
                w.delete(pa.table({"id": gone, "p": [f"p{i % 2}" for i in gone]}))
    return t


# ------------------------------------------------------------------------------ reading


def test_read_equals_to_arrow_row_for_row(tmp_path: Path) -> None:
    t = make_table(tmp_path / "t")
    uri = str(tmp_path / "t")
    cases: list[dict[str, Any]] = [
        {},
        {"columns": ["v", "id"]},
        {"filter": (pc.field("id") >= 1000) & (pc.field("id") < 4000)},  # key filter
        {"filter": pc.field("v") > 2 * 10**6, "columns": ["id"]},  # after the merge
        {"filter": pc.field("p") == "p1"},  # prunes partitions
        {"snapshot_id": 2},  # time travel
    ]
    for case in cases:
        # 600 stored rows per unit: every bucket is cut into key ranges.
        got = collect(read_lsm3(uri, max_unit_rows=600, **case))
        expected = t.to_arrow(**case)
        assert got.equals(expected), case
    source = Lsm3Datasource(uri, max_unit_rows=600)
    groups = {(u.partition, u.bucket) for u in source.units}
    assert len(source.units) > len(groups) == 4  # key-range sections of large buckets
    assert source.estimate_inmemory_data_size() > 0
    whole = Lsm3Datasource(uri)
    assert len(whole.units) == 4  # one unit per (partition, bucket)


def test_read_of_an_empty_table(tmp_path: Path) -> None:
    lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    ds = read_lsm3(str(tmp_path / "t"))
    assert ds.count() == 0 and ds.schema().names == SCHEMA.names


def test_read_refuses_bad_input(tmp_path: Path) -> None:
    make_table(tmp_path / "t", commits=1, rows=10)
    with pytest.raises(InvalidInput, match="unknown columns"):
        read_lsm3(str(tmp_path / "t"), columns=["nope"])
    with pytest.raises(InvalidInput, match="Ray workers cannot see"):
        read_lsm3("memory://ray-t")
    with pytest.raises(InvalidInput, match="max_unit_rows"):
        read_lsm3(str(tmp_path / "t"), max_unit_rows=0)


# ------------------------------------------------------------------------------ writing


def _events(n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    ids = [rng.randrange(200) for _ in range(n)]
    ops = [rng.choice(["c", "u", "u", "d"]) for _ in range(n)]
    return pa.table(
        {
            "id": ids,
            "p": [f"p{i % 2}" for i in ids],
            "v": list(range(n)),
            "op": ops,
        }
    )


def _blocks(table: pa.Table, size: int) -> Any:
    """A dataset of ``table``'s rows, in order, in blocks of ``size`` rows."""
    return ray.data.from_arrow([table.slice(i, size) for i in range(0, table.num_rows, size)])


def _as_dict(table: pa.Table) -> dict[int, tuple[str, int]]:
    return {r["id"]: (r["p"], r["v"]) for r in table.to_pylist()}


def _model_case(mode: str, seed: int) -> tuple[pa.Table, dict[int, tuple[str, int]]]:
    """The base rows, the write's input and the model after the write."""
    base = pa.table({"id": list(range(0, 200, 2)), "p": [f"p{i % 2}" for i in range(0, 200, 2)]})
    base = base.append_column("v", pa.array([-1] * base.num_rows, pa.int64()))
    model = _as_dict(base)
    events = _events(1200, seed=seed)
    data = {"upsert": events.drop_columns(["op"]), "delete": events.select(["id", "p"])}.get(
        mode, events
    )
    for r in events.to_pylist():
        if mode == "delete" or (mode == "cdc" and r["op"] == "d"):
            model.pop(r["id"], None)
        else:
            model[r["id"]] = (r["p"], r["v"])
    return base, data, model  # type: ignore[return-value]


def _runs_per_bucket(files: list[Any]) -> dict[tuple[Any, int], int]:
    runs: dict[tuple[Any, int], set[str]] = {}
    for f in files:
        runs.setdefault((tuple(f.partition), f.bucket), set()).add(f.run)
    return {k: len(v) for k, v in runs.items()}


@pytest.mark.parametrize("mode", ["upsert", "delete", "cdc"])
def test_write_then_read_equals_the_model(tmp_path: Path, mode: str) -> None:
    """Many buckets and blocks: the rows are grouped by bucket across tasks, so each
    (partition, bucket) gets one run from the write, and the last record of a key wins."""
    uri = str(tmp_path / "t")
    t = lsm3.create_table(uri, SCHEMA, ["id", "p"], partition_by="p", buckets=16)
    base, data, model = _model_case(mode, seed=len(mode))
    with t.writer() as w:
        w.upsert(base)
    before = t.refresh()
    assert before is not None
    # Blocks of 50 rows: every bucket has rows in many blocks. cdc: more tasks than CPUs.
    snap = write_lsm3(_blocks(data, 50), uri, mode=mode, write_tasks=5 if mode == "cdc" else None)
    assert snap is not None and snap.snapshot_id == before.snapshot_id + 1  # one commit
    t.refresh()
    assert _as_dict(t.to_arrow()) == model
    added = [f for f in t.files_of(t.refresh()) if f not in t.files_of(before)]
    runs = _runs_per_bucket(added)
    assert len(runs) == 32 and set(runs.values()) == {1}  # one run per (partition, bucket)


def test_ungrouped_write_gives_a_run_per_task(tmp_path: Path) -> None:
    """``group_by_bucket=False``: tasks write contiguous slices, each its own run per bucket;
    the read still equals the model (a later task's record of a key wins)."""
    uri = str(tmp_path / "t")
    t = lsm3.create_table(uri, SCHEMA, ["id", "p"], partition_by="p", buckets=3)
    base, data, model = _model_case("cdc", seed=3)
    with t.writer() as w:
        w.upsert(base)
    before = t.refresh()
    snap = write_lsm3(
        _blocks(data, 100), uri, mode="cdc", min_rows_per_task=250, group_by_bucket=False
    )
    assert snap is not None and before is not None
    assert snap.snapshot_id == before.snapshot_id + 1
    t.refresh()
    assert _as_dict(t.to_arrow()) == model
    added = [f for f in t.files_of(t.refresh()) if f not in t.files_of(before)]
    assert max(_runs_per_bucket(added).values()) > 1  # several tasks wrote each bucket


@pytest.mark.parametrize("buckets", [1, 4])  # one task per slice; grouped by bucket
def test_a_retried_job_lands_once(tmp_path: Path, buckets: int) -> None:
    uri = str(tmp_path / "t")
    t = lsm3.create_table(uri, SCHEMA, "id", buckets=buckets)
    data = _events(300, seed=3).drop_columns(["op"])
    first = write_lsm3(_blocks(data, 100), uri, writer_id="job", commit_id="day-1")
    again = write_lsm3(_blocks(data, 100), uri, writer_id="job", commit_id="day-1")
    assert first is not None and again is not None
    assert again.snapshot_id == first.snapshot_id
    assert t.refresh() == first
    # Two jobs that race to the commit: the second one's commit_files finds the first.
    sink = Lsm3Datasink(uri, writer_id="job", commit_id="day-2")
    write_lsm3(_blocks(data, 100), uri, writer_id="job", commit_id="day-2")
    if buckets > 1:
        write_grouped(_blocks(data, 100), sink)
    else:
        _blocks(data, 100).write_datasink(sink)
    assert sink.snapshot is not None and sink.snapshot.snapshot_id == first.snapshot_id + 1
    assert t.refresh() is not None and t.refresh().snapshot_id == first.snapshot_id + 1  # type: ignore[union-attr]


class FailingSink(Lsm3Datasink):
    """Uploads its runs, then fails in the second task: a job that dies mid-write."""

    def write(self, blocks: Any, ctx: Any) -> Any:
        staged = super().write(blocks, ctx)
        if ctx.task_idx == 1:
            raise RuntimeError("injected failure after uploading runs")
        return staged


def _fails_in_one_part(uri: str, options: Any, mode: str, op: str, *pieces: Any) -> Any:
    """Grouped write tasks (2 buckets, 2 parts): the first part uploads its runs and fails
    while the second, started late, is still writing (it leaves a marker when done)."""
    first = any(p.num_rows and p.column(GROUP_COLUMN)[0].as_py() % 2 == 0 for p in pieces)
    if not first:
        time.sleep(1.0)
    staged = write_part(uri, options, mode, op, *pieces)
    if first:
        raise RuntimeError("injected failure after uploading runs")
    (Path(uri.removeprefix("file://")).parent / "second-part-done").touch()
    return staged


@pytest.mark.parametrize("grouped", [False, True])
def test_a_task_failure_mid_write_commits_nothing(tmp_path: Path, grouped: bool) -> None:
    uri = str(tmp_path / "t")
    t = make_table(tmp_path / "t", commits=1, rows=100)
    before, rows = t.refresh(), t.to_arrow()
    data = _blocks(_events(400, seed=5).drop_columns(["op"]), 100)
    sink = Lsm3Datasink(uri) if grouped else FailingSink(uri, min_rows_per_task=100)
    with pytest.raises(Exception, match="injected failure"):
        if grouped:
            write_grouped(data, sink, parts=2, part_task=_fails_in_one_part)
        else:
            data.write_datasink(sink)
    # No task is still uploading when the write raises (its runs would escape the cleanup).
    assert not grouped or (tmp_path / "second-part-done").exists()
    assert sink.snapshot is None
    assert t.refresh() == before and t.to_arrow().equals(rows)
    data_files = {p.relative_to(tmp_path / "t") for p in (tmp_path / "t").rglob("*.parquet")}
    live = {Path(f.path) for f in t.files()}
    assert data_files - live, "the failed job's tasks uploaded runs (now orphans)"
    removed = remove_orphan_files(t, older_than=0)
    assert removed.removed
    left = {p.relative_to(tmp_path / "t") for p in (tmp_path / "t").rglob("*.parquet")}
    assert left == live and t.to_arrow().equals(rows)


def test_write_refuses_bad_input(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    lsm3.create_table(uri, SCHEMA, "id")
    data = _blocks(_events(10, seed=1).drop_columns(["op"]), 5)
    with pytest.raises(InvalidInput, match="unknown write mode"):
        write_lsm3(data, uri, mode="merge")
    with pytest.raises(InvalidInput, match="needs a writer_id"):
        write_lsm3(data, uri, commit_id="x")
    with pytest.raises(InvalidInput, match="Ray workers cannot see"):
        write_lsm3(data, "memory://ray-t")
    with pytest.raises(InvalidInput, match="write_tasks"):
        write_lsm3(data, uri, write_tasks=0)
    with pytest.raises(InvalidInput, match="JSON"):
        write_lsm3(data, uri, metadata={"x": object()})
    with pytest.raises(SchemaMismatch, match="no op column 'kind'"):
        write_lsm3(data, uri, mode="cdc", op_column="kind")
    with pytest.raises(SchemaMismatch, match=r"lacks column\(s\) \['id'\]"):
        write_lsm3(data.drop_columns(["id"]), uri, mode="delete")
    assert lsm3.open_table(uri).refresh() is None  # nothing committed


# ------------------------------------------------------------------------------ compaction


def _layout(t: lsm3.Table) -> list[tuple[Any, ...]]:
    return sorted((f.partition, f.bucket, f.level, f.rows, f.min_key, f.max_key) for f in t.files())


def test_ray_compaction_equals_local_compaction(tmp_path: Path) -> None:
    make_table(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    local = compact(str(tmp_path / "a"), policy="full")
    remote = compact(str(tmp_path / "b"), policy="full", executor="ray")
    a, b = lsm3.open_table(str(tmp_path / "a")), lsm3.open_table(str(tmp_path / "b"))
    assert len(local.tasks) == len(remote.tasks) == 4
    assert a.to_arrow().equals(b.to_arrow())
    assert _layout(a) == _layout(b)
    assert remote.worker_requests > 0 and remote.bytes_written == local.bytes_written


def test_the_compactor_command_runs_on_ray(tmp_path: Path) -> None:
    t = make_table(tmp_path / "t", commits=3, rows=500)
    rows = t.to_arrow()
    assert (
        compactor_main([str(tmp_path / "t"), "--once", "--policy", "full", "--executor", "ray"])
        == 0
    )
    t.refresh()
    assert t.to_arrow().equals(rows)
    assert len(t.files()) == 4  # one run per (partition, bucket)


def test_unknown_executor_is_refused(tmp_path: Path) -> None:
    make_table(tmp_path / "t", commits=1, rows=10)
    with pytest.raises(InvalidInput, match="unknown executor"):
        compact(str(tmp_path / "t"), executor="dask")


def _dies_once(uri: str, storage_options: Any, job: Job) -> Any:
    """Upload the outputs, then kill the worker, on the first attempt of each task."""
    marker = (
        Path(uri.removeprefix("file://")).parent
        / f"attempted-{job.task.partition}-{job.task.bucket}"
    )
    if not marker.exists():
        marker.touch()
        write_outputs(lsm3.open_table(uri), job.task, job.drop_tombstones)
        os._exit(1)  # the worker dies: Ray retries the task
    return RayExecutor.task(uri, storage_options, job)


class KillingExecutor(RayExecutor):
    task = staticmethod(_dies_once)


def test_a_killed_worker_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    make_table(tmp_path / "a", commits=3, rows=1000)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    compact(str(tmp_path / "a"), policy="full")
    b = lsm3.open_table(str(tmp_path / "b"))
    result = compact(b, policy="full", executor=KillingExecutor(b.uri))
    assert len(result.tasks) == 4 and not result.abandoned
    a = lsm3.open_table(str(tmp_path / "a"))
    assert b.refresh() is not None
    assert a.to_arrow().equals(b.to_arrow())
    assert _layout(a) == _layout(b)
    assert remove_orphan_files(b, older_than=0).removed  # the killed attempts' uploads
    assert a.to_arrow().equals(b.to_arrow())


def _fails_in_bucket_1(uri: str, storage_options: Any, job: Job) -> Any:
    """Upload bucket 1's outputs, then raise (not a worker loss: Ray does not retry it)."""
    if job.task.bucket == 1:
        write_outputs(lsm3.open_table(uri), job.task, job.drop_tombstones)
        raise RuntimeError("injected task failure")
    return RayExecutor.task(uri, storage_options, job)


class FailingExecutor(RayExecutor):
    task = staticmethod(_fails_in_bucket_1)


def test_a_failed_compaction_task_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    t = make_table(tmp_path / "t", commits=3, rows=1000)
    rows = t.to_arrow()
    with pytest.raises(Exception, match="injected task failure"):
        compact(t, policy="full", executor=FailingExecutor(t.uri))
    t.refresh()
    assert t.to_arrow().equals(rows)
    assert {f.bucket for f in t.files() if f.level == 0} >= {1}  # bucket 1's inputs stay live
    again = compact(t, policy="full", executor="ray")  # the lease was released
    assert again.tasks and t.refresh() is not None and t.to_arrow().equals(rows)
    assert len(t.files()) == 4
    assert remove_orphan_files(t, older_than=0).removed  # the failed task's uploads
    assert t.to_arrow().equals(rows)
