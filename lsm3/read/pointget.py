"""One-key gets answered from the lookup caches with scalar Python, no Arrow call per get.

``lsm3.read.lookup`` serves any number of keys with whole-array Arrow work: about twenty
Arrow calls per get (building key arrays, the bucket hash, masks, filters, concatenations,
``to_pylist``), each a few microseconds of fixed cost, so a warm get of one key took
0.17-0.24 ms on the benchmark table although every byte it needed was cached. This module
answers ``Table.get`` of one key from the same caches (footers, key blocks, row blocks of
``lsm3.read.runindex``) with a bisect, a numpy binary search and one value per column:

* the snapshot's files are grouped by (partition, bucket) and ordered newest first once
  per snapshot (``_Plan``), not per get;
* the bucket is hashed in Python (docs/FORMAT.md, section 5);
* a run is probed by bisecting its row groups' key bounds and binary searching the cached
  key block; a run lacking the key costs no Arrow call, so an absent key costs microseconds;
* a hit reads its values from the cached decoded row group.

It covers the common case: one key column of an integer or string type, the ``deduplicate``
engine, no sequence field, runs written with the schema being read. Whenever a get needs
something that is not cached (or falls outside that case) it returns ``MISS``, and the
caller uses the general path, which loads the caches; the next get of those runs is fast.
Both paths give the same answer: the version with the highest sequence number, None if it
is a delete (docs/FORMAT.md, section 8).
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lsm3.format.evolution import projection
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import KIND_COLUMN, KIND_UPSERT, SEQ_COLUMN, TableSchema
from lsm3.io.store import ObjectStore
from lsm3.read.runfile import manifest_constants
from lsm3.read.runindex import FOOTERS, KEY_BLOCKS, ROW_BLOCKS

#: Returned when the fast path cannot answer: use ``lsm3.read.lookup``.
MISS: Any = object()

_MASK64 = (1 << 64) - 1
_INT_RANGES = {
    pa.int8(): (-(1 << 7), (1 << 7) - 1),
    pa.int16(): (-(1 << 15), (1 << 15) - 1),
    pa.int32(): (-(1 << 31), (1 << 31) - 1),
    pa.int64(): (-(1 << 63), (1 << 63) - 1),
    pa.uint8(): (0, (1 << 8) - 1),
    pa.uint16(): (0, (1 << 16) - 1),
    pa.uint32(): (0, (1 << 32) - 1),
    pa.uint64(): (0, (1 << 64) - 1),
}
_STRING_TYPES = (pa.string(), pa.large_string())


def _fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _MASK64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _MASK64
    return k ^ (k >> 33)


def key_bucket(value: int | str, buckets: int) -> int:
    """The bucket of a one-column key (docs/FORMAT.md, section 5), in scalar Python."""
    if buckets == 1:
        return 0
    if isinstance(value, int):
        h = _fmix64(value & _MASK64)
    else:
        f = 0xCBF29CE484222325
        for b in value.encode("utf-8"):
            f = ((f ^ b) * 0x100000001B3) & _MASK64
        h = _fmix64(f)
    return _fmix64(h) % buckets  # h = fmix64(0 * 31 + hash(value))


@dataclass
class _Run:
    """What a get needs of one run, ready for scalar code."""

    file: DataFile
    lo: Any  # first and last key (storage values)
    hi: Any
    row_key: tuple[Any, ...]  # ROW_BLOCKS key without the row group: (url, path)
    sources: tuple[str, ...]  # the columns of its cached row groups


class _Plan:
    """A snapshot's runs by (partition, bucket), newest first, for one schema."""

    def __init__(self, store: ObjectStore, schema: TableSchema, files: Sequence[DataFile]):
        self.store = store
        self.schema = schema
        self.names = tuple(schema.arrow.names)
        key = schema.primary_key[0]
        self.key_type = schema.arrow.field(key).type
        self.partitioned = bool(schema.partition_by)
        self.buckets = schema.buckets
        file_columns = [*schema.arrow.names, SEQ_COLUMN, KIND_COLUMN]
        groups: dict[tuple[tuple[Any, ...], int], list[_Run]] = {}
        self.groups = groups
        self.usable = _applies(schema)
        if not self.usable:
            return
        for f in files:
            if f.schema_id != schema.schema_id:
                self.usable = False  # renamed or added columns: the general path maps them
                return
            constant = manifest_constants(f, schema, file_columns)
            stored = [c for c in file_columns if c not in constant]
            sources = tuple(projection(schema, schema, stored).sources)
            run = _Run(f, f.min_key[0], f.max_key[0], (store.url, f.path), sources)
            groups.setdefault((f.partition, f.bucket), []).append(run)
        for runs in groups.values():
            runs.sort(key=lambda r: -r.file.effective_max_seq)

    def storage_key(self, key: Any) -> Any:
        """``key`` if it is a valid value of the key column in the fast path's types, else
        MISS (the general path validates and explains)."""
        t = self.key_type
        if type(key) is int:
            bounds = _INT_RANGES.get(t)
            if bounds is not None and bounds[0] <= key <= bounds[1]:
                return key
        elif type(key) is str and t in _STRING_TYPES:
            return key
        return MISS


def _applies(schema: TableSchema) -> bool:
    if len(schema.primary_key) != 1 or schema.sequence_field or not schema.engine.is_deduplicate:
        return False
    t = schema.arrow.field(schema.primary_key[0]).type
    return t in _INT_RANGES or t in _STRING_TYPES


_PLANS: OrderedDict[tuple[str, int, int], tuple[Snapshot, _Plan]] = OrderedDict()
_PLANS_LOCK = threading.Lock()


def _plan_of(
    store: ObjectStore,
    schema: TableSchema,
    snapshot: Snapshot,
    files: Callable[[], Sequence[DataFile]],
) -> _Plan:
    k = (store.url, snapshot.snapshot_id, schema.schema_id)
    with _PLANS_LOCK:
        found = _PLANS.get(k)
        if found is not None and (found[0] is snapshot or found[0] == snapshot):
            _PLANS.move_to_end(k)
            return found[1]
    plan = _Plan(store, schema, files())
    with _PLANS_LOCK:
        _PLANS[k] = (snapshot, plan)
        while len(_PLANS) > 8:
            _PLANS.popitem(last=False)
    return plan


def get_one(
    store: ObjectStore,
    schema: TableSchema,
    snapshot: Snapshot | None,
    files: Callable[[], Sequence[DataFile]],
    key: Any,
    columns: Sequence[str] | None,
) -> Any:
    """The row of ``key`` as a dict, None if absent or deleted, or MISS (see the module
    docstring)."""
    if snapshot is None:
        return MISS
    plan = _plan_of(store, schema, snapshot, files)
    if not plan.usable:
        return MISS
    k = plan.storage_key(key)
    if k is MISS:
        return MISS
    out = plan.names if columns is None else tuple(columns)
    if columns is not None and any(c not in plan.names for c in out):
        return MISS
    partition = (k,) if plan.partitioned else ()
    runs = plan.groups.get((partition, key_bucket(k, plan.buckets)))
    if not runs:
        return None
    best: tuple[int, Any, int, dict[str, pa.Array] | None] | None = None  # seq, kind, row, values
    for run in runs:
        f = run.file
        if best is not None and best[0] > f.effective_max_seq:
            break  # runs are newest first: nothing left can be newer
        if not run.lo <= k <= run.hi:
            continue
        index = FOOTERS.peek(store, f)
        if index is None:
            return MISS
        rg_min, rg_max = index.bounds
        rg = bisect.bisect_left(rg_max, k)
        if rg == len(rg_max) or rg_min[rg] > k:
            continue
        block = KEY_BLOCKS.get((store.url, f.path, rg))
        if block is None:
            return MISS
        row = block.position(k)
        if row < 0:
            continue
        # A delete is known from the key block alone (its row group may never have been
        # decoded); an upsert needs its row group's values.
        kind = KIND_UPSERT if not f.deletes else None
        if kind is None and block.kinds is not None:
            kind = block.kinds[row].as_py()
        constant_seq = f.min_seq == f.max_seq
        rows: dict[str, pa.Array] | None = None
        if kind is None or kind == KIND_UPSERT or not (constant_seq or block.seqs is not None):
            cached = ROW_BLOCKS.get((*run.row_key, rg, run.sources))
            if cached is None:
                return MISS
            rows = cached.arrays()
            if kind is None:
                kind = rows[KIND_COLUMN][row].as_py()
        if constant_seq:
            seq = f.effective_min_seq
        elif block.seqs is not None:
            seq = block.seqs[row].as_py()  # already effective
        else:
            assert rows is not None
            seq = rows[SEQ_COLUMN][row].as_py() + f.seq_offset
        if best is None or seq > best[0]:
            best = (seq, kind, row, rows)
    if best is None:
        return None
    _, kind, row, rows = best
    if kind != KIND_UPSERT or rows is None:
        return None
    return {c: rows[c][row].as_py() for c in out}
