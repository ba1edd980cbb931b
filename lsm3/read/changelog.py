"""The changelog: every change of every commit, in commit order, with before-images.

Under the changelog producer ``none`` (the default: nothing extra is stored) the changes of
commit N are computed by comparing the table as read at N-1 and at N for the keys N's files
touch (:mod:`lsm3.read.changes`): ``+I`` for a new key, ``-U`` (old values) then ``+U`` (new
values) for a changed one, ``-D`` (old values) for a deleted one. Keys whose value did not
change (a ``first_row`` table ignoring a later row, an upsert of the same values) give no
rows. Compaction and schema commits change no value and give nothing. Applied in order as
plain upserts and deletes to the table as read at the start, the changes give the table as
read at the end, under every merge engine: they are changes of values, not the records
written.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import InvalidInput, SnapshotNotFound
from lsm3.format.schema import TableSchema
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
    for sid in range(start_snapshot_id + 1, last + 1):
        snap = table.log.try_load(sid)
        if snap is None:
            raise SnapshotNotFound(
                f"snapshot {sid} was expired; the changelog needs every snapshot from "
                f"{start_snapshot_id} on (register a consumer: table.consumer(id) holds them)"
            )
        if snap.kind != "APPEND":
            continue  # compaction and schema changes change no value
        rows = _net(changes(table, sid - 1, sid, include_update_before=True), schema)
        if not rows.num_rows:
            continue
        rows = rows.append_column(SNAPSHOT_ID, pa.repeat(sid, rows.num_rows).cast(pa.int64()))
        yield from rows.select(out.names).cast(out).to_batches()


def _net(rows: pa.Table, schema: TableSchema) -> pa.Table:
    """Drop the -U/+U pairs whose values are equal: nothing changed for that key."""
    kinds = rows.column(ROW_KIND)
    if not rows.num_rows or not pc.any(pc.equal(kinds, "-U")).as_py():
        return rows
    keys = list(schema.primary_key)
    names = schema.arrow.names
    before = rows.filter(pc.equal(kinds, "-U")).select(names)
    after = rows.filter(pc.equal(kinds, "+U")).select(names)
    pairs = after.join(before, keys, join_type="inner", right_suffix="__old")
    equal = pa.array([True] * pairs.num_rows, pa.bool_())
    for c in names:
        if c not in keys:
            equal = pc.and_(equal, _same(pairs.column(c), pairs.column(f"{c}__old")))
    unchanged = pairs.filter(equal).select(keys)
    if not unchanged.num_rows:
        return rows
    marker = "__lsm3_unchanged"
    flagged = rows.join(
        unchanged.append_column(marker, pa.repeat(True, unchanged.num_rows)),
        keys,
        join_type="left outer",
    )
    is_update = pc.is_in(flagged.column(ROW_KIND), pa.array(["-U", "+U"]))
    drop = pc.and_(pc.fill_null(flagged.column(marker), False), is_update)
    kept = flagged.filter(pc.invert(drop)).drop_columns([marker])
    # A join does not keep the order: key order again, each key's -U before its +U.
    rank = pc.if_else(pc.equal(kept.column(ROW_KIND), "-U"), 0, 1)
    sort_keys = [*((k, "ascending") for k in keys), ("__rank", "ascending")]
    kept = kept.append_column("__rank", rank)
    kept = kept.take(pc.sort_indices(kept, sort_keys=sort_keys)).drop_columns(["__rank"])
    return kept.select(rows.column_names)


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """Element-wise "equal or both null"."""
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    try:
        equal = pc.fill_null(pc.equal(a, b), False)
    except pa.ArrowNotImplementedError:  # nested types: compared as Python values
        equal = pa.array([x == y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)])
    return pc.or_(both_null, equal)
