"""The writer: buffer upserts, deletes and CDC; flush sorted runs (:mod:`lsm3.write.flush`);
commit them exactly once.

A commit uploads its runs first (each a fresh, never-reused object), then one delta manifest
and one snapshot. The runs carry local sequence numbers 0..n-1, one per flush of the commit
(a run holds each key once, so all its rows share its flush's number); the manifest entry adds the
``seq_offset`` the commit receives from its parent snapshot (``next_sequence``). On a conflict
only the manifest and snapshot are rewritten with the new offset: that is the rebase, and it
makes commit order decide between concurrent writers without re-uploading any data.

A commit that raised may still have landed (the snapshot put succeeded, the response was
lost). The writer then keeps that batch apart, under the identity of its attempt, until a
later ``commit()`` settles it: rows written after the failure form a separate, later commit,
so nothing is dropped and nothing is applied twice (see :meth:`Writer.commit`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import InvalidInput, SchemaMismatch
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import KIND_DELETE, KIND_UPSERT, TableSchema, conform, to_arrow_table
from lsm3.write.changelog import ChangelogRecorder, CommitChangelog
from lsm3.write.commit import commit_files
from lsm3.write.flush import upload_runs
from lsm3.write.memtable import Memtable
from lsm3.write.stall import apply_write_stall

if TYPE_CHECKING:
    from lsm3.table import Table

log = logging.getLogger("lsm3.write.writer")

UPSERT_OPS = ("c", "r", "u", "+I", "+U")
DELETE_OPS = ("d", "-D")
IGNORED_OPS = ("-U",)


@dataclass
class _FailedCommit:
    """A batch whose ``commit()`` raised: it may or may not have landed. It keeps the identity
    of its attempt until a later ``commit()`` settles it."""

    files: list[DataFile]
    seq_count: int
    asked_id: str | None  # the commit_id the caller passed (None: anonymous)
    commit_id: str  # the identity the attempt used
    since: int  # the newest snapshot id before the first attempt
    metadata: dict[str, Any] = field(default_factory=dict)
    changelog: CommitChangelog = field(default_factory=CommitChangelog)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


class Writer:
    """Buffers changes to one table and commits them; use as a context manager."""

    def __init__(
        self, table: Table, writer_id: str | None = None, *, first_sequence: int = 0
    ) -> None:
        """``first_sequence``: the local sequence number of this writer's first flush (0; a
        coordinator that commits the runs of many writers at once, see :meth:`stage`, gives
        each writer its own range)."""
        if writer_id is not None and (not isinstance(writer_id, str) or not writer_id):
            raise InvalidInput("writer_id must be a non-empty string or None")
        if not isinstance(first_sequence, int) or first_sequence < 0:
            raise InvalidInput("first_sequence must be a non-negative integer")
        self.table = table
        self.writer_id = writer_id
        self.schema: TableSchema = table.table_schema
        self._memtable = Memtable(self.schema, first_flush=first_sequence)
        self._pending: list[DataFile] = []
        self._closed = False
        self._failed: _FailedCommit | None = None
        # changelog_producer input / lookup: what the commit stores beside its runs
        self._changelog = ChangelogRecorder(self.schema, self.schema.option("memtable_bytes"))

    # ----------------------------------------------------------------- buffering

    def upsert(self, data: Any) -> None:
        """Insert or replace rows (every column; the newest version of a key wins)."""
        self._check_open()
        table = to_arrow_table(data, "upsert data")
        if table.num_rows == 0:
            return
        table = self._fill_omitted(table)
        rows = conform(table, self.schema, self.schema.arrow.names, "upsert data")
        self._changelog.log_input(rows, "+I")
        rows = self._normalise_counts(rows)
        self._check_sequence_field(rows)
        self._add(rows, _kinds(rows.num_rows, KIND_UPSERT))

    def delete(self, keys: Any) -> None:
        """Delete by key: rows carrying at least the primary-key columns, or a list of keys."""
        self._check_open()
        table = self._key_table(keys)
        if table.num_rows == 0:
            return
        seq_field = self.schema.sequence_field
        keep = list(self.schema.primary_key)
        missing = [k for k in keep if k not in table.column_names]
        if missing:
            raise SchemaMismatch(
                f"delete keys lack primary key column(s) {missing}; each row must carry {keep}"
            )
        if seq_field:
            if seq_field not in table.column_names:
                raise SchemaMismatch(
                    f"deletes must carry the sequence field {seq_field!r} so they are ordered "
                    "against upserts of the same key"
                )
            keep.append(seq_field)
        table = table.select(keep)
        keys_only = conform(table, self.schema, keep, "delete keys")
        self._check_sequence_field(keys_only)
        deletes = self._fill_values(keys_only)
        self._changelog.log_input(deletes, "-D")
        self._add(deletes, _kinds(keys_only.num_rows, KIND_DELETE))

    def apply_cdc(self, data: Any, op_column: str = "op") -> None:
        """Apply change events: Debezium ops ``c r u d`` or row kinds ``+I -U +U -D``.

        ``c r u +I +U`` upsert, ``d -D`` delete, ``-U`` (an update's before-image) is skipped.
        Delete rows need only the key columns to be non-null.
        """
        self._check_open()
        table = to_arrow_table(data, "CDC data")
        if table.num_rows == 0:
            return
        if op_column not in table.column_names:
            raise SchemaMismatch(f"CDC data has no op column {op_column!r}; pass op_column=")
        ops = table.column(op_column)
        if not (pa.types.is_string(ops.type) or pa.types.is_large_string(ops.type)):
            ops = pc.cast(ops, pa.string())
        known = pa.array([*UPSERT_OPS, *DELETE_OPS, *IGNORED_OPS])
        valid = pc.is_in(ops, value_set=known)
        if ops.null_count or not pc.all(valid).as_py():
            bad = pc.unique(pc.filter(ops, pc.invert(pc.fill_null(valid, False)))).to_pylist()
            raise InvalidInput(
                f"unknown CDC op(s) {bad[:5]} in column {op_column!r}; expected one of "
                f"{[*UPSERT_OPS, *DELETE_OPS, *IGNORED_OPS]}"
            )
        table = table.drop_columns([op_column])
        if self._changelog.records_input:  # every record, before-images (-U) included
            names = self.schema.arrow.names
            got = conform(self._fill_omitted(table), self.schema, names, "CDC", check_nulls=False)
            self._check_cdc_nulls(got, pc.is_in(ops, value_set=pa.array(DELETE_OPS)))
            self._changelog.log_input(got, ops)
        keep = pc.invert(pc.is_in(ops, value_set=pa.array(IGNORED_OPS)))
        if not pc.all(keep).as_py():
            table = table.filter(keep)
            ops = pc.filter(ops, keep)
        if table.num_rows == 0:
            return
        table = self._fill_omitted(table)
        rows = conform(table, self.schema, self.schema.arrow.names, "CDC data", check_nulls=False)
        rows = self._normalise_counts(rows)
        is_delete = pc.is_in(ops, value_set=pa.array(DELETE_OPS))
        self._check_cdc_nulls(rows, is_delete)
        self._check_sequence_field(rows)
        rows = self._clear_delete_values(rows, is_delete)
        kinds = pc.cast(is_delete, pa.int8())
        self._add(rows, kinds.combine_chunks() if isinstance(kinds, pa.ChunkedArray) else kinds)

    def _clear_delete_values(self, rows: pa.Table, is_delete: Any) -> pa.Table:
        """Delete rows keep their key (and sequence field) only: docs/FORMAT.md section 3,
        rule 5. A CDC delete often carries the row's last values (Debezium's before-image);
        no fold takes them, and stored they would only cost bytes."""
        if not pc.any(is_delete).as_py():
            return rows
        kept = {*self.schema.primary_key, self.schema.sequence_field}
        for i, column_field in enumerate(rows.schema):
            column = rows.column(i)
            if column_field.name in kept or column.null_count == len(column):
                continue
            cleared = pc.if_else(is_delete, pa.scalar(None, column_field.type), column)
            rows = rows.set_column(i, column_field.with_nullable(True), cleared)
        return rows

    def _fill_omitted(self, table: pa.Table) -> pa.Table:
        """partial_update and aggregation: value columns an upsert leaves out are null
        ("not given"), so a record may carry just the key and the columns it sets."""
        if self.schema.engine.name not in ("partial_update", "aggregation"):
            return table
        keys = set(self.schema.primary_key) | {self.schema.sequence_field}
        for f in self.schema.arrow:
            if f.name not in table.column_names and f.name not in keys and f.nullable:
                table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
        return table

    def _normalise_counts(self, rows: pa.Table) -> pa.Table:
        """aggregation ``count`` columns store 1 per non-null value (and null for null), so
        every stored row, a record or a partial fold, holds a count and folds by summing."""
        for name, function in self.schema.engine.functions.items():
            if function != "count":
                continue
            col = rows.column(name)
            one = pa.scalar(1, col.type)
            counted = pc.if_else(pc.is_valid(col), one, pa.scalar(None, col.type))
            rows = rows.set_column(rows.schema.get_field_index(name), rows.field(name), counted)
        return rows

    def _check_cdc_nulls(self, rows: pa.Table, is_delete: Any) -> None:
        for f in self.schema.arrow:
            col = rows.column(f.name)
            if not col.null_count:
                continue
            if f.name in self.schema.primary_key:
                raise SchemaMismatch(
                    f"CDC data: primary key column {f.name!r} has {col.null_count} null value(s)"
                )
            if not f.nullable:
                bad = pc.sum(pc.and_(pc.is_null(col), pc.invert(is_delete))).as_py() or 0
                if bad:
                    raise SchemaMismatch(
                        f"CDC data: non-nullable column {f.name!r} is null in {bad} upsert row(s)"
                    )

    def _check_sequence_field(self, rows: pa.Table) -> None:
        seq_field = self.schema.sequence_field
        if seq_field and rows.column(seq_field).null_count:
            raise SchemaMismatch(
                f"sequence field {seq_field!r} is null in {rows.column(seq_field).null_count} "
                "row(s); every change must carry it"
            )

    def _key_table(self, keys: Any) -> pa.Table:
        if isinstance(keys, list) and keys and not isinstance(keys[0], Mapping):
            names = list(self.schema.primary_key)
            values = [k if isinstance(k, tuple) else (k,) for k in keys]
            if any(len(v) != len(names) for v in values):
                raise InvalidInput(f"each key must have one value per key column {names}")
            columns = {}
            for i, name in enumerate(names):
                key_type = self.schema.arrow.field(name).type
                try:
                    columns[name] = pa.array([v[i] for v in values], type=key_type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                    raise SchemaMismatch(
                        f"delete keys: values for key column {name!r} do not fit its type "
                        f"{key_type} ({exc})"
                    ) from None
            return pa.table(columns)
        return to_arrow_table(keys, "delete keys")

    def _fill_values(self, keys: pa.Table) -> pa.Table:
        n = keys.num_rows
        cols = [
            keys.column(f.name) if f.name in keys.column_names else pa.nulls(n, f.type)
            for f in self.schema.arrow
        ]
        return pa.Table.from_arrays(
            cols, schema=pa.schema([f.with_nullable(True) for f in self.schema.arrow])
        )

    def _add(self, rows: pa.Table, kinds: pa.Array) -> None:
        self._memtable.add(rows, kinds)
        buffered = self._memtable.nbytes + self._changelog.input_bytes
        if buffered >= self.schema.option("memtable_bytes"):
            self.flush()

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput("this writer is closed; open a new one with table.writer()")

    # ----------------------------------------------------------------- flush & commit

    @property
    def pending_rows(self) -> int:
        """Records written and not yet known to be committed (a failed commit's included)."""
        failed = self._failed.rows if self._failed else 0
        return self._memtable.rows + sum(f.rows for f in self._pending) + failed

    @property
    def unresolved_commit(self) -> str | None:
        """The identity of a commit that raised and is not settled yet (see :meth:`commit`)."""
        return self._failed.commit_id if self._failed else None

    def flush(self, last: bool = False) -> list[DataFile]:
        """Sort buffered records and upload them as runs (not yet visible: see commit).

        ``last`` (``commit``): nothing is written after this flush before the commit, so
        under ``lookup`` a flush that holds all of the commit's runs computes and stores
        their changes on the current snapshot while the runs encode and upload."""
        buffered = self._memtable.drain()
        if buffered is None:
            self._changelog.flush_input(self.table)  # a CDC batch of before-images only
            return []
        files, written, changes = upload_runs(
            self.table, self.schema, self._memtable, buffered, self._changelog, last
        )
        self._pending.extend(files)
        self._changelog.add_runs(files, written)
        if changes is not None:
            self._changelog.computed_ahead(*changes)
        self._memtable.flushes += 1
        return files

    def stage(self) -> tuple[list[DataFile], int]:
        """Flush, then hand over the runs uploaded since the last commit instead of committing
        them: (files, sequence count), the count being one past the highest local sequence
        number they use. For a coordinator that commits the runs of many writers in one
        commit (``commit_files(..., added=all files, seq_count=max count)``); this writer
        then holds nothing, and its runs are orphans until that commit lands."""
        self._check_open()
        if self._failed is not None:
            raise InvalidInput("a failed commit is pending: commit() or abort() first")
        self.flush()
        files, count = self._pending, self._memtable.flushes
        self._pending = []
        self._changelog.take()  # the coordinator's commit stores none: readers compute it
        self._memtable.end_commit()
        return files, count

    def commit(
        self, commit_id: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Snapshot | None:
        """Make everything written so far visible atomically; returns the new snapshot.

        With nothing buffered and neither ``commit_id`` nor ``metadata`` given, nothing is
        committed and None is returned. ``commit_id`` (default: a fresh UUID) identifies the
        commit: committing the same (writer_id, commit_id) twice applies it once.

        **After a failed commit.** A ``commit()`` that raised may still have landed (the
        store took the snapshot but the response was lost). The writer keeps that batch, with
        the identity of the failed attempt, apart from rows written afterwards, and the next
        ``commit()`` first settles it: it finds the attempt in the table or commits it now,
        exactly once. Then the rows written since the failure are committed as a separate,
        later commit. So after a failure you may:

        * call ``commit()`` again (same ``commit_id``, or none for an anonymous writer) with
          nothing new written: the failed batch is applied exactly once, and its snapshot
          returned;
        * keep writing and call ``commit()`` / ``commit(new_id)``: both batches land, each
          once, in order; the newest snapshot is returned;
        * call :meth:`abort` to drop both (a batch that had in fact landed stays committed).

        Reusing the failed ``commit_id`` for rows written after the failure is refused
        (InvalidInput): that id already names the earlier batch. If the table can no longer
        tell whether an anonymous writer's attempt landed (the snapshots that could were
        expired), ``commit()`` raises CommitUncertain and changes nothing.
        """
        self._check_open()
        if commit_id is not None and (not isinstance(commit_id, str) or not commit_id):
            raise InvalidInput("commit_id must be a non-empty string")
        if commit_id is not None and self.writer_id is None:
            raise InvalidInput(
                "an explicit commit_id needs a named writer: open it with "
                "table.writer(writer_id=...) so the commit is applied exactly once"
            )
        meta = dict(metadata or {})
        _check_json(meta)
        failed = self._failed
        retry = failed is not None and failed.asked_id == commit_id
        if retry and commit_id is not None and self._has_new_rows():
            raise InvalidInput(
                f"commit id {commit_id!r} names the batch whose commit failed; the rows written "
                "since need a commit id of their own: call commit() with a new commit_id "
                "(the failed batch is settled first, then these rows commit after it), or "
                "abort() to drop both"
            )
        self.flush(last=failed is None)
        settled = self._settle_failed() if failed is not None else None
        if retry and not self._pending:
            return settled
        nothing = not self._pending and not self._changelog.pending
        if nothing and commit_id is None and metadata is None:
            return settled
        apply_write_stall(self.table, self.schema, self._pending)
        base = self.table.current_snapshot()
        attempt = _FailedCommit(
            files=self._pending,
            seq_count=self._memtable.flushes,
            asked_id=commit_id,
            commit_id=commit_id or uuid.uuid4().hex,
            since=base.snapshot_id if base else 0,
            metadata=meta,
            changelog=self._changelog.take(),
        )
        self._pending = []
        self._memtable.end_commit()
        try:
            return self._commit_batch(attempt, retried=False)
        except BaseException:
            self._failed = attempt
            raise

    def _has_new_rows(self) -> bool:
        return bool(self._pending) or self._memtable.rows > 0

    def _settle_failed(self) -> Snapshot:
        """Find the failed attempt in the table or commit it now (exactly once)."""
        assert self._failed is not None
        snapshot = self._commit_batch(self._failed, retried=True)
        self._failed = None
        return snapshot

    def _commit_batch(self, batch: _FailedCommit, retried: bool) -> Snapshot:
        def changelog(base: Snapshot | None) -> list[DataFile]:
            return batch.changelog.for_parent(self.table, self.schema, base)

        snapshot = commit_files(
            self.table,
            added=batch.files,
            removed=[],
            seq_count=batch.seq_count,
            kind="APPEND",
            writer_id=self.writer_id,
            commit_id=batch.commit_id,
            metadata=batch.metadata,
            since=batch.since if retried else None,
            changelog=changelog if self._changelog.stores else None,
        )
        batch.changelog.committed(self.table, self.schema, snapshot, batch.seq_count)
        log.info(
            "committed snapshot %d to %s: %d run(s), %d bytes",
            snapshot.snapshot_id,
            self.table.uri,
            len(batch.files),
            sum(f.size for f in batch.files),
        )
        return snapshot

    def abort(self) -> None:
        """Drop everything not yet committed, a failed commit's batch included (uploaded runs
        become orphans for cleanup; a failed commit that had in fact landed stays committed)."""
        self._memtable.drain()
        self._memtable.end_commit()
        self._pending = []
        self._failed = None
        self._changelog.clear()

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
        finally:
            self.close()


def _kinds(n: int, kind: int) -> pa.Array:
    return pa.nulls(n, pa.int8()).fill_null(kind) if n else pa.array([], pa.int8())


def _check_json(meta: dict[str, Any]) -> None:
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"commit metadata must be JSON-serialisable: {exc}") from None
