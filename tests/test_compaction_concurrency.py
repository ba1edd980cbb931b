"""Writers and a compactor in parallel threads, each with its own Table object, on SeaweedFS
(atomic conditional puts over real HTTP) and on a local directory.

Afterwards the snapshot log is replayed: every writer commit appears exactly once and in the
writer's order (nothing lost, nothing duplicated), every snapshot reads exactly as the replay
up to it says (including what a concurrent reader saw while compaction ran), and a final
compaction leaves a bounded number of sorted runs per bucket.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pyarrow as pa
import pytest
from helpers import rows_by_key

import compactor
import lsm3

Location = tuple[str, dict | None]
SCHEMA = pa.schema(
    [("id", pa.int64()), ("writer", pa.string()), ("commit", pa.int32()), ("v", pa.string())]
)
KEYS = list(range(40))
TRIGGER = 3
OPTIONS = {"num_sorted_run_trigger": TRIGGER}


def writer_loop(
    location: Location,
    name: str,
    commits: int,
    ops: dict[tuple[str, int], tuple[list[int], list[int]]],
    errors: list[BaseException],
) -> None:
    try:
        t = lsm3.open_table(*location)
        w = t.writer(writer_id=name)
        rng = random.Random(name)
        for c in range(commits):
            chosen = rng.sample(KEYS, 8)
            upserts, deletes = chosen[:6], chosen[6:]
            w.upsert([{"id": k, "writer": name, "commit": c, "v": f"{name}/{c}"} for k in upserts])
            w.delete(deletes)
            ops[(name, c)] = (upserts, deletes)
            snap = w.commit(metadata={"writer": name, "commit": c})
            assert snap is not None and snap.metadata == {"writer": name, "commit": c}
            time.sleep(rng.uniform(0, 0.02))
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def compactor_loop(
    location: Location,
    done: threading.Event,
    results: list[compactor.CompactionResult],
    errors: list[BaseException],
) -> None:
    try:
        t = lsm3.open_table(*location)
        while True:
            finished = done.is_set()
            results.append(compactor.compact(t, policy="universal", owner="loop", options=OPTIONS))
            if finished:
                return
            time.sleep(0.02)
    except BaseException as exc:
        errors.append(exc)


def reader_loop(
    location: Location,
    done: threading.Event,
    seen: list[tuple[int, dict]],
    errors: list[BaseException],
) -> None:
    try:
        t = lsm3.open_table(*location)
        while not done.is_set():
            snap = t.refresh()
            if snap is not None:
                rows = rows_by_key(t.to_arrow(snapshot_id=snap.snapshot_id), ["id"])
                seen.append((snap.snapshot_id, rows))
            time.sleep(0.01)
    except BaseException as exc:
        errors.append(exc)


def run_concurrently(location: Location, writers: int, commits: int, buckets: int) -> None:
    t = lsm3.create_table(location[0], SCHEMA, "id", buckets=buckets, storage_options=location[1])
    ops: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
    errors: list[BaseException] = []
    results: list[compactor.CompactionResult] = []
    seen: list[tuple[int, dict]] = []
    writers_done = threading.Event()
    readers_done = threading.Event()
    names = [f"w{i}" for i in range(writers)]
    writer_threads = [
        threading.Thread(target=writer_loop, args=(location, n, commits, ops, errors))
        for n in names
    ]
    others = [
        threading.Thread(target=compactor_loop, args=(location, writers_done, results, errors)),
        threading.Thread(target=reader_loop, args=(location, readers_done, seen, errors)),
    ]
    for th in writer_threads + others:
        th.start()
    for th in writer_threads:
        th.join(timeout=240)
    writers_done.set()
    others[0].join(timeout=120)
    readers_done.set()
    others[1].join(timeout=60)
    assert not any(th.is_alive() for th in writer_threads + others), "a thread hung"
    if errors:
        raise errors[0]
    assert len(ops) == writers * commits
    assert sum(len(r.tasks) for r in results) > 0, "the compactor never compacted"
    assert not any(r.stopped_by for r in results)

    # a final compaction bounds the sorted runs of every bucket
    final = compactor.compact(t, policy="universal", owner="final", options=OPTIONS)
    assert final.stopped_by is None
    runs: dict[tuple, set] = {}
    level0: dict[tuple, int] = {}
    for f in t.files():
        key = (f.partition, f.bucket)
        runs.setdefault(key, set())
        if f.level == 0:
            level0[key] = level0.get(key, 0) + 1
        else:
            runs[key].add(f.level)
    assert runs, "no live files"
    for key, levels in runs.items():
        assert len(levels) + level0.get(key, 0) <= TRIGGER, f"bucket {key}: too many runs"

    # replay the log: each commit once, in its writer's order
    snaps = t.snapshots()
    assert [s.snapshot_id for s in snaps] == list(range(1, len(snaps) + 1))
    model: dict[int, dict[str, Any]] = {}
    state_at: dict[int, dict[int, dict[str, Any]]] = {}
    order: dict[str, list[int]] = {n: [] for n in names}
    for s in snaps:
        if s.kind == "APPEND":
            name, c = s.metadata["writer"], s.metadata["commit"]
            order[name].append(c)
            upserts, deletes = ops[(name, c)]
            for k in upserts:
                model[k] = {"id": k, "writer": name, "commit": c, "v": f"{name}/{c}"}
            for k in deletes:
                model.pop(k, None)
        else:
            assert s.kind == "COMPACT"
        state_at[s.snapshot_id] = dict(model)
    assert order == {n: list(range(commits)) for n in names}, "a commit lost or duplicated"
    compactions = [s for s in snaps if s.kind == "COMPACT" and s.summary["removed_files"]]
    assert len(compactions) == sum(len(r.tasks) for r in results) + len(final.tasks)

    fresh = lsm3.open_table(*location)
    for sid, expected in state_at.items():
        assert rows_by_key(fresh.to_arrow(snapshot_id=sid), ["id"]) == expected, f"snap {sid}"
    for sid, rows in seen:
        assert rows == state_at[sid], f"a concurrent read of snapshot {sid}"
    assert fresh.get_many(KEYS) == [model.get(k) for k in KEYS]
    for n in names:
        assert fresh.last_commit(n).metadata == {"writer": n, "commit": commits - 1}


def test_writers_and_compactor_in_parallel_local(local_uri: Location) -> None:
    run_concurrently(local_uri, writers=3, commits=10, buckets=2)


def test_writers_and_compactor_in_parallel_seaweedfs(seaweed_bucket_uri: Location) -> None:
    # losing conditional puts wait 1-3 s on SeaweedFS: few writers, few commits
    run_concurrently(seaweed_bucket_uri, writers=2, commits=5, buckets=1)


def test_writers_and_compactor_in_parallel_azurite(az_container_uri: Location) -> None:
    run_concurrently(az_container_uri, writers=2, commits=5, buckets=2)


@pytest.mark.parametrize("compactors", [2])
def test_competing_compactors_fence_each_other_not_the_writers(
    local_uri: Location, compactors: int
) -> None:
    """Several compactors in a loop with distinct owners: each either works, or stops with
    LeaseHeld; writers never fail, and the table still replays exactly."""
    t = lsm3.create_table(local_uri[0], SCHEMA, "id")
    ops: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
    errors: list[BaseException] = []
    done = threading.Event()
    outcomes: list[str] = []

    def compact_loop(owner: str) -> None:
        table = lsm3.open_table(*local_uri)
        while True:
            finished = done.is_set()
            try:
                r = compactor.compact(table, policy="universal", owner=owner, options=OPTIONS)
                outcomes.append("tasks" if r.tasks else "idle")
            except compactor.LeaseHeld:
                outcomes.append("lease-held")
            except compactor.Fenced:  # possible only after an expiry: never here
                outcomes.append("fenced")
            except BaseException as exc:
                errors.append(exc)
                return
            if finished:
                return
            time.sleep(0.005)

    writers = [
        threading.Thread(target=writer_loop, args=(local_uri, f"w{i}", 12, ops, errors))
        for i in range(2)
    ]
    loops = [threading.Thread(target=compact_loop, args=(f"c{i}",)) for i in range(compactors)]
    for th in writers + loops:
        th.start()
    for th in writers:
        th.join(timeout=240)
    done.set()
    for th in loops:
        th.join(timeout=120)
    if errors:
        raise errors[0]
    assert "fenced" not in outcomes  # leases last 600 s: nobody may take one over
    assert "tasks" in outcomes
    snaps = t.snapshots()
    model: dict[int, dict] = {}
    seen: set[tuple[str, int]] = set()
    for s in snaps:
        if s.kind == "APPEND":
            key = (s.metadata["writer"], s.metadata["commit"])
            assert key not in seen
            seen.add(key)
            upserts, deletes = ops[key]
            for k in upserts:
                model[k] = {"id": k, "writer": key[0], "commit": key[1], "v": f"{key[0]}/{key[1]}"}
            for k in deletes:
                model.pop(k, None)
        assert rows_by_key(t.to_arrow(snapshot_id=s.snapshot_id), ["id"]) == model
    assert seen == set(ops)
    # leases only ever moved forward, one holder at a time
    epochs = [s.compactor.epoch for s in snaps if s.compactor is not None]
    assert epochs == sorted(epochs)
