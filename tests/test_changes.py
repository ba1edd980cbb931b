"""Incremental reads: applying changes(a, b) to the read at a gives the read at b.

Random histories of upserts, deletes and compactions are compared with a dict model at every
snapshot; the property is checked for every pair of retained snapshots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compactor
import lsm3

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.int64())])

step = st.one_of(
    st.tuples(
        st.just("upsert"), st.lists(st.tuples(st.integers(0, 30), st.integers(0, 9)), max_size=8)
    ),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 30), max_size=5)),
    st.tuples(st.just("compact"), st.sampled_from(["universal", "full"])),
)


def apply_changes(state: dict[int, int], changes: pa.Table) -> dict[int, int]:
    out = dict(state)
    for row in changes.to_pylist():
        kind = row["_row_kind"]
        if kind in ("+I", "+U"):
            out[row["id"]] = row["v"]
        elif kind == "-D":
            assert row["id"] in out, "a delete must name a key that existed"
            del out[row["id"]]
        else:
            assert kind == "-U" and out.get(row["id"]) == row["v"], "-U carries the old value"
    return out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=1, max_size=10), sequenced=st.booleans())
def test_changes_replayed_onto_a_give_b(tmp_path: Path, steps: list[Any], sequenced: bool) -> None:
    schema = SCHEMA.append(pa.field("lsn", pa.int64())) if sequenced else SCHEMA
    options = (
        {"sequence_field": "lsn", "num_sorted_run_trigger": 2}
        if sequenced
        else {"num_sorted_run_trigger": 2}
    )
    root = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
    t = lsm3.create_table(str(root), schema, primary_key="id", options=options)
    model: dict[int, int] = {}
    states: dict[int, dict[int, int]] = {0: {}}
    lsn = 0
    for kind, arg in steps:
        if kind == "compact":
            compactor.compact(t, policy=arg)
        else:
            with t.writer() as w:
                lsn += 1
                if kind == "upsert" and arg:
                    rows = dict(arg)  # last value per key within the batch
                    data: dict[str, list[int]] = {"id": list(rows), "v": list(rows.values())}
                    if sequenced:
                        data["lsn"] = [lsn] * len(rows)
                    w.upsert(data)
                    model.update(rows)
                elif kind == "delete" and arg:
                    keys = sorted(set(arg))
                    w.delete({"id": keys, "lsn": [lsn] * len(keys)} if sequenced else keys)
                    for k in keys:
                        model.pop(k, None)
        snap = t.current_snapshot()
        states[snap.snapshot_id if snap else 0] = dict(model)
    ids = sorted(states)
    for a in ids:
        for b in ids[ids.index(a) :]:
            changes = t.changes(a, b, include_update_before=True)
            assert apply_changes(states[a], changes) == states[b], (a, b)
            rows = {r["id"]: r["v"] for r in t.to_arrow(snapshot_id=b).to_pylist()} if b else {}
            assert rows == states[b]


def test_compaction_contributes_nothing(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, primary_key="id")
    for i in range(3):
        with t.writer() as w:
            w.upsert({"id": [i, 10], "v": [i, i]})
    before = t.current_snapshot().snapshot_id
    compactor.compact(t, policy="full")
    after = t.current_snapshot().snapshot_id
    assert after > before
    assert t.changes(before, after).num_rows == 0


def test_changes_kinds_and_old_values(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, primary_key="id")
    with t.writer() as w:
        w.upsert({"id": [1, 2, 3], "v": [10, 20, 30]})
    a = t.current_snapshot().snapshot_id
    with t.writer() as w:
        w.upsert({"id": [1, 4], "v": [11, 40]})
        w.delete([2])
        w.upsert({"id": [5], "v": [50]})
        w.delete([5])  # inserted and deleted inside the range: no net change
    got = t.changes(a, include_update_before=True).to_pylist()
    assert got == [
        {"id": 1, "v": 10, "_row_kind": "-U"},
        {"id": 1, "v": 11, "_row_kind": "+U"},
        {"id": 2, "v": 20, "_row_kind": "-D"},
        {"id": 4, "v": 40, "_row_kind": "+I"},
    ]
    assert [r["_row_kind"] for r in t.changes(a).to_pylist()] == ["+U", "-D", "+I"]


def test_changes_needs_the_snapshots_between(tmp_path: Path) -> None:
    from compactor.maintenance import expire_snapshots

    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, primary_key="id")
    for i in range(4):
        with t.writer() as w:
            w.upsert({"id": [i], "v": [i]})
    expire_snapshots(t, retain_last=2, older_than=0)
    with pytest.raises(lsm3.SnapshotNotFound, match="expired"):
        t.changes(1)
    assert t.changes(3).to_pylist() == [{"id": 3, "v": 3, "_row_kind": "+I"}]
    with pytest.raises(lsm3.InvalidInput):
        t.changes(9)
