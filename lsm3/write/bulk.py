"""Bulk writes spread over workers (``lsm3.ray``): rows grouped by (partition, bucket) across
the whole input, each group written by one Writer in input order.

A distributed write whose tasks each take a slice of the input gives every bucket one run
per task. Grouping first bounds that: :func:`tag_rows` adds a group number (the same for every
row of one (partition, bucket); two pairs may share one), a shuffle brings each group to one
task with its rows still in input order (the caller keeps that order: pieces of the input's
blocks, concatenated in block order), and :func:`write_group` feeds them to a
:class:`~lsm3.write.writer.Writer` in one flush, so a bucket gets one sorted run per write
(cut into key-disjoint files by size) and the last record of a key wins exactly as for one
Writer fed the whole input. Groups hold disjoint keys, so every group numbers its flushes
from 0 and the commit uses as many sequence numbers as the largest group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import InvalidInput
from lsm3.format.keys import bucket_of
from lsm3.format.metadata import DataFile
from lsm3.format.schema import TableSchema
from lsm3.write.writer import Writer

if TYPE_CHECKING:
    from lsm3.table import Table

MODES = ("upsert", "delete", "cdc")
#: The column tag_rows adds (no table column: names starting ``_lsm3_`` are reserved).
GROUP_COLUMN = "_lsm3_group"
#: Partition hashes fold into this many values (the group is ``hash * buckets + bucket``).
_PARTITION_HASHES = 1 << 24


def group_numbers(rows: pa.Table, schema: TableSchema) -> np.ndarray:
    """Per row, a number shared by every row of its (partition, bucket): the table's bucket,
    plus a hash of the partition values (partition columns are key columns)."""
    keys = []
    for name in schema.primary_key:
        if name not in rows.column_names:
            raise InvalidInput(f"bulk write rows lack the key column {name!r}")
        keys.append(pc.cast(rows.column(name), schema.arrow.field(name).type))
    groups = bucket_of(keys, schema.buckets).astype(np.int64)
    if schema.partition_by:
        parts = [keys[schema.primary_key.index(p)] for p in schema.partition_by]
        groups += bucket_of(parts, _PARTITION_HASHES).astype(np.int64) * schema.buckets
    return groups


def tag_rows(rows: pa.Table, schema: TableSchema) -> pa.Table:
    """``rows`` with :data:`GROUP_COLUMN` appended."""
    return rows.append_column(GROUP_COLUMN, pa.array(group_numbers(rows, schema)))


def write_rows(writer: Writer, rows: pa.Table, mode: str, op_column: str) -> None:
    """Hand ``rows`` to ``writer`` as ``mode`` says (``upsert``, ``delete`` or ``cdc``)."""
    if mode == "upsert":
        writer.upsert(rows)
    elif mode == "delete":
        writer.delete(rows)
    elif mode == "cdc":
        writer.apply_cdc(rows, op_column)
    else:
        raise InvalidInput(f"unknown write mode {mode!r}; choose one of {list(MODES)}")


def write_group(
    table: Table, rows: pa.Table, mode: str, op_column: str
) -> tuple[list[DataFile], int]:
    """Write tagged ``rows`` (one or more whole groups, in input order), staged: the runs and
    the number of local sequence numbers they use (``Writer.stage``)."""
    ordered = rows.drop_columns([GROUP_COLUMN])
    writer = Writer(table)
    # All at once: one flush, so one sorted run per bucket (cut into key-disjoint pieces by
    # size), where a stream of memtable-sized batches would give one run per memtable.
    write_rows(writer, ordered, mode, op_column)
    return writer.stage()
