"""Merge sections: the key ranges a merge of overlapping runs decodes and merges in turn.

Sections are cut at row-group starts of the first key column, about ``section_rows`` stored
rows apart (``section_bounds``); a ``RunCursor`` hands each section the rows of one run below
its upper bound, and ``merge_sections`` merges them section by section (``lsm3.read.scan``
plans and opens the runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lsm3.format.keys import storage_values
from lsm3.format.metadata import DataFile
from lsm3.format.schema import TableSchema
from lsm3.io.store import ObjectStore
from lsm3.read.merge import merge_runs
from lsm3.read.runfile import OpenRun
from lsm3.read.runindex import FOOTERS, RunIndex


def merge_sections(
    bounds: list[Any],
    start_section: Callable[[Any], list[Future[pa.Table | None]]],
    schema: TableSchema,
    drop_deletes: bool,
    output: list[str] | None,
    read_ahead: bool,
) -> Iterator[pa.Table]:
    """The merged sections ending at ``bounds``, each decoded by ``start_section``."""
    decoding = start_section(bounds[0])
    for i in range(len(bounds)):
        pieces = [p for p in (d.result() for d in decoding) if p is not None and p.num_rows]
        decoding = []
        if read_ahead and i + 1 < len(bounds):  # decodes while this section merges
            decoding = start_section(bounds[i + 1])
        merged = (
            merge_runs(pieces, schema, drop_deletes=drop_deletes, columns=output)
            if pieces
            else None
        )
        del pieces  # a stream holds one section's output while its consumer works
        if merged is not None:
            yield merged
            del merged
        if not read_ahead and i + 1 < len(bounds):
            decoding = start_section(bounds[i + 1])


class RunCursor:
    """One run read in key order, section by section: the row groups that start below a
    section's upper bound are decoded in one call, and the rows at or above the bound wait
    for the next section. Holds at most one partly consumed row group."""

    def __init__(self, run: OpenRun, key0: str, index: RunIndex, lo: Any = None) -> None:
        self.file, self.key0, self.index = run.file, key0, index
        self.run: OpenRun | None = run  # dropped once the run is consumed
        self.next_group = 0
        if lo is not None:  # skip the row groups whose every key is below lo
            self.next_group = int(np.searchsorted(index.rg_max, lo, side="left"))
        self.pending: pa.Table | None = None

    @property
    def done(self) -> bool:
        return self.pending is None and self.next_group >= len(self.index.rg_min)

    def _groups_end(self, start: int, hi: Any) -> int:
        """The first row group from ``start`` on that starts at or above ``hi`` (None: the
        number of row groups)."""
        n_groups = len(self.index.rg_min)
        if hi is None:
            return n_groups
        end = start
        while end < n_groups and self.index.rg_min[end] < hi:
            end += 1
        return end

    def planned_reads(self, bounds: Sequence[Any]) -> list[tuple[int, list[int]]]:
        """``(section, row groups)`` of every decode that ``take_below`` will ask for, for
        the sections ending at ``bounds`` in turn (for fetching them ahead)."""
        reads: list[tuple[int, list[int]]] = []
        start = self.next_group
        for section, hi in enumerate(bounds):
            end = self._groups_end(start, hi)
            if end > start:
                reads.append((section, list(range(start, end))))
                start = end
        return reads

    def take_below(
        self, hi: Any, read: Callable[[OpenRun, list[int] | None], pa.Table]
    ) -> pa.Table | None:
        """The run's rows with first key column below ``hi`` (all that is left if None)
        that earlier sections did not take."""
        end = self._groups_end(self.next_group, hi)
        if end > self.next_group:
            assert self.run is not None  # only a consumed run drops it
            fresh = read(self.run, list(range(self.next_group, end)))
            self.next_group = end
            if self.pending is not None:
                fresh = pa.concat_tables([self.pending, fresh])
            self.pending = fresh
        if self.pending is None:
            return None
        if hi is None:
            taken, self.pending = self.pending, None
        else:
            below = count_below(self.pending, self.key0, hi)
            taken = self.pending.slice(0, below)
            rest = self.pending.slice(below)
            self.pending = rest if rest.num_rows else None
        if self.done:
            self.run = None
        return taken


def count_below(table: pa.Table, key0: str, hi: Any) -> int:
    """How many rows of ``table`` (sorted by ``key0``, never null) have ``key0 < hi``. An
    integer key is binary searched (comparing every row cost ~3% of a 10M-row read)."""
    col = storage_values(table.column(key0))
    if not pa.types.is_integer(col.type):
        return int(pc.sum(pc.less(col, pa.scalar(hi, col.type))).as_py() or 0)
    lo, up = 0, len(col)  # rows before lo are below hi, rows from up on are not
    while lo < up:
        mid = (lo + up) // 2
        if col[mid].as_py() < hi:
            lo = mid + 1
        else:
            up = mid
    return lo


def section_bounds(
    store: ObjectStore, schema: TableSchema, files: Sequence[DataFile], section_rows: int
) -> list[Any]:
    """Cut points on the first key column, at row-group starts, ~section_rows apart."""
    key0 = schema.primary_key[0]
    starts: list[tuple[Any, int]] = []
    for f in files:
        index = FOOTERS.get(store, f, key0)
        for i, lo in enumerate(index.rg_min.tolist()):
            starts.append((lo, index.metadata.row_group(i).num_rows))
    starts.sort(key=lambda s: s[0])
    bounds: list[Any] = []
    acc = 0
    for value, rows in starts:
        if acc >= section_rows and (not bounds or value > bounds[-1]):
            bounds.append(value)
            acc = 0
        acc += rows
    return bounds
