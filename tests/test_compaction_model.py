"""Model-based test of compaction: random upserts, deletes, CDC batches, commits, compactions
with every policy (triggers small enough to fire), commits landing in the middle of a
compaction, reopens and time-travel reads, compared with a dict model at every snapshot."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
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

import compactor
import lsm3
from compactor.maintenance import expire_snapshots, remove_orphan_files

VALUES = st.sampled_from([None, "", "x", "y", "zz"])
NUMBERS = st.none() | st.integers(-3, 3)
LSNS = st.integers(0, 6)
POLICIES = ("universal", "leveled", "full")

#: small triggers so every policy fires on a few commits
COMPACTION_OPTIONS: dict[str, dict[str, Any]] = {
    "universal": {"num_sorted_run_trigger": 2, "max_size_amplification_percent": 300},
    "leveled": {"l0_file_trigger": 2, "level_base_bytes": 3000, "level_size_ratio": 2},
    "full": {},
}


@dataclass
class Variant:
    name: str
    key_columns: list[tuple[str, pa.DataType]]
    keys: st.SearchStrategy[Any]
    buckets: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    sequence_field: bool = False

    @property
    def primary_key(self) -> list[str]:
        return [name for name, _ in self.key_columns]

    def schema(self) -> pa.Schema:
        last = ("lsn", pa.int64()) if self.sequence_field else ("n", pa.int32())
        return pa.schema([*self.key_columns, ("v", pa.string()), last])

    def key_dict(self, key: Any) -> dict[str, Any]:
        values = key if isinstance(key, tuple) else (key,)
        return dict(zip(self.primary_key, values, strict=True))


BASE_OPTIONS = {"row_group_rows": 3, "num_levels": 4}

SIMPLE = Variant(
    "simple",
    [("id", pa.int64())],
    st.integers(-3, 20),
    options={**BASE_OPTIONS, "memtable_bytes": 1024},
)
BUCKETED = Variant(
    "bucketed",
    [("id", pa.int64())],
    st.integers(0, 25),
    buckets=2,
    options={**BASE_OPTIONS, "target_file_bytes": 1},
)
COMPOSITE = Variant(
    "composite",
    [("tenant", pa.int32()), ("name", pa.string())],
    st.tuples(st.integers(0, 3), st.sampled_from(["", "a", "b", "é", "a\x00b", "B"])),
    options=dict(BASE_OPTIONS),
)
SEQUENCED = Variant(
    "sequenced",
    [("id", pa.int64())],
    st.integers(0, 10),
    options={**BASE_OPTIONS, "sequence_field": "lsn"},
    sequence_field=True,
)


class CompactionMachine(RuleBasedStateMachine):
    """Subclassed per variant; ``root`` is a temporary directory for its tables."""

    variant: Variant
    root: str

    def __init__(self) -> None:
        super().__init__()
        v = self.variant
        self.uri = f"{self.root}/{uuid.uuid4().hex}"
        self.table = lsm3.create_table(
            self.uri,
            v.schema(),
            primary_key=v.primary_key,
            buckets=v.buckets,
            options=v.options,
        )
        self.writer = self.table.writer()
        # key -> (lsn or None, deleted, row); pending changes apply at commit
        self.committed: dict[Any, tuple[int | None, bool, dict]] = {}
        self.pending: list[tuple[Any, bool, dict]] = []
        self.history: dict[int, dict[Any, dict]] = {0: {}}
        self.touched: set[Any] = set()
        self.compactions = 0

    # ----------------------------------------------------------------- model

    def visible(self) -> dict[Any, dict]:
        return {k: r for k, (_, deleted, r) in self.committed.items() if not deleted}

    def make_row(self, data: st.DataObject, key: Any) -> dict[str, Any]:
        row = self.variant.key_dict(key)
        row["v"] = data.draw(VALUES)
        if self.variant.sequence_field:
            row["lsn"] = data.draw(LSNS)
        else:
            row["n"] = data.draw(NUMBERS)
        return row

    def apply_pending(self) -> None:
        for key, deleted, row in self.pending:
            lsn = row.get("lsn")
            current = self.committed.get(key)
            if lsn is not None and current is not None and lsn < current[0]:
                continue  # an older change arriving later never wins
            self.committed[key] = (lsn, deleted, row)
        self.pending = []

    def record_new_snapshots(self) -> None:
        """Every snapshot after the last recorded one holds the current committed state
        (compactions and lease commits change no data)."""
        latest = self.table.refresh()
        if latest is None:
            return
        state = self.visible()
        for sid in range(max(self.history) + 1, latest.snapshot_id + 1):
            self.history[sid] = state

    # ----------------------------------------------------------------- rules

    @rule(data=st.data(), size=st.integers(1, 6), then_commit=st.booleans())
    def upsert(self, data: st.DataObject, size: int, then_commit: bool) -> None:
        rows = [self.make_row(data, data.draw(self.variant.keys)) for _ in range(size)]
        self.writer.upsert(rows)
        for row in rows:
            key = key_of(row, self.variant.primary_key)
            self.touched.add(key)
            self.pending.append((key, False, row))
        if then_commit:
            self.commit()

    @rule(data=st.data(), size=st.integers(1, 4), then_commit=st.booleans())
    def delete(self, data: st.DataObject, size: int, then_commit: bool) -> None:
        keys = [data.draw(self.variant.keys) for _ in range(size)]
        rows = [self.variant.key_dict(k) for k in keys]
        if self.variant.sequence_field:
            rows = [{**r, "lsn": data.draw(LSNS)} for r in rows]
            self.writer.delete(rows)
        else:
            self.writer.delete(keys)
        for k, row in zip(keys, rows, strict=True):
            self.touched.add(k)
            self.pending.append((k, True, row))
        if then_commit:
            self.commit()

    @rule(
        data=st.data(),
        size=st.integers(1, 6),
        dialect=st.sampled_from([("c", "r", "u", "d"), ("+I", "-U", "+U", "-D")]),
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
        self.writer.apply_cdc(events)
        for event in events:
            op = event.pop("op")
            if op == "-U":
                continue
            key = key_of(event, self.variant.primary_key)
            self.touched.add(key)
            self.pending.append((key, op in ("d", "-D"), event))
        if then_commit:
            self.commit()

    @rule()
    def commit(self) -> None:
        before = self.table.current_snapshot()
        snap = self.writer.commit()
        if not self.pending:
            assert snap is None
            return
        assert snap is not None
        assert snap.snapshot_id == (before.snapshot_id if before else 0) + 1
        self.record_new_snapshots()  # nothing new but ours
        self.apply_pending()
        self.history[snap.snapshot_id] = self.visible()

    @rule(policy=st.sampled_from(POLICIES))
    def compact(self, policy: str) -> None:
        self.record_new_snapshots()
        result = compactor.compact(
            self.table, policy=policy, options=COMPACTION_OPTIONS[policy], owner="model"
        )
        assert not result.abandoned and result.stopped_by is None
        self.compactions += bool(result.tasks)
        self.record_new_snapshots()
        self.check_file_structure(policy, result)

    @precondition(lambda self: self.pending)
    @rule(policy=st.sampled_from(POLICIES))
    def commit_during_compaction(self, policy: str) -> None:
        """The writer's pending commit lands after the first task of a compaction: the
        remaining tasks, planned before it, commit on top of it."""
        self.record_new_snapshots()
        committed: list[int] = []

        def on_task(_: Any) -> None:
            if not committed:
                snap = self.writer.commit()
                assert snap is not None
                committed.append(snap.snapshot_id)
                # snapshots up to the writer's hold the old state, the writer's the new one
                for sid in range(max(self.history) + 1, snap.snapshot_id):
                    self.history[sid] = self.visible()
                self.apply_pending()
                self.history[snap.snapshot_id] = self.visible()

        result = compactor.compact(
            self.table,
            policy=policy,
            options=COMPACTION_OPTIONS[policy],
            owner="model",
            on_task=on_task,
        )
        assert not result.abandoned and result.stopped_by is None
        if not committed:  # nothing to compact: commit normally
            self.commit()
        self.record_new_snapshots()

    @rule(data=st.data())
    def read_old_snapshot(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.history)))
        self.check_snapshot(sid, lookups=True)

    @precondition(lambda self: not self.pending)
    @rule(retain=st.integers(1, 4))
    def expire_and_remove_orphans(self, retain: int) -> None:
        """Maintenance between commits: every retained snapshot must still read as before."""
        result = expire_snapshots(self.table, retain_last=retain, older_than=0)
        remove_orphan_files(self.table, older_than=0)
        for sid in [*result.expired, *result.detached]:
            self.history.pop(sid, None)
        for sid in sorted(self.history):
            self.check_snapshot(sid, lookups=False)

    @precondition(lambda self: not self.pending)
    @rule()
    def reopen(self) -> None:
        self.writer.close()
        self.table = lsm3.open_table(self.uri)
        self.writer = self.table.writer()

    # ----------------------------------------------------------------- checks

    def check_file_structure(self, policy: str, result: compactor.CompactionResult) -> None:
        files = self.table.files()
        by_level: dict[tuple, list] = {}
        for f in files:
            if f.level >= 1:
                by_level.setdefault((f.partition, f.bucket, f.level), []).append(f)
        for key, group in by_level.items():
            group.sort(key=lambda f: f.min_key)
            for a, b in itertools.pairwise(group):
                assert a.max_key < b.min_key, f"level files of {key} overlap"
        assert all(t.output_level >= 1 for t in result.tasks)
        if policy == "full" and not self.variant.sequence_field:
            assert sum(f.deletes for f in files) == 0
            assert {f.level for f in files} <= {3}
        if self.variant.sequence_field:
            assert not any(t.dropped_tombstones for t in result.tasks)

    def check_snapshot(self, sid: int, lookups: bool) -> None:
        expected = self.history[sid]
        got = self.table.to_arrow(snapshot_id=sid)
        assert rows_by_key(got, self.variant.primary_key) == expected, f"snapshot {sid}"
        if lookups and self.touched:
            keys = sorted(self.touched, key=repr)
            got_rows = self.table.get_many(keys, snapshot_id=sid)
            assert got_rows == [expected.get(k) for k in keys], f"get_many at {sid}"

    @invariant()
    def latest_matches_model(self) -> None:
        latest = self.table.current_snapshot()
        assert (latest.snapshot_id if latest else 0) == max(self.history)
        got = self.table.to_arrow()
        assert rows_by_key(got, self.variant.primary_key) == self.visible()

    def teardown(self) -> None:
        try:
            fresh = lsm3.open_table(self.uri)
            ids = [s.snapshot_id for s in fresh.snapshots()]
            assert ids == sorted(k for k in self.history if k)
            self.table = fresh
            for sid in sorted(self.history):
                self.check_snapshot(sid, lookups=sid == max(self.history))
        finally:
            self.writer.close()
            shutil.rmtree(self.uri, ignore_errors=True)


@pytest.fixture
def root() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="lsm3-compaction-model-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(variant: Variant, root: str, max_examples: int, steps: int) -> None:
    machine: type[RuleBasedStateMachine] = type(
        f"{variant.name.title()}CompactionMachine",
        (CompactionMachine,),
        {"variant": variant, "root": root},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


@pytest.mark.parametrize(
    ("variant", "max_examples"),
    [(SIMPLE, 25), (BUCKETED, 15), (COMPOSITE, 15), (SEQUENCED, 10)],
    ids=lambda v: v.name if isinstance(v, Variant) else str(v),
)
def test_compaction_model(variant: Variant, max_examples: int, root: str) -> None:
    run(variant, root, max_examples=max_examples, steps=25)
