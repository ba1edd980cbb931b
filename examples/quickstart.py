#!/usr/bin/env python3
"""lsm3 quickstart: stream Debezium-style CDC into a table on S3 and read it back with PyArrow.

``make demo`` runs this. It starts a throw-away S3 server (moto, on 127.0.0.1) unless
``AWS_ENDPOINT_URL`` is set, in which case it uses that endpoint (MinIO, SeaweedFS, real S3)
with the usual AWS credentials and the bucket ``$LSM3_DEMO_BUCKET`` (default ``lsm3-demo``,
created if missing). Then it

1. creates the table ``s3://<bucket>/demo/orders-<timestamp>`` (primary key ``order_id``),
2. applies a few thousand change events (snapshot reads, inserts, updates, deletes) in several
   commits, each recording the source offset (the LSN) in its commit metadata,
3. reads the merged table through PyArrow: row count, a few rows, a group-by, a filtered read,
   a point lookup, time travel to the first snapshot, the snapshot log, ``lsm3 inspect`` and a
   compaction,
4. checks every figure against a plain dict replay of the same events and exits with status 1
   on any mismatch.

``--store az`` runs the same against Azure Blob Storage: a throw-away Azurite (installed by
``make`` into ``tests/.azurite``; needs Node.js) and the table ``az://lsm3-demo/demo/...``,
through adlfs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import compactor
import lsm3
from lsm3.cli import format_table, to_json_line
from lsm3.cli import main as lsm3_cli

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

SCHEMA = pa.schema(
    [
        pa.field("order_id", pa.int64(), nullable=False),
        pa.field("customer", pa.string()),
        pa.field("amount", pa.float64()),
        pa.field("status", pa.string()),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
COMMITS = 6
EVENTS_PER_COMMIT = 1000
WRITER_ID = "orders-cdc"
CUSTOMERS = np.array([f"customer-{i:02d}" for i in range(40)])
STATUSES = np.array(["paid", "shipped", "delivered", "cancelled"])
T0_US = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)


# --------------------------------------------------------------------------- where to write


@contextlib.contextmanager
def az_location() -> Iterator[tuple[str, dict[str, str] | None]]:
    """Yield ``("az://lsm3-demo", storage_options)`` of an embedded Azurite."""
    from lsm3.testing.emulators import start_azurite

    started = time.perf_counter()
    with start_azurite() as server:
        print(
            f"Azure endpoint {server.azure.endpoint_url} (embedded Azurite, started in "
            f"{time.perf_counter() - started:.1f} s)"
        )
        server.azure.create_container("lsm3-demo")
        yield "az://lsm3-demo", server.azure.storage_options()


@contextlib.contextmanager
def s3_location() -> Iterator[tuple[str, dict[str, str] | None]]:
    """Yield ``("s3://bucket", storage_options)``: an embedded moto server, or
    $AWS_ENDPOINT_URL."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        bucket = os.environ.get("LSM3_DEMO_BUCKET", "lsm3-demo")
        _ensure_bucket(bucket)
        print(f"S3 endpoint   {endpoint} (from AWS_ENDPOINT_URL), bucket {bucket}")
        yield f"s3://{bucket}", None  # lsm3 reads the endpoint and credentials from the env
        return
    from lsm3.testing.devserver import LocalS3Server

    started = time.perf_counter()
    with LocalS3Server.start_moto() as server:
        print(
            f"S3 endpoint   {server.s3.endpoint_url} (embedded moto server, started in "
            f"{time.perf_counter() - started:.1f} s)"
        )
        server.s3.create_bucket("lsm3-demo")
        yield "s3://lsm3-demo", server.s3.storage_options()


def _ensure_bucket(bucket: str) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    s3 = boto3.client("s3", region_name=region, config=Config(s3={"addressing_style": "path"}))
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)


# --------------------------------------------------------------------------- change events


class OrdersSource:
    """A fake ``orders`` table in a source database that emits Debezium-style change events.

    Each batch is built column-wise with numpy and returned as an Arrow table with the
    Debezium envelope: ``op``, ``before`` and ``after`` (structs of the row), ``source.lsn``.
    """

    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.live = np.array([], dtype=np.int64)  # order ids that exist at the source
        self.next_id = 1
        self.lsn = 1000

    def batch(self, n: int, initial: bool) -> pa.Table:
        rng = self.rng
        if initial:  # the connector's initial snapshot: 'r' (read) events
            n_ins, n_upd, n_del = n, 0, 0
        else:
            n_upd = int(n * 0.45)
            n_del = min(int(n * 0.12), max(len(self.live) - 1, 0))
            n_ins = n - n_upd - n_del
        ins_ids = np.arange(self.next_id, self.next_id + n_ins, dtype=np.int64)
        self.next_id += n_ins
        pool = rng.permutation(self.live)
        del_ids = pool[:n_del]
        rest = pool[n_del:]
        # updates may hit the same order twice in one batch: the later event must win
        upd_ids = rng.choice(rest, n_upd, replace=True) if n_upd else np.array([], np.int64)
        ids = np.concatenate([ins_ids, upd_ids, del_ids])
        ops = np.array(["r" if initial else "c"] * n_ins + ["u"] * n_upd + ["d"] * n_del)
        order = rng.permutation(len(ids))
        ids, ops = ids[order], ops[order]
        lsns = np.arange(self.lsn, self.lsn + len(ids), dtype=np.int64)
        self.lsn += len(ids)
        self.live = np.setdiff1d(np.concatenate([self.live, ins_ids]), del_ids)

        is_del = ops == "d"
        status = np.where(
            np.isin(ops, ["c", "r"]), "new", STATUSES[rng.integers(0, len(STATUSES), len(ids))]
        )
        after = pa.StructArray.from_arrays(
            [
                pa.array(ids),
                pa.array(CUSTOMERS[rng.integers(0, len(CUSTOMERS), len(ids))]),
                pa.array(np.round(rng.uniform(5, 500, len(ids)), 2)),
                pa.array(status),
                pa.array(T0_US + lsns * 1000, pa.int64()).cast(SCHEMA.field("updated_at").type),
            ],
            fields=[f.with_nullable(True) for f in SCHEMA],
            mask=pa.array(is_del),
        )
        # REPLICA IDENTITY DEFAULT: a delete's before-image carries only the key.
        null = pa.nulls(len(ids))
        before = pa.StructArray.from_arrays(
            [pa.array(ids), *[null.cast(f.type) for f in SCHEMA][1:]],
            fields=[f.with_nullable(True) for f in SCHEMA],
            mask=pa.array(~is_del),
        )
        source = pa.StructArray.from_arrays([pa.array(lsns)], names=["lsn"])
        return pa.table({"op": ops, "before": before, "after": after, "source": source})


def debezium_to_changes(events: pa.Table) -> pa.Table:
    """Flatten Debezium envelopes, vectorised: the after-image (the before-image for deletes)
    plus the ``op`` column, ready for ``writer.apply_cdc``."""
    is_delete = pc.equal(events["op"], "d")
    columns = {
        name: pc.if_else(
            is_delete,
            pc.struct_field(events["before"], name),
            pc.struct_field(events["after"], name),
        )
        for name in SCHEMA.names
    }
    columns["op"] = events["op"]
    return pa.table(columns)


# --------------------------------------------------------------------------- the check


class Model:
    """The expected table: a dict replay of the same events, one per row, in LSN order."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}

    def apply(self, changes: pa.Table) -> None:
        for row in changes.to_pylist():
            op = row.pop("op")
            if op == "d":
                self.rows.pop(row["order_id"], None)
            else:
                self.rows[row["order_id"]] = row

    def table(self) -> list[dict[str, Any]]:
        return [self.rows[k] for k in sorted(self.rows)]


def sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.sort_by("order_id").to_pylist()


# --------------------------------------------------------------------------- the demo


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--store",
        choices=["s3", "az"],
        default="s3",
        help="s3: moto or $AWS_ENDPOINT_URL (default); az: an embedded Azurite",
    )
    args = parser.parse_args(argv)
    location = az_location if args.store == "az" else s3_location
    started = time.perf_counter()
    failures: list[str] = []

    def check(what: str, ok: bool) -> None:
        print(f"   check: {what}: {'ok' if ok else 'MISMATCH'}")
        if not ok:
            failures.append(what)

    with location() as (base, storage_options):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        uri = f"{base}/demo/orders-{stamp}"
        cli_options = [f"--storage-option={k}={v}" for k, v in (storage_options or {}).items()]

        section("create the table")
        table = lsm3.create_table(
            uri,
            SCHEMA,
            primary_key=["order_id"],
            buckets=4,
            storage_options=storage_options,
        )
        print(f"created {table.uri}  key={list(table.primary_key)}  buckets=4")
        print(f"schema  {', '.join(f'{f.name} {f.type}' for f in table.schema)}")

        section("stream CDC: Debezium events -> apply_cdc -> commit with the source offset")
        source = OrdersSource()
        model = Model()
        model_at: dict[int, list[dict[str, Any]]] = {}
        resume_from = table.last_commit(WRITER_ID)
        print(f"last commit of writer {WRITER_ID!r}: {resume_from} (a new table: start at 0)")
        for i in range(COMMITS):
            events = source.batch(EVENTS_PER_COMMIT, initial=i == 0)
            changes = debezium_to_changes(events)
            last_lsn = int(pc.max(events["source"].combine_chunks().field("lsn")).as_py())
            ops = dict(
                zip(*[c.to_pylist() for c in pc.value_counts(events["op"]).flatten()], strict=True)
            )
            t0 = time.perf_counter()
            with table.writer(WRITER_ID) as writer:
                writer.apply_cdc(changes, op_column="op")
                snap = writer.commit(
                    commit_id=f"lsn-{last_lsn}",
                    metadata={"source": "pg.public.orders", "lsn": last_lsn},
                )
            assert snap is not None
            model.apply(changes)
            model_at[snap.snapshot_id] = model.table()
            print(
                f"snapshot {snap.snapshot_id}: {len(changes)} events "
                f"{dict(sorted(ops.items()))} up to lsn {last_lsn} "
                f"({(time.perf_counter() - t0) * 1000:.0f} ms)"
            )
        last = table.last_commit(WRITER_ID)
        assert last is not None
        print(f"resume point: writer {WRITER_ID!r} last committed {last.metadata}")
        check("the last commit records the last LSN", last.metadata.get("lsn") == source.lsn - 1)

        section("read it back with PyArrow (merge-on-read)")
        reader = lsm3.open_table(uri, storage_options=storage_options)
        t0 = time.perf_counter()
        merged = reader.to_arrow()
        print(f"{merged.num_rows} live orders (read in {(time.perf_counter() - t0) * 1000:.0f} ms)")
        check("rows equal the dict model", sorted_rows(merged) == model.table())
        print(format_table(merged.sort_by("order_id").slice(0, 5)))

        print("\norders per status (pyarrow group_by):")
        by_status = (
            merged.group_by("status")
            .aggregate([("order_id", "count"), ("amount", "sum")])
            .sort_by("status")
        )
        by_status = by_status.set_column(2, "amount_sum", pc.round(by_status["amount_sum"], 2))
        print(format_table(by_status))
        expected_counts: dict[str, int] = {}
        for row in model.table():
            expected_counts[row["status"]] = expected_counts.get(row["status"], 0) + 1
        got_counts = dict(
            zip(
                by_status["status"].to_pylist(),
                by_status["order_id_count"].to_pylist(),
                strict=True,
            )
        )
        check("group-by counts", got_counts == expected_counts)

        big = (pc.field("status") == "cancelled") & (pc.field("amount") >= 450)
        filtered = reader.to_arrow(columns=["order_id", "amount"], filter=big)
        print(
            f"\ncancelled orders of 450 or more (filter pushed into the scan): {filtered.num_rows}"
        )
        expected = sum(
            1 for r in model.table() if r["status"] == "cancelled" and r["amount"] >= 450
        )
        check("filtered read", filtered.num_rows == expected)

        section("point lookups")
        some_id = model.table()[len(model.rows) // 2]["order_id"]
        found = reader.get(some_id)
        print(f"get({some_id}) -> {to_json_line(found)}")
        check("get returns the model row", found == model.rows.get(some_id))
        gone = next(k for k in range(1, source.next_id) if k not in model.rows)
        print(f"get({gone}) -> {reader.get(gone)}  (deleted at the source)")
        check("a deleted order is absent", reader.get(gone) is None)

        section("time travel")
        first = reader.to_arrow(snapshot_id=1)
        print(
            f"snapshot 1 had {first.num_rows} orders (the initial load); "
            f"now there are {merged.num_rows}"
        )
        check("snapshot 1 equals the model after commit 1", sorted_rows(first) == model_at[1])
        mid = COMMITS // 2
        check(
            f"snapshot {mid} equals the model after commit {mid}",
            sorted_rows(reader.to_arrow(snapshot_id=mid)) == model_at[mid],
        )

        section("the snapshot log (lsm3 snapshots)")
        sys.stdout.flush()
        rc = lsm3_cli(["snapshots", uri, *cli_options])
        check("lsm3 snapshots exits 0", rc == 0)

        section("lsm3 inspect (requests counted for the inspect run only)")
        sys.stdout.flush()
        rc = lsm3_cli(["inspect", uri, *cli_options])
        check("lsm3 inspect exits 0", rc == 0)

        section("compaction (what the scheduled compactor job does)")
        result = compactor.compact(reader, policy="full")
        print(
            f"{len(result.tasks)} task(s): {result.files_before} files -> {result.files_after}, "
            f"read {result.bytes_read / 1024:.1f} KiB, "
            f"wrote {result.bytes_written / 1024:.1f} KiB, "
            f"{result.requests} requests, {result.seconds:.2f} s"
        )
        check(
            "compaction leaves the merged view unchanged",
            sorted_rows(reader.to_arrow()) == model.table(),
        )
        check(
            "time travel still sees snapshot 1",
            sorted_rows(reader.to_arrow(snapshot_id=1)) == model_at[1],
        )
        stats = reader.store_stats()["requests"]
        print(
            "\nthis reader (everything above) made "
            + ", ".join(f"{op} {n}" for op, n in stats.items() if n)
        )

    section("result")
    elapsed = time.perf_counter() - started
    if failures:
        print(f"FAILED: {len(failures)} check(s) did not match the model: {failures}")
        return 1
    where = "" if os.environ.get("AWS_ENDPOINT_URL") else "; the demo server is stopped"
    print(f"all checks passed in {elapsed:.1f} s{where}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
