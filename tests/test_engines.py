"""DuckDB and Polars read lsm3 tables through Arrow and agree with ``Table.to_arrow``.

The example scripts run as subprocesses (they check themselves against a replay), and the
same filter and projection are compared directly, engine by engine, with lsm3's own merged
read: before compaction (merged in-memory buckets), after a full compaction (lazy Parquet
fragments with pushdown) and after new writes on top (a union of both), locally and on S3.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest

import compactor
import lsm3

duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")

ROOT = Path(__file__).resolve().parent.parent

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("status", pa.string()),
        pa.field("amount", pa.float64()),
        pa.field("note", pa.string()),
    ]
)
LOW, HIGH = 150, 1_400
FILTER = (pc.field("id") >= LOW) & (pc.field("id") <= HIGH) & (pc.field("status") == "paid")
SQL_WHERE = f"id BETWEEN {LOW} AND {HIGH} AND status = 'paid'"
COLUMNS = ["id", "amount"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("script", ["duckdb_query.py", "polars_query.py"])
def test_example_script_passes_its_checks(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all checks passed" in result.stdout
    assert "MISMATCH" not in result.stdout
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- direct checks


def _rows(n: int, start: int, seed: int) -> pa.Table:
    ids = list(range(start, start + n))
    statuses = ["paid", "new", None, "shipped"]
    return pa.table(
        {
            "id": ids,
            "status": [statuses[(i * 7 + seed) % 4] for i in ids],
            "amount": [round((i * 13 + seed) % 997 + 0.25, 2) for i in ids],
            "note": [None if i % 5 == 0 else f"n{i % 11}-{seed}" for i in ids],
        },
        schema=SCHEMA,
    )


def _write_cdc(table: lsm3.Table, seed: int) -> None:
    """Overlapping upserts and deletes, so that buckets need a merge."""
    with table.writer() as writer:
        writer.upsert(_rows(2_000, 0, seed))
        writer.commit()
        writer.upsert(_rows(600, 1_000 + seed * 10, seed + 1))
        writer.delete(pa.table({"id": list(range(100, 2_000, 9))}))
        writer.commit()


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["id"])


def _duckdb_rows(table: lsm3.Table, sql: str) -> list[dict[str, Any]]:
    con = duckdb.connect()
    con.register("t", table.to_pyarrow_dataset())
    return _sorted(con.sql(sql).to_arrow_table().to_pylist())


def _polars_rows(table: lsm3.Table, columns: list[str] | None, predicate: Any) -> list[dict]:
    lf = pl.scan_pyarrow_dataset(table.to_pyarrow_dataset())
    if predicate is not None:
        lf = lf.filter(predicate)
    if columns is not None:
        lf = lf.select(columns)
    return _sorted(lf.collect().to_dicts())


def _pieces(table: lsm3.Table) -> set[str]:
    """Which kinds of pieces ``to_pyarrow_dataset`` is made of."""
    dataset = table.to_pyarrow_dataset()
    parts = dataset.children if isinstance(dataset, pads.UnionDataset) else [dataset]
    return {type(p).__name__ for p in parts}


def _check_engines_agree(table: lsm3.Table) -> None:
    expected = _sorted(table.to_arrow(columns=COLUMNS, filter=FILTER).to_pylist())
    everything = _sorted(table.to_arrow().to_pylist())
    assert expected and everything  # the filter selects something

    assert _duckdb_rows(table, f"SELECT id, amount FROM t WHERE {SQL_WHERE}") == expected
    assert _duckdb_rows(table, "SELECT * FROM t") == everything

    predicate = pl.col("id").is_between(LOW, HIGH) & (pl.col("status") == "paid")
    assert _polars_rows(table, COLUMNS, predicate) == expected
    assert _polars_rows(table, None, None) == everything

    # A RecordBatchReader: lsm3 applies filter and projection, the engines consume the stream.
    reader = table.to_batches(columns=COLUMNS, filter=FILTER)
    con = duckdb.connect()
    con.register("stream", reader)
    assert _sorted(con.sql("SELECT * FROM stream").to_arrow_table().to_pylist()) == expected
    frame = pl.from_arrow(table.to_batches(columns=COLUMNS, filter=FILTER))
    assert isinstance(frame, pl.DataFrame)
    assert _sorted(frame.to_dicts()) == expected


def test_engines_agree_with_to_arrow_before_and_after_compaction(
    table_location: tuple[str, Any],
) -> None:
    uri, options = table_location
    table = lsm3.create_table(
        uri,
        SCHEMA,
        primary_key="id",
        buckets=3,
        options={"row_group_rows": 256},
        storage_options=options,
    )
    _write_cdc(table, seed=1)
    assert _pieces(table) == {"InMemoryDataset"}  # every bucket merged in memory
    _check_engines_agree(table)

    compactor.compact(table, policy="full")
    table.refresh()
    assert all(f.level > 0 for f in table.files()) and all(f.deletes == 0 for f in table.files())
    assert _pieces(table) == {"FileSystemDataset"}  # lazy Parquet fragments only
    _check_engines_agree(table)

    with table.writer() as writer:  # dirty at most two of the three buckets again
        writer.upsert(_rows(1, 200, seed=5))
        writer.delete(pa.table({"id": [201]}))
        writer.commit()
    assert _pieces(table) == {"FileSystemDataset", "InMemoryDataset"}
    _check_engines_agree(table)


def test_duckdb_pushes_key_filters_into_the_arrow_scan(tmp_path: Path) -> None:
    table = lsm3.create_table(
        str(tmp_path / "t"), SCHEMA, primary_key="id", options={"row_group_rows": 256}
    )
    with table.writer() as writer:
        writer.upsert(_rows(20_000, 0, seed=3))
        writer.commit()
    compactor.compact(table, policy="full")
    table.refresh()
    con = duckdb.connect()
    con.register("t", table.to_pyarrow_dataset())
    query = f"SELECT id, amount FROM t WHERE {SQL_WHERE}"
    plan = str(con.sql("EXPLAIN " + query).fetchall()[0][1])
    assert str(LOW) in plan[plan.find("ARROW_SCAN") :]  # the filter is inside the scan node

    table.stats.reset()
    con.sql("SELECT sum(amount) FROM t").fetchall()
    full = table.stats.snapshot()["bytes"]["GET"]
    table.stats.reset()
    rows = con.sql(query).fetchall()
    selective = table.stats.snapshot()["bytes"]["GET"]
    assert rows
    assert 0 < selective < full / 3, (selective, full)  # row groups were skipped
