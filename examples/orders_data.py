"""The orders workload shared by the engine examples (duckdb_query.py, polars_query.py).

Seeded change events for an ``orders`` table (an initial load, then two batches of updates,
deletes and inserts), a one-event-at-a-time replay that gives the expected rows independently
of lsm3's vectorised merge, and the small helpers the examples print their checks with.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

SCHEMA = pa.schema(
    [
        pa.field("order_id", pa.int64(), nullable=False),
        pa.field("customer", pa.string()),
        pa.field("status", pa.string()),
        pa.field("amount", pa.float64()),
    ]
)
STATUSES = np.array(["new", "paid", "shipped", "cancelled"])
INITIAL_ORDERS = 40_000
KEY_RANGE = (10_000, 11_999)  # the selective query: order ids in this range


# --------------------------------------------------------------------------- change events


def change_batches(seed: int = 11) -> list[pa.Table]:
    """An initial load, then two batches of inserts, updates and deletes (column ``op``)."""
    rng = np.random.default_rng(seed)
    live = np.arange(1, INITIAL_ORDERS + 1, dtype=np.int64)
    next_id = INITIAL_ORDERS + 1
    batches = [_events(rng, live, "c")]
    for _ in range(2):
        pool = rng.permutation(live)
        updated, deleted = pool[:8_000], pool[8_000:10_000]
        inserted = np.arange(next_id, next_id + 3_000, dtype=np.int64)
        next_id += 3_000
        batches.append(
            pa.concat_tables(
                [
                    _events(rng, updated, "u"),
                    _events(rng, deleted, "d"),
                    _events(rng, inserted, "c"),
                ]
            )
        )
        live = np.union1d(np.setdiff1d(live, deleted), inserted)
    return batches


def _events(rng: np.random.Generator, ids: np.ndarray, op: str) -> pa.Table:
    n = len(ids)
    deleted = op == "d"
    return pa.table(
        {
            "op": pa.array([op] * n),
            "order_id": pa.array(ids, pa.int64()),
            "customer": pa.nulls(n, pa.string())
            if deleted
            else pa.array([f"customer-{c:03d}" for c in rng.integers(0, 300, n)]),
            "status": pa.nulls(n, pa.string())
            if deleted
            else pa.array(STATUSES[rng.integers(0, len(STATUSES), n)]),
            "amount": pa.nulls(n, pa.float64())
            if deleted
            else pa.array(np.round(rng.uniform(1, 500, n), 2)),
        }
    )


def replay(batches: list[pa.Table]) -> dict[int, dict[str, Any]]:
    """The expected table, one event at a time (independent of lsm3's vectorised merge)."""
    rows: dict[int, dict[str, Any]] = {}
    for batch in batches:
        for event in batch.to_pylist():
            op = event.pop("op")
            if op == "d":
                rows.pop(event["order_id"], None)
            else:
                rows[event["order_id"]] = event
    return rows


# --------------------------------------------------------------------------- checks


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def __call__(self, what: str, ok: bool) -> None:
        print(f"   check: {what}: {'ok' if ok else 'MISMATCH'}")
        if not ok:
            self.failures.append(what)


def expected_by_status(model: dict[int, dict[str, Any]]) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    for row in model.values():
        n, total = out.get(row["status"], (0, 0.0))
        out[row["status"]] = (n + 1, total + row["amount"])
    return out


def same_groups(got: list[tuple[Any, ...]], expected: dict[str, tuple[int, float]]) -> bool:
    as_dict = {status: (n, total) for status, n, total in got}
    return as_dict.keys() == expected.keys() and all(
        as_dict[s][0] == expected[s][0]
        and math.isclose(as_dict[s][1], expected[s][1], abs_tol=0.011)
        for s in expected
    )


def describe(dataset: pads.Dataset) -> str:
    """How many pieces of the dataset are lazy Parquet files and how many merged rows."""
    parts = dataset.children if isinstance(dataset, pads.UnionDataset) else [dataset]
    files = sum(len(p.files) for p in parts if isinstance(p, pads.FileSystemDataset))
    merged = sum(p.count_rows() for p in parts if isinstance(p, pads.InMemoryDataset))
    return f"{files} lazy Parquet file(s), {merged} merged in-memory row(s)"


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))
