"""slatedb (Python binding): a key-value LSM on an object store, here the local filesystem.

Key: the id as 8 big-endian bytes (byte order = numeric order for ids >= 0).
Value: the row as one fixed-width 96-byte record (name 16 | value f64 | ts i64 |
payload 64), serialised for a whole batch at once with numpy. Each commit is one
WriteBatch (put per c/u record, delete per d record) written with `db.write`,
which waits until the WAL is durable. Per-record calls are inherent to a KV API;
they are what this contender costs. Read: reopen the db and scan every key; the streaming
scan decodes and yields every 10,000 keys. Compaction runs inside slatedb (background
compactor); there is no call to force a full one. On S3: the object_store builder with
endpoint, keys and allow_http.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from slatedb.uniffi import DbBuilder, KeyRange, ObjectStore, ObjectStoreBuilder, WriteBatch

from bench.harness import DATA_COLUMNS, Contender, run

RECORD = np.dtype([("name", "S16"), ("value", "<f8"), ("ts", "<i8"), ("payload", "S64")])
SCAN_BATCH = 10_000


def encode_keys(ids: pa.ChunkedArray | pa.Array) -> list[bytes]:
    return ids.to_numpy().astype(">i8").view("V8").tolist()


def encode_rows(table: pa.Table) -> list[bytes]:
    """All rows of `table` as fixed-width records, one bytes object per row."""
    records = np.empty(table.num_rows, dtype=RECORD)
    for column in ("name", "payload"):
        records[column] = table.column(column).to_numpy().astype(RECORD[column])
    for column in ("value", "ts"):
        records[column] = table.column(column).to_numpy()
    return records.view(f"V{RECORD.itemsize}").tolist()


def text_column(values: np.ndarray) -> pa.Array:
    """Fixed-width byte strings (numpy S<n>) to an Arrow string array, zero-copy-ish."""
    width = values.dtype.itemsize
    offsets = np.arange(values.size + 1, dtype=np.int32) * width
    data = np.ascontiguousarray(values).tobytes()
    return pa.StringArray.from_buffers(values.size, pa.py_buffer(offsets), pa.py_buffer(data))


def decode_rows(keys: list[bytes], values: list[bytes]) -> pa.Table:
    records = np.frombuffer(b"".join(values), dtype=RECORD)
    return pa.table(
        {
            "id": pa.array(np.frombuffer(b"".join(keys), dtype=">i8").astype(np.int64)),
            "name": text_column(records["name"]),
            "value": pa.array(records["value"]),
            "ts": pa.array(records["ts"]),
            "payload": text_column(records["payload"]),
        }
    )


class SlateDB(Contender):
    name = "slatedb"
    packages = ("slatedb",)

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.path = self.work_dir / "db"
        self.loop = asyncio.new_event_loop()
        self.db: Any = None
        self.notes.append("KV store: one WriteBatch per commit, rows as 96-byte records")

    def _wait(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def _open(self) -> Any:
        if self.s3 is not None:
            builder = ObjectStoreBuilder.from_url(f"s3://{self.s3.bucket}")
            for key, value in {
                "endpoint": self.s3.endpoint,
                "access_key_id": self.s3.access_key,
                "secret_access_key": self.s3.secret_key,
                "region": self.s3.region,
                "allow_http": "true",
            }.items():
                builder.with_config(key, value)
            return self._wait(DbBuilder(self.s3.key("db"), builder.build()).build())
        # The store is rooted at "/" and the db path given relative to it: slatedb
        # rejects a file:// URL that carries the path itself.
        store = ObjectStore.resolve("file:///")
        return self._wait(DbBuilder(str(self.path).lstrip("/"), store).build())

    def setup(self, schema: pa.Schema) -> None:
        if self.s3 is None:
            self.path.mkdir(parents=True, exist_ok=True)
        self.db = self._open()

    def _write(self, puts: pa.Table, deletes: pa.ChunkedArray | None = None) -> None:
        batch = WriteBatch()
        for key, value in zip(encode_keys(puts.column("id")), encode_rows(puts), strict=True):
            batch.put(key, value)
        if deletes is not None:
            for key in encode_keys(deletes):
                batch.delete(key)
        self._wait(self.db.write(batch))

    def load_initial(self, table: pa.Table) -> None:
        self._write(table)

    def apply_batch(self, batch: pa.Table) -> None:
        is_delete = pc.equal(batch.column("op"), "d")
        self._write(batch.filter(pc.invert(is_delete)), batch.column("id").filter(is_delete))

    def finish_ingest(self) -> None:
        self._wait(self.db.shutdown())
        self.db = None

    async def _scan(self, db: Any) -> pa.Table:
        everything = KeyRange(start=None, start_inclusive=False, end=None, end_inclusive=False)
        iterator = await db.scan(everything)
        keys: list[bytes] = []
        values: list[bytes] = []
        while True:
            rows = await iterator.next_batch(SCAN_BATCH)
            keys.extend(row.key for row in rows)
            values.extend(row.value for row in rows)
            if len(rows) < SCAN_BATCH:
                return decode_rows(keys, values)

    def read_all(self) -> pa.Table:
        self.db = self._open()
        return self._wait(self._scan(self.db))

    def scan_batches(self) -> Iterator[pa.Table]:
        self.db = self._open()
        everything = KeyRange(start=None, start_inclusive=False, end=None, end_inclusive=False)
        iterator = self._wait(self.db.scan(everything))
        while True:
            rows = self._wait(iterator.next_batch(SCAN_BATCH))
            if rows:
                yield decode_rows([r.key for r in rows], [r.value for r in rows])
            if len(rows) < SCAN_BATCH:
                return

    def lookup(self, key: int) -> dict[str, Any] | None:
        value = self._wait(self.db.get(key.to_bytes(8, "big")))
        if value is None:
            return None
        return decode_rows([key.to_bytes(8, "big")], [value]).select(DATA_COLUMNS).to_pylist()[0]

    def close(self) -> None:
        if self.db is not None:
            self._wait(self.db.shutdown())
            self.db = None
        self.loop.close()

    def data_paths(self) -> list[Path]:
        return [self.path]

    def s3_prefixes(self) -> list[str]:
        assert self.s3 is not None
        return [self.s3.path("db")]


if __name__ == "__main__":
    raise SystemExit(run(SlateDB))
