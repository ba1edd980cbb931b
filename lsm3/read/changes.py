"""Incremental reads: the net change per key between two snapshots.

The keys touched between snapshots A and B are the keys of the files added by the APPEND
snapshots in (A, B] (each snapshot names its delta manifest). For those keys the table is read
at A and at B, and the two reads are compared: present only at B is an insert (``+I``),
present at both an update (``+U``, preceded by ``-U`` with the old values on request), present
only at A a delete (``-D``, with the old values). Comparing reads, rather than replaying
records, makes the result exact under every ordering rule (sequence fields included) and
unaffected by compaction: COMPACT snapshots add no new keys, so they contribute nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import InvalidInput, SnapshotNotFound
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import KIND_COLUMN, KIND_RESET, KIND_UPSERT, SEQ_COLUMN, TableSchema
from lsm3.read.merge import merge_runs
from lsm3.read.runfile import OpenRun
from lsm3.read.scan import make_request, scan_batches

if TYPE_CHECKING:
    from lsm3.table import Table

ROW_KIND = "_row_kind"


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


def _fold_onto(before: pa.Table, added: Sequence[pa.Table], schema: TableSchema) -> pa.Table:
    """The rows of ``before`` (whole values, older than everything in ``added``) with the
    versions of ``added`` merged on top, as a reader would."""
    base_kind = KIND_UPSERT if schema.engine.is_deduplicate else KIND_RESET
    n = before.num_rows
    base = before.append_column(SEQ_COLUMN, pa.repeat(-1, n).cast(pa.int64()))
    base = base.append_column(KIND_COLUMN, pa.repeat(base_kind, n).cast(pa.int8()))
    base = base.select(added[0].schema.names).cast(added[0].schema)
    return merge_runs([base, *added], schema, drop_deletes=True, columns=schema.arrow.names)


def _read_keys(
    table: Table, schema: TableSchema, snap: Snapshot | None, touched: pa.Table
) -> pa.Table:
    """The rows of ``touched`` keys visible at ``snap``, through ``schema``."""
    keys = list(schema.primary_key)
    expr = None
    for k in keys:
        term = pc.field(k).isin(pc.unique(touched.column(k)))
        expr = term if expr is None else expr & term
    request = make_request(schema, None, expr)
    files = table.files_of(snap)
    out_schema = pa.schema([f.with_nullable(True) for f in schema.arrow])
    batches = [b.cast(out_schema) for b in scan_batches(table.store, schema, files, request)]
    rows = pa.Table.from_batches(batches, schema=out_schema)
    if len(keys) > 1:  # per-column membership over-selects composite keys: keep exact ones
        rows = rows.join(touched, keys, join_type="left semi")
    return rows


def changes(
    table: Table,
    from_snapshot_id: int,
    to_snapshot_id: int | None = None,
    include_update_before: bool = False,
) -> pa.Table:
    """See ``Table.changes``."""
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
    keys = list(schema.primary_key)
    touched = pa.concat_tables([a.select(keys) for a in added]).group_by(keys).aggregate([])
    before = _read_keys(table, schema, from_snap, touched)
    after = _fold_onto(before, added, schema)
    marker = "__lsm3_present"
    before_keys = before.select(keys).append_column(marker, pa.repeat(True, before.num_rows))
    joined = after.join(before_keys, keys, join_type="left outer")
    existed = pc.fill_null(joined.column(marker), False)
    joined = joined.drop_columns([marker]).select(schema.arrow.names)
    pieces = [
        _with_kind(joined.filter(pc.invert(existed)), "+I"),
        _with_kind(joined.filter(existed), "+U"),
        _with_kind(before.join(after.select(keys), keys, join_type="left anti"), "-D"),
    ]
    if include_update_before:
        pieces.append(
            _with_kind(before.join(after.select(keys), keys, join_type="left semi"), "-U")
        )
    result = pa.concat_tables([p.select(out_schema.names).cast(out_schema) for p in pieces])
    # Within a key, the old values (-U) come before the new ones (+U).
    rank = pc.if_else(pc.equal(result.column(ROW_KIND), "-U"), 0, 1)
    result = result.append_column("__rank", rank)
    sort_keys = [(k, "ascending") for k in keys] + [("__rank", "ascending")]
    return result.take(pc.sort_indices(result, sort_keys=sort_keys)).drop_columns(["__rank"])


def _with_kind(rows: pa.Table, kind: str) -> pa.Table:
    return rows.select([c for c in rows.column_names if c != ROW_KIND]).append_column(
        ROW_KIND, pa.repeat(kind, rows.num_rows).cast(pa.string())
    )
