"""deltalake (delta-rs): initial write, then one MERGE per CDC batch.

MERGE clauses, in order: delete when matched and op = 'd'; update all columns when
matched and op != 'd'; insert when not matched and op != 'd'. delta-rs rewrites
every data file that holds a matched row (copy-on-write); that is what it costs.
Files are written with zstd like every other contender (delta-rs defaults to snappy).
Lookups build the pyarrow dataset once (file stats attached to fragments, so files
are pruned) and run one filtered `to_table` per key. The initial load is streamed
(`write_deltalake` takes a RecordBatchReader); the streaming scan is the pyarrow dataset's
batches. Compaction: `optimize.compact()` (bin-packing small files; after the read, and
between the commits of stream workloads). On S3: delta-rs's object_store with
conditional-put commits (`conditional_put=etag`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable, WriterProperties, write_deltalake

from bench.harness import DATA_COLUMNS, Contender, run


class DeltaLake(Contender):
    name = "deltalake"
    packages = ("deltalake",)

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.path = self.location("table")
        self.options: dict[str, str] | None = None
        if self.s3 is not None:
            self.options = {
                "AWS_ENDPOINT_URL": self.s3.endpoint,
                "AWS_ACCESS_KEY_ID": self.s3.access_key,
                "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                "AWS_REGION": self.s3.region,
                "AWS_ALLOW_HTTP": "true",
                "AWS_S3_ALLOW_UNSAFE_RENAME": "false",
                "conditional_put": "etag",
            }
        self.props = WriterProperties(compression="ZSTD")
        self.table: DeltaTable | None = None
        self.dataset: ds.Dataset | None = None
        self.notes.append("MERGE is copy-on-write: matched files are rewritten each commit")

    def _open(self) -> DeltaTable:
        return DeltaTable(self.path, storage_options=self.options)

    def setup(self, schema: pa.Schema) -> None:
        if self.s3 is None:
            Path(self.path).mkdir(parents=True, exist_ok=True)

    def load_initial(self, table: pa.Table) -> None:
        write_deltalake(self.path, table, mode="error", writer_properties=self.props,
                        storage_options=self.options)  # fmt: skip
        self.table = self._open()

    def load_initial_batches(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> None:
        reader = pa.RecordBatchReader.from_batches(schema, batches)
        write_deltalake(self.path, reader, mode="error", writer_properties=self.props,
                        storage_options=self.options)  # fmt: skip
        self.table = self._open()

    def apply_batch(self, batch: pa.Table) -> None:
        assert self.table is not None
        values = {c: f"s.{c}" for c in DATA_COLUMNS}
        metrics = (
            self.table.merge(
                batch,
                predicate="t.id = s.id",
                source_alias="s",
                target_alias="t",
                writer_properties=self.props,
            )
            .when_matched_delete(predicate="s.op = 'd'")
            .when_matched_update(updates=values, predicate="s.op != 'd'")
            .when_not_matched_insert(updates=values, predicate="s.op != 'd'")
            .execute()
        )
        rewritten = self.extra.setdefault("files_rewritten", 0)
        self.extra["files_rewritten"] = rewritten + int(metrics.get("num_target_files_removed", 0))

    def compact_between(self) -> None:
        assert self.table is not None
        metrics = self.table.optimize.compact(writer_properties=self.props)
        done = self.extra.setdefault("stream_optimize", {"calls": 0, "files_added": 0})
        done["calls"] += 1
        done["files_added"] += int(metrics.get("numFilesAdded", 0))

    def scan_batches(self) -> Iterator[pa.RecordBatch]:
        yield from self._open().to_pyarrow_dataset().to_batches(columns=DATA_COLUMNS)

    def read_all(self) -> pa.Table:
        return self._open().to_pyarrow_table(columns=DATA_COLUMNS)

    def after_read(self, table: pa.Table) -> None:
        fresh = self._open()
        self.extra["version"] = fresh.version()
        self.extra["live_files"] = len(fresh.file_uris())

    def compact(self) -> None:
        metrics = self._open().optimize.compact(writer_properties=self.props)
        self.extra["optimize"] = {
            k: metrics.get(k) for k in ("numFilesAdded", "numFilesRemoved", "totalConsideredFiles")
        }

    def live_files(self) -> int | None:
        return len(self._open().file_uris())

    def open_lookups(self) -> None:
        self.dataset = self._open().to_pyarrow_dataset()

    def lookup(self, key: int) -> dict[str, Any] | None:
        assert self.dataset is not None
        hit = self.dataset.to_table(columns=DATA_COLUMNS, filter=ds.field("id") == key)
        return hit.to_pylist()[0] if hit.num_rows else None

    def data_paths(self) -> list[Path]:
        return [Path(self.path)]

    def s3_prefixes(self) -> list[str]:
        assert self.s3 is not None
        return [self.s3.path("table")]


if __name__ == "__main__":
    raise SystemExit(run(DeltaLake))
