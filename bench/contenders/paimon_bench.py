"""pypaimon: a primary-key table (deduplicate merge engine, fixed buckets), one commit per batch.

Deletes are written as row kind -D through the `rowkind.field` table option: the
batch's Debezium op column is mapped (vectorised) to +I / +U / -D in a `rowkind`
column. `--native` enables the pypaimon-rust backend through the table options
write.native.enabled, read.native.enabled and commit.native.enabled; pypaimon
silently falls back to Python when a route is unsupported, so the script records
which paths actually ran native (writer class, commit object, read fallbacks).
Lookups: one read per key with an equality predicate on the primary key.
The initial load is written batch by batch (`write_arrow_batch`) and committed once; the
streaming scan is `to_arrow_batch_reader`. pypaimon has no compaction call (Paimon
compacts inside its writers: sorted-run triggers), so there is no read after compaction.
On S3: the warehouse is an s3:// URI with fs.s3.* catalog options.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pypaimon import CatalogFactory, Schema
from pypaimon.read import table_read

from bench.harness import DATA_COLUMNS, Contender, run

ROWKIND = "cdc_kind"  # "rowkind" is a reserved name in pypaimon-rust
NATIVE_OPTIONS = {
    "write.native.enabled": "true",
    "read.native.enabled": "true",
    "commit.native.enabled": "true",
}
IDENTIFIER = "bench.cdc"

_read_fallbacks: list[str] = []


def _record_fallbacks() -> None:
    """Wrap TableRead._native_fallback so silent fallbacks to Python are reported."""
    original = table_read.TableRead._native_fallback

    def wrapper(self: Any, reason: str, *args: Any, **kwargs: Any) -> Any:
        _read_fallbacks.append(reason)
        return original(self, reason, *args, **kwargs)

    table_read.TableRead._native_fallback = wrapper


def with_rowkind(batch: pa.Table) -> pa.Table:
    """Replace Debezium `op` (c/u/d) by a Paimon row kind column (+I/+U/-D)."""
    kinds = pa.array(["+I", "+U", "-D"])
    index = pc.index_in(batch.column("op"), value_set=pa.array(["c", "u", "d"]))
    return batch.select(DATA_COLUMNS).append_column(ROWKIND, kinds.take(index))


class Paimon(Contender):
    name = "paimon"
    packages = ("pypaimon", "pypaimon-rust")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--native", action="store_true", help="enable pypaimon-rust")
        parser.add_argument("--buckets", type=int, default=1, help="fixed bucket count")

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        if args.native:
            self.name = "paimon-rust"
            _record_fallbacks()
        self.warehouse = self.location("warehouse")
        self.catalog: Any = None
        self.table: Any = None
        self.writers: set[str] = set()
        self.native_commits = 0
        self.notes.append(f"bucket={args.buckets}, deduplicate merge engine, deletes as -D")

    def _options(self) -> dict[str, str]:
        options = {"bucket": str(self.args.buckets), "rowkind.field": ROWKIND}
        if self.args.native:
            options.update(NATIVE_OPTIONS)
        return options

    def _catalog_options(self) -> dict[str, str]:
        options = {"warehouse": self.warehouse}
        if self.s3 is not None:
            options.update({
                "fs.s3.endpoint": self.s3.endpoint,
                "fs.s3.accessKeyId": self.s3.access_key,
                "fs.s3.accessKeySecret": self.s3.secret_key,
                "fs.s3.region": self.s3.region,
                # the same for the Rust core (opendal), which reads the s3.* keys
                "s3.endpoint": self.s3.endpoint,
                "s3.access-key": self.s3.access_key,
                "s3.secret-key": self.s3.secret_key,
                "s3.region": self.s3.region,
                "s3.path-style-access": "true",
            })  # fmt: skip
        return options

    def setup(self, schema: pa.Schema) -> None:
        self.catalog = CatalogFactory.create(self._catalog_options())
        self.catalog.create_database("bench", True)
        table_schema = schema.append(pa.field(ROWKIND, pa.string()))
        paimon_schema = Schema.from_pyarrow_schema(
            table_schema, primary_keys=["id"], options=self._options()
        )
        self.catalog.create_table(IDENTIFIER, paimon_schema, False)
        self.table = self.catalog.get_table(IDENTIFIER)

    def _commit(self, data: pa.Table) -> None:
        builder = self.table.new_batch_write_builder()
        writer, commit = builder.new_write(), builder.new_commit()
        try:
            self.writers.add(type(writer).__name__)
            writer.write_arrow(data)
            commit.commit(writer.prepare_commit())
            self.native_commits += getattr(commit, "_native_commit", None) is not None
        finally:
            writer.close()
            commit.close()

    def load_initial(self, table: pa.Table) -> None:
        self._commit(table.append_column(ROWKIND, pa.repeat(pa.scalar("+I"), table.num_rows)))

    def load_initial_batches(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> None:
        builder = self.table.new_batch_write_builder()
        writer, commit = builder.new_write(), builder.new_commit()
        try:
            self.writers.add(type(writer).__name__)
            for batch in batches:
                kinds = pa.repeat(pa.scalar("+I"), batch.num_rows)
                writer.write_arrow_batch(
                    pa.RecordBatch.from_arrays(
                        [*batch.columns, kinds], [*batch.schema.names, ROWKIND]
                    )
                )
            commit.commit(writer.prepare_commit())
        finally:
            writer.close()
            commit.close()

    def apply_batch(self, batch: pa.Table) -> None:
        self._commit(with_rowkind(batch))

    def finish_ingest(self) -> None:
        self.extra["writer_classes"] = sorted(self.writers)
        self.extra["native_commits"] = self.native_commits
        if self.args.native and not self.native_commits:
            # pypaimon 2.1.0 create_native_commit() requires a REST catalog.
            self.notes.append("commits ran in Python: native commit needs a REST catalog")

    def _read(self, table: Any, key: int | None = None) -> pa.Table:
        builder = table.new_read_builder()
        if key is not None:
            builder = builder.with_filter(builder.new_predicate_builder().equal("id", key))
        splits = builder.new_scan().plan().splits()
        return builder.new_read().to_arrow(splits)

    def read_all(self) -> pa.Table:
        catalog = CatalogFactory.create(self._catalog_options())
        return self._read(catalog.get_table(IDENTIFIER)).select(DATA_COLUMNS)

    def scan_batches(self) -> Iterator[pa.RecordBatch]:
        table = CatalogFactory.create(self._catalog_options()).get_table(IDENTIFIER)
        builder = table.new_read_builder()
        splits = builder.new_scan().plan().splits()
        yield from builder.new_read().to_arrow_batch_reader(splits)

    def after_read(self, table: pa.Table) -> None:
        if self.args.native:
            self.extra["read_fallbacks"] = sorted(set(_read_fallbacks))
            self.extra["native_read"] = not _read_fallbacks

    def open_lookups(self) -> None:
        catalog = CatalogFactory.create(self._catalog_options())
        self.table = catalog.get_table(IDENTIFIER)

    def lookup(self, key: int) -> dict[str, Any] | None:
        rows = self._read(self.table, key)
        hit = rows.filter(pc.equal(rows.column("id"), key))  # the filter may only prune files
        return hit.select(DATA_COLUMNS).to_pylist()[0] if hit.num_rows else None

    def data_paths(self) -> list[Path]:
        return [Path(self.warehouse)]

    def s3_prefixes(self) -> list[str]:
        assert self.s3 is not None
        return [self.s3.path("warehouse")]


if __name__ == "__main__":
    raise SystemExit(run(Paimon))
