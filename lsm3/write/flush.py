"""Flushing the writer's memtable: its records become sorted runs, uploaded.

The drained records are folded per key where the merge engine keeps one row per key, split
into runs by (partition, bucket) and key-sorted, and a large run is cut into key-disjoint
pieces; the pieces are gathered from the memtable, encoded and uploaded in parallel, a few row
groups at a time, so a flush holds the memtable and its encoded output, never a sorted copy.
Under the ``lookup`` changelog producer a commit's last flush also computes the commit's
changes while its runs upload. What the writer does with the uploaded runs (pending until a
commit) is :class:`lsm3.write.writer.Writer`'s.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lsm3.format.metadata import DataFile
from lsm3.format.schema import TableSchema
from lsm3.read.runfile import RunWriter
from lsm3.write.changelog import ChangelogRecorder, upload_computing_changes
from lsm3.write.memtable import BufferedRows, Memtable, fold_buffered, split_runs, with_constant_seq

if TYPE_CHECKING:
    from lsm3.table import Table

log = logging.getLogger("lsm3.write.writer")  # the writer's own logger, as before


def upload_runs(
    table: Table,
    schema: TableSchema,
    memtable: Memtable,
    buffered: BufferedRows,
    changelog: ChangelogRecorder,
    last: bool,
) -> tuple[list[DataFile], dict[str, list[pa.Table]], tuple[int, list[DataFile]] | None]:
    """Sort ``buffered`` (what ``memtable`` drained) into runs and upload them, then the
    changelog producer's input records; on any failure the rows go back to ``memtable``.
    Returns the uploaded runs; under ``lookup``, each run's rows by path; and the changes
    computed while they uploaded (base snapshot id, changelog files), or None.

    ``last`` (``commit``): nothing is written after this flush before the commit, so under
    ``lookup`` a flush that holds all of the commit's runs computes and stores their changes
    on the current snapshot while the runs encode and upload."""
    keep = None
    if not schema.engine.is_deduplicate:
        # A run holds one row per key: the merge engine's fold of the key's records here
        # (a partial fold, or a reset or delete row: lsm3.read.fold), so a flush of many
        # records of one key stores one row.
        buffered, keep = fold_buffered(buffered, schema)
    runs = [
        (partition, bucket, piece, run_id)
        for partition, bucket, indices in split_runs(buffered.view(), schema, keep)
        for run_id in [uuid.uuid4().hex]
        for piece in _pieces(indices, buffered.nbytes / max(1, buffered.num_rows))
    ]
    store = table.store
    flush_seq = memtable.flushes

    gather_rows = schema.option("row_group_rows") * _GATHER_ROW_GROUPS
    written: dict[str, list[pa.Table]] = {}  # lookup producer: each run's rows, by path
    keep_rows = changelog.producer == "lookup"

    # Encoding is CPU work: more pieces encoding at once than cores only holds more
    # encoded bodies in memory (the 10M-row load's writer peaked at 915 MiB RSS with its
    # four pieces encoding at once, at 744 MiB with two).
    encoding = threading.BoundedSemaphore(os.cpu_count() or 1)

    def gather(item: tuple[tuple[Any, ...], int, pa.Array, str]) -> pa.Table:
        return with_constant_seq(buffered.take(item[2]), flush_seq)

    def upload(
        item: tuple[tuple[Any, ...], int, pa.Array, str], gathered: pa.Table | None = None
    ) -> DataFile:
        partition, bucket, indices, run_id = item
        run = RunWriter(schema, level=0, partition=partition, bucket=bucket, run_id=run_id)
        # The gather runs here, in parallel with the other pieces, a few row groups at a
        # time: a flush holds the memtable and its encoded output, never a sorted copy
        # (unless the lookup producer, which keeps the rows anyway, ``gathered`` them).
        with encoding:
            for start in range(0, len(indices), gather_rows):
                if gathered is not None:
                    rows = gathered.slice(start, gather_rows)
                else:
                    rows = with_constant_seq(
                        buffered.take(indices.slice(start, gather_rows)), flush_seq
                    )
                run.write(rows)
                if keep_rows:
                    written.setdefault(run.path, []).append(rows)
            encoded = run.finish()
        store.put(encoded.file.path, encoded.body)
        log.debug(
            "uploaded %s (%d rows, %d bytes)",
            encoded.file.path,
            len(indices),
            encoded.file.size,
        )
        return encoded.file

    workers = min(schema.option("upload_concurrency"), len(runs))
    ahead = last and changelog.can_compute_ahead()
    changes: tuple[int, list[DataFile]] | None = None
    try:
        if ahead:
            files, changes = upload_computing_changes(table, schema, runs, gather, upload, workers)
        elif workers <= 1:
            files = [upload(r) for r in runs]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                files = list(pool.map(upload, runs))
        changelog.flush_input(table)
    except BaseException:
        # Nothing of this flush is pending: keep its rows for the next flush (what did
        # upload becomes an orphan for remove_orphan_files).
        memtable.restore(buffered)
        raise
    return files, written, changes


_PIECE_ROWS = 131072
_PIECE_BYTES = 64 * 1024 * 1024
#: Row groups gathered from the memtable and encoded at a time during a flush.
_GATHER_ROW_GROUPS = 16


def _pieces(indices: pa.Array, row_bytes: float) -> list[pa.Array]:
    """A large run (its row indices, in key order) cut into key-disjoint pieces, one per
    core, so they are gathered and encoded in parallel (both release the GIL), and more when
    a piece would hold over ``_PIECE_BYTES`` of rows (``row_bytes`` each): a piece's encoded
    body is in memory until it is uploaded, so this bounds a flush's memory beyond the
    memtable by the workers, not by the memtable. Pieces share a run id and stay one sorted
    run."""
    pieces = min(os.cpu_count() or 1, len(indices) // _PIECE_ROWS)
    pieces = max(pieces, math.ceil(len(indices) * row_bytes / _PIECE_BYTES))
    if pieces <= 1:
        return [indices]
    size = -(-len(indices) // pieces)
    return [indices.slice(start, size) for start in range(0, len(indices), size)]
