"""lsm3 through its public API (runs in the main venv), plus the compactor.

create_table -> one writer().upsert per input batch (initial load: one commit) -> per CDC
batch writer().apply_cdc(op_column="op") + commit() -> to_batches()/to_arrow() -> get(key).
The read, the scan and the lookups use a fresh handle (`lsm3.open_table`), so nothing
cached by the writing handle flatters them. Requests: lsm3's own `store_stats()` summed
over every handle (on S3 the counting proxy counts too; the runner keeps both).

Compaction (`compactor.compact`, its own handle as a separate compactor process would):
- stream workloads: `--policy` (universal | leveled | full) every `compact_every` commits;
  after every commit `probe` records the simulation's figures: sorted runs per bucket,
  files per level, live bytes, and the files a point read may touch (read amplification:
  files whose key range admits the key, over a fixed sample of keys);
- read phase: a full compaction (policy "full"), and in the same run the floor of that
  compaction: plain pyarrow reading the same input files, merging (sort by key and
  recency, keep the newest, drop deletes) and writing the same rows as one zstd file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.contenders.floor_bench import newest_live
from bench.harness import DATA_COLUMNS, Contender, NotSupported, counter_sum, run

REQUIRED = ("create_table", "open_table")
TABLE_METHODS = ("writer", "to_arrow", "to_batches", "get", "files", "store_stats")
READ_AMP_SAMPLE = 200  # keys (from keys.parquet) whose candidate files are counted per probe


def import_lsm3() -> Any:
    try:
        import lsm3
    except Exception as exc:  # any import-time failure means "not available yet"
        raise NotSupported(f"import lsm3 failed: {type(exc).__name__}: {exc}") from exc
    missing = [name for name in REQUIRED if not hasattr(lsm3, name)]
    if missing:
        raise NotSupported(f"lsm3 API incomplete: missing {', '.join(missing)}")
    return lsm3


class Lsm3(Contender):
    name = "lsm3"
    packages = ("lsm3",)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--policy", default="universal", choices=("universal", "leveled", "full"),
            help="compaction policy between commits of stream workloads",
        )  # fmt: skip
        parser.add_argument(
            "--table-options", default="{}",
            help='JSON table options for create_table, e.g. {"memtable_bytes": 67108864}',
        )  # fmt: skip

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.lsm3 = import_lsm3()
        self.uri = self.location("table")
        self.options = self.s3_options()
        self.table: Any = None
        self.handles: list[Any] = []  # every handle opened, for the request counters
        self.compactor_table: Any = None
        self.probe_table: Any = None
        self.sample_keys: list[int] | None = None
        self.policy = args.policy
        if self.args.variant and self.args.variant != "lsm3":
            self.name = self.args.variant

    def s3_options(self) -> dict[str, str] | None:
        if self.s3 is None:
            return None
        return {
            "endpoint_url": self.s3.endpoint,
            "region": self.s3.region,
            "access_key_id": self.s3.access_key,
            "secret_access_key": self.s3.secret_key,
        }

    def _open(self) -> Any:
        table = self.lsm3.open_table(self.uri, self.options)
        self.handles.append(table)
        return table

    def store_counters(self) -> dict[str, dict[str, int]] | None:
        total: dict[str, Any] = {}
        for handle in self.handles:
            total = counter_sum(total, handle.store_stats())
        return total

    def data_paths(self) -> list[Path]:
        return [Path(self.uri)]

    def s3_prefixes(self) -> list[str]:
        assert self.s3 is not None
        return [self.s3.path("table")]

    # -- write ---------------------------------------------------------------------------
    def setup(self, schema: pa.Schema) -> None:
        options = json.loads(self.args.table_options)
        if options:
            self.notes.append(f"table options: {options}")
        self.table = self.lsm3.create_table(
            self.uri, schema, primary_key=["id"], options=options or None,
            storage_options=self.options,
        )  # fmt: skip
        self.handles.append(self.table)
        missing = [name for name in TABLE_METHODS if not hasattr(self.table, name)]
        if missing:
            raise NotSupported(f"lsm3 table API incomplete: missing {', '.join(missing)}")

    def load_initial_batches(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> None:
        with self.table.writer() as writer:  # one commit; the memtable flushes at its budget
            for batch in batches:
                writer.upsert(batch)

    def load_initial(self, table: pa.Table) -> None:
        with self.table.writer() as writer:
            writer.upsert(table)

    def apply_batch(self, batch: pa.Table) -> None:
        with self.table.writer() as writer:
            writer.apply_cdc(batch, op_column="op")
            writer.commit()

    def compact_between(self) -> None:
        import compactor

        if self.compactor_table is None:
            self.compactor_table = self._open()
        result = compactor.compact(self.compactor_table, policy=self.policy)
        done = self.extra.setdefault(
            "stream_compaction", {"calls": 0, "tasks": 0, "bytes_read": 0, "bytes_written": 0}
        )
        done["calls"] += 1
        done["tasks"] += len(result.tasks)
        done["bytes_read"] += result.bytes_read
        done["bytes_written"] += result.bytes_written

    def probe(self) -> dict[str, Any]:
        """The simulation's state figures (metadata only, requests discarded by the harness)."""
        if self.probe_table is None:
            self.probe_table = self._open()
            keys = pq.read_table(
                Path(self.args.workload_dir) / "keys.parquet", columns=["key"]
            ).column("key")
            self.sample_keys = keys.slice(0, READ_AMP_SAMPLE).to_pylist()
        self.probe_table.refresh()
        files = self.probe_table.files()
        buckets: dict[Any, list[Any]] = {}
        for f in files:
            buckets.setdefault((f.partition, f.bucket), []).append(f)
        runs = max(
            (
                sum(1 for f in fs if f.level == 0) + len({f.level for f in fs if f.level > 0})
                for fs in buckets.values()
            ),
            default=0,
        )
        touched, worst_level = [], 0
        for key in self.sample_keys or []:
            hit = [f for f in files if f.min_key <= (key,) <= f.max_key]
            touched.append(len(hit))
            per_level: dict[int, int] = {}
            for f in hit:
                if f.level > 0:
                    per_level[f.level] = per_level.get(f.level, 0) + 1
            worst_level = max([worst_level, *per_level.values()])
        return {
            "files": len(files),
            "sorted_runs": runs,
            "level0": sum(1 for f in files if f.level == 0),
            "levels": sorted({f.level for f in files}),
            "bytes": sum(f.bytes for f in files),
            "rows": sum(f.rows for f in files),
            "read_amp_mean": sum(touched) / max(1, len(touched)),
            "read_amp_max": max(touched, default=0),
            "read_amp_max_per_level": worst_level,
        }

    def finish_ingest(self) -> None:
        self.extra["written_files"] = len(self.table.files())

    # -- read ----------------------------------------------------------------------------
    def scan_batches(self) -> Iterator[pa.RecordBatch]:
        yield from self._open().to_batches()

    def read_all(self) -> pa.Table:
        self.table = self._open()
        return self.table.to_arrow().select(DATA_COLUMNS)

    def open_lookups(self) -> None:
        self.table = self._open()
        self.table.files()  # load and cache the table's metadata before the first lookup

    def lookup(self, key: int) -> dict[str, Any] | None:
        row = self.table.get(key)
        return dict(row) if row is not None else None

    def live_files(self) -> int | None:
        return len(self._open().files())

    # -- compaction ----------------------------------------------------------------------
    def compact(self) -> None:
        import compactor

        table = self._open()
        inputs = table.files()
        if len(inputs) <= 1:
            self.notes.append("compaction: the table was already one file")
        started, cpu = time.perf_counter(), time.process_time()
        result = compactor.compact(table, policy="full")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        self.extra["compaction"] = {
            "tasks": len(result.tasks),
            "files_before": result.files_before,
            "files_after": result.files_after,
            "bytes_read": result.bytes_read,
            "bytes_written": result.bytes_written,
            "seconds": seconds,
            "cpu_s": cpu,
            "requests": result.requests,
        }
        self.compacted_inputs = inputs if result.bytes_read else []

    def after_compact(self) -> None:
        """The compaction's floor, in the same run but outside the timed compaction."""
        done = self.extra.get("compaction") or {}
        if getattr(self, "compacted_inputs", None):
            floor = self.floor_compaction(self.compacted_inputs, done["bytes_read"])
            floor["ratio"] = floor["seconds"] / done["seconds"] if done.get("seconds") else None
            self.extra["compaction_floor"] = floor

    def floor_compaction(self, inputs: list[Any], bytes_read: int) -> dict[str, Any]:
        """Plain pyarrow doing the same compaction I/O: read the same run files, merge by
        (key, recency), drop deletes, write the rows as one zstd file (same row groups)."""
        if self.s3 is not None:
            filesystem = self.s3.pyarrow_fs()
            root, out = self.s3.path("table"), self.s3.path("floor-compaction.parquet")
        else:
            filesystem, root, out = (
                None,
                self.uri,
                os.path.join(str(self.work_dir), "floor.parquet"),
            )
        oldest_first = sorted(inputs, key=lambda f: f.max_seq)
        started, cpu = time.perf_counter(), time.process_time()
        runs = [pq.read_table(f"{root}/{f.path}", filesystem=filesystem) for f in oldest_first]
        kind = next(n for n in runs[0].column_names if n.endswith("_kind"))
        merged = newest_live(runs, lambda full, rows: pc.not_equal(full.column(kind).take(rows), 1))
        rows = self.table.table_schema.option("row_group_rows") if self.table else 16384
        pq.write_table(
            merged, out, filesystem=filesystem, compression="zstd", row_group_size=rows,
            use_dictionary=False,
        )  # fmt: skip
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        info = filesystem.get_file_info(out).size if filesystem else os.path.getsize(out)
        return {"seconds": seconds, "cpu_s": cpu, "bytes_read": bytes_read, "bytes_written": info,
                "rows_out": merged.num_rows}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(run(Lsm3))
