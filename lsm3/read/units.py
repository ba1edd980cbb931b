"""Scan units: a snapshot's scan cut into independent pieces that separate processes can read.

A unit is one (partition, bucket) group, or one first-key-column range of a large group whose
runs overlap. Keys never cross groups and a key range holds every version of its keys, so
each unit merges on its own, with the reader's own kernel (``scan_batches``), and the units'
outputs in plan order are exactly the scan's output. A unit holds only plain values (data
files, bounds, the request), so it pickles: a distributed engine (``lsm3.ray``) plans on the
driver and executes each unit in a worker that reopens the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.format.metadata import DataFile
from lsm3.format.schema import TableSchema
from lsm3.io.store import ObjectStore
from lsm3.read.scan import (
    DEFAULT_SECTION_ROWS,
    ScanRequest,
    groups_to_read,
    make_request,
    non_overlapping,
    scan_batches,
    typed_array,
)
from lsm3.read.sections import section_bounds

#: Stored rows (all runs of a unit together) above which a group is cut into key ranges.
DEFAULT_UNIT_ROWS = 4 * 1024 * 1024


@dataclass(frozen=True)
class ScanUnit:
    """The files of one group that a key range needs; ``lower``/``upper`` bound the first key
    column (storage values; inclusive, exclusive; None for open)."""

    partition: tuple[Any, ...]
    bucket: int
    files: tuple[DataFile, ...]
    lower: Any = None
    upper: Any = None

    @property
    def stored_rows(self) -> int:
        """Rows stored in the unit's files: an upper bound of the rows it returns."""
        return sum(f.rows for f in self.files)

    @property
    def stored_bytes(self) -> int:
        return sum(f.size for f in self.files)


def plan_units(
    store: ObjectStore,
    schema: TableSchema,
    files: Sequence[DataFile],
    request: ScanRequest,
    max_unit_rows: int = DEFAULT_UNIT_ROWS,
) -> list[ScanUnit]:
    """The units of a scan of ``files``, in scan order. Groups over ``max_unit_rows`` are cut:
    files that do not overlap are dealt out whole, in key order; overlapping files are cut
    at row-group starts of the first key column (reading their footers: one ranged GET
    each, cached)."""
    units: list[ScanUnit] = []
    for (partition, bucket), group in groups_to_read(schema, files, request).items():
        ordered = sorted(group, key=lambda f: f.min_key)
        if sum(f.rows for f in ordered) <= max_unit_rows or len(ordered) == 1:
            units.append(ScanUnit(partition, bucket, tuple(ordered)))
        elif non_overlapping(ordered):
            units.extend(_deal_files(partition, bucket, ordered, max_unit_rows))
        else:
            cuts = section_bounds(store, schema, ordered, max_unit_rows)
            for lo, hi in zip([None, *cuts], [*cuts, None], strict=True):
                inside = tuple(
                    f
                    for f in ordered
                    if (hi is None or f.min_key[0] < hi) and (lo is None or f.max_key[0] >= lo)
                )
                if inside:
                    units.append(ScanUnit(partition, bucket, inside, lo, hi))
    return units


def _deal_files(
    partition: tuple[Any, ...], bucket: int, ordered: list[DataFile], max_unit_rows: int
) -> Iterator[ScanUnit]:
    batch: list[DataFile] = []
    for f in ordered:
        if batch and sum(b.rows for b in batch) + f.rows > max_unit_rows:
            yield ScanUnit(partition, bucket, tuple(batch))
            batch = []
        batch.append(f)
    if batch:
        yield ScanUnit(partition, bucket, tuple(batch))


def unit_request(schema: TableSchema, unit: ScanUnit, request: ScanRequest) -> ScanRequest:
    """``request`` restricted to the unit's key range (unchanged for a whole group)."""
    if unit.lower is None and unit.upper is None:
        return request
    key0 = schema.primary_key[0]
    key_type = schema.arrow.field(key0).type
    bound: pc.Expression | None = None
    if unit.lower is not None:
        bound = pc.field(key0) >= typed_array(key_type, unit.lower)[0]
    if unit.upper is not None:
        below = pc.field(key0) < typed_array(key_type, unit.upper)[0]
        bound = below if bound is None else bound & below
    combined = bound if request.filter is None else request.filter & bound
    return make_request(schema, request.columns, combined)


def scan_unit(
    store: ObjectStore,
    schema: TableSchema,
    unit: ScanUnit,
    request: ScanRequest,
    section_rows: int = DEFAULT_SECTION_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The merged rows of one unit: the same code path, pruning and kernel as a scan."""
    yield from scan_batches(
        store,
        schema,
        unit.files,
        unit_request(schema, unit, request),
        section_rows,
        key_range=(unit.lower, unit.upper),
    )


def estimate_bytes(unit: ScanUnit, schema: TableSchema, request: ScanRequest) -> int:
    """A rough in-memory size of the unit's output from the manifest alone: stored bytes,
    times a decompression factor, times the share of columns read."""
    share = len(request.columns) / max(1, len(schema.arrow.names))
    return int(unit.stored_bytes * DECOMPRESSION_FACTOR * share)


#: Arrow bytes per stored (zstd Parquet) byte, roughly, for estimates only.
DECOMPRESSION_FACTOR = 3
