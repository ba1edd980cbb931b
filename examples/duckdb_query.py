#!/usr/bin/env python3
"""Query an lsm3 table from DuckDB through Arrow, with filters and projections pushed down.

Run it with ``python examples/duckdb_query.py`` (needs ``pip install duckdb``). It

1. creates a catalog in a temporary directory and the table ``shop.orders`` in it,
2. streams three batches of change events (inserts, updates, deletes) into the table,
3. registers ``table.to_pyarrow_dataset()`` with DuckDB and runs SQL with a WHERE clause and a
   projection, printing ``EXPLAIN`` to show what DuckDB pushes into the Arrow scan,
4. compacts the table, after which the dataset is lazy Parquet fragments: the same key-range
   query now reads only the row groups it needs (the request counters show it),
5. queries a ``RecordBatchReader`` from ``table.to_batches(columns=, filter=)``, where lsm3
   itself applies the projection and filter because a stream cannot be pushed into,
6. checks every result against a plain-Python replay of the events and exits with status 1
   on any mismatch.

How pushdown works here: DuckDB hands the columns a query needs and the filters it can
translate to the pyarrow dataset scanner. For buckets that compaction left clean the dataset
is Parquet fragments, so that becomes column pruning and row-group skipping by statistics
(lsm3 writes min/max for the first key column). Buckets with overlapping runs or tombstones
must be merged first, so the dataset holds them as merged in-memory rows, and the pushed
filter and projection apply to those rows. DuckDB keeps comparisons on floating-point
columns in its own Filter operator rather than pushing them into Arrow scans.
"""

from __future__ import annotations

import math
import sys
import tempfile
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

import catalog
import compactor

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


def explain(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    return str(con.sql("EXPLAIN " + sql).fetchall()[0][1])


# --------------------------------------------------------------------------- the example

BY_STATUS = """
    SELECT status, count(*) AS orders, round(sum(amount), 2) AS total
    FROM orders GROUP BY status ORDER BY status"""
KEY_RANGE_SQL = f"""
    SELECT order_id, amount FROM orders
    WHERE order_id BETWEEN {KEY_RANGE[0]} AND {KEY_RANGE[1]} AND status = 'cancelled'
    ORDER BY order_id"""


def main() -> int:
    check = Checks()
    with tempfile.TemporaryDirectory(prefix="lsm3-duckdb-") as warehouse:
        section("create shop.orders in a catalog and stream CDC into it")
        cat = catalog.connect(warehouse)
        cat.create_namespace("shop")
        # Small row groups so that row-group skipping is visible on a small demo table.
        table = cat.create_table(
            "shop.orders",
            SCHEMA,
            primary_key="order_id",
            buckets=4,
            options={"row_group_rows": 1024},
        )
        batches = change_batches()
        for batch in batches:
            with table.writer() as writer:
                writer.apply_cdc(batch, op_column="op")
                snap = writer.commit()
            ops = dict(
                zip(*(c.to_pylist() for c in pc.value_counts(batch["op"]).flatten()), strict=True)
            )
            print(f"snapshot {snap.snapshot_id if snap else '-'}: {len(batch)} events {ops}")
        model = replay(batches)
        print(f"{len(model)} live orders expected")

        section("DuckDB over table.to_pyarrow_dataset() (before compaction)")
        dataset = table.to_pyarrow_dataset()
        print(f"dataset: {describe(dataset)}")
        con = duckdb.connect()
        con.register("orders", dataset)
        print(con.sql(BY_STATUS))
        check(
            "group-by equals the replay",
            same_groups(con.sql(BY_STATUS).fetchall(), expected_by_status(model)),
        )

        print("EXPLAIN of the filtered query: the key range, the status filter and the two")
        print("needed columns go into the Arrow scan (Filters / Projections):")
        plan = explain(con, KEY_RANGE_SQL)
        print(plan)
        scan = plan[plan.find("ARROW_SCAN") :]  # the scan is the plan's last node
        check("EXPLAIN shows the key range pushed into the scan", str(KEY_RANGE[0]) in scan)
        expected_range = sorted(
            (k, r["amount"])
            for k, r in model.items()
            if KEY_RANGE[0] <= k <= KEY_RANGE[1] and r["status"] == "cancelled"
        )
        got_range = con.sql(KEY_RANGE_SQL).fetchall()
        print(f"{len(got_range)} cancelled orders in the key range, first three: {got_range[:3]}")
        check("filtered, projected rows equal the replay", got_range == expected_range)

        section("compact (policy full): the dataset becomes lazy Parquet fragments")
        result = compactor.compact(table, policy="full")
        table.refresh()
        print(f"compaction: {result.files_before} -> {result.files_after} files")
        dataset = table.to_pyarrow_dataset()
        print(f"dataset: {describe(dataset)}")
        con.register("orders", dataset)
        stats = table.store.stats
        stats.reset()
        check(
            "group-by after compaction",
            same_groups(con.sql(BY_STATUS).fetchall(), expected_by_status(model)),
        )
        full_bytes = stats.snapshot()["bytes"]["GET"]
        stats.reset()
        got_range = con.sql(KEY_RANGE_SQL).fetchall()
        range_bytes = stats.snapshot()["bytes"]["GET"]
        print(f"bytes read: group-by over all rows {full_bytes:,}; key-range query {range_bytes:,}")
        check("key-range query after compaction", got_range == expected_range)
        check("row groups outside the key range were skipped", 0 < range_bytes < full_bytes / 2)

        section("DuckDB over a RecordBatchReader (lsm3 applies the filter and projection)")
        reader = table.to_batches(
            columns=["order_id", "status", "amount"],
            filter=(pc.field("status") == "paid") & (pc.field("amount") >= 400),
        )
        con.register("big_paid", reader)
        sql = "SELECT count(*) AS orders, round(sum(amount), 2) AS total FROM big_paid"
        got = con.sql(sql).fetchall()[0]
        print(f"{sql}\n-> {got}")
        paid = [r["amount"] for r in model.values() if r["status"] == "paid" and r["amount"] >= 400]
        check(
            "stream aggregate equals the replay",
            got[0] == len(paid) and math.isclose(got[1], sum(paid), abs_tol=0.011),
        )

    print()
    if check.failures:
        print(f"FAILED: {', '.join(check.failures)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
