"""Concurrent writers racing for the next snapshot: a local directory, SeaweedFS, Azurite.

Every commit must land exactly once, the snapshot chain must stay linear, and the table must
read as if the commits had been applied one after another in snapshot order.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pytest
from helpers import rows_by_key

import lsm3

SCHEMA = pa.schema(
    [("id", pa.int64()), ("writer", pa.int32()), ("commit", pa.int32()), ("v", pa.string())]
)
Location = tuple[str, dict | None]
# (writer, commit) -> ordered list of ("upsert", row) / ("delete", id)
Plan = dict[tuple[int, int], list[tuple[str, Any]]]


def make_plan(writers: int, commits: int, shared_keys: int, seed: int) -> Plan:
    """What each (writer, commit) writes: some keys of its own and some shared ones."""
    rng = random.Random(seed)
    plan: Plan = {}
    for w in range(writers):
        for c in range(commits):
            ops: list[tuple[str, Any]] = []
            for j in range(3):  # keys only this commit writes
                ops.append(("upsert", _row(100_000 + w * 1000 + c * 10 + j, w, c)))
            if c > 0:  # rewrite one of this writer's earlier keys
                ops.append(("upsert", _row(100_000 + w * 1000 + (c - 1) * 10, w, c)))
            for k in rng.sample(range(shared_keys), k=min(shared_keys, 4)):
                if rng.random() < 0.25:
                    ops.append(("delete", k))
                else:
                    ops.append(("upsert", _row(k, w, c)))
            plan[(w, c)] = ops
    return plan


def _row(i: int, w: int, c: int) -> dict[str, Any]:
    return {"id": i, "writer": w, "commit": c, "v": f"w{w}c{c}"}


def commit_id(w: int, c: int) -> str:
    return f"w{w}-c{c}"


def writer_id(w: int) -> str:
    return f"writer-{w}"


def write_commit(table: lsm3.Table, w: int, c: int, ops: list[tuple[str, Any]]) -> int:
    """Apply one planned commit, op by op, through a fresh named writer; returns its snapshot."""
    with table.writer(writer_id(w)) as wr:
        for kind, arg in ops:
            if kind == "upsert":
                wr.upsert([arg])
            else:
                wr.delete([arg])
        snap = wr.commit(commit_id=commit_id(w, c), metadata={"w": w, "c": c})
    assert snap is not None
    return snap.snapshot_id


def run_writer(
    uri: str, options: dict | None, w: int, plan: Plan, commits: int, table: Any = None
) -> list[int]:
    t = table if table is not None else lsm3.open_table(uri, storage_options=options)
    return [write_commit(t, w, c, plan[(w, c)]) for c in range(commits)]


def _process_writer(args: tuple) -> list[int]:
    uri, options, w, plan, commits = args
    return run_writer(uri, options, w, plan, commits)


def check_history(t: lsm3.Table, plan: Plan, landed: dict[int, list[int]]) -> None:
    """Each commit exactly once, a linear chain, and every snapshot equal to the replay."""
    t.refresh()
    snaps = t.snapshots()
    assert [s.snapshot_id for s in snaps] == list(range(1, len(plan) + 1))
    assert [s.parent_id for s in snaps] == [None, *range(1, len(plan))]
    ids = [(s.writer_id, s.commit_id) for s in snaps]
    assert sorted(ids) == sorted((writer_id(w), commit_id(w, c)) for w, c in plan)
    # the snapshot each writer was told about is the one holding its commit
    for w, sids in landed.items():
        for c, sid in enumerate(sids):
            assert (snaps[sid - 1].writer_id, snaps[sid - 1].commit_id) == (
                writer_id(w),
                commit_id(w, c),
            )
            assert snaps[sid - 1].metadata == {"w": w, "c": c}
        # a writer's own commits land in the order it made them
        assert sids == sorted(sids)
    seqs = [s.next_sequence for s in snaps]
    assert seqs == sorted(seqs)

    state: dict[int, dict] = {}
    for s in snaps:
        w, c = (int(x[1:]) for x in s.commit_id.split("-"))
        for kind, arg in plan[(w, c)]:
            if kind == "upsert":
                state[arg["id"]] = arg
            else:
                state.pop(arg, None)
        got = rows_by_key(t.to_arrow(snapshot_id=s.snapshot_id), ["id"])
        assert got == state, f"snapshot {s.snapshot_id} ({s.commit_id}) differs from the replay"
    keys = sorted(
        {op[1]["id"] if op[0] == "upsert" else op[1] for ops in plan.values() for op in ops}
    )
    assert t.get_many(keys) == [state.get(k) for k in keys]
    for w in {w for w, _ in plan}:
        last = max(c for ww, c in plan if ww == w)
        record = t.last_commit(writer_id(w))
        assert record is not None and record.commit_id == commit_id(w, last)


def race(
    location: Location,
    writers: int = 4,
    commits: int = 5,
    shared_keys: int = 6,
    shared_table: bool = False,
    seed: int = 0,
) -> None:
    uri, options = location
    t = lsm3.create_table(uri, SCHEMA, ["id"], storage_options=options)
    plan = make_plan(writers, commits, shared_keys, seed)
    barrier = threading.Barrier(writers)

    def work(w: int) -> list[int]:
        table = t if shared_table else lsm3.open_table(uri, storage_options=options)
        barrier.wait()
        return run_writer(uri, options, w, plan, commits, table)

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(work, range(writers)))
    check_history(t, plan, dict(enumerate(results)))


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", [1, 2])
def test_threads_race_on_local_directory(local_uri: Location, seed: int) -> None:
    race(local_uri, seed=seed)


def test_threads_sharing_one_table_object(local_uri: Location) -> None:
    race(local_uri, shared_table=True, seed=3)


def test_threads_race_on_seaweedfs(seaweed_bucket_uri: Location) -> None:
    race(seaweed_bucket_uri, seed=4)


def test_threads_race_on_azurite(az_container_uri: Location) -> None:
    """Azurite enforces If-None-Match: * (adlfs's create-only put): one winner per snapshot."""
    race(az_container_uri, seed=6)


def test_processes_race_on_local_directory(local_uri: Location) -> None:
    uri, options = local_uri
    t = lsm3.create_table(uri, SCHEMA, ["id"])
    writers, commits = 3, 4
    plan = make_plan(writers, commits, shared_keys=5, seed=5)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(writers, mp_context=context) as pool:
        args = [(uri, options, w, plan, commits) for w in range(writers)]
        results = list(pool.map(_process_writer, args))
    check_history(t, plan, dict(enumerate(results)))


def _same_keys_race(location: Location, writers: int, commits: int, keys: int) -> None:
    """Every commit rewrites every key: each key must hold the last snapshot's version."""
    uri, options = location
    t = lsm3.create_table(uri, SCHEMA, ["id"], storage_options=options)
    barrier = threading.Barrier(writers)

    def work(w: int) -> None:
        table = lsm3.open_table(uri, storage_options=options)
        barrier.wait()
        for c in range(commits):
            with table.writer(writer_id(w)) as wr:
                # split over two batches and two flushes: the later batch of a commit wins too
                wr.upsert([_row(k, w, -1) for k in range(keys)])
                wr.flush()
                wr.upsert([_row(k, w, c) for k in range(keys)])
                wr.commit(commit_id=commit_id(w, c))

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(work, range(writers)))
    t.refresh()
    snaps = t.snapshots()
    assert len(snaps) == writers * commits
    assert [s.parent_id for s in snaps] == [None, *range(1, len(snaps))]
    for s in snaps:
        w, c = (int(x[1:]) for x in s.commit_id.split("-"))
        got = t.to_arrow(snapshot_id=s.snapshot_id)
        assert got.num_rows == keys
        assert set(
            zip(got.column("writer").to_pylist(), got.column("commit").to_pylist(), strict=True)
        ) == {(w, c)}, f"snapshot {s.snapshot_id} should show only commit {s.commit_id}"
    last = snaps[-1]
    w, c = (int(x[1:]) for x in last.commit_id.split("-"))
    assert t.get_many(list(range(keys))) == [_row(k, w, c) for k in range(keys)]


def test_same_keys_later_snapshot_wins_local(local_uri: Location) -> None:
    _same_keys_race(local_uri, writers=4, commits=5, keys=20)


def test_same_keys_later_snapshot_wins_seaweedfs(seaweed_bucket_uri: Location) -> None:
    _same_keys_race(seaweed_bucket_uri, writers=4, commits=4, keys=20)


def test_sequence_field_beats_commit_order_under_concurrency(local_uri: Location) -> None:
    """With a sequence field, the highest LSN wins whatever order the commits land in."""
    uri, _ = local_uri
    schema = pa.schema([("id", pa.int64()), ("lsn", pa.int64()), ("writer", pa.int32())])
    t = lsm3.create_table(uri, schema, ["id"], options={"sequence_field": "lsn"})
    writers, commits, keys = 4, 4, 10
    barrier = threading.Barrier(writers)

    def lsn(w: int, c: int, k: int) -> int:
        return (c * 7 + w * 13 + k * 5) % 23

    def work(w: int) -> None:
        table = lsm3.open_table(uri)
        barrier.wait()
        for c in range(commits):
            with table.writer(writer_id(w)) as wr:
                wr.upsert([{"id": k, "lsn": lsn(w, c, k), "writer": w} for k in range(keys)])

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(work, range(writers)))
    t.refresh()
    snaps = t.snapshots()
    assert len(snaps) == writers * commits
    # for equal LSNs the later snapshot wins: replay in snapshot order
    order = {s.snapshot_id: s.writer_id for s in snaps}
    commit_of: dict[str, int] = {}
    best: dict[int, tuple[int, int]] = {}
    for sid in sorted(order):
        w = int(order[sid].split("-")[1])
        c = commit_of.get(order[sid], 0)
        commit_of[order[sid]] = c + 1
        for k in range(keys):
            if k not in best or lsn(w, c, k) >= best[k][0]:
                best[k] = (lsn(w, c, k), w)
    got = {x["id"]: (x["lsn"], x["writer"]) for x in t.to_arrow().to_pylist()}
    assert got == best
