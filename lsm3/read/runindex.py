"""The index of immutable runs: verified footers and decoded key blocks, cached.

Point lookups and sectioned scans need, per run, the key range of every row group (from the
footer) and, for lookups, the first key column of the row groups they probe. Runs never
change, so both are cached for the life of the process: a probe of a run that lacks the key
then costs no request. Footers are read with ranged GETs, their size and CRC checked against
the manifest entry.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lsm3.errors import CorruptDataFile, InvalidInput, ObjectNotFound, SizeMismatch, StorageError
from lsm3.format.metadata import DataFile
from lsm3.io.store import ObjectStore
from lsm3.read.runbytes import checksum_of


@dataclass(frozen=True)
class RunIndex:
    """A run's footer and the first-key-column range of each row group, for lookups."""

    metadata: pq.FileMetaData
    rg_min: np.ndarray
    rg_max: np.ndarray
    columns: tuple[str, ...]  # top-level column names of the file, as its footer says
    bounds: tuple[list[Any], list[Any]]  # rg_min and rg_max as lists, for scalar bisects


class FooterCache:
    """LRU cache of run footers by (store URL, path); immutable files never go stale."""

    def __init__(self, capacity: int = 4096) -> None:
        self._items: OrderedDict[tuple[str, str], RunIndex] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def clear(self) -> None:
        """Forget every footer (they are read again when needed)."""
        with self._lock:
            self._items.clear()

    def peek(self, store: ObjectStore, f: DataFile) -> RunIndex | None:
        """The cached index of ``f``, or None (no request)."""
        k = (store.url, f.path)
        with self._lock:
            found = self._items.get(k)
            if found is not None:
                self._items.move_to_end(k)
            return found

    def get(
        self,
        store: ObjectStore,
        f: DataFile,
        key_column: str,
        metadata: pq.FileMetaData | None = None,
    ) -> RunIndex:
        """The index of ``f``: cached, or built from ``metadata`` (a footer the caller already
        verified, e.g. of a run it fetched whole), or from a footer read now."""
        found = self.peek(store, f)
        if found is not None:
            return found
        k = (store.url, f.path)
        if metadata is None:
            index = _load_index(store, f, key_column)
        else:
            index = _index_of(metadata, f, key_column)
        with self._lock:
            self._items[k] = index
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return index


_FOOTER_READ = 64 * 1024


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
    # The Thrift footer is self-contained: it parses from its own bytes (offsets in it stay
    # absolute, for the ranged reads that use it later).
    return pq.read_metadata(pa.BufferReader(tail[-(length + 8) :]))


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
    except StorageError:
        raise  # a failed request (503, timeout) is not damage: let the caller retry
    except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
        raise CorruptDataFile(f"data file {f.path} has an unreadable footer: {exc}") from None
    return _index_of(md, f, key_column)


def _index_of(md: pq.FileMetaData, f: DataFile, key_column: str) -> RunIndex:
    mins: list[Any] = []
    maxs: list[Any] = []
    try:
        col, raw = _key_column_of(md, key_column)
        columns = tuple(md.schema.to_arrow_schema().names)
        for i in range(md.num_row_groups):
            stats = md.row_group(i).column(col).statistics
            known = stats is not None and stats.has_min_max
            mins.append((stats.min_raw if raw else stats.min) if known else None)
            maxs.append((stats.max_raw if raw else stats.max) if known else None)
    except (pa.ArrowException, KeyError, ValueError) as exc:  # incl. UnicodeDecodeError
        raise CorruptDataFile(f"data file {f.path} has an unusable footer: {exc}") from None
    # Parquet omits statistics for long values (over 4 KiB): bound such row groups by their
    # neighbours (rows are sorted), falling back to the file's key range.
    for i in range(len(mins)):
        if mins[i] is None:
            mins[i] = maxs[i - 1] if i else f.min_key[0]
    for i in reversed(range(len(maxs))):
        if maxs[i] is None:
            maxs[i] = mins[i + 1] if i + 1 < len(mins) else f.max_key[0]
    return RunIndex(md, _bounds_array(mins), _bounds_array(maxs), columns, (mins, maxs))


def _bounds_array(values: list[Any]) -> np.ndarray:
    """Row-group bounds as int64 when they are integers (a lookup's binary search over them
    is then a few hundred nanoseconds rather than microseconds), else as Python objects."""
    if values and all(type(v) is int for v in values):
        ints = np.array(values)  # int64, or uint64 above 2**63 (object if out of both)
        if ints.dtype.kind in "iu":
            return ints
    return np.array(values, dtype=object)


def _key_column_of(md: pq.FileMetaData, key_column: str) -> tuple[int, bool]:
    """The key column's index in ``md``, and whether its statistics are compared raw.

    Checks, before any statistics are read, that every row group stores the key column with
    the physical type the schema declares: pyarrow aborts the interpreter (an uncatchable C++
    exception) when it builds statistics for a chunk whose type disagrees, which a damaged
    file that still matches forged checksums can arrange."""
    names = md.schema.names
    if key_column not in names:
        raise ValueError(f"the footer has no key column {key_column!r} (columns: {names})")
    col = names.index(key_column)
    declared = md.schema.column(col).physical_type
    for i in range(md.num_row_groups):
        stored = md.row_group(i).column(col).physical_type
        if stored != declared:
            raise ValueError(
                f"row group {i} stores key column {key_column!r} as {stored}, "
                f"but the file schema declares {declared}"
            )
    # Temporal keys compare as their int64 storage value (the raw statistic); others logically.
    raw = pa.types.is_temporal(md.schema.to_arrow_schema().field(key_column).type)
    return col, raw


FOOTERS = FooterCache()

V = TypeVar("V")


class KeyBlock:
    """The sorted first-key column of one row group, searchable without Arrow overhead.

    For a run that holds deletes and a one-column key, the block also carries the row kinds
    (and the stored sequence numbers, unless the manifest states them), so that a lookup that
    lands on a delete learns it without decoding the row group (``lsm3.read.lookup``)."""

    def __init__(
        self, keys: pa.Array, kinds: pa.Array | None = None, seqs: pa.Array | None = None
    ) -> None:
        self.keys = keys
        self.kinds = kinds
        self.seqs = seqs
        self.numeric = pa.types.is_integer(keys.type)
        self.values = keys.to_numpy() if self.numeric else None
        self._sorted: list[Any] | None = None  # the keys as Python values, for ``position``
        self.nbytes = keys.nbytes + sum(a.nbytes for a in (kinds, seqs) if a is not None)

    def position(self, value: Any) -> int:
        """The row of ``value`` (a one-column key block, sorted, each key once), or -1."""
        if self.values is not None:
            i = int(self.values.searchsorted(value))
            return i if i < len(self.values) and self.values[i] == value else -1
        if self._sorted is None:
            self._sorted = self.keys.to_pylist()  # once per block; bisect then compares
        i = bisect.bisect_left(self._sorted, value)
        return i if i < len(self._sorted) and self._sorted[i] == value else -1

    def match(self, wanted: list[Any]) -> pa.Array | None:
        """A boolean mask of rows whose key is in ``wanted``, or None if there are none."""
        if self.values is not None and len(wanted) == 1:  # a single get: no temporaries
            first = int(self.values.searchsorted(wanted[0], side="left"))
            end = int(self.values.searchsorted(wanted[0], side="right"))
            if end == first:
                return None
            one = np.zeros(len(self.values), dtype=bool)
            one[first:end] = True  # several rows when the key has more columns
            return pa.array(one)
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


class BlockCache(Generic[V]):
    """LRU cache of decoded blocks of immutable runs, bounded in bytes; thread-safe.

    Keys start with the store URL and the run's path; runs never change, so nothing goes
    stale. ``capacity_bytes`` may be changed at any time (``lsm3.set_cache_limits``).
    """

    def __init__(self, capacity_bytes: int, size_of: Callable[[V], int]) -> None:
        self._items: OrderedDict[tuple[Any, ...], V] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self._size_of = size_of
        self.capacity_bytes = capacity_bytes

    def get(self, key: tuple[Any, ...]) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], value: V) -> None:
        size = self._size_of(value)
        with self._lock:
            if key in self._items or size > self.capacity_bytes:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.capacity_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= self._size_of(evicted)

    def has_room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit without evicting anything."""
        with self._lock:
            return self._bytes + nbytes <= self.capacity_bytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes


#: The first key column of row groups: a probe of a run that lacks the key costs no request
#: and a few microseconds (the index half of a block cache).
KEY_BLOCKS: BlockCache[KeyBlock] = BlockCache(256 * 1024 * 1024, lambda b: b.nbytes)


class RowBlock:
    """A decoded row group that lookups hit, and its columns as arrays for scalar reads
    (``Table.column`` costs microseconds per call; one value per column per get)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.nbytes = table.nbytes
        self._arrays: dict[str, pa.Array] | None = None

    def arrays(self) -> dict[str, pa.Array]:
        if self._arrays is None:
            self._arrays = {
                name: col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
                for name, col in zip(self.table.column_names, self.table.columns, strict=True)
            }
        return self._arrays


#: Decoded row groups that point lookups hit, by (store, path, row group, columns): a hot
#: key is then answered from memory, like RocksDB's and SlateDB's block caches (the data
#: half). Smaller than the key blocks: a row group holds every column.
ROW_BLOCKS: BlockCache[RowBlock] = BlockCache(128 * 1024 * 1024, lambda b: b.nbytes)


#: Whole decoded runs, by (store, path, read schema id), with the first key column as a
#: sorted numpy array when it is an integer (else None): the batched lookups of the
#: changelog (``lsm3.read.batch_lookup``).
DECODED_RUNS: BlockCache[tuple[pa.Table, np.ndarray | None]] = BlockCache(
    512 * 1024 * 1024, lambda found: found[0].nbytes + (0 if found[1] is None else found[1].nbytes)
)


def set_cache_limits(
    *,
    key_block_bytes: int | None = None,
    row_block_bytes: int | None = None,
    decoded_run_bytes: int | None = None,
) -> dict[str, int]:
    """Bound the process-wide lookup caches (0 turns one off); returns the limits in force.

    ``key_block_bytes`` (default 256 MiB) holds the key column of probed row groups;
    ``row_block_bytes`` (default 128 MiB) holds whole row groups that lookups hit;
    ``decoded_run_bytes`` (default 512 MiB) holds whole runs that batched lookups decoded:
    writers of tables with ``changelog_producer = "lookup"`` finding the previous values of
    their keys, and ``changes``/``changelog`` computing a commit's changes (``none``).
    """
    limits = (
        ("key_block_bytes", KEY_BLOCKS, key_block_bytes),
        ("row_block_bytes", ROW_BLOCKS, row_block_bytes),
        ("decoded_run_bytes", DECODED_RUNS, decoded_run_bytes),
    )
    for name, _cache, value in limits:
        if value is not None and (not isinstance(value, int) or value < 0):
            raise InvalidInput(f"{name} must be a non-negative int, got {value!r}")
    for _name, cache, value in limits:
        if value is not None:
            cache.capacity_bytes = value
            if value == 0:
                cache.clear()
    return {name: cache.capacity_bytes for name, cache, _value in limits}
