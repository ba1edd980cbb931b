"""Changelog producers (docs/FORMAT.md, section 16): what ``input``, ``lookup`` and
``full_compaction`` store, checked against a plain-Python model of the table.

* ``input``: each APPEND commit's changelog is exactly the records its writer received, in
  write order, every row kind.
* ``lookup``: each commit's changes, applied to the table as read before it, give the table
  as read after it; ``-U``/``-D`` carry the exact previous values; one net change per key.
* ``full_compaction``: only full compactions report changes, and applying them to what the
  previous ones built gives the table as read after the compaction.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import clear_read_caches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_changelog import ENGINES, SCHEMA

import lsm3
from compactor import compact
from compactor.maintenance import expire_snapshots, remove_orphan_files
from lsm3.errors import InvalidInput, TableNotFound
from lsm3.write import changelog as changelog_module
from lsm3.write import flush as flush_module
from lsm3.write.changelog import CommitChangelog

Row = dict[str, Any]

upsert = st.tuples(
    st.just("up"),
    st.integers(0, 7),
    st.sampled_from([None, 1, 2, 5]),
    st.sampled_from([None, "x", "y"]),
)
delete = st.tuples(st.just("del"), st.integers(0, 9))
cdc = st.tuples(
    st.just("cdc"),
    st.integers(0, 7),
    st.sampled_from(["c", "u", "+U", "-U", "d"]),
    st.sampled_from([None, 1, 2]),
)
batch = st.lists(st.one_of(upsert, upsert, delete, cdc), min_size=1, max_size=6)
step = st.one_of(
    st.tuples(st.just("write"), st.lists(batch, min_size=1, max_size=3)),
    st.tuples(st.just("compact"), st.sampled_from(["universal", "full"])),
    st.tuples(st.just("reopen")),
)
steps = st.lists(step, min_size=1, max_size=9)
SETTINGS = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def state(t: lsm3.Table, snapshot_id: int) -> dict[int, Row]:
    return {r["id"]: r for r in t.to_arrow(snapshot_id=snapshot_id).to_pylist()}


def apply(before: dict[int, Row], changes: pa.Table) -> dict[int, Row]:
    """Apply complete changes as upserts and deletes, checking every before-image and that a
    key changes at most once (one net change per commit)."""
    out = dict(before)
    kinds: dict[int, list[str]] = {}
    rows = changes.to_pylist()
    for row in rows:
        kind = row.pop("_row_kind")
        row.pop("_snapshot_id", None)
        kinds.setdefault(row["id"], []).append(kind)
        if kind in ("-U", "-D"):
            assert out.get(row["id"]) == row, f"{kind} must carry the exact old values"
            if kind == "-D":
                del out[row["id"]]
        else:
            assert (kind == "+I") == (row["id"] not in out), f"{kind} for {row}"
            out[row["id"]] = row
    for key, seen in kinds.items():
        assert seen in (["+I"], ["-U", "+U"], ["-D"]), f"key {key}: {seen}"
    for old, new in itertools.pairwise(rows):
        if old["id"] == new["id"]:
            assert old != new, f"an update that changes nothing: {old}"
    return out


def write(t: lsm3.Table, batches: list[list[tuple[Any, ...]]]) -> list[Row]:
    """Write the batches in one commit (a flush after each when the memtable is tiny);
    return the records as the ``input`` producer must store them."""
    received: list[Row] = []
    with t.writer() as w:
        for ops in batches:
            for op in ops:
                if op[0] == "up":
                    row = {"id": op[1], "a": op[2], "b": op[3]}
                    w.upsert([row])
                    received.append({**row, "_row_kind": "+I"})
                elif op[0] == "del":
                    w.delete([op[1]])
                    received.append({"id": op[1], "a": None, "b": None, "_row_kind": "-D"})
                else:
                    row = {"id": op[1], "a": op[3], "b": "c"}
                    w.apply_cdc([{**row, "op": op[2]}])
                    kind = {"c": "+I", "u": "+U", "+U": "+U", "-U": "-U", "d": "-D"}[op[2]]
                    received.append({**row, "_row_kind": kind})
    return received


def new_table(tmp_path: Path, producer: str, engine: str, tiny_memtable: bool) -> lsm3.Table:
    options = {
        **ENGINES[engine],
        "changelog_producer": producer,
        "num_sorted_run_trigger": 2,
        "row_group_rows": 2,
    }
    if tiny_memtable:  # every write flushes: commits of many runs, lookup reads them back
        options["memtable_bytes"] = 1
    uri = str(tmp_path / uuid.uuid4().hex)
    return lsm3.create_table(uri, SCHEMA, "id", buckets=2, options=options)


def run(t: lsm3.Table, plan: list[tuple[Any, ...]]) -> dict[int, list[Row]]:
    """Run the steps; return what each APPEND snapshot's writer received."""
    received: dict[int, list[Row]] = {}
    for s in plan:
        if s[0] == "write":
            before = t.refresh()
            rows = write(t, s[1])
            newest = t.refresh()  # no commit if only before-images (-U) came, not logged
            if newest is not None and newest != before:
                received[newest.snapshot_id] = rows
        elif s[0] == "compact":
            compact(t, policy=s[1], owner="test")
        else:
            t = lsm3.open_table(t.uri)
    return received


@pytest.mark.parametrize("tiny_memtable", [False, True])
@given(plan=steps)
@SETTINGS
def test_input_stores_the_records_each_commit_received(
    tmp_path: Path, tiny_memtable: bool, plan: list[tuple[Any, ...]]
) -> None:
    t = new_table(tmp_path, "input", "deduplicate", tiny_memtable)
    received = run(t, plan)
    for sid in t.snapshot_ids():
        got = t.changelog(sid - 1, sid).drop_columns(["_snapshot_id"]).to_pylist()
        # Files are per bucket: each key's records are in write order (the model's).
        expected = received.get(sid, [])
        assert sorted(got, key=by_key) == sorted(expected, key=by_key), f"snapshot {sid}"


def by_key(row: Row) -> int:
    return int(row["id"])


@pytest.mark.parametrize(
    ("engine", "tiny_memtable"),
    [
        ("deduplicate", False),
        ("deduplicate", True),
        ("first_row", False),
        ("partial_update", True),
        ("aggregation", False),
        ("aggregation", True),
    ],
)
@given(plan=steps)
@SETTINGS
def test_lookup_changes_turn_each_state_into_the_next(
    tmp_path: Path, engine: str, tiny_memtable: bool, plan: list[tuple[Any, ...]]
) -> None:
    t = new_table(tmp_path, "lookup", engine, tiny_memtable)
    run(t, plan)
    t = lsm3.open_table(t.uri)
    model: dict[int, Row] = {}
    for sid in t.snapshot_ids():
        changes = t.changelog(sid - 1, sid)
        model = apply(model, changes)
        assert model == state(t, sid), f"snapshot {sid}"
        if t.snapshot(sid).kind != "APPEND":
            assert changes.num_rows == 0, "compaction changes no value"
    whole = t.changelog(0)
    assert pa.Table.from_batches(list(t.changelog_batches(0)), schema=whole.schema) == whole


@pytest.mark.parametrize("engine", ["deduplicate", "aggregation", "partial_update"])
@given(plan=steps)
@SETTINGS
def test_full_compaction_changes_turn_each_full_result_into_the_next(
    tmp_path: Path, engine: str, plan: list[tuple[Any, ...]]
) -> None:
    t = new_table(tmp_path, "full_compaction", engine, tiny_memtable=False)
    model: dict[int, Row] = {}
    seen = 0
    for s in [*plan, ("compact", "full")]:
        run(t, [s])
        newest = t.refresh()
        if s[0] != "compact" or s[1] != "full" or newest is None:
            continue
        changes = t.changelog(seen, newest.snapshot_id)
        for sid in set(changes.column("_snapshot_id").to_pylist()):
            assert t.snapshot(sid).kind == "COMPACT", "writer commits report nothing"
        model = apply(model, changes)
        assert model == state(t, newest.snapshot_id)
        seen = newest.snapshot_id


def test_lookup_recomputes_its_changes_when_another_writer_committed_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = new_table(tmp_path, "lookup", "deduplicate", tiny_memtable=False)
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 1, "b": "x"}])
    other = lsm3.open_table(t.uri)
    # between the changes' computation and the snapshot put
    then_another = _then_another_writer_commits(CommitChangelog.for_parent, other, 2)
    monkeypatch.setattr(CommitChangelog, "for_parent", then_another)
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 3, "b": "z"}])
    assert t.refresh().snapshot_id == 3  # type: ignore[union-attr]
    model: dict[int, Row] = {}
    for sid in t.snapshot_ids():
        model = apply(model, t.changelog(sid - 1, sid))
        assert model == state(t, sid)
    last = t.changelog(2, 3).to_pylist()
    assert [r["a"] for r in last] == [2, 3], "the before-image is the other writer's value"


def _then_another_writer_commits(
    step: Callable[..., Any], other: lsm3.Table, a: int
) -> Callable[..., Any]:
    """``step``, after whose first call (only: the other writer's commit takes it too) the
    writer of ``other`` commits ``{"id": 1, "a": a}``."""
    raced: list[bool] = []

    def then_another_writer_commits(*args: Any) -> Any:
        done = step(*args)
        if not raced:
            raced.append(True)
            with other.writer() as w:
                w.upsert([{"id": 1, "a": a, "b": "y"}])
        return done

    return then_another_writer_commits


def test_changelog_files_are_not_data_and_expire_with_their_snapshot(tmp_path: Path) -> None:
    t = new_table(tmp_path, "lookup", "deduplicate", tiny_memtable=False)
    for i in range(4):
        with t.writer() as w:
            w.upsert([{"id": k, "a": i, "b": None} for k in range(6)])
    first_runs = {f.path for f in t.files_of(t.snapshot(1))}
    compact(t, policy="full", owner="test")
    assert not [f for f in t.files() if "changelog-" in f.path], "compaction carries none"
    assert _changelog_paths(t, 1) == first_runs, "the first commit's changes are its runs"
    logged = _changelog_paths(t) - first_runs
    assert len(logged) == 6  # three more commits, two buckets
    assert remove_orphan_files(t, older_than=0).removed == []
    assert _existing(t, logged | first_runs) == logged | first_runs
    expire_snapshots(t, retain_last=2, older_than=0)
    kept = {f for sid in t.snapshot_ids() for f in _changelog_paths(t, sid)}
    assert _existing(t, logged) == kept, "expired snapshots' changelog files are deleted"
    # the runs are data: deleted when their remover's snapshot expires or becomes the oldest
    # kept (section 12), never as an expired snapshot's changelog files
    for sid in t.snapshot_ids():
        live = {f.path for f in t.files_of(t.snapshot(sid))}
        assert _existing(t, live) == live
    assert t.changelog(t.snapshot_ids()[0]).num_rows == 0  # the kept window: one compaction
    expire_snapshots(t, retain_last=1, older_than=0)  # the compaction is the oldest kept
    assert _existing(t, first_runs) == set()
    assert remove_orphan_files(t, older_than=0).removed == []


def _changelog_paths(t: lsm3.Table, only: int | None = None) -> set[str]:
    out = set()
    for snap in t.snapshots():
        if snap.changelog_manifest and only in (None, snap.snapshot_id):
            schema = t.schema_at(snap.schema_id)
            out |= {e.file.path for e in t.manifests.entries(snap.changelog_manifest, schema)}
    return out


def _existing(t: lsm3.Table, paths: set[str]) -> set[str]:
    return {p for p in paths if t.store.head(p) is not None}


def test_an_unknown_producer_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    with pytest.raises(InvalidInput, match="changelog_producer must be one of"):
        lsm3.create_table(uri, SCHEMA, "id", options={"changelog_producer": "lookups"})
    with pytest.raises(TableNotFound):
        lsm3.open_table(uri)


def test_the_producer_cannot_change_after_create(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 1, "b": "x"}])
    with pytest.raises(InvalidInput, match="changelog_producer cannot change"):
        t.set_options({"changelog_producer": "lookup"})
    assert lsm3.open_table(t.uri).table_schema.option("changelog_producer") == "none"
    assert len(t.schemas()) == 1


def test_full_compaction_needs_a_level_of_its_own(tmp_path: Path) -> None:
    options = {"changelog_producer": "full_compaction", "num_levels": 2}
    with pytest.raises(InvalidInput, match="num_levels >= 3"):
        lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=options)


@pytest.mark.parametrize("producer", ["input", "lookup", "full_compaction"])
def test_partitioned_composite_keys_and_an_added_column(tmp_path: Path, producer: str) -> None:
    schema = pa.schema([("region", pa.string()), ("id", pa.int32()), ("a", pa.int64())])
    t = lsm3.create_table(
        str(tmp_path / "t"),
        schema,
        ["region", "id"],
        partition_by="region",
        buckets=2,
        options={"changelog_producer": producer},
    )
    with t.writer() as w:
        w.upsert([{"region": r, "id": i, "a": i} for r in ("eu", "us") for i in range(4)])
    t.add_column("b", pa.string())
    with t.writer() as w:
        w.upsert([{"region": "eu", "id": 1, "a": 10, "b": "new"}])
        w.delete([("us", 2), ("us", 9)])
    compact(t, policy="full", owner="test")
    rows = t.changelog(0).to_pylist()
    got = {(r["region"], r["id"], r["_row_kind"]): (r["a"], r["b"]) for r in rows}
    if producer == "input":
        assert got[("eu", 1, "+I")] == (10, "new") and got[("us", 9, "-D")] == (None, None)
        assert len(rows) == 11
    elif producer == "lookup":
        assert got[("eu", 1, "-U")] == (1, None) and got[("eu", 1, "+U")] == (10, "new")
        assert got[("us", 2, "-D")] == (2, None) and ("us", 9, "-D") not in got
        assert len(rows) == 11  # 8 inserts, one update (two rows), one delete
    else:
        assert {k[2] for k in got} == {"+I"} and len(rows) == 7  # one full compaction
    model: dict[tuple[str, int], Row] = {}
    if producer != "input":
        for row in rows:
            kind = row.pop("_row_kind")
            row.pop("_snapshot_id")
            key = (row["region"], row["id"])
            if kind == "-D":
                del model[key]
            elif kind != "-U":
                model[key] = row
        assert model == {(r["region"], r["id"]): r for r in t.to_arrow().to_pylist()}


def test_consumers_and_follow_read_the_stored_changes(tmp_path: Path) -> None:
    t = new_table(tmp_path, "input", "deduplicate", tiny_memtable=False)
    consumer = t.consumer("sink")
    with t.writer() as w:
        w.apply_cdc(
            [{"id": 1, "a": 1, "b": "x", "op": "c"}, {"id": 1, "a": 1, "b": "x", "op": "-U"}]
        )
    changes = consumer.read()
    assert changes.column("_row_kind").to_pylist() == ["+I", "-U"]
    consumer.commit(changes.column("_snapshot_id")[-1].as_py())
    stop = threading.Event()
    with t.writer() as w:
        w.delete([1])
    for sid, followed in t.follow("sink", poll_interval=0.01, stop=stop):
        assert followed.column("_row_kind").to_pylist() == ["-D"] and sid == 2
        stop.set()


def test_lookup_without_the_decoded_run_cache(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="decoded_run_bytes"):
        lsm3.set_cache_limits(decoded_run_bytes=-1)
    previous = lsm3.set_cache_limits(decoded_run_bytes=0)["decoded_run_bytes"]
    try:
        assert previous == 0
        t = new_table(tmp_path, "lookup", "aggregation", tiny_memtable=False)
        for a in (1, 2, None):
            with t.writer() as w:
                w.upsert([{"id": 1, "a": a, "b": None}, {"id": 2, "a": 1, "b": "x"}])
        rows = t.changelog(2, 3).to_pylist()
        assert [(r["id"], r["a"], r["_row_kind"]) for r in rows] == [
            (2, 2, "-U"),
            (2, 3, "+U"),
        ], "id 1: a null adds nothing to its sum, b stays null: no change"
    finally:
        lsm3.set_cache_limits(decoded_run_bytes=512 * 1024 * 1024)


def test_lookup_computes_changes_ahead_while_the_runs_upload_and_redoes_them_after_a_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit's only flush computes its changes on the snapshot it knows while its runs
    upload; the commit uses them when nothing was appended since, and computes them again
    on the actual parent otherwise (here another writer commits in between)."""
    t = new_table(tmp_path, "lookup", "deduplicate", tiny_memtable=False)
    computed: list[int | None] = []
    compute = changelog_module.compute_changes

    def counted(table: lsm3.Table, schema: Any, base: Any, runs: Any) -> Any:
        computed.append(base.snapshot_id if base else None)
        return compute(table, schema, base, runs)

    monkeypatch.setattr(changelog_module, "compute_changes", counted)
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 1, "b": "x"}, {"id": 2, "a": 1, "b": "x"}])
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 2, "b": "x"}])
    assert computed == [None, 1], "once per commit, ahead, on the parent"
    other = lsm3.open_table(t.uri)
    then_another = _then_another_writer_commits(flush_module.upload_computing_changes, other, 7)
    monkeypatch.setattr(flush_module, "upload_computing_changes", then_another)
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 3, "b": "z"}])
    assert computed == [None, 1, 2, 2, 3], "ahead on 2 (ours, then the other's), ours on 3"
    assert [r["a"] for r in t.changelog(3, 4).to_pylist()] == [7, 3]
    model: dict[int, Row] = {}
    for sid in t.snapshot_ids():
        model = apply(model, t.changelog(sid - 1, sid))
        assert model == state(t, sid)


def test_a_writers_changelog_files_use_the_level_0_compression(tmp_path: Path) -> None:
    t = new_table(tmp_path, "lookup", "deduplicate", tiny_memtable=False)
    with t.writer() as w:
        w.upsert([{"id": k, "a": k, "b": "x"} for k in range(5)])
    for path in _changelog_paths(t):
        meta = pq.ParquetFile(pa.BufferReader(t.store.get(path))).metadata
        assert meta.row_group(0).column(0).compression == "LZ4"


def test_a_writer_whose_known_snapshot_was_expired_and_swept_still_commits(
    tmp_path: Path,
) -> None:
    """A long-lived writer knows an old snapshot; meanwhile the compactor rewrote the table,
    expiry dropped that snapshot and deleted the files it replaced. The writer's commit must
    land with complete changes (computed on its real parent), not fail with a missing-file
    error from computing them ahead on the snapshot it knew. (Found by the commit-identity
    harness on a ``lookup`` table.)"""
    created = new_table(tmp_path, "lookup", "deduplicate", tiny_memtable=False)
    for i in range(3):
        with created.writer() as w:
            w.upsert([{"id": i, "a": i, "b": "x"}])
    clear_read_caches()  # the runs are not in this process's decoded-run cache
    t = lsm3.open_table(created.uri)
    writer = t.writer("long-lived")
    other = lsm3.open_table(t.uri)
    compact(other, policy="full")
    with other.writer() as w:
        w.upsert([{"id": 0, "a": 10, "b": "y"}])
    expire_snapshots(other, retain_last=1, older_than=0)
    remove_orphan_files(other, older_than=0)
    writer.upsert([{"id": 0, "a": 11, "b": "z"}, {"id": 5, "a": 5, "b": "z"}])
    writer.commit()
    last = t.refresh().snapshot_id  # type: ignore[union-attr]
    kinds = {(r["_row_kind"], r["id"], r["a"]) for r in t.changelog(last - 1, last).to_pylist()}
    assert kinds == {("-U", 0, 10), ("+U", 0, 11), ("+I", 5, 5)}


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_an_initial_load_lists_its_runs_as_its_changes(tmp_path: Path, engine: str) -> None:
    """A commit whose changes are its runs' rows as +I (every key new, no deletes) lists its
    runs in the changelog manifest instead of writing the rows again (FORMAT.md section 16);
    a commit with anything else, even a delete of an absent key, writes changelog files. The
    changes read the same after the runs are compacted away and a column is added."""
    t = new_table(tmp_path, "lookup", engine, tiny_memtable=False)
    with t.writer() as w:
        w.upsert([{"id": k, "a": k, "b": str(k)} for k in range(8)])
    with t.writer() as w:
        w.upsert([{"id": 20, "a": 1, "b": None}])
        w.delete([30])
    with t.writer() as w:
        w.upsert([{"id": 21, "a": 2, "b": "x"}])

    def entries(sid: int) -> list[Any]:
        snap = t.snapshot(sid)
        return [e.file for e in t.manifests.entries(snap.changelog_manifest, t.schema)]

    adds = {f.path for f in t.files_of(t.snapshot(1))}
    assert {f.path for f in entries(1)} == adds and len(adds) == 2  # two buckets
    assert all("changelog-" in f.path for f in entries(2))  # the tombstone: not all +I
    assert not any("changelog-" in f.path for f in entries(3))
    before = t.changelog(0)
    assert before.column("_row_kind").to_pylist() == ["+I"] * 10
    assert remove_orphan_files(t, older_than=0).removed == []
    compact(t, policy="full", owner="test")
    t.add_column("c", pa.int64())
    t = lsm3.open_table(t.uri)
    after = t.changelog(0, t.snapshot_ids()[-1])  # in the newest schema, by field id
    assert after.drop_columns(["c"]).to_pylist() == before.to_pylist()
    assert after.column("c").null_count == 10
    model: dict[int, Row] = {}
    for sid in range(1, 4):
        model = apply(model, t.changelog(sid - 1, sid))
        assert model == state(t, sid)


def test_a_changelog_entry_naming_a_run_with_a_delete_is_refused(tmp_path: Path) -> None:
    """A reader verifies a changelog entry that names a data file: a file holding a delete
    row is not a changelog of inserts (written by a foreign or broken writer)."""
    t = new_table(tmp_path, "lookup", "deduplicate", tiny_memtable=False)
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 1, "b": None}])
        w.delete([2])
    from lsm3.read.changelog_file import read_changelog

    run = t.files_of(t.current_snapshot())
    bad = [f for f in run if f.deletes]
    assert bad
    forged = dataclasses.replace(bad[0], min_seq=0, max_seq=0, seq_offset=0, run_id="")
    with pytest.raises(lsm3.CorruptDataFile, match="not upserts"):
        read_changelog(t.store, forged, t.schema_at(0), ["id", "a", "b"])
