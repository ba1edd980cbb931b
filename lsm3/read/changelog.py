"""The changelog: every change of every commit, in commit order, with before-images.

Where the changes come from is the table option ``changelog_producer`` (docs/FORMAT.md,
section 16):

* ``none`` (default: nothing extra is stored): the changes of APPEND commit N are computed by
  comparing the table as read at N-1 and at N for the keys N's files touch
  (:mod:`lsm3.read.changes`): ``+I`` for a new key, ``-U`` (old values) then ``+U`` (new
  values) for a changed one, ``-D`` (old values) for a deleted one; keys whose value did not
  change give nothing.
* ``input``: the records each APPEND commit's writer received, as it stored them beside its
  runs (an upsert is ``+I`` whether or not its key existed; complete only if the source sends
  complete CDC).
* ``lookup``: the complete changes each APPEND commit's writer computed at commit time
  against its parent, stored beside its runs (as ``none`` computes them, one net change per
  key per commit).
* ``full_compaction``: the complete changes stored by full compactions (COMPACT commits);
  writer commits contribute nothing until the next full compaction of their bucket.

Compaction and schema commits contribute nothing except under ``full_compaction``. A commit
that should have stored changes but did not (runs committed by a coordinator through
``Writer.stage``) falls back to the computed changes of ``none``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from lsm3.errors import InvalidInput, SnapshotNotFound
from lsm3.format.evolution import projection
from lsm3.format.metadata import Snapshot
from lsm3.format.schema import TableSchema
from lsm3.read.changelog_file import read_changelog
from lsm3.read.changes import ROW_KIND, changes

if TYPE_CHECKING:
    from lsm3.table import Table

SNAPSHOT_ID = "_snapshot_id"


def changelog_schema(schema: TableSchema, columns: Sequence[str] | None) -> pa.Schema:
    names = list(columns) if columns is not None else schema.arrow.names
    unknown = [c for c in names if c not in schema.arrow.names]
    if unknown:
        raise InvalidInput(f"unknown columns {unknown}; the table has {schema.arrow.names}")
    for reserved in (ROW_KIND, SNAPSHOT_ID):
        if reserved in schema.arrow.names:
            raise InvalidInput(f"the table has a column named {reserved!r}; changelog needs it")
    fields = [schema.arrow.field(n).with_nullable(True) for n in names]
    return pa.schema([*fields, pa.field(ROW_KIND, pa.string()), pa.field(SNAPSHOT_ID, pa.int64())])


def changelog_table(
    table: Table,
    start_snapshot_id: int,
    end_snapshot_id: int | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """:func:`changelog_batches` as one table, with the schema of the end snapshot (the same
    one the batches are cast to, also when the schema changed since)."""
    end = table.refresh() if end_snapshot_id is None else table.snapshot(end_snapshot_id)
    out = changelog_schema(table.schema_at(end.schema_id if end else 0), columns)
    end_id = end.snapshot_id if end is not None else 0
    batches = list(changelog_batches(table, start_snapshot_id, end_id, columns))
    return pa.Table.from_batches(batches, schema=out)


def changelog_batches(
    table: Table,
    start_snapshot_id: int,
    end_snapshot_id: int | None = None,
    columns: Sequence[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The changes of the commits in (start, end], one commit at a time (see the module
    docstring); every snapshot from ``start`` to ``end`` must still exist."""
    if not isinstance(start_snapshot_id, int) or start_snapshot_id < 0:
        raise InvalidInput(
            f"start_snapshot_id must be a snapshot id >= 0, got {start_snapshot_id!r}"
        )
    end = table.refresh() if end_snapshot_id is None else table.snapshot(end_snapshot_id)
    last = end.snapshot_id if end is not None else 0
    if start_snapshot_id > last:
        raise InvalidInput(f"start_snapshot_id {start_snapshot_id} is after snapshot {last}")
    schema = table.schema_at(end.schema_id if end else 0)
    out = changelog_schema(schema, columns)
    producer = schema.option("changelog_producer")
    for sid in range(start_snapshot_id + 1, last + 1):
        snap = table.log.try_load(sid)
        if snap is None:
            raise SnapshotNotFound(
                f"snapshot {sid} was expired; the changelog needs every snapshot from "
                f"{start_snapshot_id} on (register a consumer: table.consumer(id) holds them)"
            )
        rows = commit_changes(table, snap, schema, out.names[:-2], producer)
        if rows is None or not rows.num_rows:
            continue
        rows = rows.append_column(SNAPSHOT_ID, pa.repeat(sid, rows.num_rows).cast(pa.int64()))
        yield from rows.select(out.names).cast(out).to_batches()


def commit_changes(
    table: Table, snap: Snapshot, schema: TableSchema, columns: Sequence[str], producer: str
) -> pa.Table | None:
    """The changes of one commit (``columns`` and ``_row_kind``), or None: see the module
    docstring."""
    # Which commits' stored changes count follows from the producer alone (FORMAT.md section
    # 16): a manifest that another writer put elsewhere is ignored, not trusted.
    stored = (snap.kind == "APPEND" and producer in ("input", "lookup")) or (
        snap.kind == "COMPACT" and producer == "full_compaction"
    )
    if stored and snap.changelog_manifest is not None:
        files = [e.file for e in table.manifests.entries(snap.changelog_manifest, schema)]
        pieces = [read_changelog(table.store, f, schema, columns) for f in files]
        return pa.concat_tables(pieces) if pieces else None
    if snap.kind != "APPEND" or producer == "full_compaction":
        return None  # compaction and schema changes change no value
    if producer != "none" and snap.delta_manifest is None:
        return None
    sid = snap.snapshot_id
    rows = changes(table, sid - 1, sid, include_update_before=True, drop_unchanged=True)
    # Computed with the commit's schema: map it onto the reader's by field id.
    proj = projection(table.schema_at(snap.schema_id), schema, list(columns))
    values = proj.apply(rows.select(list(proj.sources)))
    return values.append_column(ROW_KIND, rows.column(ROW_KIND))
