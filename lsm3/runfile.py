"""Sorted run files: write one Parquet run and read it back, verified.

A run holds at most one row per key, sorted by the primary key, with two hidden columns: the
sequence number (``_lsm3_seq``) and the row kind (``_lsm3_kind``: 0 upsert, 1 delete). Its
manifest entry carries size and CRC-32 so a reader never returns data from a damaged or swapped
file. Footers are cached per file: files are immutable, so the cache never goes stale.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lsm3.errors import CorruptDataFile, ObjectNotFound, SizeMismatch, StorageError
from lsm3.evolution import SCHEMAS, projection
from lsm3.keys import storage_values
from lsm3.metadata import DataFile
from lsm3.schema import KIND_COLUMN, SEQ_COLUMN, TableSchema
from lsm3.storage import ObjectStore


def checksum_of(data: bytes | pa.Buffer | memoryview) -> str:
    return f"crc32:{zlib.crc32(memoryview(data)) & 0xFFFFFFFF:08x}"


def partition_dir(names: tuple[str, ...], values: tuple[Any, ...]) -> str:
    """``name=value/`` segments (values percent-encoded) for a partition, or ''."""
    parts = []
    for name, value in zip(names, values, strict=True):
        text = value.hex() if isinstance(value, bytes) else str(value)
        parts.append(f"{quote(name, safe='')}={quote(text, safe='')}")
    return "".join(p + "/" for p in parts)


def data_file_path(schema: TableSchema, partition: tuple[Any, ...], bucket: int) -> str:
    where = partition_dir(schema.partition_by, partition)
    return f"data/{where}bucket-{bucket}/{uuid.uuid4().hex}.parquet"


@dataclass
class EncodedRun:
    """A run serialised and described, ready to upload."""

    body: pa.Buffer
    file: DataFile


class RunWriter:
    """Writes one run incrementally: key-sorted, key-disjoint chunks appended in key order.

    The compactor streams merged sections into it and starts a new file when ``size`` passes
    its target; ``encode_run`` is the one-shot case.
    """

    def __init__(
        self,
        schema: TableSchema,
        *,
        level: int,
        partition: tuple[Any, ...],
        bucket: int,
        path: str | None = None,
        run_id: str = "",
    ) -> None:
        self.schema = schema
        self.run_id = run_id
        self.level = level
        self.partition = partition
        self.bucket = bucket
        self.path = path or data_file_path(schema, partition, bucket)
        self._sink = pa.BufferOutputStream()
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0
        self._deletes = 0
        self._min_key: tuple[Any, ...] | None = None
        self._max_key: tuple[Any, ...] = ()
        self._min_seq: int | None = None
        self._max_seq: int | None = None

    @property
    def size(self) -> int:
        """Bytes encoded so far (row groups still buffered in the writer are not counted)."""
        return self._sink.tell()

    def write(self, rows: pa.Table) -> None:
        n = rows.num_rows
        if n == 0:
            return
        file_schema = self.schema.file_schema()
        if rows.schema != file_schema:
            rows = rows.cast(file_schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._sink,
                rows.schema,
                compression="zstd",
                use_dictionary=dictionary_columns(rows, self.schema),
                write_page_checksum=True,
                sorting_columns=[
                    pq.SortingColumn(rows.schema.get_field_index(k))
                    for k in self.schema.primary_key
                ],
            )
        self._writer.write_table(rows, row_group_size=self.schema.option("row_group_rows"))
        keys = self.schema.primary_key
        if self._min_key is None:
            self._min_key = tuple(
                storage_values(rows.column(k).slice(0, 1))[0].as_py() for k in keys
            )
        self._max_key = tuple(
            storage_values(rows.column(k).slice(n - 1, 1))[0].as_py() for k in keys
        )
        seq = pc.min_max(rows.column(SEQ_COLUMN))
        lo, hi = int(seq["min"].as_py()), int(seq["max"].as_py())
        self._min_seq = lo if self._min_seq is None else min(self._min_seq, lo)
        self._max_seq = hi if self._max_seq is None else max(self._max_seq, hi)
        self._deletes += int(pc.sum(rows.column(KIND_COLUMN)).as_py() or 0)
        self.rows += n

    def finish(self) -> EncodedRun:
        if self._writer is None or self._min_key is None:
            raise ValueError("a run needs at least one row")
        self._writer.close()
        body = self._sink.getvalue()
        assert self._min_seq is not None and self._max_seq is not None
        file = DataFile(
            path=self.path,
            level=self.level,
            partition=self.partition,
            bucket=self.bucket,
            min_key=self._min_key,
            max_key=self._max_key,
            min_seq=self._min_seq,
            max_seq=self._max_seq,
            seq_offset=0,
            rows=self.rows,
            deletes=self._deletes,
            size=body.size,
            checksum=checksum_of(body),
            footer_checksum=footer_checksum_of(body),
            schema_id=self.schema.schema_id,
            created_ms=time.time_ns() // 1_000_000,
            run_id=self.run_id,
        )
        return EncodedRun(body, file)


def encode_run(
    rows: pa.Table,
    schema: TableSchema,
    *,
    level: int,
    partition: tuple[Any, ...],
    bucket: int,
    path: str | None = None,
    run_id: str = "",
) -> EncodedRun:
    """Serialise ``rows`` (sorted by key, one row per key, file-schema columns) as a run."""
    writer = RunWriter(
        schema, level=level, partition=partition, bucket=bucket, path=path, run_id=run_id
    )
    writer.write(rows)
    return writer.finish()


_DICTIONARY_SAMPLE = 4096


def dictionary_columns(rows: pa.Table, schema: TableSchema) -> list[str]:
    """Columns worth dictionary encoding: repetitive in a sample of the first rows.

    Dictionary encoding of high-cardinality values (ids, random payloads) costs about a third
    of the write time and then falls back to plain encoding anyway, so it is chosen per run.
    """
    sample = rows.slice(0, _DICTIONARY_SAMPLE)
    n = sample.num_rows
    chosen = []
    for name in rows.column_names:
        if name in schema.primary_key or name.startswith("_lsm3_"):
            continue
        col = sample.column(name)
        if pa.types.is_nested(col.type) or pa.types.is_null(col.type):
            continue
        try:
            distinct = pc.count_distinct(col).as_py()
        except pa.ArrowNotImplementedError:
            continue
        if n and distinct <= n // 4:
            chosen.append(name)
    return chosen


def _fetch_verified(store: ObjectStore, f: DataFile) -> pa.Buffer:
    try:
        buf = store.get_buffer(f.path)
    except ObjectNotFound:
        raise CorruptDataFile(
            f"data file {f.path} listed in the manifest is missing from {store.url}; the table "
            "was damaged outside lsm3 (objects deleted by hand?)"
        ) from None
    if buf.size != f.size:
        raise CorruptDataFile(
            f"data file {f.path} has {buf.size} bytes but its manifest entry says {f.size}; "
            "refusing to read it"
        )
    actual = checksum_of(buf)
    if actual != f.checksum:
        raise CorruptDataFile(
            f"data file {f.path} has checksum {actual} but its manifest entry says {f.checksum}; "
            "refusing to read it"
        )
    return buf


class OpenRun:
    """A verified run held in memory, read (in whole or by row group) through ``read_schema``.

    Columns are asked for by their name in ``read_schema``; a file written with an older
    schema version is mapped onto it by field id (see ``lsm3.evolution``).
    """

    def __init__(self, store: ObjectStore, f: DataFile, read_schema: TableSchema) -> None:
        self.file = f
        self.file_schema = (
            read_schema if f.schema_id == read_schema.schema_id else SCHEMAS.get(store, f.schema_id)
        )
        self.read_schema = read_schema
        buf = _fetch_verified(store, f)
        try:
            self._pq = pq.ParquetFile(pa.BufferReader(buf))
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptDataFile(f"data file {f.path} is not valid Parquet: {exc}") from None
        self.num_row_groups = self._pq.metadata.num_row_groups

    def read(self, columns: list[str], row_groups: list[int] | None = None) -> pa.Table:
        proj = projection(self.file_schema, self.read_schema, columns)
        sources = list(proj.sources)
        try:
            if row_groups is None:
                t = self._pq.read(columns=sources)
            else:
                t = self._pq.read_row_groups(row_groups, columns=sources)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptDataFile(f"data file {self.file.path} cannot be decoded: {exc}") from None
        return with_effective_seq(proj.apply(t), self.file.seq_offset)

    @property
    def metadata(self) -> pq.FileMetaData:
        return self._pq.metadata


def with_effective_seq(t: pa.Table, seq_offset: int) -> pa.Table:
    """Stored sequence numbers plus the file's offset (assigned at commit time)."""
    if seq_offset == 0 or SEQ_COLUMN not in t.column_names:
        return t
    i = t.schema.get_field_index(SEQ_COLUMN)
    return t.set_column(
        i, t.schema.field(i), pc.add(t.column(i), pa.scalar(seq_offset, pa.int64()))
    )


# --------------------------------------------------------------------------- footers & lookups


@dataclass(frozen=True)
class RunIndex:
    """A run's footer and the first-key-column range of each row group, for lookups."""

    metadata: pq.FileMetaData
    rg_min: np.ndarray
    rg_max: np.ndarray


class FooterCache:
    """LRU cache of run footers by (store URL, path); immutable files never go stale."""

    def __init__(self, capacity: int = 4096) -> None:
        self._items: OrderedDict[tuple[str, str], RunIndex] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def get(self, store: ObjectStore, f: DataFile, key_column: str) -> RunIndex:
        k = (store.url, f.path)
        with self._lock:
            found = self._items.get(k)
            if found is not None:
                self._items.move_to_end(k)
                return found
        index = _load_index(store, f, key_column)
        with self._lock:
            self._items[k] = index
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return index


_FOOTER_READ = 64 * 1024


def footer_checksum_of(body: bytes | pa.Buffer | memoryview) -> str:
    """CRC-32 of a Parquet file's footer: the metadata, its 4-byte length and ``PAR1``."""
    view = memoryview(body)
    length = int.from_bytes(view[-8:-4], "little")
    return checksum_of(view[-(8 + length) :])


class _TailFile(io.RawIOBase):
    """A file of ``size`` bytes of which only the verified tail is present (for the footer)."""

    def __init__(self, size: int, tail: bytes) -> None:
        super().__init__()
        self._size = size
        self._tail = tail
        self._start = size - len(tail)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if self._pos < self._start:
            raise OSError("read outside the verified footer")
        data = self._tail[self._pos - self._start : end - self._start]
        self._pos += len(data)
        return data


def _read_verified_footer(store: ObjectStore, f: DataFile) -> pq.FileMetaData:
    """The footer of ``f`` from one ranged GET (two if it is large), size and CRC checked."""
    n = min(f.size, _FOOTER_READ)
    tail = store.get_range(f.path, f.size - n, n, expected_size=f.size)
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        raise CorruptDataFile(f"data file {f.path} does not end like a Parquet file")
    length = int.from_bytes(tail[-8:-4], "little")
    if length + 8 > f.size:
        raise CorruptDataFile(f"data file {f.path} declares an impossible footer length")
    if length + 8 > len(tail):
        more = length + 8 - len(tail)
        tail = store.get_range(f.path, f.size - len(tail) - more, more, f.size) + tail
    if f.footer_checksum and checksum_of(tail[-(length + 8) :]) != f.footer_checksum:
        raise CorruptDataFile(
            f"data file {f.path} has a footer whose checksum disagrees with its manifest entry; "
            "refusing to read it"
        )
    return pq.ParquetFile(pa.PythonFile(_TailFile(f.size, tail), mode="r")).metadata


def _load_index(store: ObjectStore, f: DataFile, key_column: str) -> RunIndex:
    try:
        md = _read_verified_footer(store, f)
    except ObjectNotFound:
        raise CorruptDataFile(f"data file {f.path} listed in the manifest is missing") from None
    except SizeMismatch as exc:
        raise CorruptDataFile(
            f"data file {f.path} does not have the size its manifest entry says ({exc}); "
            "refusing to read it"
        ) from None
    except (pa.ArrowInvalid, OSError, StorageError) as exc:
        raise CorruptDataFile(f"data file {f.path} has an unreadable footer: {exc}") from None
    col = md.schema.names.index(key_column)
    # Temporal keys compare as their int64 storage value (the raw statistic); others logically.
    raw = pa.types.is_temporal(md.schema.to_arrow_schema().field(key_column).type)
    mins: list[Any] = []
    maxs: list[Any] = []
    for i in range(md.num_row_groups):
        stats = md.row_group(i).column(col).statistics
        known = stats is not None and stats.has_min_max
        mins.append((stats.min_raw if raw else stats.min) if known else None)
        maxs.append((stats.max_raw if raw else stats.max) if known else None)
    # Parquet omits statistics for long values (over 4 KiB): bound such row groups by their
    # neighbours (rows are sorted), falling back to the file's key range.
    for i in range(len(mins)):
        if mins[i] is None:
            mins[i] = maxs[i - 1] if i else f.min_key[0]
    for i in reversed(range(len(maxs))):
        if maxs[i] is None:
            maxs[i] = mins[i + 1] if i + 1 < len(mins) else f.max_key[0]
    return RunIndex(md, np.array(mins, dtype=object), np.array(maxs, dtype=object))


FOOTERS = FooterCache()


class KeyBlock:
    """The sorted first-key column of one row group, searchable without Arrow overhead."""

    def __init__(self, keys: pa.Array) -> None:
        self.keys = keys
        self.numeric = pa.types.is_integer(keys.type)
        self.values = keys.to_numpy() if self.numeric else None
        self.nbytes = keys.nbytes

    def match(self, wanted: list[Any]) -> pa.Array | None:
        """A boolean mask of rows whose key is in ``wanted``, or None if there are none."""
        if self.values is not None:
            probe = np.asarray(wanted, dtype=self.values.dtype)
            lo = np.searchsorted(self.values, probe, side="left")
            hi = np.searchsorted(self.values, probe, side="right")
            if not np.any(hi > lo):
                return None
            mask = np.zeros(len(self.values), dtype=bool)
            for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
                mask[a:b] = True
            return pa.array(mask)
        mask = pc.is_in(self.keys, value_set=pa.array(wanted, self.keys.type))
        return mask if pc.any(mask).as_py() else None


class KeyBlockCache:
    """LRU cache of decoded first-key-column blocks (one per row group), bounded in bytes.

    Point lookups probe many runs; with the key block cached, a run that lacks the key costs
    no request and a few microseconds. This is the index half of a block cache.
    """

    def __init__(self, capacity_bytes: int = 256 * 1024 * 1024) -> None:
        self._items: OrderedDict[tuple[str, str, int], KeyBlock] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self.capacity_bytes = capacity_bytes

    def get(self, store: ObjectStore, path: str, rg: int) -> KeyBlock | None:
        k = (store.url, path, rg)
        with self._lock:
            found = self._items.get(k)
            if found is not None:
                self._items.move_to_end(k)
            return found

    def put(self, store: ObjectStore, path: str, rg: int, keys: KeyBlock) -> None:
        k = (store.url, path, rg)
        with self._lock:
            if k in self._items:
                return
            self._items[k] = keys
            self._bytes += keys.nbytes
            while self._bytes > self.capacity_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes


KEY_BLOCKS = KeyBlockCache()


def lookup_rows(
    store: ObjectStore,
    f: DataFile,
    schema: TableSchema,
    key0_values: list[Any],
    columns: list[str],
) -> pa.Table | None:
    """Rows of run ``f`` whose first key column is in ``key0_values`` (None: no such rows).

    Row-group statistics pick the candidate row groups; their key column is read first (small)
    and only row groups that really hold a wanted key are read in full. Once the footer is
    cached that is one ranged GET for a miss and two for a hit.
    """
    key0 = schema.primary_key[0]
    index = FOOTERS.get(store, f, key0)
    wanted: set[int] = set()
    for v in key0_values:
        # Row groups are sorted by key, so the first whose max >= v is the only candidate
        # (with a composite key the next ones may share v as their first column: scan on).
        i = int(np.searchsorted(index.rg_max, v, side="left")) if len(index.rg_max) else 0
        while i < len(index.rg_min) and index.rg_min[i] <= v:
            wanted.add(i)
            i += 1
    if not wanted:
        return None
    # Cached key blocks answer most probes (a run that lacks the key) with no I/O at all.
    hits: list[tuple[int, pa.Array]] = []
    missing: list[int] = []
    for rg in sorted(wanted):
        block = KEY_BLOCKS.get(store, f.path, rg)
        if block is None:
            missing.append(rg)
            continue
        mask = block.match(key0_values)
        if mask is not None:
            hits.append((rg, mask))
    if not hits and not missing:
        return None
    with contextlib.ExitStack() as stack:
        pf: pq.ParquetFile | None = None

        def parquet() -> pq.ParquetFile:
            nonlocal pf
            if pf is None:
                source = stack.enter_context(store.open_ranged(f.path, f.size))
                pf = pq.ParquetFile(
                    source,
                    metadata=index.metadata,
                    pre_buffer=True,
                    page_checksum_verification=True,
                )
            return pf

        try:
            for rg in missing:
                keys = parquet().read_row_group(rg, columns=[key0], use_threads=False)
                block = KeyBlock(storage_values(keys.column(0)).combine_chunks())
                KEY_BLOCKS.put(store, f.path, rg, block)
                mask = block.match(key0_values)
                if mask is not None:
                    hits.append((rg, mask))
            hits.sort(key=lambda h: h[0])
            file_schema = (
                schema if f.schema_id == schema.schema_id else SCHEMAS.get(store, f.schema_id)
            )
            proj = projection(file_schema, schema, columns)
            pieces = [
                proj.apply(
                    parquet().read_row_group(rg, columns=list(proj.sources), use_threads=False)
                ).filter(mask)
                for rg, mask in hits
            ]
        except SizeMismatch as exc:
            raise CorruptDataFile(
                f"data file {f.path} does not have the size its manifest entry says ({exc})"
            ) from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptDataFile(f"data file {f.path} cannot be decoded: {exc}") from None
    if not pieces:
        return None
    return with_effective_seq(pa.concat_tables(pieces), f.seq_offset)
