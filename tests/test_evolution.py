"""Schema evolution: changes commit a schema version, old files read through the new schema.

A model-based test evolves the schema between commits (add, drop, rename, widen) and checks
every snapshot's read against a model, before and after compaction; unit tests pin the
refusals and the writer rebase.
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


def read(t: lsm3.Table, snapshot_id: int | None = None) -> dict[int, dict[str, Any]]:
    rows = t.to_arrow(snapshot_id=snapshot_id).to_pylist()
    return {r["id"]: r for r in rows}


class Model:
    """Rows as dicts keyed by id, with the same schema changes applied."""

    def __init__(self) -> None:
        self.columns: dict[str, pa.DataType] = {"id": pa.int64(), "a": pa.int32()}
        self.rows: dict[int, dict[str, Any]] = {}

    def add(self, name: str, type: pa.DataType) -> None:
        self.columns[name] = type
        for r in self.rows.values():
            r[name] = None

    def drop(self, name: str) -> None:
        del self.columns[name]
        for r in self.rows.values():
            del r[name]

    def rename(self, old: str, new: str) -> None:
        self.columns = {(new if k == old else k): v for k, v in self.columns.items()}
        for r in self.rows.values():
            r[new] = r.pop(old)


op = st.one_of(
    st.tuples(st.just("write"), st.lists(st.integers(0, 20), min_size=1, max_size=6)),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 20), max_size=3)),
    st.tuples(st.just("add"), st.sampled_from([pa.int32(), pa.string(), pa.float32()])),
    st.tuples(st.just("drop"), st.integers(0, 5)),
    st.tuples(st.just("rename"), st.integers(0, 5)),
    st.tuples(st.just("widen"), st.integers(0, 5)),
    st.tuples(st.just("compact"), st.sampled_from(["universal", "full"])),
)

WIDER = {pa.int32(): pa.int64(), pa.float32(): pa.float64(), pa.string(): pa.large_string()}


def value_for(type: pa.DataType, seed: int) -> Any:
    if pa.types.is_integer(type):
        return seed
    if pa.types.is_floating(type):
        return seed + 0.5
    return f"s{seed}"


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(op, min_size=1, max_size=12))
def test_every_snapshot_reads_as_the_model_through_evolution(
    tmp_path: Path, ops: list[Any]
) -> None:
    root = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
    schema = pa.schema([("id", pa.int64()), ("a", pa.int32())])
    t = lsm3.create_table(
        str(root), schema, primary_key="id", options={"num_sorted_run_trigger": 2}
    )
    model = Model()
    expected: dict[int, dict[int, dict[str, Any]]] = {}
    fresh = 0
    for i, (kind, arg) in enumerate(ops):
        values = [c for c in model.columns if c != "id"]
        if kind == "write":
            rows = [
                {c: value_for(model.columns[c], k + i) for c in values} | {"id": k} for k in arg
            ]
            with t.writer() as w:
                w.upsert(pa.Table.from_pylist(rows, schema=pa.schema(list(model.columns.items()))))
            model.rows.update({r["id"]: dict(r) for r in rows})
        elif kind == "delete":
            with t.writer() as w:
                w.delete(arg)
            for k in arg:
                model.rows.pop(k, None)
        elif kind == "add":
            fresh += 1
            name = f"c{fresh}"
            t.add_column(name, arg)
            model.add(name, arg)
        elif kind in ("drop", "rename", "widen") and values:
            name = values[arg % len(values)]
            if kind == "drop":
                t.drop_column(name)
                model.drop(name)
            elif kind == "rename":
                fresh += 1
                t.rename_column(name, f"r{fresh}")
                model.rename(name, f"r{fresh}")
            elif model.columns[name] in WIDER:
                t.widen_column(name, WIDER[model.columns[name]])
                model.columns[name] = WIDER[model.columns[name]]
        elif kind == "compact":
            compactor.compact(t, policy=arg)
        snap = t.current_snapshot()
        if snap is not None:
            expected[snap.snapshot_id] = {k: dict(v) for k, v in model.rows.items()}
            assert t.schema.names == list(model.columns)
    for sid, rows in expected.items():
        got = read(t, sid)
        schema_at = t.schema_at(t.snapshot(sid).schema_id).arrow  # type: ignore[union-attr]
        want = {k: {c: r.get(c) for c in schema_at.names} for k, r in rows.items()}
        assert got == want, sid
    # And everything again after a full compaction, through a fresh handle.
    compactor.compact(t, policy="full")
    again = lsm3.open_table(str(root))
    assert read(again) == {k: dict(v) for k, v in model.rows.items()}
    for k, row in model.rows.items():
        assert again.get(k) == row


def test_old_files_read_through_the_new_schema(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64()), ("a", pa.int32()), ("b", pa.string())])
    t = lsm3.create_table(str(tmp_path / "t"), schema, primary_key="id")
    with t.writer() as w:
        w.upsert({"id": [1, 2], "a": [10, 20], "b": ["x", "y"]})
    with t.update_schema() as u:
        u.add_column("c", pa.float64()).rename_column("b", "bee").widen_column("a", pa.int64())
    assert t.schema.names == ["id", "a", "bee", "c"]
    assert t.schema.field("a").type == pa.int64()
    with t.writer() as w:
        w.upsert({"id": [3], "a": [2**40], "bee": ["z"], "c": [1.5]})
    assert read(t) == {
        1: {"id": 1, "a": 10, "bee": "x", "c": None},
        2: {"id": 2, "a": 20, "bee": "y", "c": None},
        3: {"id": 3, "a": 2**40, "bee": "z", "c": 1.5},
    }
    assert read(t, 1) == {1: {"id": 1, "a": 10, "b": "x"}, 2: {"id": 2, "a": 20, "b": "y"}}
    assert [s.schema_id for s in t.schemas()] == [0, 1]
    kinds = [s.kind for s in t.snapshots()]
    assert kinds == ["APPEND", "SCHEMA", "APPEND"]


def test_a_writer_opened_before_a_change_commits_through_it(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64()), ("a", pa.int32())])
    t = lsm3.create_table(str(tmp_path / "t"), schema, primary_key="id")
    old = lsm3.open_table(str(tmp_path / "t")).writer()
    old.upsert({"id": [1], "a": [5]})
    t.rename_column("a", "alpha")
    t.add_column("extra", pa.string())
    old.commit()
    assert lsm3.open_table(str(tmp_path / "t")).get(1) == {"id": 1, "alpha": 5, "extra": None}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda u: u.drop_column("id"), "primary-key"),
        (lambda u: u.rename_column("id", "key"), "primary-key"),
        (lambda u: u.widen_column("a", pa.int16()), "widening"),
        (lambda u: u.widen_column("b", pa.int64()), "widening"),
        (lambda u: u.add_column("a", pa.int64()), "already exists"),
        (lambda u: u.add_column("n", pa.int64(), nullable=False), "nullable"),
        (lambda u: u.add_column("_lsm3_x", pa.int64()), "invalid column name"),
        (lambda u: u.rename_column("a", "b"), "already exists"),
        (lambda u: u.drop_column("nope"), "no column"),
        (lambda u: u.set_options({"sequence_field": "a"}), "cannot change"),
        (lambda u: u.set_options({"bogus": 1}), "unknown table option"),
    ],
)
def test_refused_changes_commit_nothing(tmp_path: Path, change: Any, message: str) -> None:
    schema = pa.schema([("id", pa.int64()), ("a", pa.int32()), ("b", pa.string())])
    t = lsm3.create_table(str(tmp_path / "t"), schema, primary_key="id")
    with t.writer() as w:
        w.upsert({"id": [1], "a": [1], "b": ["x"]})
    before = (t.current_snapshot(), t.schema)
    with pytest.raises(lsm3.InvalidInput, match=message), t.update_schema() as u:
        change(u)
    t.refresh()
    assert (t.current_snapshot(), t.schema) == before


def test_options_change_and_partition_key_stay(tmp_path: Path) -> None:
    schema = pa.schema([("region", pa.string()), ("id", pa.int64()), ("v", pa.int64())])
    t = lsm3.create_table(
        str(tmp_path / "t"), schema, primary_key=["region", "id"], partition_by="region"
    )
    t.set_options({"row_group_rows": 1000, "write_stall": "error"})
    fresh = lsm3.open_table(str(tmp_path / "t"))
    assert fresh.table_schema.option("row_group_rows") == 1000
    assert fresh.table_schema.partition_by == ("region",)
    with pytest.raises(lsm3.InvalidInput, match="partition"):
        t.drop_column("region")
