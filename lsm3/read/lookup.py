"""Point lookups: the newest live row of given keys, reading as little as possible.

Candidate runs are those whose (partition, bucket) and key range admit a key. They are probed
newest first through the cached key blocks (``lsm3.read.runindex``), and only the row groups that
really hold a key are read, so once the index is warm a lookup costs one ranged GET per hit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lsm3.errors import CorruptDataFile, SizeMismatch
from lsm3.format.evolution import SCHEMAS, projection
from lsm3.format.keys import bucket_of, python_key, storage_values
from lsm3.format.metadata import DataFile
from lsm3.format.schema import KIND_COLUMN, KIND_DELETE, KIND_UPSERT, SEQ_COLUMN, TableSchema
from lsm3.io.store import ObjectStore
from lsm3.read.merge import drop_deleted, merge_runs
from lsm3.read.runfile import OpenRun, manifest_constants, with_constants, with_effective_seq
from lsm3.read.runindex import FOOTERS, KEY_BLOCKS, ROW_BLOCKS, KeyBlock, RowBlock, RunIndex
from lsm3.read.scan import group_files


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
    cached that is one ranged GET for a miss and two for a hit; a run probed often has its
    whole key column cached (``_load_key_index``), and then a miss costs nothing and a hit one.
    """
    key0 = schema.primary_key[0]
    index = FOOTERS.get(store, f, key0)
    file_schema = schema if f.schema_id == schema.schema_id else SCHEMAS.get(store, f.schema_id)
    if list(index.columns) != file_schema.file_schema().names:
        raise CorruptDataFile(
            f"data file {f.path} has the columns {list(index.columns)}, but schema "
            f"{f.schema_id} says {file_schema.file_schema().names}"
        )
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
    hits: list[tuple[int, pa.Array, KeyBlock]] = []  # row group, rows wanted, its key block
    missing: list[int] = []
    for rg in sorted(wanted):
        block = KEY_BLOCKS.get((store.url, f.path, rg))
        if block is None:
            missing.append(rg)
            continue
        mask = block.match(key0_values)
        if mask is not None:
            hits.append((rg, mask, block))
    if not hits and not missing:
        return None
    if missing and _load_key_index(store, f, schema, index, key0):
        still_missing = []
        for rg in missing:
            block = KEY_BLOCKS.get((store.url, f.path, rg))
            if block is None:
                still_missing.append(rg)
                continue
            mask = block.match(key0_values)
            if mask is not None:
                hits.append((rg, mask, block))
        missing = still_missing
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
            block_columns = _key_block_columns(f, schema)
            for rg in missing:
                table = parquet().read_row_group(rg, columns=block_columns, use_threads=False)
                block = _key_block(with_effective_seq(table, f.seq_offset), block_columns)
                KEY_BLOCKS.put((store.url, f.path, rg), block)
                mask = block.match(key0_values)
                if mask is not None:
                    hits.append((rg, mask, block))
            hits.sort(key=lambda h: h[0])
            tombstones, to_read = _tombstones(f, schema, columns, hits)
            # hidden columns the manifest entry states are filled in, not decoded
            constant = manifest_constants(f, schema, columns)
            stored = [c for c in columns if c not in constant]
            proj = projection(file_schema, schema, stored)
            sources = tuple(proj.sources)
            pieces = []
            for rg, mask in to_read:
                block_key = (store.url, f.path, rg, sources)
                cached = ROW_BLOCKS.get(block_key)
                if cached is not None:
                    rows = cached.table
                else:
                    # no Arrow threads on a Python file object: apache/arrow#50482 (a
                    # teardown race that aborted one process in ten at exit here)
                    rows = parquet().read_row_group(rg, columns=list(sources), use_threads=False)
                    ROW_BLOCKS.put(block_key, RowBlock(rows))
                pieces.append(proj.apply(rows).filter(mask))
        except SizeMismatch as exc:
            raise CorruptDataFile(
                f"data file {f.path} does not have the size its manifest entry says ({exc})"
            ) from None
        except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
            raise CorruptDataFile(f"data file {f.path} cannot be decoded: {exc}") from None
    if pieces:
        found = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
        found = with_effective_seq(found, f.seq_offset)
        tombstones.append(with_constants(found, columns, constant) if constant else found)
    if not tombstones:
        return None
    return tombstones[0] if len(tombstones) == 1 else pa.concat_tables(tombstones)


def _key_block_columns(f: DataFile, schema: TableSchema) -> list[str]:
    """What a key block of run ``f`` holds: the first key column and, where a probe could land
    on a delete that the block alone can describe (a one-column key of a type stored as is,
    versions ordered by sequence number: a sequence field would be needed too), the row kind
    and the stored sequence number unless the manifest states it."""
    key0 = schema.primary_key[0]
    if not f.deletes or len(schema.primary_key) != 1 or schema.sequence_field:
        return [key0]
    key_type = schema.arrow.field(key0).type
    if pa.types.is_date32(key_type) or pa.types.is_timestamp(key_type):
        return [key0]
    return [key0, KIND_COLUMN] if f.min_seq == f.max_seq else [key0, KIND_COLUMN, SEQ_COLUMN]


def _key_block(table: pa.Table, block_columns: list[str]) -> KeyBlock:
    """A key block from the decoded ``block_columns`` of one row group (sequence numbers
    already effective: the file's offset added)."""
    keys = storage_values(table.column(0)).combine_chunks()
    kinds = table.column(KIND_COLUMN).combine_chunks() if KIND_COLUMN in block_columns else None
    seqs = table.column(SEQ_COLUMN).combine_chunks() if SEQ_COLUMN in block_columns else None
    return KeyBlock(keys, kinds, seqs)


def _tombstones(
    f: DataFile,
    schema: TableSchema,
    columns: list[str],
    hits: list[tuple[int, pa.Array, KeyBlock]],
) -> tuple[list[pa.Table], list[tuple[int, pa.Array]]]:
    """Split ``hits`` into the rows its key blocks show to be deletes, built from the blocks
    alone (key, sequence number, row kind; other columns null: a delete's values are never
    returned), and the row groups that still need reading. A row group is answered from its
    block only when every row wanted from it is a delete. A deleted key then costs no
    row-group decode (about 1 ms for 4,096 rows of the benchmark's table)."""
    tombstones: list[pa.Table] = []
    rest: list[tuple[int, pa.Array]] = []
    fields = schema.file_schema()
    for rg, mask, block in hits:
        if block.kinds is None:
            rest.append((rg, mask))
            continue
        kinds = block.kinds.filter(mask)
        if not pc.all(pc.equal(kinds, KIND_DELETE)).as_py():
            rest.append((rg, mask))
            continue
        n = len(kinds)
        if block.seqs is None:
            seqs = pa.array(np.full(n, f.effective_min_seq, dtype=np.int64))
        else:
            seqs = block.seqs.filter(mask)
        arrays = []
        for name in columns:
            t = fields.field(name).type
            if name == schema.primary_key[0]:
                arrays.append(block.keys.filter(mask).cast(t))
            elif name == SEQ_COLUMN:
                arrays.append(seqs.cast(t))
            elif name == KIND_COLUMN:
                arrays.append(kinds.cast(t))
            else:
                arrays.append(pa.nulls(n, t))
        tombstones.append(
            pa.Table.from_arrays(arrays, schema=pa.schema([fields.field(c) for c in columns]))
        )
    return tombstones, rest


#: Key-block misses a run may have before its whole key column is loaded at once, and the
#: largest run fetched whole for it (a bigger one keeps loading key blocks lazily: a whole
#: GET of it would stall the lookup that triggers it for a second or more on S3).
KEY_INDEX_AFTER_MISSES = 4
KEY_INDEX_MAX_RUN_BYTES = 64 * 1024 * 1024
_key_misses: dict[tuple[str, str], int] = {}


def _load_key_index(
    store: ObjectStore, f: DataFile, schema: TableSchema, index: RunIndex, key0: str
) -> bool:
    """After ``KEY_INDEX_AFTER_MISSES`` key-block misses on run ``f``, fetch the run whole
    (CRC-checked) and cache the key block of every row group, so that later probes of the
    run cost no request and a hit one ranged GET. Only while the key blocks fit in the cache
    without evicting anything: a table whose keys outgrow the cache keeps loading blocks one
    row group at a time instead of fetching whole runs over and over.

    Why: each lazily loaded block is a ranged GET plus a decode of about 0.3 ms (the fixed
    cost of one Parquet column chunk), paid by most lookups of a large table until the cache
    is warm; one run of the 10M-row benchmark table has 133 row groups whose key column
    decodes in one call in about 15 ms. Returns whether the blocks were loaded now."""
    if f.size > KEY_INDEX_MAX_RUN_BYTES:
        return False
    run = (store.url, f.path)
    misses = _key_misses.get(run, 0) + 1
    if misses < KEY_INDEX_AFTER_MISSES:
        if len(_key_misses) > 100_000:
            _key_misses.clear()
        _key_misses[run] = misses
        return False
    _key_misses.pop(run, None)
    key_column = index.metadata.schema.names.index(key0)
    row_groups = [index.metadata.row_group(i) for i in range(index.metadata.num_row_groups)]
    key_bytes = sum(rg.column(key_column).total_uncompressed_size for rg in row_groups)
    if not KEY_BLOCKS.has_room(key_bytes):
        return False
    block_columns = _key_block_columns(f, schema)
    run_schema = schema if f.schema_id == schema.schema_id else SCHEMAS.get(store, f.schema_id)
    table = OpenRun(store, f, run_schema).read(block_columns).combine_chunks()
    start = 0
    for i, rg in enumerate(row_groups):
        piece = table.slice(start, rg.num_rows)
        own = pa.table([pa.concat_arrays([c.chunk(0)]) for c in piece.columns], piece.schema)
        KEY_BLOCKS.put((store.url, f.path, i), _key_block(own, block_columns))  # own buffers
        start += rg.num_rows
    return True


_LOOKUP_POOL: ThreadPoolExecutor | None = None


def _lookup_pool() -> ThreadPoolExecutor:
    global _LOOKUP_POOL
    if _LOOKUP_POOL is None:
        _LOOKUP_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lsm3-lookup")
    return _LOOKUP_POOL


def lookup(
    store: ObjectStore,
    schema: TableSchema,
    files: Sequence[DataFile],
    keys: Sequence[Any],
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any] | None]:
    """The newest live row for each key (None where absent or deleted), in input order.

    Candidate files are those whose (partition, bucket) and key range admit the key. Without
    a sequence field they are probed newest first, and a key stops being looked up once a
    version is found that is newer than everything in the files left to probe.
    """
    key_names = list(schema.primary_key)
    key_types = [schema.arrow.field(k).type for k in key_names]
    wanted = [python_key(k, key_types, key_names) for k in keys]
    if not wanted:
        return []
    # Keys are in storage form (temporal values as int64), which hashes like the original type.
    key_arrays = [
        pa.array([w[i] for w in wanted], type=pa.int64() if pa.types.is_temporal(t) else t)
        for i, t in enumerate(key_types)
    ]
    buckets = bucket_of(key_arrays, schema.buckets)
    part_pos = [key_names.index(p) for p in schema.partition_by]
    candidates: dict[str, tuple[DataFile, list[tuple[Any, ...]]]] = {}
    groups = group_files(files)
    for w, b in zip(wanted, buckets.tolist(), strict=True):
        partition = tuple(w[i] for i in part_pos)
        for f in groups.get((partition, b), []):
            if f.min_key <= w <= f.max_key:
                candidates.setdefault(f.path, (f, []))[1].append(w)
    file_columns = [*schema.arrow.names, SEQ_COLUMN, KIND_COLUMN]
    ordered = sorted(candidates.values(), key=lambda c: -c[0].effective_max_seq)

    def probe(f: DataFile, ks: list[tuple[Any, ...]]) -> pa.Table | None:
        return lookup_rows(store, f, schema, sorted({k[0] for k in ks}), file_columns)

    hits: list[pa.Table] = []
    if schema.sequence_field is not None:  # versions are ordered by data: read every candidate
        hits = [h for h in _lookup_pool().map(lambda c: probe(*c), ordered) if h is not None]
    else:
        resolved: set[tuple[Any, ...]] = set()
        for i, (f, ks) in enumerate(ordered):
            todo = [k for k in ks if k not in resolved]
            if not todo:
                continue
            found = probe(f, todo)
            if found is None:
                continue
            hits.append(found)
            older_max = max((c[0].effective_max_seq for c in ordered[i + 1 :]), default=-1)
            newer = found.filter(pc.greater(found.column(SEQ_COLUMN), older_max))
            if not schema.engine.is_deduplicate:  # only a delete or reset hides older versions
                newer = newer.filter(pc.not_equal(newer.column(KIND_COLUMN), KIND_UPSERT))
            cols = [storage_values(newer.column(k)).to_pylist() for k in key_names]
            resolved.update(zip(*cols, strict=True))
    hits = [h for h in hits if h.num_rows]
    if not hits:
        return [None] * len(wanted)
    if len(hits) == 1:  # rows of one run: one version per key already
        merged = drop_deleted(hits[0])
    else:
        merged = merge_runs(hits, schema, drop_deletes=True)
    out_columns = list(columns) if columns is not None else schema.arrow.names
    rows = merged.select(out_columns).to_pylist()
    key_values = [storage_values(merged.column(k)).to_pylist() for k in key_names]
    found_rows = dict(zip(zip(*key_values, strict=True), rows, strict=True))
    return [found_rows.get(w) for w in wanted]
