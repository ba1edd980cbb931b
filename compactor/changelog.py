"""The ``full_compaction`` changelog producer: a full compaction stores what it changed.

Under ``changelog_producer = "full_compaction"`` the last level of a bucket holds only the
result of its latest full compaction: other policies neither read it nor write it
(``plannable``, ``capped_options``). So when a full compaction merges a bucket, its inputs
at the last level are the previous full result, and its output the new one: the difference
between the two, computed with the same comparison as every other producer, is stored as
the COMPACT commit's changelog (docs/FORMAT.md, section 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pyarrow as pa

from compactor.policy import PolicyOptions, Task
from lsm3.format.metadata import DataFile
from lsm3.format.schema import TableSchema
from lsm3.read.changelog_file import write_changelog
from lsm3.read.diff import compare
from lsm3.read.merge import merge_runs
from lsm3.read.runfile import OpenRun
from lsm3.table import Table

PRODUCER = "full_compaction"


def capped_options(schema: TableSchema, policy: str, opts: PolicyOptions) -> PolicyOptions:
    """Under the ``full_compaction`` producer only full compactions write the last level."""
    if schema.option("changelog_producer") != PRODUCER or policy == "full":
        return opts
    return replace(opts, num_levels=opts.num_levels - 1)


def plannable(schema: TableSchema, policy: str, files: list[DataFile]) -> list[DataFile]:
    """The files a policy may compact: under the ``full_compaction`` producer only a full
    compaction touches the last level (the previous full result it compares with)."""
    if schema.option("changelog_producer") != PRODUCER or policy == "full":
        return files
    last_level = schema.option("num_levels") - 1
    return [f for f in files if f.level != last_level]


def produces_changelog(schema: TableSchema, task: Task) -> bool:
    return schema.option("changelog_producer") == PRODUCER and task.reason == "full"


def full_compaction_changelog(
    table: Table, task: Task, outputs: Sequence[DataFile]
) -> list[DataFile]:
    """Upload the changes from the bucket's previous full result (its last-level inputs) to
    ``outputs``, and return the changelog files."""
    schema = table.table_schema
    last_level = schema.option("num_levels") - 1
    previous = [f for f in task.inputs if f.level == last_level]
    before = _values(table, schema, previous)
    after = _values(table, schema, list(outputs))
    return write_changelog(table.store, schema, compare(before, after, schema), level=last_level)


def _values(table: Table, schema: TableSchema, files: list[DataFile]) -> pa.Table:
    """The live values one sorted run of ``files`` holds (deleted keys dropped)."""
    columns = schema.file_schema().names
    runs = [OpenRun(table.store, f, schema).read(columns) for f in files]
    if not runs:
        return schema.file_schema().empty_table().select(schema.arrow.names)
    runs = [r.cast(runs[0].schema) for r in runs]
    return merge_runs(runs, schema, drop_deletes=True, columns=schema.arrow.names)
