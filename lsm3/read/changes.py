"""Incremental reads: the net change per key between two snapshots.

The keys touched between snapshots A and B are the keys of the files added by the APPEND
snapshots in (A, B] (each snapshot names its delta manifest). For those keys the table is read
at A (a batched lookup of exactly those keys) and at B (the values at A with the added files
folded on top, as a reader merges them), and the two are compared: present only at B is an
insert (``+I``), present at both an update (``+U``, preceded by ``-U`` with the old values on
request), present only at A a delete (``-D``, with the old values). Comparing reads, rather
than replaying records, makes the result exact under every ordering rule (sequence fields
included) and unaffected by compaction: COMPACT snapshots add no new keys, so they
contribute nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import InvalidInput, SnapshotNotFound
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import KIND_COLUMN, KIND_RESET, KIND_UPSERT, SEQ_COLUMN, TableSchema
from lsm3.read.batch_lookup import current_values, merged_versions, touched_versions
from lsm3.read.diff import ROW_KIND, compare
from lsm3.read.merge import drop_deleted, merge_runs
from lsm3.read.runfile import OpenRun

if TYPE_CHECKING:
    from lsm3.table import Table


def added_files(table: Table, first: int, last: int) -> list[DataFile]:
    """Files added by APPEND snapshots with ids in [first, last]."""
    out: list[DataFile] = []
    for snapshot_id in range(first, last + 1):
        try:
            snap = table.log.load(snapshot_id)
        except SnapshotNotFound:
            raise SnapshotNotFound(
                f"snapshot {snapshot_id} was expired; changes() needs every snapshot between "
                "the two it compares (consume more often, or retain more snapshots)"
            ) from None
        if snap.kind != "APPEND" or not snap.delta_manifest:
            continue
        schema = table.schema_at(snap.schema_id)
        out.extend(e.file for e in table.manifests.delta_entries(snap, schema) if e.op == "add")
    return out


def fold_onto(before: pa.Table, added: Sequence[pa.Table], schema: TableSchema) -> pa.Table:
    """The rows of ``before`` (whole values, older than everything in ``added``) with the
    versions of ``added`` merged on top, as a reader would."""
    base_kind = KIND_UPSERT if schema.engine.is_deduplicate else KIND_RESET
    n = before.num_rows
    base = before.append_column(SEQ_COLUMN, pa.repeat(-1, n).cast(pa.int64()))
    base = base.append_column(KIND_COLUMN, pa.repeat(base_kind, n).cast(pa.int8()))
    base = base.select(added[0].schema.names).cast(added[0].schema)
    return merge_runs([base, *added], schema, drop_deletes=True, columns=schema.arrow.names)


def changes(
    table: Table,
    from_snapshot_id: int,
    to_snapshot_id: int | None = None,
    include_update_before: bool = False,
    drop_unchanged: bool = False,
) -> pa.Table:
    """See ``Table.changes``; ``drop_unchanged``: no rows for keys whose values are equal."""
    to_snap = table.snapshot(to_snapshot_id) if to_snapshot_id is not None else table.refresh()
    last = to_snap.snapshot_id if to_snap else 0
    if not isinstance(from_snapshot_id, int) or from_snapshot_id < 0:
        raise InvalidInput(f"from_snapshot_id must be a snapshot id >= 0, got {from_snapshot_id!r}")
    if from_snapshot_id > last:
        raise InvalidInput(f"from_snapshot_id {from_snapshot_id} is after snapshot {last}")
    from_snap = table.snapshot(from_snapshot_id)
    schema = table.schema_at(to_snap.schema_id if to_snap else 0)
    if ROW_KIND in schema.arrow.names:
        raise InvalidInput(f"the table has a column named {ROW_KIND!r}; changes() needs that name")
    out_schema = pa.schema(
        [*(f.with_nullable(True) for f in schema.arrow), pa.field(ROW_KIND, pa.string())]
    )
    files = added_files(table, from_snapshot_id + 1, last)
    if not files:
        return out_schema.empty_table()
    # The table at B for the touched keys is the table at A for them (one read) with the
    # added files folded on top: everything they hold is newer than A, and compaction
    # between A and B changes no value. So the added files are read once, whole.
    file_columns = schema.file_schema().names
    added = [OpenRun(table.store, f, schema).read(file_columns) for f in files]
    added = [a.cast(added[0].schema) for a in added]
    before, after = values_before_after(table, schema, from_snap, added)
    result = compare(before, after, schema, drop_unchanged=drop_unchanged)
    if not include_update_before:
        result = result.filter(pc.not_equal(result.column(ROW_KIND), "-U"))
    return result.select(out_schema.names).cast(out_schema)


def touched_keys(added: Sequence[pa.Table], schema: TableSchema) -> pa.Table:
    """The keys of runs ``added``, once each (a single run holds each key once)."""
    keys = list(schema.primary_key)
    if len(added) == 1:
        return added[0].select(keys)
    if len(keys) == 1:
        chunks = [c for a in added for c in a.column(keys[0]).chunks]
        return pa.table(
            {keys[0]: pc.unique(pa.chunked_array(chunks, added[0].schema.field(keys[0]).type))}
        )
    return pa.concat_tables([a.select(keys) for a in added]).group_by(keys).aggregate([])


def values_before_after(
    table: Table,
    schema: TableSchema,
    snap: Snapshot | None,
    added: Sequence[pa.Table],
) -> tuple[pa.Table, pa.Table]:
    """The values at ``snap`` of the keys ``added`` (runs newer than ``snap``, file-schema
    columns) holds, and their values with ``added`` folded on top: one batched lookup of
    just those keys (:func:`lsm3.read.batch_lookup.current_values`: each run that can hold
    them decoded once, rows found by binary search, decoded runs cached for the next
    commit's lookup), then one vectorised fold."""
    if schema.sequence_field is not None:
        return _values_in_sequence(table, schema, snap, added)
    if table.files_of(snap):
        before = current_values(table, schema, snap, touched_keys(added, schema))
    else:  # an empty table: nothing to read
        before = pa.schema([f.with_nullable(True) for f in schema.arrow]).empty_table()
    if len(added) == 1 and (schema.engine.is_deduplicate or not before.num_rows):
        # one run newer than everything before it, holding each key once: it is the fold
        return before, drop_deleted(added[0], schema.arrow.names)
    return before, fold_onto(before, added, schema)


def _values_in_sequence(
    table: Table, schema: TableSchema, snap: Snapshot | None, added: Sequence[pa.Table]
) -> tuple[pa.Table, pa.Table]:
    """:func:`values_before_after` under a ``sequence_field``: a new row may order before
    old versions of its key (a smaller sequence value), so the old value cannot stand for
    them as one older row: :func:`fold_onto` would drop a late row behind it where a folding
    engine takes it, or (any engine) let it revive a key whose newer delete it cannot see,
    the deleted key having no old value. The key's stored versions at ``snap``, tombstones
    included, are merged with the new rows instead, the new rows numbered after every old
    one (they were committed later, so they win ties of the sequence field)."""
    touched = touched_keys(added, schema)
    old = touched_versions(table, schema, snap, touched) if table.files_of(snap) else []
    before = merged_versions(old, schema, touched)
    top = max((pc.max(t.column(SEQ_COLUMN)).as_py() or 0 for t in old), default=0)
    shift = pa.scalar(top + 1, pa.int64())
    newer = []
    for a in added:  # whole runs, each holding its keys once; a constant shift keeps order
        i = a.schema.get_field_index(SEQ_COLUMN)
        newer.append(a.set_column(i, a.schema.field(i), pc.add(a.column(i), shift)))
    return before, merged_versions([*old, *newer], schema, touched)
