"""Changelog files: the changes a commit stored beside its runs, written and read back.

Under the changelog producers ``input``, ``lookup`` and ``full_compaction`` a commit stores
its changes as Parquet files, one per (partition, bucket) it changed, named
``data/[<partition>/]bucket-<n>/changelog-<32 hex>.parquet`` and listed in a manifest that
only the commit's snapshot names (``changelog_manifest``; docs/FORMAT.md, section 16). Their
columns are the table's columns of the schema they were written with, then ``_row_kind``
(``+I -U +U -D``), rows in the order the changes happened. They are never data: no live set
holds them, so reads and compactions never see them.

A ``lookup`` commit whose changes are exactly its runs' rows as ``+I`` (every key new, as in
a table's initial load) lists its runs there instead, and stores nothing twice: the run
outlives the commit's snapshot (it is removed from the live set later, and deleted only once
its remover's snapshot expires), and snapshot expiry never deletes it as a changelog file.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lsm3.errors import CorruptDataFile
from lsm3.format.evolution import SCHEMAS, Projection, projection
from lsm3.format.keys import bucket_of, storage_values
from lsm3.format.metadata import DataFile
from lsm3.format.schema import KIND_COLUMN, TableSchema
from lsm3.io.store import ObjectStore
from lsm3.read.diff import ROW_KIND
from lsm3.read.runbytes import checksum_of, fetch_verified, footer_checksum_of
from lsm3.read.runfile import partition_dir

ROW_KINDS = ("+I", "-U", "+U", "-D")
#: Rows per changelog file at most: larger changes are cut into pieces encoded in parallel.
PIECE_ROWS = 262144


def changelog_file_schema(schema: TableSchema) -> pa.Schema:
    """The table's columns (all nullable: a ``-D`` may carry only its key) and ``_row_kind``."""
    fields = [f.with_nullable(True) for f in schema.arrow]
    return pa.schema([*fields, pa.field(ROW_KIND, pa.string(), nullable=False)])


def changelog_file_path(schema: TableSchema, partition: tuple[Any, ...], bucket: int) -> str:
    where = partition_dir(schema.partition_by, partition)
    return f"data/{where}bucket-{bucket}/changelog-{uuid.uuid4().hex}.parquet"


def split_by_bucket(
    rows: pa.Table, schema: TableSchema
) -> Iterator[tuple[tuple[Any, ...], int, pa.Table]]:
    """``rows`` cut by (partition, bucket), each piece in the order of ``rows``."""
    if schema.buckets == 1 and not schema.partition_by:
        yield (), 0, rows
        return
    keys = [rows.column(k) for k in schema.primary_key]
    groups = {f"p{i}": storage_values(rows.column(p)) for i, p in enumerate(schema.partition_by)}
    groups["bucket"] = pa.array(bucket_of(keys, schema.buckets))
    table = pa.table(groups)
    for group in table.group_by(list(groups)).aggregate([]).to_pylist():
        mask = None
        for name, value in group.items():
            term = pc.equal(table.column(name), pa.scalar(value, table.schema.field(name).type))
            mask = term if mask is None else pc.and_(mask, term)
        partition = tuple(group[f"p{i}"] for i in range(len(schema.partition_by)))
        yield partition, int(group["bucket"]), rows.filter(mask)


def write_changelog(
    store: ObjectStore, schema: TableSchema, rows: pa.Table, level: int = 0
) -> list[DataFile]:
    """Upload ``rows`` (table columns and ``_row_kind``) as changelog files, one per
    (partition, bucket), and describe them as manifest entries (``level``: 0 for writers, the
    output level for a compaction)."""
    if not rows.num_rows:
        return []
    rows = rows.select(changelog_file_schema(schema).names).cast(changelog_file_schema(schema))
    # Large buckets in consecutive pieces, encoded in parallel (Arrow releases the GIL); the
    # manifest lists them in order, so a reader still sees the bucket's rows in order.
    pieces = [
        (partition, bucket, part.slice(start, PIECE_ROWS))
        for partition, bucket, part in split_by_bucket(rows, schema)
        for start in range(0, part.num_rows, PIECE_ROWS)
    ]
    workers = min(schema.option("upload_concurrency"), os.cpu_count() or 1, len(pieces))
    if workers <= 1:
        return [_upload(store, schema, piece, p, b, level) for p, b, piece in pieces]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda i: _upload(store, schema, i[2], i[0], i[1], level), pieces))


def _upload(
    store: ObjectStore,
    schema: TableSchema,
    rows: pa.Table,
    partition: tuple[Any, ...],
    bucket: int,
    level: int,
) -> DataFile:
    sink = pa.BufferOutputStream()
    pq.write_table(
        rows,
        sink,
        # As the runs of the same level: a writer's lz4 (a 170k-row CDC commit's changes
        # encoded in 0.11 s of CPU against zstd's 0.14-0.16 s, 1.5x the bytes), a full
        # compaction's zstd.
        compression=schema.option("level0_compression" if level == 0 else "compression"),
        # Dictionary encoding doubled the write time of a 170k-row changelog (0.30 s against
        # 0.16 s, even for _row_kind alone) for a file 0.01% larger without it: zstd sees
        # the repetition anyway.
        use_dictionary=False,
        write_page_checksum=True,
        row_group_size=max(1, schema.option("row_group_rows")) * 16,
    )
    body = sink.getvalue()
    path = changelog_file_path(schema, partition, bucket)
    store.put(path, body)
    min_key, max_key = _key_range(rows, schema)
    kinds = rows.column(ROW_KIND)
    before_images = pc.sum(pc.is_in(kinds, pa.array(["-U", "-D"]))).as_py() or 0
    return DataFile(
        path=path,
        level=level,
        partition=partition,
        bucket=bucket,
        min_key=min_key,
        max_key=max_key,
        min_seq=0,
        max_seq=0,
        seq_offset=0,
        rows=rows.num_rows,
        deletes=int(before_images),
        size=body.size,
        checksum=checksum_of(body),
        footer_checksum=footer_checksum_of(body),
        schema_id=schema.schema_id,
        created_ms=time.time_ns() // 1_000_000,
    )


def names_a_run(f: DataFile) -> bool:
    """Whether changelog entry ``f`` names a data file of its commit (every row of it a
    ``+I``) instead of a changelog file."""
    return not f.path.rsplit("/", 1)[-1].startswith("changelog-")


def run_as_changelog(run: DataFile) -> DataFile:
    """The changelog entry naming ``run`` (a data file of the same commit, every row an
    upsert of a key new at the parent): its statistics as a changelog file's would be, no
    sequence numbers or run id (section 16)."""
    if run.deletes:
        raise ValueError(f"run {run.path} holds delete or reset rows: not all +I")
    return replace(run, level=0, min_seq=0, max_seq=0, seq_offset=0, run_id="")


def _key_range(rows: pa.Table, schema: TableSchema) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    if len(schema.primary_key) == 1:
        bounds = pc.min_max(storage_values(rows.column(schema.primary_key[0])))
        return (bounds["min"].as_py(),), (bounds["max"].as_py(),)
    keys = pa.table({k: storage_values(rows.column(k)) for k in schema.primary_key})
    order = pc.sort_indices(keys, sort_keys=[(k, "ascending") for k in keys.column_names])
    first, last = int(order[0].as_py()), int(order[len(order) - 1].as_py())
    row = [keys.column(k) for k in keys.column_names]
    return tuple(c[first].as_py() for c in row), tuple(c[last].as_py() for c in row)


def read_changelog(
    store: ObjectStore, f: DataFile, read_schema: TableSchema, columns: Sequence[str]
) -> pa.Table:
    """``columns`` of read_schema (mapped by field id from the schema ``f`` was written
    with) and ``_row_kind`` of changelog file ``f``, verified against its entry."""
    file_schema = (
        read_schema if f.schema_id == read_schema.schema_id else SCHEMAS.get(store, f.schema_id)
    )
    buf = fetch_verified(store, f)
    proj = projection(file_schema, read_schema, list(columns))
    if names_a_run(f):
        return _run_as_inserts(buf, f, proj)
    try:
        stored = pq.read_table(pa.BufferReader(buf), columns=[*proj.sources, ROW_KIND])
    except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
        raise CorruptDataFile(f"changelog file {f.path} cannot be read: {exc}") from None
    expected = changelog_file_schema(file_schema).names
    names = pq.read_schema(pa.BufferReader(buf)).names
    if names != expected:
        raise CorruptDataFile(
            f"changelog file {f.path} has the columns {names}, but schema {f.schema_id} says "
            f"{expected}; it was not written by an lsm3 writer of this table"
        )
    kinds = stored.column(ROW_KIND)
    values = proj.apply(stored.select(list(proj.sources)))
    if not np.all(pc.is_in(kinds, pa.array(ROW_KINDS)).to_numpy(zero_copy_only=False)):
        raise CorruptDataFile(f"changelog file {f.path} has a row kind not in {ROW_KINDS}")
    return values.append_column(ROW_KIND, kinds)


def _run_as_inserts(buf: pa.Buffer, f: DataFile, proj: Projection) -> pa.Table:
    """A changelog entry naming a data file: its rows, each a ``+I`` of its table columns."""
    try:
        stored = pq.read_table(pa.BufferReader(buf), columns=[*proj.sources, KIND_COLUMN])
    except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
        raise CorruptDataFile(
            f"data file {f.path} (a changelog entry) cannot be read: {exc}"
        ) from None
    if stored.num_rows != f.rows or not pc.all(pc.equal(stored.column(KIND_COLUMN), 0)).as_py():
        raise CorruptDataFile(
            f"data file {f.path} is named as a changelog of inserts, but it holds "
            f"{stored.num_rows} rows (the entry says {f.rows}) or rows that are not upserts"
        )
    values = proj.apply(stored.select(list(proj.sources)))
    kinds = pa.repeat(pa.scalar("+I", pa.string()), stored.num_rows)
    return values.append_column(ROW_KIND, kinds)
