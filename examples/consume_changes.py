"""The downstream half of a CDC pipeline: keep a DuckDB table in sync with an lsm3 table.

A changelog consumer (``table.follow``) hands over every commit's changes (``+I -U +U -D``
with before-images). Each commit is applied to DuckDB in one transaction that also records
the snapshot id it reached, so the DuckDB file alone says where it is: after a crash at any
point (SIGKILL included) the restarted process skips what DuckDB already holds and applies
the rest, each commit exactly once. The lsm3 consumer's own position, committed after
DuckDB's, only tells expiry which snapshots are still needed.

    python examples/consume_changes.py --table /tmp/lsm3-stream --duckdb /tmp/mirror.duckdb
    python examples/consume_changes.py --table s3://bucket/customers --duckdb m.duckdb --once

``examples/stream_cdc.py`` is the upstream half (Debezium events into the lsm3 table).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import duckdb
import pyarrow as pa

import lsm3

POSITION_TABLE = "lsm3_position"
APPLIED_TABLE = "lsm3_applied"


def open_mirror(path: str, table: lsm3.Table, name: str) -> duckdb.DuckDBPyConnection:
    """The DuckDB file, with the mirrored table (same columns) and the position table."""
    con = duckdb.connect(path)
    empty = table.schema.empty_table()
    con.register("lsm3_empty", empty)
    con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" AS SELECT * FROM lsm3_empty')
    con.unregister("lsm3_empty")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {POSITION_TABLE} "
        "(consumer VARCHAR PRIMARY KEY, snapshot_id BIGINT NOT NULL)"
    )
    # One row per commit applied: a commit applied twice would break the primary key.
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} "
        "(consumer VARCHAR, snapshot_id BIGINT, rows BIGINT, PRIMARY KEY (consumer, snapshot_id))"
    )
    return con


def mirrored_position(con: duckdb.DuckDBPyConnection, consumer: str) -> int:
    row = con.execute(
        f"SELECT snapshot_id FROM {POSITION_TABLE} WHERE consumer = ?", [consumer]
    ).fetchone()
    return int(row[0]) if row else 0


def apply_commit(
    con: duckdb.DuckDBPyConnection,
    name: str,
    keys: list[str],
    consumer: str,
    snapshot_id: int,
    changes: pa.Table,
) -> None:
    """One lsm3 commit's changes and the new position, in one DuckDB transaction."""
    columns = [c for c in changes.column_names if not c.startswith("_")]
    con.execute("BEGIN TRANSACTION")
    try:
        if changes.num_rows:
            con.register("lsm3_changes", changes)
            match = " AND ".join(f't."{k}" = c."{k}"' for k in keys)
            con.execute(
                f'DELETE FROM "{name}" t WHERE EXISTS (SELECT 1 FROM lsm3_changes c WHERE {match})'
            )
            select = ", ".join(f'"{c}"' for c in columns)
            con.execute(
                f'INSERT INTO "{name}" SELECT {select} FROM lsm3_changes '
                "WHERE _row_kind IN ('+I', '+U')"
            )
            con.unregister("lsm3_changes")
        con.execute(
            f"INSERT OR REPLACE INTO {POSITION_TABLE} VALUES (?, ?)", [consumer, snapshot_id]
        )
        con.execute(
            f"INSERT INTO {APPLIED_TABLE} VALUES (?, ?, ?)",
            [consumer, snapshot_id, changes.num_rows],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def run(args: argparse.Namespace) -> int:
    table = lsm3.open_table(args.table)
    name = args.mirror_table
    con = open_mirror(args.duckdb, table, name)
    keys = list(table.primary_key)
    done = mirrored_position(con, args.consumer)
    consumer = table.consumer(args.consumer, start_snapshot_id=done)
    if consumer.position < done:  # DuckDB committed, the crash came before lsm3's commit
        consumer.commit(done)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    applied = 0
    for snapshot_id, changes in table.follow(args.consumer, args.poll, stop=stop):
        if snapshot_id <= done:
            continue  # already in DuckDB (possible only right after a crash)
        apply_commit(con, name, keys, args.consumer, snapshot_id, changes)
        applied += 1
        if args.crash_after and applied >= args.crash_after:
            os.kill(os.getpid(), signal.SIGKILL)  # tests: die before lsm3's position moves
        latest = table.current_snapshot()
        if args.once and latest is not None and snapshot_id >= latest.snapshot_id:
            stop.set()
    if args.once and applied == 0:
        print(f"{args.consumer}: up to date at snapshot {done}")
    else:
        print(f"{args.consumer}: applied {applied} commit(s)")
    con.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="the lsm3 table to follow")
    parser.add_argument("--duckdb", required=True, help="the DuckDB file to keep in sync")
    parser.add_argument("--mirror-table", default="mirror", help="table name in DuckDB")
    parser.add_argument("--consumer", default="duckdb-mirror", help="the lsm3 consumer id")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="apply what is there, then exit")
    parser.add_argument("--crash-after", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.once:
        table = lsm3.open_table(args.table)
        snap = table.refresh()
        con = open_mirror(args.duckdb, table, args.mirror_table)
        done = mirrored_position(con, args.consumer)
        con.close()
        if snap is None or done >= snap.snapshot_id:
            print(f"{args.consumer}: up to date at snapshot {done}")
            return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
