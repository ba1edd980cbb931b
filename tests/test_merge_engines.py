"""Merge engines, model-based: random upserts (with nulls, omitted columns and repeated keys in
one batch), deletes, CDC batches, flushes, commits, compactions of every policy (partial ones
included), reopenings, time travel, ``get`` and the pyarrow dataset, compared at every snapshot
with a plain-Python fold of each key's upserts after its last delete (docs/FORMAT.md, section
15). One machine per engine."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest
from helpers import clear_read_caches, rows_by_key
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import lsm3
from compactor import compact
from compactor.executor import write_outputs
from compactor.policy import Task
from lsm3.write.commit import commit_files

KEYS = st.integers(0, 7)
SMALL = st.none() | st.integers(-3, 5)
WORDS = st.none() | st.sampled_from(["a", "b", "cc", "é"])
FLAGS = st.none() | st.booleans()
LISTS = st.none() | st.lists(st.integers(0, 3), max_size=2)

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("a", pa.int64()),
        ("b", pa.string()),
        ("c", pa.int64()),
        ("d", pa.bool_()),
        ("e", pa.list_(pa.int64())),
        ("f", pa.string()),
        ("g", pa.int64()),
        ("h", pa.string()),
    ]
)
STRATEGIES = {"a": SMALL, "b": WORDS, "c": SMALL, "d": FLAGS, "e": LISTS, "f": WORDS}
STRATEGIES.update({"g": SMALL, "h": WORDS})
VALUE_COLUMNS = [n for n in SCHEMA.names if n != "id"]

#: Small files and eager compaction, so partial compactions and many runs happen.
BASE_OPTIONS = {
    "row_group_rows": 2,
    "memtable_bytes": 4096,
    "num_sorted_run_trigger": 2,
    "num_sorted_run_stop_trigger": 100,
    "l0_file_trigger": 2,
    "level_base_bytes": 1,
}
AGGREGATES = {
    "a": "sum",
    "b": "listagg",
    "c": "count",
    "d": "bool_or",
    "e": "collect",
    "f": "first_non_null_value",
    "g": "last_value",
    "h": "max",
}
ENGINES: dict[str, dict[str, Any]] = {
    "first_row": {"merge_engine": "first_row"},
    "partial_update": {"merge_engine": "partial_update", "fields.g.sequence_group": "h"},
    "aggregation": {
        "merge_engine": "aggregation",
        "fields.b.listagg_delimiter": "/",
        **{f"fields.{c}.aggregate_function": f for c, f in AGGREGATES.items()},
    },
}
Record = tuple[bool, dict[str, Any]]  # (is a delete, the row as written)


def fold(engine: str, records: list[Record]) -> dict[str, Any] | None:
    """The value of one key: its records folded after its last delete (None: absent)."""
    ups: list[dict[str, Any]] = []
    for is_delete, row in records:
        ups = [] if is_delete else [*ups, row]
    if not ups:
        return None
    key = {"id": ups[0]["id"]}
    if engine == "first_row":
        return {**key, **{c: ups[0].get(c) for c in VALUE_COLUMNS}}
    if engine == "partial_update":
        out = {c: _last_non_null(ups, c) for c in VALUE_COLUMNS}
        grouped = [r for r in ups if r.get("g") is not None]
        winner = max(enumerate(grouped), key=lambda p: (p[1]["g"], p[0]))[1] if grouped else {}
        out["g"], out["h"] = winner.get("g"), winner.get("h")
        return {**key, **out}
    return {**key, **{c: _aggregate(AGGREGATES[c], [r.get(c) for r in ups]) for c in AGGREGATES}}


def _last_non_null(rows: list[dict[str, Any]], column: str) -> Any:
    values = [r.get(column) for r in rows if r.get(column) is not None]
    return values[-1] if values else None


def _aggregate(function: str, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if function == "last_value":
        return values[-1]
    if not present:
        return None
    if function == "sum":
        return sum(present)
    if function == "count":
        return len(present)
    if function == "max":
        return max(present, key=lambda s: s.encode())
    if function == "bool_or":
        return any(present)
    if function == "listagg":
        return "/".join(present)
    if function == "collect":
        return [x for v in present for x in v]
    assert function == "first_non_null_value"
    return present[0]


class EngineMachine(RuleBasedStateMachine):
    engine: str
    new_location: Callable[[], str]

    def __init__(self) -> None:
        super().__init__()
        clear_read_caches()  # process-wide caches would make replays of an example differ
        self.uri = type(self).new_location()
        options = {**BASE_OPTIONS, **ENGINES[self.engine]}
        self.table = lsm3.create_table(self.uri, SCHEMA, "id", buckets=2, options=options)
        self.writer = self.table.writer()
        self.records: dict[int, list[Record]] = {}  # committed, per key, in sequence order
        self.pending: list[tuple[int, bool, dict[str, Any]]] = []
        self.history: dict[int, dict[int, dict[str, Any]]] = {0: {}}

    def model(self) -> dict[int, dict[str, Any]]:
        out = {}
        for key, records in self.records.items():
            value = fold(self.engine, records)
            if value is not None:
                out[key] = value
        return out

    def row(self, data: st.DataObject, key: int) -> dict[str, Any]:
        row: dict[str, Any] = {"id": key}
        for column in VALUE_COLUMNS:
            # partial_update and aggregation records may leave columns out (null: not given)
            if self.engine == "first_row" or data.draw(st.booleans()):
                row[column] = data.draw(STRATEGIES[column])
        return row

    @rule(data=st.data(), size=st.integers(1, 5))
    def upsert(self, data: st.DataObject, size: int) -> None:
        rows = [self.row(data, data.draw(KEYS)) for _ in range(size)]
        if self.engine == "first_row":
            self.writer.upsert(rows)
            self.pending += [(r["id"], False, r) for r in rows]
            return
        for r in rows:  # rows with other omitted columns go in one call each
            self.writer.upsert([r])
            self.pending.append((r["id"], False, r))

    @rule(keys=st.lists(KEYS, min_size=1, max_size=3))
    def delete(self, keys: list[int]) -> None:
        self.writer.delete(keys)
        self.pending += [(k, True, {"id": k}) for k in keys]

    @rule(data=st.data(), size=st.integers(1, 5))
    def apply_cdc(self, data: st.DataObject, size: int) -> None:
        events = []
        for _ in range(size):
            key = data.draw(KEYS)
            op = data.draw(st.sampled_from(["c", "u", "d", "+I", "+U", "-U", "-D"]))
            row = {c: None for c in VALUE_COLUMNS}
            row.update(self.row(data, key))
            events.append({**row, "op": op})
            if op != "-U":
                self.pending.append((key, op in ("d", "-D"), row))
        self.writer.apply_cdc(events)

    @rule()
    def flush(self) -> None:
        self.writer.flush()

    @rule()
    def commit(self) -> None:
        snap = self.writer.commit()
        if snap is None:
            return
        for key, is_delete, row in self.pending:
            self.records.setdefault(key, []).append((is_delete, row))
        self.pending = []
        self.history[snap.snapshot_id] = self.model()

    @rule(policy=st.sampled_from(["universal", "leveled", "full"]), rounds=st.integers(1, 2))
    def compact(self, policy: str, rounds: int) -> None:
        compact(self.table, policy=policy, owner="model", max_rounds=rounds)
        snap = self.table.refresh()
        if snap is not None:
            self.history[snap.snapshot_id] = self.model()

    @rule()
    def reopen(self) -> None:
        self.table = lsm3.open_table(self.uri)

    @rule(data=st.data())
    def time_travel(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.history)))
        got = self.table.to_arrow(snapshot_id=sid)
        assert rows_by_key(got, ["id"]) == self.history[sid], f"snapshot {sid}"

    @rule(keys=st.lists(KEYS, min_size=1, max_size=4))
    def lookups(self, keys: list[int]) -> None:
        expected = self.model()
        assert self.table.get_many(keys) == [expected.get(k) for k in keys]

    @rule(section_rows=st.integers(1, 6))
    def stream_in_sections(self, section_rows: int) -> None:
        got = self.table.to_batches(section_rows=section_rows).read_all()
        assert rows_by_key(got, ["id"]) == self.model()

    @rule()
    def dataset(self) -> None:
        got = self.table.to_pyarrow_dataset().to_table()
        assert rows_by_key(got, ["id"]) == self.model()

    @invariant()
    def current_state_matches_the_fold(self) -> None:
        self.table.refresh()
        expected = self.model()
        assert rows_by_key(self.table.to_arrow(), ["id"]) == expected
        keys = list(range(8))
        assert self.table.get_many(keys) == [expected.get(k) for k in keys]

    def teardown(self) -> None:
        self.writer.close()
        fresh = lsm3.open_table(self.uri)
        for sid, expected in self.history.items():
            assert rows_by_key(fresh.to_arrow(snapshot_id=sid), ["id"]) == expected, sid


@pytest.fixture
def locations() -> Iterator[Callable[[], str]]:
    root = tempfile.mkdtemp(prefix="lsm3-engines-")
    yield lambda: f"{root}/{uuid.uuid4().hex}"
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_read_path_gives_the_fold(engine: str, locations: Callable[[], str]) -> None:
    machine = type(
        f"{engine.title()}Machine",
        (EngineMachine,),
        {"engine": engine, "new_location": staticmethod(locations)},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# --------------------------------------------------------------------------- rules around the fold


def test_a_flush_stores_one_row_per_key(tmp_path: Any) -> None:
    """The memtable folds by the engine's rules: 100 records of one key are one stored row."""
    options = {"merge_engine": "aggregation", "fields.a.aggregate_function": "sum"}
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=options)
    with t.writer() as w:
        for i in range(100):
            w.upsert([{"id": 1, "a": i}])
    (f,) = t.files()
    assert f.rows == 1 and t.get(1)["a"] == sum(range(100))


def test_a_flush_that_fails_to_upload_keeps_its_records_and_folds_them_once(tmp_path: Any) -> None:
    """A flush stores a key's one record as it is and folds the others; when its upload fails
    the writer keeps the records (not the fold beside them), so the next flush sums each once."""
    options = {"merge_engine": "aggregation", "fields.a.aggregate_function": "sum"}
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=options)
    w = t.writer()
    w.upsert([{"id": 1, "a": 1}, {"id": 1, "a": 2}, {"id": 2, "a": 5}])
    w.delete([3])
    real_put = t.store.put

    def failing_put(key: str, data: bytes) -> None:
        raise lsm3.StorageError(f"network is down ({key})")

    t.store.put = failing_put  # type: ignore[method-assign]
    with pytest.raises(lsm3.StorageError):
        w.flush()
    t.store.put = real_put  # type: ignore[method-assign]
    w.upsert([{"id": 1, "a": 10}, {"id": 3, "a": 7}])
    w.commit()
    w.close()
    assert [f.rows for f in t.files()] == [3]
    assert t.get_many([1, 2, 3]) == [
        {"id": 1, "a": 13, **{c: None for c in VALUE_COLUMNS if c != "a"}},
        {"id": 2, "a": 5, **{c: None for c in VALUE_COLUMNS if c != "a"}},
        {"id": 3, "a": 7, **{c: None for c in VALUE_COLUMNS if c != "a"}},
    ]


def test_a_partial_compaction_keeps_a_delete_inside_its_window_over_older_runs(
    tmp_path: Any,
) -> None:
    """Runs 1 (a=5), 2 (delete), 3 (a=1): compacting only runs 2 and 3 must store a reset row
    that still hides run 1, so the sum is 1, not 6."""
    options = {
        "merge_engine": "aggregation",
        "fields.a.aggregate_function": "sum",
        "compaction_policy": "universal",
        "num_sorted_run_trigger": 100,
    }
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=options)
    for step in ({"a": 5}, None, {"a": 1}):
        with t.writer() as w:
            if step is None:
                w.delete([1])
            else:
                w.upsert([{"id": 1, **step}])
    files = sorted(t.files_of(t.current_snapshot()), key=lambda f: -f.effective_max_seq)
    task = Task(partition=(), bucket=0, inputs=tuple(files[:2]), output_level=1, reason="test")
    outputs = write_outputs(t, task, drop_tombstones=False)
    assert [o.deletes for o in outputs] == [1]  # one reset row
    commit_files(
        t,
        added=outputs,
        removed=task.inputs,
        seq_count=0,
        kind="COMPACT",
        writer_id=None,
        commit_id="partial",
        metadata={},
        assign_offset=False,
    )
    assert t.get(1)["a"] == 1 and t.to_arrow().to_pylist()[0]["a"] == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"merge_engine": "newest"}, "merge_engine must be one of"),
        (
            {"merge_engine": "aggregation", "fields.a.aggregate_function": "median"},
            "unknown aggregate",
        ),
        ({"merge_engine": "aggregation", "fields.b.aggregate_function": "sum"}, "needs a numeric"),
        ({"merge_engine": "aggregation", "fields.a.aggregate_function": "collect"}, "needs a list"),
        ({"merge_engine": "aggregation", "fields.id.aggregate_function": "sum"}, "primary-key"),
        ({"merge_engine": "aggregation", "fields.zz.aggregate_function": "sum"}, "names no column"),
        ({"fields.a.aggregate_function": "sum"}, "needs option merge_engine='aggregation'"),
        (
            {"merge_engine": "aggregation", "fields.b.listagg_delimiter": ","},
            "aggregate_function=listagg",
        ),
        ({"merge_engine": "first_row", "fields.g.sequence_group": "h"}, "partial_update"),
        ({"merge_engine": "partial_update", "fields.b.sequence_group": "h"}, "integer or temporal"),
        ({"merge_engine": "partial_update", "fields.a.colour": "red"}, "per-column options"),
    ],
)
def test_bad_engine_options_are_refused_before_anything_is_written(
    tmp_path: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(lsm3.InvalidInput, match=message):
        lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=options)
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").rglob("*.json"))


def test_the_engine_and_its_column_settings_cannot_change(tmp_path: Any) -> None:
    options = {"merge_engine": "aggregation", "fields.a.aggregate_function": "sum"}
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=options)
    with t.writer() as w:
        w.upsert([{"id": 1, "a": 2}])
    before = t.table_schema
    for change in (
        {"merge_engine": "deduplicate"},
        {"fields.a.aggregate_function": "max"},
        {"fields.c.aggregate_function": "sum"},
    ):
        with pytest.raises(lsm3.InvalidInput, match="cannot change"):
            t.set_options(change)
    with pytest.raises(lsm3.InvalidInput, match="merge engine options"):
        t.rename_column("a", "amount")
    with pytest.raises(lsm3.InvalidInput, match="merge engine options"):
        t.drop_column("a")
    t.set_options({"row_group_rows": 64})  # other options still change
    reopened = lsm3.open_table(str(tmp_path / "t"))
    assert reopened.table_schema.engine == before.engine and reopened.get(1)["a"] == 2


def test_a_reader_of_format_version_1_refuses_an_engine_table(tmp_path: Any) -> None:
    """Schemas of tables with a merge engine are written as version 2: a reader that would
    read partial folds as whole rows refuses them instead."""
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id", options=ENGINES["first_row"])
    doc = json.loads(t.store.get("schema/schema-0.json"))
    assert doc["format_version"] == 2
    plain = lsm3.create_table(str(tmp_path / "p"), SCHEMA, "id")
    assert json.loads(plain.store.get("schema/schema-0.json"))["format_version"] == 1
