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

import duckdb
import pyarrow.compute as pc
from orders_data import (
    KEY_RANGE,
    SCHEMA,
    Checks,
    change_batches,
    describe,
    expected_by_status,
    replay,
    same_groups,
    section,
)

import catalog
import compactor


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
