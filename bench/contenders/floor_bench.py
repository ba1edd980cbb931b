"""The floor: plain pyarrow doing the same I/O as an LSM table, with no format on top.

Ingest: each commit is one Parquet (zstd) file sorted by id, the initial load too (with op
"c"), in the same 16,384-row row groups as lsm3's runs, so the floor pays the sort and the
encode that any sorted-run writer pays, and nothing else (no manifest, no log, no
conditional put). The initial load is sorted as a whole (one file): the floor's writer
holds its whole input. Stream workloads: one file per commit and no compaction between
commits (the floor of a writer; its read then merges every file).
Read: the tuned pure-Arrow merge of all runs (see `merge_runs`); no streaming read.
Lookups before compaction: runs newest first; footer statistics pick the row group, its
id column is read and, on a hit, the row group (a delete ends the search with None).
Compaction: the merged table written as one id-sorted file (`compact_s`); the read after
compaction reads that file and lookups use it (the best case a merge-on-read format can
converge to).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

from bench.harness import DATA_COLUMNS, Contender, run

ROW_GROUP_ROWS = 16_384  # lsm3 defaults to 4,096 rows: a point lookup decodes one group
# Dictionary-encode only the low-cardinality op column: for ids and random strings
# pyarrow's default dictionary attempt costs about a third of the write time and
# then falls back to plain encoding anyway.
DICTIONARY_COLUMNS = ["op"]


def sorted_by_id(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table.column("id")))


def merge_runs(runs: list[pa.Table]) -> pa.Table:
    """Merge id-sorted runs (oldest first): newest version per id, deletes (op "d") dropped."""
    newest = newest_live(runs, lambda full, rows: pc.not_equal(full.column("op").take(rows), "d"))
    return newest.select(DATA_COLUMNS)


def newest_live(runs: list[pa.Table], live: Callable[[pa.Table, pa.Array], pa.Array]) -> pa.Table:
    """The tuned pure-Arrow merge of runs (oldest first): the newest row of each id for
    which ``live(all_rows, indices)`` holds.

    Only the (id, run rank) key columns are concatenated and sorted; keeping the first row
    of each id after sorting by (id asc, rank desc) selects its newest version; then one
    ``take`` gathers the surviving rows from the concatenated full table.
    """
    keys = pa.table(
        {
            "id": pa.concat_arrays([c for run in runs for c in run.column("id").chunks]),
            "rank": pa.concat_arrays(
                [pa.repeat(pa.scalar(i, pa.int32()), run.num_rows) for i, run in enumerate(runs)]
            ),
        }
    )
    order = pc.sort_indices(keys, sort_keys=[("id", "ascending"), ("rank", "descending")])
    ids = keys.column("id").take(order)
    n = len(ids)
    first = pa.concat_arrays(
        [
            pa.array([n > 0]),
            pc.not_equal(ids.slice(1), ids.slice(0, max(0, n - 1))).combine_chunks(),
        ]
    )
    newest = order.filter(first)
    full = pa.concat_tables(runs, promote_options="permissive")
    return full.take(newest.filter(live(full, newest)))


class RowGroupIndex:
    """Point lookups in one id-sorted Parquet file using only its footer statistics."""

    def __init__(self, path: str, filesystem: Any) -> None:
        self.file = pq.ParquetFile(path, filesystem=filesystem)
        meta = self.file.metadata
        column = meta.schema.names.index("id")
        stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
        self.mins = [s.min for s in stats]
        self.maxs = [s.max for s in stats]

    def find(self, key: int) -> pa.Table | None:
        """The row for `key` (with every column of the file), None if the file lacks it."""
        group = bisect.bisect_right(self.mins, key) - 1
        if group < 0 or key > self.maxs[group]:
            return None
        ids = self.file.read_row_group(group, columns=["id"]).column("id")
        if not pc.any(pc.equal(ids, key)).as_py():
            return None
        rows = self.file.read_row_group(group)
        return rows.filter(pc.equal(rows.column("id"), key))


class Floor(Contender):
    name = "floor"

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        if self.s3 is not None:
            self.fs: Any = self.s3.pyarrow_fs()
            self.runs_dir, self.merged = self.s3.path("runs"), self.s3.path("merged.parquet")
        else:
            self.fs = fs.LocalFileSystem()
            self.runs_dir = str(self.work_dir / "runs")
            self.merged = str(self.work_dir / "merged.parquet")
        self.seq = 0
        self.indexes: list[RowGroupIndex] = []
        self.compacted = False

    def setup(self, schema: pa.Schema) -> None:
        self.fs.create_dir(self.runs_dir, recursive=True)

    def _write_run(self, table: pa.Table) -> None:
        path = f"{self.runs_dir}/run-{self.seq:06d}.parquet"
        pq.write_table(
            sorted_by_id(table), path, filesystem=self.fs, compression="zstd",
            use_dictionary=DICTIONARY_COLUMNS, row_group_size=ROW_GROUP_ROWS,
        )  # fmt: skip
        self.seq += 1

    def load_initial(self, table: pa.Table) -> None:
        self._write_run(table.append_column("op", pa.repeat(pa.scalar("c"), table.num_rows)))

    def load_initial_batches(self, batches: Any, schema: pa.Schema) -> None:
        self.load_initial(pa.Table.from_batches(list(batches), schema))  # one sorted file

    def apply_batch(self, batch: pa.Table) -> None:
        self._write_run(batch)

    def _runs(self) -> list[str]:
        infos = self.fs.get_file_info(fs.FileSelector(self.runs_dir))
        return sorted(i.path for i in infos if i.type == fs.FileType.File)

    def read_all(self) -> pa.Table:
        if self.compacted:
            return pq.read_table(self.merged, filesystem=self.fs)
        return merge_runs([pq.read_table(p, filesystem=self.fs) for p in self._runs()])

    def compact(self) -> None:
        table = self.read_all()
        pq.write_table(
            table, self.merged, filesystem=self.fs, compression="zstd", use_dictionary=False,
            row_group_size=ROW_GROUP_ROWS,
        )  # fmt: skip
        self.compacted = True
        self.extra["merged_bytes"] = self.fs.get_file_info(self.merged).size

    def open_lookups(self) -> None:
        paths = [self.merged] if self.compacted else list(reversed(self._runs()))
        self.indexes = [RowGroupIndex(p, self.fs) for p in paths]

    def lookup(self, key: int) -> dict[str, Any] | None:
        for index in self.indexes:  # newest first
            hit = index.find(key)
            if hit is not None:
                row = hit.to_pylist()[0]
                return None if row.get("op") == "d" else {c: row[c] for c in DATA_COLUMNS}
        return None

    def live_files(self) -> int | None:
        return 1 if self.compacted else len(self._runs())


if __name__ == "__main__":
    raise SystemExit(run(Floor))
