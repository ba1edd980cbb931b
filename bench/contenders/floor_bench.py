"""The floor: plain pyarrow doing the same I/O as an LSM table, with no format on top.

Ingest: each commit is one Parquet (zstd) file sorted by id, the initial load too
(with op "c"), so the floor pays the sort and the encode that any sorted-run writer
pays, and nothing else (no manifest, no log, no conditional put).
Read: the tuned pure-Arrow merge of all runs (see `merge_runs`).
Extras: writing the merged result as one id-sorted file (`compact_s`) and reading
that file back (`read_merged_s`), the best case a merge-on-read format converges to.
Lookups: on that merged file, footer statistics pick the row group (bisect on the
row groups' min ids), then only that row group is read and filtered.
"""

from __future__ import annotations

import bisect
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.harness import DATA_COLUMNS, Contender, run

# Row groups of the merged file: a lookup decodes one whole row group, so they are
# small (measured on cdc-1m: 4k rows ~1.2 ms p50 vs 16k ~4 ms, 64k ~11 ms), at a small
# cost to the full read of that file.
MERGED_ROW_GROUP_ROWS = 4_096
# Dictionary-encode only the low-cardinality op column: for ids and random strings
# pyarrow's default dictionary attempt costs about a third of the write time and
# then falls back to plain encoding anyway.
DICTIONARY_COLUMNS = ["op"]


def sorted_by_id(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table.column("id")))


def merge_runs(runs: list[pa.Table]) -> pa.Table:
    """Merge id-sorted runs (oldest first): newest version per id, deletes dropped.

    Only the (id, seq) key columns are concatenated and sorted; keeping the first
    row of each id after sorting by (id asc, seq desc) selects its newest version;
    then one `take` gathers the surviving rows from the concatenated full table.
    """
    keys = pa.table(
        {
            "id": pa.concat_arrays([c for run in runs for c in run.column("id").chunks]),
            "seq": pa.concat_arrays(
                [pa.repeat(pa.scalar(i, pa.int32()), run.num_rows) for i, run in enumerate(runs)]
            ),
        }
    )
    order = pc.sort_indices(keys, sort_keys=[("id", "ascending"), ("seq", "descending")])
    ids = keys.column("id").take(order)
    n = len(ids)
    first = pa.concat_arrays(
        [
            pa.array([n > 0]),
            pc.not_equal(ids.slice(1), ids.slice(0, max(0, n - 1))).combine_chunks(),
        ]
    )
    newest = order.filter(first)
    full = pa.concat_tables(runs)
    live = newest.filter(pc.not_equal(full.column("op").take(newest), "d"))
    return full.take(live).select(DATA_COLUMNS)


class RowGroupIndex:
    """Point lookups in one id-sorted Parquet file using only its footer statistics."""

    def __init__(self, path: Path) -> None:
        self.file = pq.ParquetFile(path)
        meta = self.file.metadata
        column = meta.schema.names.index("id")
        stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
        self.mins = [s.min for s in stats]
        self.maxs = [s.max for s in stats]

    def get(self, key: int) -> dict[str, Any] | None:
        group = bisect.bisect_right(self.mins, key) - 1
        if group < 0 or key > self.maxs[group]:
            return None
        rows = self.file.read_row_group(group)
        hit = rows.filter(pc.equal(rows.column("id"), key))
        return hit.to_pylist()[0] if hit.num_rows else None


class Floor(Contender):
    name = "floor"

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.runs_dir = self.work_dir / "runs"
        self.merged = self.work_dir / "merged.parquet"
        self.seq = 0
        self.index: RowGroupIndex | None = None

    def setup(self, schema: pa.Schema) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)

    def _write_run(self, table: pa.Table) -> None:
        path = self.runs_dir / f"run-{self.seq:06d}.parquet"
        pq.write_table(
            sorted_by_id(table), path, compression="zstd", use_dictionary=DICTIONARY_COLUMNS
        )
        self.seq += 1

    def load_initial(self, table: pa.Table) -> None:
        self._write_run(table.append_column("op", pa.repeat(pa.scalar("c"), table.num_rows)))

    def apply_batch(self, batch: pa.Table) -> None:
        self._write_run(batch)

    def read_all(self) -> pa.Table:
        names = sorted(os.listdir(self.runs_dir))
        return merge_runs([pq.read_table(self.runs_dir / name) for name in names])

    def after_read(self, table: pa.Table) -> None:
        started = time.perf_counter()
        pq.write_table(
            table,
            self.merged,
            compression="zstd",
            use_dictionary=False,
            row_group_size=MERGED_ROW_GROUP_ROWS,
        )
        self.extra["compact_s"] = time.perf_counter() - started
        started = time.perf_counter()
        merged = pq.read_table(self.merged)
        self.extra["read_merged_s"] = time.perf_counter() - started
        self.extra["merged_bytes"] = self.merged.stat().st_size
        self.extra["merged_equal"] = merged.equals(table)

    def open_lookups(self) -> None:
        self.index = RowGroupIndex(self.merged)

    def lookup(self, key: int) -> dict[str, Any] | None:
        assert self.index is not None
        return self.index.get(key)

    def data_paths(self) -> list[Path]:
        return [self.runs_dir]


if __name__ == "__main__":
    raise SystemExit(run(Floor))
