"""pyiceberg with a SQLite SqlCatalog on local disk: one transaction per CDC batch.

Each transaction deletes the batch's `d` ids (`delete` with an `In` filter) and
upserts its `c`/`u` rows (`upsert` joined on id). pyiceberg writes deletes
copy-on-write (it has no merge-on-read delete files) and its upsert first scans
the table for the matching keys, which is why this contender is slow; the runner
tags it `slow` and gives it a timeout.
Lookups: one `scan(row_filter=EqualTo("id", key))` per key on a loaded table.
The initial load is one `append` of the whole table (pyiceberg takes a table); the
streaming scan is `to_arrow_batch_reader`; pyiceberg 0.12 has no data-file compaction.
On S3: the warehouse is an s3:// URI with s3.* FileIO properties (the SQLite catalog stays
on local disk).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo, In

from bench.harness import DATA_COLUMNS, Contender, run

IDENTIFIER = "bench.cdc"


class Iceberg(Contender):
    name = "iceberg"
    packages = ("pyiceberg",)

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.warehouse = self.location("warehouse")
        self.table: Any = None
        self.notes.append("SQLite SqlCatalog; deletes are copy-on-write; upsert scans for keys")

    def _catalog(self) -> SqlCatalog:
        properties = {}
        if self.s3 is not None:
            properties = {
                "s3.endpoint": self.s3.endpoint,
                "s3.access-key-id": self.s3.access_key,
                "s3.secret-access-key": self.s3.secret_key,
                "s3.region": self.s3.region,
            }
        warehouse = self.warehouse if self.s3 else Path(self.warehouse).as_uri()
        return SqlCatalog(
            "bench",
            uri=f"sqlite:///{self.work_dir / 'catalog.db'}",
            warehouse=warehouse,
            **properties,
        )

    def setup(self, schema: pa.Schema) -> None:
        if self.s3 is None:
            Path(self.warehouse).mkdir(parents=True, exist_ok=True)
        catalog = self._catalog()
        catalog.create_namespace("bench")
        self.table = catalog.create_table(IDENTIFIER, schema=schema)

    def load_initial(self, table: pa.Table) -> None:
        self.table.append(table)

    def apply_batch(self, batch: pa.Table) -> None:
        is_delete = pc.equal(batch.column("op"), "d")
        deleted = batch.column("id").filter(is_delete).to_pylist()
        upserts = batch.filter(pc.invert(is_delete)).select(DATA_COLUMNS)
        with self.table.transaction() as tx:
            if deleted:
                tx.delete(In("id", deleted))
            if upserts.num_rows:
                tx.upsert(upserts, join_cols=["id"])

    def read_all(self) -> pa.Table:
        return self._catalog().load_table(IDENTIFIER).scan().to_arrow().select(DATA_COLUMNS)

    def scan_batches(self) -> Iterator[pa.RecordBatch]:
        yield from self._catalog().load_table(IDENTIFIER).scan().to_arrow_batch_reader()

    def after_read(self, table: pa.Table) -> None:
        loaded = self._catalog().load_table(IDENTIFIER)
        self.extra["snapshots"] = len(loaded.snapshots())

    def open_lookups(self) -> None:
        self.table = self._catalog().load_table(IDENTIFIER)

    def lookup(self, key: int) -> dict[str, Any] | None:
        hit = self.table.scan(row_filter=EqualTo("id", key), selected_fields=tuple(DATA_COLUMNS))
        rows = hit.to_arrow()
        return rows.to_pylist()[0] if rows.num_rows else None

    def data_paths(self) -> list[Path]:
        return [self.work_dir]

    def s3_prefixes(self) -> list[str]:
        assert self.s3 is not None
        return [self.s3.path("warehouse")]


if __name__ == "__main__":
    raise SystemExit(run(Iceberg))
