"""A stream merges its next section while the caller takes this one (lsm3/read/ahead.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import lsm3
import lsm3.read.scan
from lsm3.read.ahead import one_ahead


def test_one_ahead_keeps_order_and_raises_in_order() -> None:
    assert list(one_ahead(iter(range(5)))) == [0, 1, 2, 3, 4]
    assert list(one_ahead(iter([]))) == []

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    got = one_ahead(failing())
    assert next(got) == 1
    with pytest.raises(ValueError, match="boom"):
        next(got)


def test_one_ahead_computes_the_next_item_while_the_caller_holds_this_one() -> None:
    made: list[int] = []
    second = threading.Event()

    def items() -> Iterator[int]:
        for i in range(3):
            made.append(i)
            if i == 1:
                second.set()
            yield i

    got = one_ahead(items())
    assert next(got) == 0
    assert second.wait(30)  # made on the producer thread, without asking for it
    got.close()  # closing early waits for the step under way and closes the source
    assert made == [0, 1]


def test_a_stream_merges_the_next_section_while_the_caller_takes_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = lsm3.create_table(
        f"file://{tmp_path}/t",
        schema=pa.schema([("id", pa.int64()), ("v", pa.string())]),
        primary_key=["id"],
        options={"row_group_rows": 100},
    )
    for round_ in range(3):
        with t.writer() as w:
            w.upsert(
                pa.table(
                    {
                        "id": list(range(0, 3000, round_ + 1)),
                        "v": [f"r{round_}"] * len(range(0, 3000, round_ + 1)),
                    }
                )
            )
    merges: list[int] = []
    second = threading.Event()
    merge_runs = lsm3.read.scan.merge_runs

    def counting(*args: Any, **kwargs: Any) -> pa.Table:
        merges.append(1)
        if len(merges) == 2:
            second.set()
        return merge_runs(*args, **kwargs)

    monkeypatch.setattr(lsm3.read.scan, "merge_runs", counting)
    stream = t.to_batches(section_rows=1000)
    first = stream.read_next_batch()
    assert first.num_rows > 0
    assert second.wait(30)  # the second section was merged before it was asked for
    rest = stream.read_all()
    assert first.num_rows + rest.num_rows == 3000
