"""Compaction on real storage (a local directory and moto's S3 server): it changes no read
result at any snapshot, drops tombstones only when that is safe, writes key-disjoint outputs,
keeps sequence-field semantics, survives concurrent writers, loses cleanly to a concurrent
compaction, fences zombies through the lease and respects its budgets."""

from __future__ import annotations

import importlib
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pytest
from helpers import rows_by_key

import compactor
import compactor.executor
import compactor.lease
import lsm3
from compactor import Fenced, LeaseHeld, PolicyOptions, plan
from compactor.executor import run_task
from compactor.lease import Lease
from compactor.policy import Task, drops_tombstones
from lsm3.errors import CommitConflict, InvalidInput
from lsm3.format.metadata import DataFile

compact_module = importlib.import_module("compactor.compact")

Location = tuple[str, dict | None]
Model = dict[Any, dict[str, Any]]

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string()), ("n", pa.int32())])

#: compaction options that make each policy fire on a handful of small commits
FIRING = {
    "universal": {"num_sorted_run_trigger": 3},
    "leveled": {"l0_file_trigger": 2, "level_base_bytes": 1, "num_levels": 4},
    "full": {},
}


def create(location: Location, schema: pa.Schema = SCHEMA, **kwargs: Any) -> lsm3.Table:
    uri, storage_options = location
    kwargs.setdefault("primary_key", "id")
    return lsm3.create_table(uri, schema, storage_options=storage_options, **kwargs)


def reopen(t: lsm3.Table, location: Location) -> lsm3.Table:
    return lsm3.open_table(location[0], location[1])


def read(t: lsm3.Table, snapshot_id: int | None = None) -> Model:
    return rows_by_key(t.to_arrow(snapshot_id=snapshot_id), t.primary_key)


def row(i: int, v: str, n: int | None = None) -> dict[str, Any]:
    return {"id": i, "v": v, "n": n}


class History:
    """Commits through a writer while keeping a dict model of every snapshot."""

    def __init__(self, t: lsm3.Table) -> None:
        self.t = t
        self.model: Model = {}
        self.at: dict[int, Model] = {0: {}}

    def commit(
        self,
        upserts: Sequence[dict] = (),
        deletes: Sequence[int] = (),
        cdc: Sequence[dict] = (),
        table: lsm3.Table | None = None,
    ) -> int:
        t = table or self.t
        previous = dict(self.model)
        with t.writer() as w:
            if upserts:
                w.upsert(list(upserts))
            if deletes:
                w.delete(list(deletes))
            if cdc:
                w.apply_cdc(list(cdc))
        for r in upserts:
            self.model[r["id"]] = dict(r)
        for k in deletes:
            self.model.pop(k, None)
        for e in cdc:
            e = dict(e)
            op = e.pop("op")
            if op in ("d", "-D"):
                self.model.pop(e["id"], None)
            elif op != "-U":
                self.model[e["id"]] = e
        snap = t.current_snapshot()
        assert snap is not None
        for sid in range(max(self.at) + 1, snap.snapshot_id):  # lease or compaction commits
            self.at[sid] = previous
        self.at[snap.snapshot_id] = dict(self.model)
        return snap.snapshot_id

    def catch_up(self) -> None:
        """Snapshots committed since (compaction, lease) hold the current model."""
        latest = self.t.refresh()
        assert latest is not None
        for sid in range(max(self.at) + 1, latest.snapshot_id + 1):
            self.at[sid] = dict(self.model)

    def check(self, t: lsm3.Table | None = None, *, every: bool = True) -> None:
        t = t or self.t
        t.refresh()
        ids = sorted(self.at) if every else [max(self.at)]
        assert [s.snapshot_id for s in t.snapshots()] == sorted(k for k in self.at if k)
        for sid in ids:
            assert read(t, sid) == self.at[sid], f"snapshot {sid}"
        assert read(t) == self.model
        keys = sorted(set().union(*self.at.values()) | {-1, 10_000})
        assert t.get_many(keys) == [self.model.get(k) for k in keys]
        dataset = t.to_pyarrow_dataset().to_table()
        assert rows_by_key(dataset, ["id"]) == self.model


def workload(h: History, rounds: int = 6, base: int = 0) -> None:
    """Overlapping upserts, deletes and CDC batches: several runs in every bucket."""
    for i in range(rounds):
        lo = base + i * 5
        h.commit(upserts=[row(k, f"r{i}-{k}", i) for k in range(lo, lo + 20)])
        if i % 2 == 1:
            h.commit(
                deletes=[lo + 1, lo + 3, base + 999],
                cdc=[
                    {"op": "u", **row(lo + 2, f"cdc{i}")},
                    {"op": "d", **row(lo + 4, None)},
                    {"op": "-U", **row(lo + 5, "before-image")},
                    {"op": "+I", **row(lo + 40, "inserted", -i)},
                ],
            )


def runs_per_bucket(t: lsm3.Table) -> dict[tuple, int]:
    level0: dict[tuple, int] = {}
    levels: dict[tuple, set[int]] = {}
    for f in t.files():
        key = (f.partition, f.bucket)
        levels.setdefault(key, set())
        if f.level == 0:
            level0[key] = level0.get(key, 0) + 1
        else:
            levels[key].add(f.level)
    return {k: level0.get(k, 0) + len(v) for k, v in levels.items()}


def check_levels_key_disjoint(t: lsm3.Table) -> None:
    groups: dict[tuple, list] = {}
    for f in t.files():
        if f.level >= 1:
            groups.setdefault((f.partition, f.bucket, f.level), []).append(f)
    for key, files in groups.items():
        files.sort(key=lambda f: f.min_key)
        for a, b in itertools.pairwise(files):
            assert a.max_key < b.min_key, f"files of {key} overlap: {a} and {b}"


# --------------------------------------------------------------------------- read results


@pytest.mark.parametrize("policy", ["universal", "leveled", "full"])
def test_compaction_changes_no_read_result_at_any_snapshot(
    table_location: Location, policy: str
) -> None:
    # small manifest threshold: compaction commits also go through manifest merges
    options = {"row_group_rows": 4, "manifest_merge_threshold": 4}
    t = create(table_location, buckets=2, options=options)
    h = History(t)
    workload(h)
    h.check(every=False)
    files_before = len(t.files())

    result = compactor.compact(
        table_location[0], table_location[1], policy=policy, options=FIRING[policy]
    )
    assert result.tasks, f"{policy} did not fire"
    assert result.stopped_by is None and not result.abandoned
    assert result.files_before == files_before
    assert result.files_after == len(reopen(t, table_location).files()) < files_before
    assert result.bytes_read > 0 and result.bytes_written > 0
    h.catch_up()
    h.check(every=False)
    check_levels_key_disjoint(t)
    snaps = t.snapshots()
    compactions = [s for s in snaps if s.kind == "COMPACT" and s.summary["removed_files"]]
    assert [s.snapshot_id for s in compactions] == [tr.snapshot_id for tr in result.tasks]
    # compaction keeps sequence numbers: it never consumes new ones
    assert {s.next_sequence for s in snaps if s.kind == "COMPACT"} == {snaps[-1].next_sequence}

    # newer writes on top of compacted data, then compact again
    workload(h, rounds=4, base=3)
    compactor.compact(t, policy=policy, options=FIRING[policy])
    h.catch_up()
    h.check()  # every snapshot, including time travel to before both compactions
    check_levels_key_disjoint(t)
    if policy == "full":
        assert {f.level for f in t.files()} == {5}
        assert sum(f.deletes for f in t.files()) == 0


def test_compaction_of_partitioned_composite_key_table(table_location: Location) -> None:
    schema = pa.schema([("region", pa.string()), ("id", pa.int64()), ("v", pa.string())])
    t = create(
        table_location,
        schema,
        primary_key=["region", "id"],
        partition_by="region",
        buckets=2,
    )
    model: dict[tuple, dict] = {}
    at: dict[int, dict] = {}
    for i in range(5):
        rows = [{"region": r, "id": k, "v": f"{i}"} for r in ("eu", "us") for k in range(i, i + 6)]
        with t.writer() as w:
            w.upsert(rows)
            w.delete([("eu", i + 1)])
        for r in rows:
            model[(r["region"], r["id"])] = r
        model.pop(("eu", i + 1), None)
        at[t.current_snapshot().snapshot_id] = dict(model)
    result = compactor.compact(t, policy="universal", options={"num_sorted_run_trigger": 2})
    assert result.tasks
    assert {(tr.partition, tr.bucket) for tr in result.tasks} <= {
        (f.partition, f.bucket) for f in t.files()
    }
    assert all(p in (("eu",), ("us",)) for p, _ in runs_per_bucket(t))
    for sid, expected in at.items():
        assert rows_by_key(t.to_arrow(snapshot_id=sid), ["region", "id"]) == expected
    assert rows_by_key(t.to_arrow(), ["region", "id"]) == model


def test_compact_on_empty_and_compacted_tables_commits_nothing(local_uri: Location) -> None:
    t = create(local_uri)
    result = compactor.compact(t, policy="full")
    assert result.tasks == [] and result.stopped_by is None
    assert t.snapshots() == []
    with t.writer() as w:
        w.upsert([row(1, "a")])
    assert compactor.compact(t, policy="full").tasks  # one level-0 run: rewritten to level 5
    n = len(t.snapshots())
    for policy in ("universal", "leveled", "full"):
        assert compactor.compact(t, policy=policy).tasks == []
    assert len(t.snapshots()) == n  # no lease commits when there is nothing to do


def test_compact_rejects_unknown_policy_and_options(local_uri: Location) -> None:
    t = create(local_uri)
    with pytest.raises(InvalidInput, match="policy"):
        compactor.compact(t, policy="tiered")
    with pytest.raises(InvalidInput, match="option"):
        compactor.compact(t, options={"no_such_option": 1})


@pytest.mark.parametrize(
    ("policy", "override"),
    [
        ("full", {"num_levels": 1}),
        ("universal", {"num_sorted_run_trigger": 0}),
        ("universal", {"num_sorted_run_trigger": "2"}),
    ],
    ids=["num_levels=1", "trigger=0", "trigger=str"],
)
def test_compact_validates_option_overrides(
    local_uri: Location, policy: str, override: dict[str, Any]
) -> None:
    t = create(local_uri)
    for i in range(3):
        with t.writer() as w:
            w.upsert([row(i, "a")])
    compactor.compact(t, policy="full")
    files = t.files()
    with pytest.raises(InvalidInput):
        compactor.compact(t, policy=policy, options=override)
    assert t.files() == files


def test_compaction_that_deletes_every_row(table_location: Location) -> None:
    t = create(table_location, buckets=2)
    h = History(t)
    h.commit(upserts=[row(k, "a") for k in range(10)])
    h.commit(deletes=list(range(10)))
    result = compactor.compact(t, policy="full")
    assert len(result.tasks) == 2
    assert all(tr.outputs == 0 and tr.rows_out == 0 for tr in result.tasks)
    assert t.files() == [] and t.count() == 0
    h.catch_up()
    h.check()
    assert compactor.compact(t, policy="full").tasks == []
    h.commit(upserts=[row(3, "back")])
    h.check()


def test_table_option_chooses_the_policy(local_uri: Location) -> None:
    t = create(local_uri, options={"compaction_policy": "full"})
    h = History(t)
    h.commit(upserts=[row(1, "a")])
    h.commit(upserts=[row(2, "b")])
    result = compactor.compact(local_uri[0])
    assert result.policy == "full"
    assert [tr.reason for tr in result.tasks] == ["full"]
    h.catch_up()
    h.check()


# --------------------------------------------------------------------------- tombstones


def test_full_compaction_drops_tombstones(table_location: Location) -> None:
    t = create(table_location, buckets=2)
    h = History(t)
    workload(h)
    assert sum(f.deletes for f in t.files()) > 0
    result = compactor.compact(t, policy="full")
    assert result.tasks and all(tr.dropped_tombstones for tr in result.tasks)
    files = t.files()
    assert sum(f.deletes for f in files) == 0
    assert sum(f.rows for f in files) == len(h.model)
    assert {f.level for f in files} == {5}
    h.catch_up()
    h.check()
    # deleted keys stay hidden in the old snapshots that still hold their tombstones
    for sid, expected in h.at.items():
        assert t.get_many([1 + 5, 999], snapshot_id=sid) == [expected.get(6), None]


@pytest.mark.parametrize("older_overlaps", [True, False])
def test_tombstones_kept_while_older_data_stays_outside_the_task(
    table_location: Location, older_overlaps: bool
) -> None:
    t = create(table_location, options={"row_group_rows": 512})
    h = History(t)
    base = 0 if older_overlaps else 10_000
    h.commit(upserts=[row(base + k, f"old-{k:06d}" * 4, k) for k in range(4000)])
    assert compactor.compact(t, policy="full").tasks  # one big run at the last level
    h.catch_up()
    h.commit(upserts=[row(k, "new") for k in range(0, 5)])
    h.commit(deletes=list(range(10, 15)))
    h.commit(upserts=[row(k, "newer") for k in range(20, 25)])
    options = {"num_sorted_run_trigger": 4, "size_ratio_percent": 100}
    result = compactor.compact(t, policy="universal", options=options)
    (task,) = result.tasks
    assert task.reason == "size-ratio" and task.inputs == 3 and task.output_level == 4
    assert task.dropped_tombstones is (not older_overlaps)
    (l4,) = [f for f in t.files() if f.level == 4]
    assert l4.deletes == (5 if older_overlaps else 0)
    h.catch_up()
    h.check(every=False)
    assert t.get_many(list(range(8, 17))) == [h.model.get(k) for k in range(8, 17)]
    # a full compaction then drops them
    compactor.compact(t, policy="full")
    assert sum(f.deletes for f in t.files()) == 0
    h.catch_up()
    h.check(every=False)


# --------------------------------------------------------------------------- outputs


def test_outputs_are_key_disjoint_and_split_by_target_size(table_location: Location) -> None:
    t = create(table_location, buckets=2, options={"target_file_bytes": 1})
    h = History(t)
    for c in range(4):  # key-disjoint level-0 runs
        h.commit(upserts=[row(k, f"c{c}") for k in range(c * 100, c * 100 + 100)])
    result = compactor.compact(t, policy="full")
    assert sum(tr.outputs for tr in result.tasks) >= 6
    files = t.files()
    assert len(files) == sum(tr.outputs for tr in result.tasks)
    assert all(f.level == 5 for f in files)
    check_levels_key_disjoint(t)
    h.catch_up()
    h.check()


def test_large_merged_output_is_split_into_key_disjoint_files(local_uri: Location) -> None:
    t = create(local_uri, options={"target_file_bytes": 1024})
    for c in range(2):  # overlapping runs, so the inputs are really merged
        with t.writer() as w:
            ids = list(range(c * 1000, c * 1000 + 70_000))
            w.upsert({"id": ids, "v": [f"c{c}"] * len(ids), "n": [c] * len(ids)})
    result = compactor.compact(t, policy="full")
    (task,) = result.tasks
    assert task.outputs >= 2
    assert task.rows_out == 71_000
    check_levels_key_disjoint(t)
    assert t.count() == 71_000
    assert t.get_many([0, 999, 1000, 70_999]) == [
        row(0, "c0", 0),
        row(999, "c0", 0),
        row(1000, "c1", 1),
        row(70_999, "c1", 1),
    ]


def test_target_file_bytes_splits_small_merged_outputs(local_uri: Location) -> None:
    t = create(local_uri, options={"target_file_bytes": 4096, "row_group_rows": 256})
    for c in range(3):
        with t.writer() as w:
            ids = list(range(c * 100, c * 100 + 5000))
            w.upsert({"id": ids, "v": [f"value-{c}-{i}" for i in ids], "n": ids})
    result = compactor.compact(t, policy="full")
    (task,) = result.tasks
    assert task.bytes_written > 4 * 4096
    assert task.outputs > 1, f"one {task.bytes_written}-byte file for a 4096-byte target"


# --------------------------------------------------------------------------- sequence field


@pytest.mark.parametrize("policy", ["universal", "full"])
def test_sequence_field_semantics_survive_compaction(table_location: Location, policy: str) -> None:
    schema = pa.schema([("id", pa.int64()), ("v", pa.string()), ("lsn", pa.int64())])
    t = create(table_location, schema, options={"sequence_field": "lsn"})
    model: dict[int, tuple[int, bool, dict]] = {}  # id -> (lsn, deleted, row)

    def apply(ops: list[tuple[str, int, int, str | None]]) -> None:
        with t.writer() as w:
            for op, k, lsn, v in ops:
                if op == "u":
                    w.upsert([{"id": k, "v": v, "lsn": lsn}])
                else:
                    w.delete([{"id": k, "lsn": lsn}])
        for op, k, lsn, v in ops:
            if k in model and lsn < model[k][0]:
                continue
            model[k] = (lsn, op == "d", {"id": k, "v": v, "lsn": lsn})

    def visible() -> dict[int, dict]:
        return {k: r for k, (_, d, r) in model.items() if not d}

    apply([("u", k, 10, "a") for k in range(10)])
    apply([("u", k, 20, "b") for k in range(5)])
    apply([("d", 5, 30, None), ("d", 6, 30, None)])
    apply([("u", 7, 5, "late")])  # older lsn arriving later: loses
    before = {s.snapshot_id: read(t, s.snapshot_id) for s in t.snapshots()}
    assert read(t) == visible()

    result = compactor.compact(t, policy=policy, options={"num_sorted_run_trigger": 2})
    assert result.tasks
    assert not any(tr.dropped_tombstones for tr in result.tasks)
    assert sum(f.deletes for f in t.files()) == 2  # tombstones are kept
    for sid, expected in before.items():
        assert read(t, sid) == expected
    assert read(t) == visible()

    apply(
        [
            ("u", 0, 15, "late"),  # older than the compacted lsn 20: loses
            ("u", 5, 25, "late"),  # older than the compacted tombstone: stays deleted
            ("u", 6, 31, "revived"),  # newer than the tombstone: wins
            ("u", 1, 20, "tie"),  # equal lsn: the later commit wins
            ("d", 2, 19, None),  # an older delete loses
            ("d", 3, 21, None),  # a newer delete wins
        ]
    )
    assert read(t) == visible()
    assert t.get_many(list(range(11))) == [visible().get(k) for k in range(11)]
    compactor.compact(t, policy="full")
    assert sum(f.deletes for f in t.files()) >= 2
    apply([("u", 3, 20, "late"), ("u", 5, 29, "late")])
    assert read(t) == visible()
    assert t.get_many(list(range(11))) == [visible().get(k) for k in range(11)]


# --------------------------------------------------------------------------- conflicts


def _writer_commit(h: History, location: Location) -> Callable[[], int]:
    """A second process-like writer (own Table object) that updates compacted keys."""

    def commit() -> int:
        other = reopen(h.t, location)
        return h.commit(
            upserts=[row(k, "writer-wins", 7) for k in (0, 2, 4, 6, 500)],
            deletes=[8, 10],
            table=other,
        )

    return commit


def test_writer_commit_during_compaction_wins(
    table_location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(a) A writer commits after the compactor planned and wrote its outputs: the
    compaction still commits (rebased) and the writer's newer data wins."""
    t = create(table_location)
    h = History(t)
    workload(h, rounds=4)
    commit_writer = _writer_commit(h, table_location)
    original = compactor.executor.write_outputs
    writer_snapshots: list[int] = []

    def write_then_let_a_writer_commit(*args: Any, **kwargs: Any) -> list[DataFile]:
        outputs = original(*args, **kwargs)
        writer_snapshots.append(commit_writer())
        return outputs

    monkeypatch.setattr(compactor.executor, "write_outputs", write_then_let_a_writer_commit)
    result = compactor.compact(t, policy="full", max_rounds=1)
    (task,) = result.tasks
    assert not result.abandoned
    assert task.snapshot_id == writer_snapshots[0] + 1
    # the compaction removed only its inputs: the writer's run is still live, newest
    files = t.files()
    assert {f.level for f in files} == {0, 5}
    h.catch_up()
    h.check()
    assert h.model[0]["v"] == "writer-wins" and 8 not in h.model


def test_writer_wins_the_snapshot_race_against_the_compaction_commit(
    table_location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(a) The writer takes the very snapshot id the compaction tries to put (412): the
    compaction rebases onto it and commits next."""
    t = create(table_location)
    h = History(t)
    workload(h, rounds=4)
    commit_writer = _writer_commit(h, table_location)
    original_outputs = compactor.executor.write_outputs
    armed: list[bool] = []
    raced: list[int] = []
    original_put = t.store.put_if_absent

    def write_outputs(*args: Any, **kwargs: Any) -> list[DataFile]:
        outputs = original_outputs(*args, **kwargs)
        armed.append(True)
        return outputs

    def put_if_absent(key: str, data: bytes) -> None:
        if armed and key.startswith("snapshot/snapshot-") and not raced:
            raced.append(commit_writer())
            assert key.endswith(f"{raced[0]:020d}.json")  # the id the writer just took
        original_put(key, data)

    monkeypatch.setattr(compactor.executor, "write_outputs", write_outputs)
    monkeypatch.setattr(t.store, "put_if_absent", put_if_absent)
    result = compactor.compact(t, policy="full", max_rounds=1)
    (task,) = result.tasks
    assert raced and task.snapshot_id == raced[0] + 1
    h.catch_up()
    h.check()


def test_writer_commits_between_tasks(table_location: Location) -> None:
    """(a) With several buckets, a writer commit lands after the plan, between two tasks."""
    t = create(table_location, buckets=3)
    h = History(t)
    workload(h, rounds=4)
    commit_writer = _writer_commit(h, table_location)
    seen: list[int] = []

    def on_task(task_result: compactor.TaskResult) -> None:
        if not seen:
            seen.append(commit_writer())

    result = compactor.compact(t, policy="full", on_task=on_task, max_rounds=1)
    assert len(result.tasks) == 3 and not result.abandoned
    assert result.tasks[1].snapshot_id > seen[0]
    h.catch_up()
    h.check()


def test_stale_task_loses_cleanly_to_an_earlier_compaction(table_location: Location) -> None:
    """(b) A task whose inputs another compaction already removed is abandoned with
    CommitConflict and changes nothing."""
    t = create(table_location)
    h = History(t)
    workload(h, rounds=3)
    files = t.files_of(t.refresh())
    (stale,) = plan(files, "full", PolicyOptions())
    assert compactor.compact(reopen(t, table_location), policy="full").tasks
    lease = Lease(t, "late-compactor", 600)
    lease.acquire()
    h.catch_up()
    state = (t.files(), t.current_snapshot().snapshot_id)
    with pytest.raises(CommitConflict, match="removed"):
        run_task(t, stale, lease, drops_tombstones(stale, files, False))
    t.refresh()
    assert (t.files(), t.current_snapshot().snapshot_id) == state
    lease.release()
    h.catch_up()
    h.check()


def test_task_loses_when_one_input_was_compacted_by_another_task(local_uri: Location) -> None:
    """(b) Two overlapping tasks: the second commit finds one of its inputs gone."""
    t = create(local_uri)
    h = History(t)
    for i in range(3):
        h.commit(upserts=[row(k, f"{i}") for k in range(i, i + 5)])
    f1, f2, f3 = sorted(t.files_of(t.refresh()), key=lambda f: f.effective_max_seq)
    lease = Lease(t, "me", 600)
    lease.acquire()
    run_task(t, Task((), 0, (f2, f3), 1, "test"), lease, False)
    state = t.files()
    with pytest.raises(CommitConflict):
        run_task(t, Task((), 0, (f1, f2), 2, "test"), lease, False)
    assert t.files() == state
    lease.release()
    h.catch_up()
    h.check()


def test_compact_abandons_a_task_whose_inputs_vanished(
    table_location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(b) Inside compact(): the abandoned task is reported, the table stays as it was."""
    t = create(table_location, buckets=2)
    h = History(t)
    workload(h, rounds=3)
    stale = plan(t.files_of(t.refresh()), "full", PolicyOptions())
    assert compactor.compact(reopen(t, table_location), policy="full").tasks
    h.catch_up()
    files = t.files()
    calls: list[int] = []
    real_plan = compact_module.plan

    def stale_plan(*args: Any, **kwargs: Any) -> list[Task]:
        calls.append(1)
        return stale if len(calls) == 1 else real_plan(*args, **kwargs)

    monkeypatch.setattr(compact_module, "plan", stale_plan)
    result = compactor.compact(reopen(t, table_location), policy="full")
    assert result.tasks == [] and len(result.abandoned) == len(stale) == 2
    assert reopen(t, table_location).files() == files
    h.catch_up()
    h.check()


def test_second_compactor_gets_lease_held(table_location: Location) -> None:
    """(c) One compactor per table: while a lease is held, another compactor stops."""
    t = create(table_location)
    h = History(t)
    workload(h, rounds=3)
    holder = Lease(reopen(t, table_location), "first", 600)
    holder.acquire()
    h.catch_up()
    files = t.files()
    with pytest.raises(LeaseHeld, match="first"):
        compactor.compact(reopen(t, table_location), policy="full", owner="second")
    assert t.files() == files
    h.catch_up()
    # after the holder releases the lease, the other compactor may run
    holder.release()
    result = compactor.compact(reopen(t, table_location), policy="full", owner="second")
    assert result.tasks
    h.catch_up()
    h.check()


def _take_over_after_expiry(
    location: Location, owner: str, monkeypatch: pytest.MonkeyPatch
) -> Lease:
    """Another compactor acquires the lease once the current one has expired: time is
    moved past the expiry for the acquire, not slept through."""
    real_now = compactor.lease.now_ms
    monkeypatch.setattr(compactor.lease, "now_ms", lambda: real_now() + 3_600_000)
    try:
        lease = Lease(lsm3.open_table(location[0], location[1]), owner, 600)
        lease.acquire()
    finally:
        monkeypatch.setattr(compactor.lease, "now_ms", real_now)
    return lease


def test_zombie_compactor_is_fenced_and_changes_nothing(
    table_location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(c) A compactor whose lease expired and was taken over fails its commit with Fenced."""
    t = create(table_location)
    h = History(t)
    workload(h, rounds=3)
    zombie = Lease(t, "zombie", 600)
    zombie.acquire()
    files = t.files_of(t.refresh())
    (task,) = plan(files, "full", PolicyOptions())
    with pytest.raises(LeaseHeld):  # not expired yet: nobody can take it
        Lease(reopen(t, table_location), "successor", 600).acquire()
    successor = _take_over_after_expiry(table_location, "successor", monkeypatch)
    h.commit(upserts=[row(1, "after-takeover")])  # writers are not fenced by a takeover
    t.refresh()
    state = (t.files(), t.current_snapshot())
    assert state[1].compactor.owner == "successor"
    assert state[1].compactor.epoch == zombie.epoch + 1
    with pytest.raises(Fenced):
        run_task(t, task, zombie, drops_tombstones(task, files, False))
    with pytest.raises(Fenced):
        zombie.release()
    t.refresh()
    assert (t.files(), t.current_snapshot()) == state
    # the successor still works
    run_task(t, task, successor, drops_tombstones(task, files, False))
    successor.release()
    h.catch_up()
    h.check()


def test_zombie_inside_compact_is_fenced(
    table_location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(c) compact() raises Fenced when its lease is taken over mid-task; its outputs never
    become live and it does not release the successor's lease."""
    t = create(table_location, buckets=2)
    h = History(t)
    workload(h, rounds=3)
    original = compactor.executor.write_outputs
    successors: list[Lease] = []

    def paused(*args: Any, **kwargs: Any) -> list[DataFile]:
        outputs = original(*args, **kwargs)
        if not successors:  # the zombie "pauses" past its lease here
            successors.append(_take_over_after_expiry(table_location, "successor", monkeypatch))
        return outputs

    monkeypatch.setattr(compactor.executor, "write_outputs", paused)
    before = reopen(t, table_location)
    with pytest.raises(Fenced):
        compactor.compact(t, policy="full", owner="zombie")
    after = reopen(t, table_location)
    assert after.files() == before.files()
    latest = after.current_snapshot()
    assert latest.compactor.owner == "successor" and latest.compactor.lease_until_ms > 0
    assert latest.metadata == {"compactor": "acquire"}
    monkeypatch.setattr(compactor.executor, "write_outputs", original)
    with pytest.raises(LeaseHeld):
        compactor.compact(after, policy="full", owner="third")
    result = compactor.compact(after, policy="full", owner="successor")
    assert len(result.tasks) == 2
    h.catch_up()
    h.check()


def test_writers_are_never_fenced(table_location: Location) -> None:
    """(c) Writers commit while a compactor holds the lease, between its plan and its
    commit, and after its release; they carry the lease over unchanged."""
    t = create(table_location)
    h = History(t)
    workload(h, rounds=3)
    lease = Lease(reopen(t, table_location), "holder", 600)
    lease.acquire()
    held = lease.table.current_snapshot().compactor
    h.commit(upserts=[row(1, "during-lease")], deletes=[2])
    snap = t.current_snapshot()
    assert snap.kind == "APPEND" and snap.compactor == held
    files = lease.table.files_of(lease.table.refresh())
    (task,) = plan(files, "full", PolicyOptions())
    h.commit(upserts=[row(3, "between-plan-and-commit")])
    result = run_task(lease.table, task, lease, drops_tombstones(task, files, False))
    assert result.snapshot_id == t.refresh().snapshot_id
    h.commit(upserts=[row(4, "after-compaction")])
    assert t.current_snapshot().compactor.epoch == held.epoch
    lease.release()
    h.commit(upserts=[row(5, "after-release")])
    h.catch_up()
    h.check()


# --------------------------------------------------------------------------- budgets


def test_max_bytes_stops_early_and_a_later_run_finishes(table_location: Location) -> None:
    t = create(table_location, buckets=4)
    h = History(t)
    workload(h, rounds=3)
    first = compactor.compact(reopen(t, table_location), policy="full", max_bytes=1)
    assert first.stopped_by == "max_bytes"
    assert len(first.tasks) == 1  # the first task always runs: progress is guaranteed
    h.catch_up()
    h.check(every=False)
    assert len(runs_per_bucket(t)) == 4
    assert sorted(runs_per_bucket(t).values()) == [1, 4, 4, 4]
    rest = compactor.compact(reopen(t, table_location), policy="full")
    assert rest.stopped_by is None and len(rest.tasks) == 3
    assert sorted(runs_per_bucket(reopen(t, table_location)).values()) == [1, 1, 1, 1]
    h.catch_up()
    h.check(every=False)
    # a budget between one and all tasks: every task after the first fits in it
    workload(h, rounds=3, base=50)
    planned = plan(t.files_of(t.refresh()), "full", PolicyOptions())
    sizes = [task.input_bytes for task in planned]
    limit = sizes[0] + sizes[1]
    some = compactor.compact(reopen(t, table_location), policy="full", max_bytes=limit)
    assert [tr.bytes_read for tr in some.tasks] == sizes[:2]
    assert some.stopped_by == "max_bytes"
    h.catch_up()
    h.check(every=False)


def test_max_requests_stops_early_and_later_runs_finish(table_location: Location) -> None:
    t = create(table_location, buckets=4)
    h = History(t)
    workload(h, rounds=3)
    measured = compactor.compact(
        reopen(t, table_location), policy="universal", options={"num_sorted_run_trigger": 99}
    )
    assert measured.tasks == []
    planning = measured.requests  # what refresh + plan cost a fresh table object
    results = []
    for _ in range(12):
        r = compactor.compact(reopen(t, table_location), policy="full", max_requests=planning + 8)
        results.append(r)
        if r.stopped_by is None:
            break
    assert results[0].stopped_by == "max_requests"
    assert 1 <= len(results[0].tasks) < 4
    assert results[-1].stopped_by is None
    assert sum(len(r.tasks) for r in results) == 4
    assert all(r.tasks for r in results[:-1])
    assert sorted(runs_per_bucket(reopen(t, table_location)).values()) == [1, 1, 1, 1]
    h.catch_up()
    h.check()


def test_a_tight_request_budget_makes_progress_or_commits_nothing(local_uri: Location) -> None:
    t = create(local_uri)
    h = History(t)
    workload(h, rounds=3)
    files = len(t.files())
    snapshots = len(t.snapshots())
    for _ in range(3):
        compactor.compact(reopen(t, local_uri), policy="full", max_requests=1)
    t.refresh()
    assert len(t.files()) < files or len(t.snapshots()) == snapshots


def test_stop_event_stops_before_the_next_task(local_uri: Location) -> None:
    t = create(local_uri, buckets=3)
    h = History(t)
    workload(h, rounds=3)
    stop = threading.Event()
    result = compactor.compact(t, policy="full", stop=stop, on_task=lambda _: stop.set())
    assert result.stopped_by == "stop" and len(result.tasks) == 1
    assert t.refresh().compactor.lease_until_ms == 0  # released on the way out
    h.catch_up()
    h.check()
