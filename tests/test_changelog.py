"""The changelog and its consumers: every commit's changes, applied in order to the table as
read before it, give the table as read after it, under every merge engine, compaction
included; consumers hold what they have not read from expiry."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import lsm3
from compactor import compact
from compactor.maintenance import expire_snapshots

SCHEMA = pa.schema([("id", pa.int64()), ("a", pa.int64()), ("b", pa.string())])
ENGINES: dict[str, dict[str, Any]] = {
    "deduplicate": {},
    "first_row": {"merge_engine": "first_row"},
    "partial_update": {"merge_engine": "partial_update"},
    "aggregation": {"merge_engine": "aggregation", "fields.a.aggregate_function": "sum"},
}


def state(t: lsm3.Table, snapshot_id: int) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in t.to_arrow(snapshot_id=snapshot_id).to_pylist()}


def apply(before: dict[int, dict[str, Any]], changes: pa.Table) -> dict[int, dict[str, Any]]:
    """Apply changes as plain upserts and deletes, checking every before-image."""
    out = dict(before)
    for row in changes.to_pylist():
        kind, value = row.pop("_row_kind"), row
        value.pop("_snapshot_id")
        if kind in ("-U", "-D"):
            assert out.get(value["id"]) == value, f"{kind} must carry the exact old values"
            if kind == "-D":
                del out[value["id"]]
        else:
            assert (kind == "+I") == (value["id"] not in out)
            out[value["id"]] = value
    return out


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_each_commits_changes_turn_the_previous_state_into_the_next(
    tmp_path: Path, engine: str
) -> None:
    rng = random.Random(engine)
    options = {**ENGINES[engine], "num_sorted_run_trigger": 2, "row_group_rows": 2}
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=options)
    for step in range(25):
        if step % 6 == 5:
            compact(t, policy=rng.choice(["universal", "full"]), owner="test")
            continue
        with t.writer() as w:
            for _ in range(rng.randint(1, 6)):
                k = rng.randrange(8)
                if rng.random() < 0.25:
                    w.delete([k])
                else:
                    a = rng.choice([None, 1, 2, 3])
                    b = rng.choice([None, "x", "y"])
                    w.upsert([{"id": k, "a": a, "b": b}])
    ids = t.snapshot_ids()
    for sid in ids:
        changes = t.changelog(sid - 1, sid)
        assert apply(state(t, sid - 1), changes) == state(t, sid), f"snapshot {sid}"
        if t.snapshot(sid).kind != "APPEND":
            assert changes.num_rows == 0, "compaction changes no value"
    whole = t.changelog(0)
    assert apply({}, whole) == state(t, ids[-1])
    assert whole.column("_snapshot_id").to_pylist() == sorted(
        whole.column("_snapshot_id").to_pylist()
    )
    streamed = pa.Table.from_batches(list(t.changelog_batches(0)), schema=whole.schema)
    assert streamed.equals(whole)
    assert t.changelog(0, columns=["id", "b"]).schema.names == [
        "id",
        "b",
        "_row_kind",
        "_snapshot_id",
    ]


def test_unchanged_values_give_no_rows(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=ENGINES["first_row"])
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 1, "b": "x"}])
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 2, "b": "y"}])  # ignored by first_row
    assert t.changelog(1).num_rows == 0


def test_computed_changes_decode_each_run_once_per_process(tmp_path: Path) -> None:
    """Under ``none`` the values of a commit's keys before it come from the batched lookup,
    whose decoded runs are cached: a consumer reading commit after commit (or one commit
    again) fetches no run it already decoded, only metadata it has not seen."""
    from lsm3.read.runindex import DECODED_RUNS

    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    for i in range(3):
        with t.writer() as w:
            w.upsert([{"id": k, "a": i, "b": "x" * 50} for k in range(i * 500, 2000)])
    reader = lsm3.open_table(str(tmp_path / "t"))
    expected = reader.changelog(2, 3)  # metadata and footers now cached

    def fetched() -> tuple[int, pa.Table]:
        before = reader.store_stats()["bytes"]["GET"]
        rows = reader.changelog(2, 3)
        return reader.store_stats()["bytes"]["GET"] - before, rows

    DECODED_RUNS.clear()
    cold, rows = fetched()
    assert rows.equals(expected) and cold > 0
    warm, rows = fetched()
    assert rows.equals(expected)
    assert warm < cold / 2


@pytest.mark.parametrize("engine", ["deduplicate", "aggregation"])
def test_computed_changes_of_a_small_commit_decode_only_the_row_groups_it_touches(
    tmp_path: Path, engine: str
) -> None:
    """A commit of a few keys on a large table: its changes under ``none`` read the row
    groups that can hold those keys, not whole runs (which would make every small commit of
    a stream cost the table), and give the same rows."""
    from lsm3.read.runindex import DECODED_RUNS

    options = {**ENGINES[engine], "row_group_rows": 1024}
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=options)
    with t.writer() as w:
        w.upsert([{"id": k, "a": k, "b": "x" * 40} for k in range(80_000)])
    with t.writer() as w:
        w.upsert([{"id": k, "a": 7, "b": "y"} for k in (5, 9_000, 19_999)])
        w.upsert([{"id": 100_001, "a": 1, "b": "new"}])
        w.delete([{"id": 12_345}])
    reader = lsm3.open_table(str(tmp_path / "t"))
    reader.files()
    first_run = max(f.bytes for f in reader.files())
    DECODED_RUNS.clear()
    before = reader.store_stats()["bytes"]["GET"]
    rows = reader.changelog(1, 2)
    fetched = reader.store_stats()["bytes"]["GET"] - before
    assert fetched < first_run / 4, (fetched, first_run)
    got = sorted(zip(*(rows.column(c).to_pylist() for c in ("id", "_row_kind", "a")), strict=True))
    if engine == "deduplicate":
        updated = [(k, "-U", k) for k in (5, 9_000, 19_999)] + [
            (k, "+U", 7) for k in (5, 9_000, 19_999)
        ]
    else:  # aggregation sums ``a``
        updated = [(k, "-U", k) for k in (5, 9_000, 19_999)] + [
            (k, "+U", k + 7) for k in (5, 9_000, 19_999)
        ]
    expected = sorted([*updated, (100_001, "+I", 1), (12_345, "-D", 12_345)])
    assert got == expected


def test_computed_changes_of_a_large_commit_read_runs_whole_without_footer_requests(
    tmp_path: Path,
) -> None:
    """A commit whose keys hit most row groups: the parent's run is fetched whole, in one
    request, with no ranged footer request first to decide that."""
    from lsm3.read.runindex import DECODED_RUNS, FOOTERS

    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options={"row_group_rows": 1024})
    with t.writer() as w:
        w.upsert([{"id": k, "a": k, "b": "x"} for k in range(40_000)])
    with t.writer() as w:
        w.upsert([{"id": k, "a": -k, "b": "y"} for k in range(0, 40_000, 7)])
    expected = t.changelog(1, 2)

    def gets_of_a_cold_computation() -> int:
        reader = lsm3.open_table(str(tmp_path / "t"))
        reader.changelog(1, 2)  # metadata now cached in this reader
        DECODED_RUNS.clear()
        FOOTERS.clear()
        before = reader.store_stats()["requests"]["GET"]
        assert reader.changelog(1, 2).equals(expected)
        return reader.store_stats()["requests"]["GET"] - before

    assert gets_of_a_cold_computation() == 2  # the parent's run and the commit's run, whole


def test_a_consumer_reads_each_change_once_and_holds_it_from_expiry(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 1, "b": "x"}])
    consumer = t.consumer("warehouse")
    assert consumer.position == 1 and t.consumers() == {"warehouse": 1}
    for i in range(2, 6):
        with t.writer() as w:
            w.upsert([{"id": i, "a": i, "b": "x"}])
    expire_snapshots(t, retain_last=1, older_than=0)
    assert t.snapshot_ids()[0] == 1, "the consumer's position and later snapshots are kept"
    changes = consumer.read()
    assert changes.column("id").to_pylist() == [2, 3, 4, 5]
    consumer.commit(changes.column("_snapshot_id").to_pylist()[-1])
    again = lsm3.open_table(str(tmp_path / "t")).consumer("warehouse")
    assert again.position == 5 and again.read().num_rows == 0
    expire_snapshots(t, retain_last=1, older_than=0)
    assert t.snapshot_ids() == [5]
    with pytest.raises(lsm3.InvalidInput, match="cannot move back"):
        again.commit(3)


def test_two_processes_cannot_both_advance_one_consumer(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    for i in range(3):
        with t.writer() as w:
            w.upsert([{"id": i, "a": i, "b": None}])
    first = t.consumer("c", start_snapshot_id=0)
    second = lsm3.open_table(str(tmp_path / "t")).consumer("c")
    first.commit(2)
    with pytest.raises(lsm3.CommitConflict, match="another process"):
        second.commit(3)
    assert t.consumers() == {"c": 2}


def test_an_idle_consumer_is_dropped_after_consumer_expiration(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options={"consumer_expiration": 1})
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 1, "b": "x"}])
    consumer = t.consumer("gone")
    state_before = consumer.state
    object.__setattr__(state_before, "updated_ms", 0)  # as if idle since 1970
    t.store.put("consumer/gone.json", state_before.encode())
    with t.writer() as w:
        w.upsert([{"id": 2, "a": 1, "b": "x"}])
    result = expire_snapshots(t, retain_last=1, older_than=0)
    assert result.dropped_consumers == ["gone"] and t.consumers() == {}
    assert t.snapshot_ids() == [2]


def test_a_consumer_cannot_start_at_an_expired_snapshot(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    for i in range(3):
        with t.writer() as w:
            w.upsert([{"id": i, "a": i, "b": None}])
    expire_snapshots(t, retain_last=1, older_than=0)
    with pytest.raises(lsm3.SnapshotNotFound, match="expired"):
        t.consumer("late", start_snapshot_id=1)
    assert t.consumers() == {}


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 200, "a..b", 7])
def test_consumer_ids_with_path_characters_are_refused(tmp_path: Path, bad: Any) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    with pytest.raises(lsm3.InvalidInput, match="consumer id"):
        t.consumer(bad)
    assert t.consumers() == {}


def test_follow_yields_each_commit_and_commits_the_position(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    with t.writer() as w:
        w.upsert([{"id": 0, "a": 0, "b": None}])
    t.consumer("f")  # starts at snapshot 1
    for i in range(1, 4):
        with t.writer() as w:
            w.upsert([{"id": i, "a": i, "b": None}])
    stop = threading.Event()
    seen = []
    for sid, changes in t.follow("f", poll_interval=0.01, stop=stop):
        seen.append((sid, changes.column("id").to_pylist()))
        if sid == 4:
            stop.set()
    assert seen == [(2, [1]), (3, [2]), (4, [3])]
    assert t.consumers() == {"f": 4}


def test_follow_across_a_schema_change(tmp_path: Path) -> None:
    """Each commit's changes come in the schema of that commit's snapshot (follow built them
    with the newest schema before, which failed once a column had been added)."""
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    t.consumer("s", start_snapshot_id=0)
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 1, "b": "x"}])
    t.add_column("c", pa.int64())
    stop = threading.Event()
    seen = []
    for sid, changes in t.follow("s", poll_interval=0.01, stop=stop):
        seen.append((sid, changes.schema.names[:-2]))
        if sid == 2:
            stop.set()
    assert seen == [(1, ["id", "a", "b"]), (2, ["id", "a", "b", "c"])]
