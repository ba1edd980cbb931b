"""One item ahead: a stream's next merged section is made while its consumer takes this one.

A streaming scan is a chain of stages (decode the runs of a section, merge them, hand the
batches over) and its consumer is one more. Run in turn, each waits for the others, and on two
cores one core idles while the merge or the consumer runs. Computing the next item on a
producer thread overlaps them, for the memory of one item more (a section's merged output),
not a whole table.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_END = object()


def one_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items`` in order, each computed on a producer thread while the caller holds the one
    before. ``items`` is only ever advanced by that thread, one step at a time, so it needs no
    locking; an exception it raises is raised here, in order; closing this iterator early
    waits for the step under way and closes ``items``."""
    producer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lsm3-ahead")
    try:
        step = producer.submit(next, items, _END)
        while True:
            item = step.result()
            if item is _END:
                return
            step = producer.submit(next, items, _END)
            yield item  # type: ignore[misc]  # not _END: a T
            del item  # the caller's reference is the only one while it works
    finally:
        producer.shutdown(wait=True)
        close = getattr(items, "close", None)
        if close is not None:
            close()
