"""Reading: a snapshot of a table as a Ray Dataset.

**Reading** (:func:`read_lsm3`). The driver plans once, from the snapshot's manifests, the
independent units of the scan (:mod:`lsm3.read.units`: one per (partition, bucket) group,
and first-key ranges of a group over ``max_unit_rows`` stored rows); each unit is one read
task, which reopens the store from the URI and ``storage_options`` and merges its runs with
the reader's own kernel and pruning. The dataset's rows are those of ``Table.to_arrow()``
at the same snapshot, in the same order when Ray preserves order
(``DataContext.execution_options.preserve_order``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import Dataset
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from lsm3.errors import InvalidInput
from lsm3.format.schema import TableSchema
from lsm3.ray.cluster import open_shared_table, store_for
from lsm3.read.scan import ScanRequest, make_request
from lsm3.read.units import DEFAULT_UNIT_ROWS, ScanUnit, estimate_bytes, plan_units, scan_unit

#: Rows a read task gathers into one block.
BLOCK_ROWS = 1 << 20


class Lsm3Datasource(Datasource):
    """A snapshot of an lsm3 table as a Ray Data source; see the module docstring."""

    def __init__(
        self,
        uri: str,
        *,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        snapshot_id: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        max_unit_rows: int = DEFAULT_UNIT_ROWS,
    ) -> None:
        super().__init__()
        if not isinstance(max_unit_rows, int) or max_unit_rows < 1:
            raise InvalidInput("max_unit_rows must be a positive integer")
        table = open_shared_table(uri, storage_options)
        snap = table.snapshot(snapshot_id) if snapshot_id is not None else table.refresh()
        self._uri = table.uri
        self._storage_options = dict(storage_options or {})
        self._schema: TableSchema = table.schema_at(snap.schema_id if snap else 0)
        self._request: ScanRequest = make_request(self._schema, columns, filter)
        self._out_schema = pa.schema(
            [self._schema.arrow.field(c).with_nullable(True) for c in self._request.columns]
        )
        self._units: list[ScanUnit] = plan_units(
            table.store,
            self._schema,
            table.files_for(snap, self._request.filter),
            self._request,
            max_unit_rows,
        )
        self.snapshot_id = snap.snapshot_id if snap else 0

    @property
    def units(self) -> list[ScanUnit]:
        return list(self._units)

    def get_name(self) -> str:
        return "lsm3"

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(estimate_bytes(u, self._schema, self._request) for u in self._units)

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[ReadTask]:
        """One task per unit, whatever ``parallelism`` says: units are the pieces that merge
        independently, and a group is cut only where its size calls for it."""
        units: list[ScanUnit | None] = list(self._units) or [None]  # an empty table: one task
        tasks = []
        for unit in units:
            read = functools.partial(
                _read_unit,
                self._uri,
                self._storage_options,
                self._schema,
                unit,
                self._request,
                self._out_schema,
            )
            meta = BlockMetadata(
                num_rows=None,  # known after the merge: superseded versions drop out
                size_bytes=estimate_bytes(unit, self._schema, self._request) if unit else 0,
                input_files=[f.path for f in unit.files] if unit else [],
                exec_stats=None,
            )
            tasks.append(
                ReadTask(read, meta, schema=self._out_schema, per_task_row_limit=per_task_row_limit)
            )
        return tasks


def _read_unit(
    uri: str,
    storage_options: Mapping[str, Any],
    schema: TableSchema,
    unit: ScanUnit | None,
    request: ScanRequest,
    out_schema: pa.Schema,
) -> Iterator[pa.Table]:
    if unit is None:
        yield out_schema.empty_table()
        return
    store = store_for(uri, storage_options)
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in scan_unit(store, schema, unit, request):
        pending.append(batch.cast(out_schema) if batch.schema != out_schema else batch)
        rows += batch.num_rows
        if rows >= BLOCK_ROWS:
            yield pa.Table.from_batches(pending, out_schema)
            pending, rows = [], 0
    yield pa.Table.from_batches(pending, out_schema)


def read_lsm3(
    uri: str,
    *,
    columns: Sequence[str] | None = None,
    filter: pc.Expression | None = None,
    snapshot_id: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_unit_rows: int = DEFAULT_UNIT_ROWS,
) -> Dataset:
    """The merged rows of the table at ``uri`` (the latest snapshot, or ``snapshot_id``) as a
    Ray Dataset: the rows of ``open_table(uri).to_arrow(columns, filter, snapshot_id)``.
    ``max_unit_rows``: stored rows above which a bucket is read by several tasks."""
    source = Lsm3Datasource(
        uri,
        columns=columns,
        filter=filter,
        snapshot_id=snapshot_id,
        storage_options=storage_options,
        max_unit_rows=max_unit_rows,
    )
    return ray.data.read_datasource(source)
