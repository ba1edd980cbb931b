#!/usr/bin/env python3
"""Query an lsm3 table from Polars through Arrow, with filters and projections pushed down.

Run it with ``python examples/polars_query.py`` (needs ``pip install polars``). It

1. creates a catalog in a temporary directory and the table ``shop.orders`` in it,
2. streams three batches of change events (inserts, updates, deletes) into the table,
3. scans ``table.to_pyarrow_dataset()`` lazily with ``pl.scan_pyarrow_dataset`` and runs a
   filter, a projection and a group-by, printing ``LazyFrame.explain()`` to show the
   predicate and the columns Polars hands to the pyarrow scan,
4. compacts the table, after which the dataset is lazy Parquet fragments: the same key-range
   query now reads only the row groups it needs (the request counters show it),
5. builds eager DataFrames with ``pl.from_arrow`` from ``table.to_batches(columns=, filter=)``
   (lsm3 applies the projection and filter while it merges) and from ``table.to_arrow()``,
6. checks every result against a plain-Python replay of the events and exits with status 1
   on any mismatch.

How pushdown works here: Polars translates the predicates it can (comparisons, ``&``, ``|``,
``is_in``...) to a pyarrow expression and passes it, with the needed columns, to the dataset
scanner. For buckets that compaction left clean the dataset is Parquet fragments, so that
becomes column pruning and row-group skipping by statistics (lsm3 writes min/max for the
first key column). Buckets with overlapping runs or tombstones must be merged first, so the
dataset holds them as merged in-memory rows and the pushed filter applies to those rows.
"""

from __future__ import annotations

import math
import sys
import tempfile

import polars as pl
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

# --------------------------------------------------------------------------- the example


def key_range_query(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Cancelled orders in KEY_RANGE: a key-range and a status predicate, two columns."""
    return (
        lf.filter(
            (pl.col("order_id") >= KEY_RANGE[0])
            & (pl.col("order_id") <= KEY_RANGE[1])
            & (pl.col("status") == "cancelled")
        )
        .select("order_id", "amount")
        .sort("order_id")
    )


def by_status(lf: pl.LazyFrame) -> pl.LazyFrame:
    return (
        lf.group_by("status")
        .agg(pl.len().alias("orders"), pl.col("amount").sum().round(2).alias("total"))
        .sort("status")
    )


def main() -> int:
    check = Checks()
    pl.Config.set_fmt_float("full")  # totals as 2621425.87, not 2.6214e6
    with tempfile.TemporaryDirectory(prefix="lsm3-polars-") as warehouse:
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
        expected_range = sorted(
            (k, r["amount"])
            for k, r in model.items()
            if KEY_RANGE[0] <= k <= KEY_RANGE[1] and r["status"] == "cancelled"
        )

        section("pl.scan_pyarrow_dataset(table.to_pyarrow_dataset()) (before compaction)")
        dataset = table.to_pyarrow_dataset()
        print(f"dataset: {describe(dataset)}")
        lf = pl.scan_pyarrow_dataset(dataset)
        grouped = by_status(lf).collect()
        print(grouped)
        check("group-by equals the replay", same_groups(grouped.rows(), expected_by_status(model)))

        query = key_range_query(lf)
        plan = query.explain()
        print("explain(): the predicate (SELECTION) and the columns (PROJECT) go to the scan:")
        print(plan)
        check("the plan pushes the predicate into the scan", "SELECTION" in plan)
        got = query.collect()
        print(f"{got.height} cancelled orders in the key range:")
        print(got.head(3))
        check("filtered, projected rows equal the replay", got.rows() == expected_range)

        section("compact (policy full): the dataset becomes lazy Parquet fragments")
        result = compactor.compact(table, policy="full")
        table.refresh()
        print(f"compaction: {result.files_before} -> {result.files_after} files")
        dataset = table.to_pyarrow_dataset()
        print(f"dataset: {describe(dataset)}")
        lf = pl.scan_pyarrow_dataset(dataset)
        stats = table.store.stats
        stats.reset()
        grouped = by_status(lf).collect()
        full_bytes = stats.snapshot()["bytes"]["GET"]
        check("group-by after compaction", same_groups(grouped.rows(), expected_by_status(model)))
        stats.reset()
        got = key_range_query(lf).collect()
        range_bytes = stats.snapshot()["bytes"]["GET"]
        print(f"bytes read: group-by over all rows {full_bytes:,}; key-range query {range_bytes:,}")
        check("key-range query after compaction", got.rows() == expected_range)
        check("row groups outside the key range were skipped", 0 < range_bytes < full_bytes / 2)

        section("pl.from_arrow: eager frames from a RecordBatchReader and from to_arrow()")
        reader = table.to_batches(
            columns=["order_id", "status", "amount"],
            filter=(pc.field("status") == "paid") & (pc.field("amount") >= 400),
        )
        big_paid = pl.from_arrow(reader)
        assert isinstance(big_paid, pl.DataFrame)
        print(big_paid.sort("order_id").head(3))
        paid = [r["amount"] for r in model.values() if r["status"] == "paid" and r["amount"] >= 400]
        check(
            "stream frame equals the replay",
            big_paid.height == len(paid)
            and math.isclose(big_paid["amount"].sum(), sum(paid), abs_tol=0.011),
        )
        frame = pl.from_arrow(table.to_arrow())
        assert isinstance(frame, pl.DataFrame)
        top = (
            frame.group_by("customer")
            .agg(pl.len().alias("orders"))
            .sort(["orders", "customer"], descending=[True, False])
        )
        print("customers with the most orders:")
        print(top.head(3))
        expected_customers: dict[str, int] = {}
        for r in model.values():
            expected_customers[r["customer"]] = expected_customers.get(r["customer"], 0) + 1
        check("whole-table frame equals the replay", dict(top.rows()) == expected_customers)

    print()
    if check.failures:
        print(f"FAILED: {', '.join(check.failures)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
