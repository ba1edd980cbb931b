"""Load: a writer at a sustained rate with a small memtable budget, and write stalls.

The fast version of the soak's load run (``tests/soak.py``, ``run_load``): a fresh process
writes for a few seconds at a fixed rate with ``memtable_bytes`` = 1 MiB, and its peak
Arrow memory must stay within a small multiple of the budget and must not grow with the
volume written (the peak at half time equals the peak at the end, give or take one flush).
Then the write-stall policy (table option ``write_stall`` at ``num_sorted_run_stop_trigger``
sorted runs in a bucket) must behave as docs/FORMAT.md says: ``warn`` logs and commits,
``error`` raises WriteStalled and commits nothing (the writer keeps its data, so the commit
can be retried after compaction), ``wait`` waits for compaction up to
``write_stall_timeout_seconds``, then raises.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from soak import run_load

import compactor
import lsm3

MiB = 1 << 20
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])


def test_sustained_writer_memory_stays_within_the_memtable_budget(tmp_path: Path) -> None:
    figures = run_load(str(tmp_path / "t"), seconds=4, rate=20_000, memtable_bytes=1 * MiB)
    assert figures["rate"] >= 0.7 * 20_000, figures  # sustained (on a busy 2-core machine)
    assert figures["peak_arrow_bytes"] <= 6 * MiB, figures  # budget 1 MiB: x4 + 2 MiB slack
    assert figures["peak_arrow_bytes"] <= figures["peak_arrow_bytes_half"] + 2 * MiB, figures
    assert figures["files"] > figures["commits"]  # the budget made it flush between commits
    assert figures["stall_warnings"] > 0  # 8+ runs in the bucket, no compactor: warned


def make(tmp_path: Path, **options: Any) -> lsm3.Table:
    return lsm3.create_table(
        str(tmp_path / "t"),
        SCHEMA,
        "id",
        options={"num_sorted_run_stop_trigger": 3, "num_sorted_run_trigger": 2, **options},
    )


def commit(t: lsm3.Table, i: int) -> lsm3.Writer:
    w = t.writer()
    w.upsert([{"id": i, "v": str(i)}])
    w.commit()
    return w


def test_memtable_budget_flushes_before_commit_and_nothing_shows(tmp_path: Path) -> None:
    t = make(tmp_path, memtable_bytes=64 * 1024)
    w = t.writer()
    for b in range(20):
        w.upsert(
            pa.table({"id": pa.array(range(b * 1000, b * 1000 + 1000)), "v": ["x" * 20] * 1000})
        )
    assert len(w._pending) >= 5  # flushed to storage under the budget
    assert t.refresh() is None and t.to_arrow().num_rows == 0  # but not visible
    w.commit()
    assert t.count() == 20_000


def test_write_stall_warn_logs_and_commits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = make(tmp_path, write_stall="warn")
    caplog.set_level(logging.WARNING, logger="lsm3.write.writer")
    commit(t, 1)
    commit(t, 2)
    assert not caplog.records
    commit(t, 3)  # the third sorted run reaches the stop trigger
    assert "write stall" in caplog.text and len(t.snapshot_ids()) == 3


def test_write_stall_warning_is_not_repeated_at_every_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = make(tmp_path, write_stall="warn")
    caplog.set_level(logging.WARNING, logger="lsm3.write.writer")
    for i in range(1, 9):
        commit(t, i)
    stalls = [r for r in caplog.records if "write stall" in r.getMessage()]
    assert len(stalls) == 1, [r.getMessage() for r in stalls]
    assert len(t.snapshot_ids()) == 8  # every commit still landed


def test_stall_warnings_repeat_for_new_buckets_and_after_a_while() -> None:
    from lsm3.write.stall import StallWarnings

    warnings = StallWarnings(repeat_seconds=3600)
    assert warnings.should_warn("t", [((), 0)])
    assert not warnings.should_warn("t", [((), 0)])
    assert warnings.should_warn("other", [((), 0)])  # per table
    assert warnings.should_warn("t", [((), 0), ((), 1)])  # a bucket newly crowded
    warnings.reset("t")  # compacted
    assert warnings.should_warn("t", [((), 0)])
    assert StallWarnings(repeat_seconds=0).should_warn("t", [1])


def test_write_stall_error_raises_commits_nothing_and_keeps_the_data(tmp_path: Path) -> None:
    t = make(tmp_path, write_stall="error")
    commit(t, 1)
    commit(t, 2)
    w = t.writer("w")
    w.upsert([{"id": 3, "v": "3"}])
    with pytest.raises(lsm3.WriteStalled, match="compactor"):
        w.commit(commit_id="c3")
    assert len(t.snapshot_ids()) == 2
    compactor.compact(t)
    assert w.commit(commit_id="c3") is not None  # the same writer, its data kept
    assert lsm3.open_table(t.uri).to_arrow().num_rows == 3


def test_write_stall_wait_waits_for_compaction(tmp_path: Path) -> None:
    t = make(tmp_path, write_stall="wait", write_stall_timeout_seconds=20)
    commit(t, 1)
    commit(t, 2)
    threading.Timer(1.5, lambda: compactor.compact(lsm3.open_table(t.uri))).start()
    started = time.monotonic()
    commit(t, 3)
    assert 1.0 <= time.monotonic() - started < 15
    assert lsm3.open_table(t.uri).to_arrow().num_rows == 3


def test_write_stall_wait_gives_up_after_its_timeout(tmp_path: Path) -> None:
    t = make(tmp_path, write_stall="wait", write_stall_timeout_seconds=1)
    commit(t, 1)
    commit(t, 2)
    started = time.monotonic()
    with pytest.raises(lsm3.WriteStalled):
        commit(t, 3)
    assert 1.0 <= time.monotonic() - started < 10
    assert len(t.snapshot_ids()) == 2
