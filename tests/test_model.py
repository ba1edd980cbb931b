"""Model-based test: random upserts, deletes, CDC batches, flushes, commits, reopens and
time-travel reads, compared with a plain dict model at every snapshot."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from helpers import key_of, rows_by_key
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import lsm3
from lsm3.testing.devserver import LocalS3

Location = tuple[str, dict | None]

VALUES = st.sampled_from([None, "", "x", "y", "zz", "é"])
NUMBERS = st.none() | st.integers(-3, 3)
LSNS = st.integers(0, 6)
DEBEZIUM = ("c", "r", "u", "d")
ROW_KINDS = ("+I", "-U", "+U", "-D")


@dataclass
class Variant:
    """One table shape the machine is run against."""

    name: str
    key_columns: list[tuple[str, pa.DataType]]
    keys: st.SearchStrategy[Any]
    partition_by: list[str] = field(default_factory=list)
    buckets: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    sequence_field: bool = False

    @property
    def primary_key(self) -> list[str]:
        return [name for name, _ in self.key_columns]

    def schema(self) -> pa.Schema:
        value_cols = [("v", pa.string())]
        value_cols.append(("lsn", pa.int64()) if self.sequence_field else ("n", pa.int32()))
        return pa.schema([*self.key_columns, *value_cols])

    def key_dict(self, key: Any) -> dict[str, Any]:
        values = key if isinstance(key, tuple) else (key,)
        return dict(zip(self.primary_key, values, strict=True))


SIMPLE = Variant(
    "simple",
    [("id", pa.int64())],
    st.integers(-2, 14),
    options={"row_group_rows": 3, "memtable_bytes": 2048, "manifest_merge_threshold": 3},
)
COMPOSITE = Variant(
    "composite",
    [("tenant", pa.int32()), ("name", pa.string())],
    st.tuples(st.integers(0, 3), st.sampled_from(["", "a", "b", "é", "a\x00b", "B"])),
    options={"row_group_rows": 4, "manifest_merge_threshold": 1},
)
BUCKETED = Variant(
    "bucketed",
    [("region", pa.string()), ("id", pa.int64())],
    st.tuples(st.sampled_from(["eu", "us", "ap"]), st.integers(0, 9)),
    partition_by=["region"],
    buckets=3,
    options={"row_group_rows": 2},
)
SEQUENCED = Variant(
    "sequenced",
    [("id", pa.int64())],
    st.integers(0, 8),
    options={"sequence_field": "lsn", "row_group_rows": 3},
    sequence_field=True,
)


class TableMachine(RuleBasedStateMachine):
    """Subclassed per test with ``variant`` and ``new_location`` set."""

    variant: Variant
    new_location: Callable[[], Location]

    def __init__(self) -> None:
        super().__init__()
        self.uri, self.options = type(self).new_location()
        v = self.variant
        self.table = lsm3.create_table(
            self.uri,
            v.schema(),
            primary_key=v.primary_key,
            partition_by=v.partition_by or None,
            buckets=v.buckets,
            options=v.options,
            storage_options=self.options,
        )
        self.writer = self.table.writer()
        self.writer_id: str | None = None
        # the model: key -> (lsn, is_delete, row); pending ops are applied at commit
        self.committed: dict[Any, tuple[int | None, bool, dict]] = {}
        self.pending: list[tuple[Any, bool, dict, int | None]] = []
        self.buffered = 0
        self.history: dict[int, dict[Any, dict]] = {0: {}}
        self.touched: set[Any] = set()
        self.last_named: tuple[str, str, int] | None = None  # (writer_id, commit_id, snapshot)
        self.counter = itertools.count()

    # ----------------------------------------------------------------- model

    def visible(self, records: dict[Any, tuple[int | None, bool, dict]]) -> dict[Any, dict]:
        return {k: row for k, (_, deleted, row) in records.items() if not deleted}

    def apply(self, records: dict, key: Any, deleted: bool, row: dict, lsn: int | None) -> None:
        current = records.get(key)
        if lsn is not None and current is not None and lsn < current[0]:
            return  # an older change arriving later never wins
        records[key] = (lsn, deleted, row)

    def make_row(self, data: st.DataObject, key: Any) -> dict[str, Any]:
        row = self.variant.key_dict(key)
        row["v"] = data.draw(VALUES)
        if self.variant.sequence_field:
            row["lsn"] = data.draw(LSNS)
        else:
            row["n"] = data.draw(NUMBERS)
        return row

    def buffer(self, key: Any, deleted: bool, row: dict) -> None:
        self.touched.add(key)
        self.pending.append((key, deleted, row, row.get("lsn")))
        self.buffered += 1

    # ----------------------------------------------------------------- rules

    @rule(
        data=st.data(),
        size=st.integers(0, 6),
        form=st.sampled_from(["pylist", "table"]),
        then_commit=st.booleans(),
    )
    def upsert(self, data: st.DataObject, size: int, form: str, then_commit: bool) -> None:
        rows = [self.make_row(data, data.draw(self.variant.keys)) for _ in range(size)]
        if form == "table" and rows:
            self.writer.upsert(pa.Table.from_pylist(rows, schema=self.variant.schema()))
        else:
            self.writer.upsert(rows)
        for row in rows:
            self.buffer(key_of(row, self.variant.primary_key), False, row)
        if then_commit:
            self.do_commit(named=False)

    @rule(
        data=st.data(),
        size=st.integers(0, 4),
        form=st.sampled_from(["keys", "rows"]),
        then_commit=st.booleans(),
    )
    def delete(self, data: st.DataObject, size: int, form: str, then_commit: bool) -> None:
        keys = [data.draw(self.variant.keys) for _ in range(size)]
        if self.variant.sequence_field:
            rows = [{**self.variant.key_dict(k), "lsn": data.draw(LSNS)} for k in keys]
            self.writer.delete(rows)
        elif form == "keys":
            rows = [self.variant.key_dict(k) for k in keys]
            self.writer.delete(keys)
        else:
            rows = [self.variant.key_dict(k) for k in keys]
            self.writer.delete(rows)
        for k, row in zip(keys, rows, strict=True):
            self.buffer(k, True, row)
        if then_commit:
            self.do_commit(named=False)

    @rule(
        data=st.data(),
        size=st.integers(0, 6),
        dialect=st.sampled_from([DEBEZIUM, ROW_KINDS]),
        then_commit=st.booleans(),
    )
    def apply_cdc(
        self, data: st.DataObject, size: int, dialect: tuple[str, ...], then_commit: bool
    ) -> None:
        events = []
        for _ in range(size):
            row = self.make_row(data, data.draw(self.variant.keys))
            row["op"] = data.draw(st.sampled_from(dialect))
            events.append(row)
        if events:
            self.writer.apply_cdc(events)
        for event in events:
            op = event.pop("op")
            if op == "-U":
                continue
            self.buffer(key_of(event, self.variant.primary_key), op in ("d", "-D"), event)
        if then_commit:
            self.do_commit(named=False)

    @rule()
    def flush(self) -> None:
        self.writer.flush()

    @rule(named=st.booleans())
    def commit(self, named: bool) -> None:
        self.do_commit(named)

    def do_commit(self, named: bool) -> None:
        i = next(self.counter)
        # an explicit commit id needs a named writer; an anonymous one may still send metadata
        commit_id = f"commit-{i}" if named and self.writer_id is not None else None
        metadata = {"i": i} if named else None
        before = self.table.current_snapshot()
        before_id = before.snapshot_id if before else 0
        snap = self.writer.commit(commit_id=commit_id, metadata=metadata)
        if self.buffered == 0 and not named:
            assert snap is None
            return
        assert snap is not None
        assert snap.snapshot_id == before_id + 1
        assert snap.parent_id == (before_id or None)
        for key, deleted, row, lsn in self.pending:
            self.apply(self.committed, key, deleted, row, lsn)
        self.pending = []
        self.buffered = 0
        self.history[snap.snapshot_id] = self.visible(self.committed)
        if self.writer_id is not None and commit_id is not None:
            self.last_named = (self.writer_id, commit_id, snap.snapshot_id)
            assert self.table.last_commit(self.writer_id) == lsm3.CommitRecord(
                self.writer_id, commit_id, snap.snapshot_id, metadata or {}
            )

    @rule()
    def abort(self) -> None:
        self.writer.abort()
        self.pending = []
        self.buffered = 0

    @precondition(lambda self: self.buffered == 0)
    @rule(writer_id=st.sampled_from([None, "alpha", "beta"]))
    def new_writer(self, writer_id: str | None) -> None:
        self.writer.close()
        self.writer = self.table.writer(writer_id)
        self.writer_id = writer_id

    @precondition(lambda self: self.buffered == 0)
    @rule()
    def reopen(self) -> None:
        self.writer.close()
        self.table = lsm3.open_table(self.uri, storage_options=self.options)
        self.writer = self.table.writer(self.writer_id)

    @precondition(lambda self: self.last_named is not None)
    @rule(data=st.data())
    def retry_last_named_commit(self, data: st.DataObject) -> None:
        """Replaying the newest named commit (same writer_id, commit_id) changes nothing."""
        assert self.last_named is not None
        writer_id, commit_id, snapshot_id = self.last_named
        if self.table.last_commit(writer_id).commit_id != commit_id:
            return
        n_snapshots = len(self.table.snapshots())
        w = self.table.writer(writer_id)
        w.upsert([self.make_row(data, data.draw(self.variant.keys))])
        snap = w.commit(commit_id=commit_id, metadata={"retry": True})
        w.close()
        assert snap is not None and snap.snapshot_id == snapshot_id
        assert len(self.table.snapshots()) == n_snapshots

    @rule(data=st.data())
    def read_old_snapshot(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.history)))
        self.check_snapshot(sid, lookups=True)

    @rule(section_rows=st.integers(1, 8), read_ahead=st.booleans())
    def read_in_small_sections(self, section_rows: int, read_ahead: bool) -> None:
        # read_ahead: how to_arrow reads a table of many sections (runs decoded in parallel,
        # the next section while this one merges); a stream reads section by section
        got = self.table._batches(
            None, None, None, None, section_rows, None, read_ahead=read_ahead
        ).read_all()
        assert rows_by_key(got, self.variant.primary_key) == self.visible(self.committed)

    @rule(
        data=st.data(),
        kind=st.sampled_from(["key", "value", "mixed", "value-null"]),
        section_rows=st.sampled_from([None, 2, 5]),
    )
    def read_with_filter_and_columns(
        self, data: st.DataObject, kind: str, section_rows: int | None
    ) -> None:
        """Key filters may run before the merge, others only after: both must match the model."""
        key0 = self.variant.primary_key[0]
        pivot = data.draw(self.variant.keys)
        pivot0 = pivot[0] if isinstance(pivot, tuple) else pivot
        value = data.draw(VALUES.filter(lambda x: x is not None))
        if kind == "key":
            expr = pc.field(key0) >= pivot0

            def keep(row: dict) -> bool:
                return bool(row[key0] >= pivot0)
        elif kind == "value":
            expr = pc.field("v") == value

            def keep(row: dict) -> bool:
                return bool(row["v"] == value)
        elif kind == "mixed":
            expr = (pc.field(key0) < pivot0) | (pc.field("v") == value)

            def keep(row: dict) -> bool:
                return bool(row[key0] < pivot0 or row["v"] == value)
        else:
            expr = pc.field("v").is_null() & (pc.field(key0) != pivot0)

            def keep(row: dict) -> bool:
                return row["v"] is None and row[key0] != pivot0

        names = self.variant.schema().names
        columns = data.draw(st.permutations(names).flatmap(lambda p: st.just(p[: len(p) - 1])))
        columns = columns or names[:1]
        if section_rows is None:
            got = self.table.to_arrow(columns=columns, filter=expr)
        else:
            got = self.table.to_batches(
                columns=columns, filter=expr, section_rows=section_rows
            ).read_all()
        assert got.schema.names == list(columns)
        expected = [
            tuple(row[c] for c in columns)
            for row in self.visible(self.committed).values()
            if keep(row)
        ]
        actual = [tuple(row[c] for c in columns) for row in got.to_pylist()]
        assert sorted(actual, key=repr) == sorted(expected, key=repr), (kind, str(expr))

    # ----------------------------------------------------------------- checks

    def check_snapshot(self, snapshot_id: int | None, lookups: bool) -> None:
        sid = snapshot_id if snapshot_id is not None else max(self.history)
        expected = self.history[sid]
        got = self.table.to_arrow(snapshot_id=snapshot_id)
        assert got.schema.names == self.variant.schema().names
        assert rows_by_key(got, self.variant.primary_key) == expected, f"snapshot {sid}"
        if lookups:
            keys = sorted(self.touched, key=repr)
            assert self.table.get_many(keys, snapshot_id=snapshot_id) == [
                expected.get(k) for k in keys
            ], f"get_many at snapshot {sid}"

    @invariant()
    def current_state_matches_model(self) -> None:
        assert self.table.refresh() is None or self.table.current_snapshot().snapshot_id == max(
            self.history
        )
        self.check_snapshot(None, lookups=False)
        if self.touched:
            key = sorted(self.touched, key=repr)[0]
            assert self.table.get(key) == self.visible(self.committed).get(key)

    def teardown(self) -> None:
        try:
            snaps = self.table.snapshots()
            assert [s.snapshot_id for s in snaps] == sorted(k for k in self.history if k)
            parents = [None, *[s.snapshot_id for s in snaps[:-1]]]
            assert [s.parent_id for s in snaps] == parents[: len(snaps)]
            fresh = lsm3.open_table(self.uri, storage_options=self.options)
            self.table = fresh
            for sid in sorted(self.history):
                self.check_snapshot(sid, lookups=True)
        finally:
            self.writer.close()
            if self.options is None:
                shutil.rmtree(self.uri, ignore_errors=True)


def run_machine(variant: Variant, new_location: Callable[[], Location], **kwargs: Any) -> None:
    machine = type(
        f"{variant.name.title()}Machine",
        (TableMachine,),
        {"variant": variant, "new_location": staticmethod(new_location)},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            **kwargs,
        ),
    )


@pytest.fixture
def local_locations() -> Any:
    root = tempfile.mkdtemp(prefix="lsm3-model-")
    yield lambda: (f"{root}/{uuid.uuid4().hex}", None)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("variant", [SIMPLE, COMPOSITE, BUCKETED, SEQUENCED], ids=lambda v: v.name)
def test_model_local(variant: Variant, local_locations: Callable[[], Location]) -> None:
    run_machine(variant, local_locations, max_examples=30, stateful_step_count=25)


@pytest.mark.parametrize("variant", [SIMPLE, BUCKETED], ids=lambda v: v.name)
def test_model_s3(variant: Variant, moto_server: LocalS3) -> None:
    bucket = f"model-{uuid.uuid4().hex[:12]}"
    moto_server.create_bucket(bucket)
    options = moto_server.storage_options()

    def new_location() -> Location:
        return f"s3://{bucket}/{uuid.uuid4().hex}", options

    run_machine(variant, new_location, max_examples=5, stateful_step_count=12)
