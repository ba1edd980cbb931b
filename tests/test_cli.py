"""The ``lsm3`` command line: every subcommand through ``lsm3.cli.main(argv)``, the error
format, the schema grammar and the filter language (which must never evaluate its input)."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import lsm3
from lsm3.cli import UsageError, main, parse_filter, parse_key, parse_schema

Location = tuple[str, dict[str, str] | None]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def opts(options: dict[str, str] | None) -> list[str]:
    return [f"--storage-option={k}={v}" for k, v in (options or {}).items()]


def jsonl(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_line_error(err: str, contains: str = "") -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lsm3: error: "), err
    assert "Traceback" not in err
    assert contains in lines[0], err


SCHEMA = "id:int64,name:string,amount:float64,ts:timestamp[us,UTC]"
COMMANDS = [
    "create",
    "write",
    "scan",
    "get",
    "changes",
    "snapshots",
    "tag",
    "untag",
    "tags",
    "schema",
    "alter",
    "inspect",
]


@pytest.fixture(autouse=True)
def _no_warehouse_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With LSM3_WAREHOUSE set, names without '/' would be read as namespace.table."""
    monkeypatch.delenv("LSM3_WAREHOUSE", raising=False)


@pytest.fixture
def table_with_rows(local_uri: Location, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A local table with ids 1..10 (name n<i>, amount i*1.5, one null name) in 1 snapshot."""
    uri = local_uri[0]
    assert main(["create", uri, "--schema", SCHEMA, "--primary-key", "id"]) == 0
    rows = pa.table(
        {
            "id": list(range(1, 11)),
            "name": [f"n{i}" if i != 7 else None for i in range(1, 11)],
            "amount": [i * 1.5 for i in range(1, 11)],
            "ts": pa.array(
                [1_767_225_600_000_000 + i * 86_400_000_000 for i in range(1, 11)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    pq.write_table(rows, tmp_path / "rows.parquet")
    assert main(["write", uri, str(tmp_path / "rows.parquet")]) == 0
    capsys.readouterr()
    return uri


# --------------------------------------------------------------------------- help


def test_python_m_lsm3_help_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lsm3", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
    assert "examples:" in result.stdout
    assert "AWS_ENDPOINT_URL" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help_has_examples(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "examples:" in out
    assert f"lsm3 {command}" in out
    assert "--storage-option" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert lsm3.__version__ in out


# --------------------------------------------------------------------------- round trip


def test_all_subcommands_round_trip(
    capsys: pytest.CaptureFixture[str], table_location: Location, tmp_path: Path
) -> None:
    uri, options = table_location
    so = opts(options)
    code, out, err = run(
        capsys, "create", uri, "--schema", SCHEMA, "--primary-key", "id", "--buckets", "2", *so
    )
    assert code == 0, err
    assert "created table" in out

    # two input files of different formats -> one commit
    pq.write_table(
        pa.table(
            {
                "id": [1, 2, 3],
                "name": ["a", "b", "c"],
                "amount": [1.0, 2.0, 3.0],
                "ts": pa.array([0, 1, 2], pa.timestamp("us", tz="UTC")),
            }
        ),
        tmp_path / "a.parquet",
    )
    (tmp_path / "b.csv").write_text("id,name,amount,ts\n4,007,4.5,2026-01-01T00:00:00Z\n5,e,,\n")
    code, out, err = run(
        capsys, "write", uri, str(tmp_path / "a.parquet"), str(tmp_path / "b.csv"), *so
    )
    assert code == 0, err
    assert "committed snapshot 1" in out

    code, out, err = run(capsys, "scan", uri, "--format", "jsonl", *so)
    assert code == 0, err
    rows = {r["id"]: r for r in jsonl(out)}
    assert sorted(rows) == [1, 2, 3, 4, 5]
    assert rows[4]["name"] == "007"  # CSV read with the table types: not the number 7
    assert rows[4]["ts"] == "2026-01-01T00:00:00+00:00"
    assert rows[5]["amount"] is None

    # CDC: update 1, delete 2, insert 6 (jsonl, with the op column)
    (tmp_path / "cdc.jsonl").write_text(
        '{"op": "u", "id": 1, "name": "a2", "amount": 10.0, "ts": null}\n'
        '{"op": "d", "id": 2}\n'
        '{"op": "c", "id": 6, "name": "f", "amount": 6.0, "ts": "2026-02-01 00:00:00"}\n'
    )
    code, out, err = run(capsys, "write", uri, str(tmp_path / "cdc.jsonl"), "--cdc", *so)
    assert code == 0, err
    assert "committed snapshot 2" in out
    # delete by key from a CSV with only the key column
    (tmp_path / "gone.csv").write_text("id\n3\n")
    code, out, err = run(capsys, "write", uri, str(tmp_path / "gone.csv"), "--delete", *so)
    assert code == 0, err

    code, out, err = run(capsys, "scan", uri, *so)
    assert code == 0, err
    assert out.splitlines()[0].split() == ["id", "name", "amount", "ts"]
    assert out.strip().endswith("(4 rows)")
    code, out, _ = run(capsys, "scan", uri, "--format", "csv", "--columns", "id,name", *so)
    assert code == 0
    table = pacsv.read_csv(io.BytesIO(out.encode())).sort_by(
        "id"
    )  # 2 buckets: key order per bucket
    assert table.to_pydict() == {"id": [1, 4, 5, 6], "name": ["a2", "007", "e", "f"]}

    # get: found and absent keys
    code, out, err = run(capsys, "get", uri, "1", "6", *so)
    assert code == 0, err
    got = jsonl(out)
    assert [g["name"] for g in got] == ["a2", "f"]
    code, out, err = run(capsys, "get", uri, "2", "4", *so)
    assert code == 3
    assert jsonl(out)[0] is None and jsonl(out)[1]["id"] == 4
    assert "not found: 2" in err

    # time travel
    code, out, _ = run(capsys, "scan", uri, "--snapshot", "1", "--format", "jsonl", *so)
    assert sorted(r["id"] for r in jsonl(out)) == [1, 2, 3, 4, 5]

    # snapshots
    code, out, err = run(capsys, "snapshots", uri, *so)
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header == ["id", "parent", "time", "kind", "writer", "commit", "summary", "metadata"]
    assert "(3 snapshots)" in out
    code, out, _ = run(capsys, "snapshots", uri, "--format", "jsonl", *so)
    snaps = jsonl(out)
    assert [s["snapshot_id"] for s in snaps] == [1, 2, 3]
    assert [s["parent_id"] for s in snaps] == [None, 1, 2]
    assert snaps[0]["summary"]["added_rows"] == 5
    assert snaps[0]["metadata"] == {"files": ["a.parquet", "b.csv"]}

    # inspect
    code, out, err = run(capsys, "inspect", uri, "--exact", *so)
    assert code == 0, err
    assert "per level" in out and "per bucket" in out
    assert "4 live row(s)" in out
    assert "requests made by this inspect run" in out
    code, out, _ = run(capsys, "inspect", uri, "--json", "--exact", *so)
    report = json.loads(out)
    assert report["rows_live"] == 4
    assert report["snapshot"]["id"] == 3
    assert report["retained_snapshots"] == 3
    assert report["files"] == sum(lv["files"] for lv in report["levels"])
    assert report["files"] == sum(b["files"] for b in report["buckets_detail"])
    assert report["rows_stored"] == sum(b["rows"] for b in report["buckets_detail"])
    assert report["deletes_stored"] == 2
    assert {b["bucket"] for b in report["buckets_detail"]} <= {0, 1}
    requests = report["requests"]["requests"]
    assert set(requests) == {"PUT", "GET", "LIST", "HEAD", "DELETE"}
    assert requests["PUT"] == 0 and requests["DELETE"] == 0  # inspecting writes nothing
    assert requests["GET"] > 0

    # the CLI's table agrees with the Python API
    t = lsm3.open_table(uri, storage_options=options)
    assert sorted(t.to_arrow().column("id").to_pylist()) == [1, 4, 5, 6]


def test_write_with_commit_id_is_idempotent(
    capsys: pytest.CaptureFixture[str], table_with_rows: str, tmp_path: Path
) -> None:
    uri = table_with_rows
    (tmp_path / "batch.jsonl").write_text('{"id": 100, "name": "x", "amount": 1, "ts": null}\n')
    argv = [
        "write",
        uri,
        str(tmp_path / "batch.jsonl"),
        "--writer-id",
        "loader",
        "--commit-id",
        "batch-1",
    ]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "committed snapshot 2" in out
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "already in snapshot 2" in out
    t = lsm3.open_table(uri)
    assert len(t.snapshots()) == 2
    last = t.last_commit("loader")
    assert last is not None and last.commit_id == "batch-1"


def test_write_stdin_and_empty_input(
    capsys: pytest.CaptureFixture[str],
    table_with_rows: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = table_with_rows
    data = b"id,name,amount,ts\n11,k,2.0,\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run(capsys, "write", uri, "-", "--format", "csv")
    assert code == 0, err
    assert lsm3.open_table(uri).get(11) is not None
    code, _, err = run(capsys, "write", uri, "-")
    assert code == 2
    assert_one_line_error(err, "--format")
    (tmp_path / "empty.csv").write_text("id,name,amount,ts\n")
    code, out, err = run(capsys, "write", uri, str(tmp_path / "empty.csv"))
    assert code == 0, err
    assert "nothing to commit" in out


def test_write_csv_zoned_timestamps_with_and_without_offset(
    capsys: pytest.CaptureFixture[str], table_with_rows: str, tmp_path: Path
) -> None:
    (tmp_path / "ts.csv").write_text(
        "id,name,amount,ts\n"
        "21,a,1,2026-03-01 10:00:00\n"  # no offset: UTC
        "22,b,2,2026-03-01T10:00:00+02:00\n"
        "23,c,3,\n"
    )
    code, _, err = run(capsys, "write", table_with_rows, str(tmp_path / "ts.csv"))
    assert code == 0, err
    code, out, _ = run(capsys, "get", table_with_rows, "21", "22", "23")
    assert [r["ts"] for r in jsonl(out)] == [
        "2026-03-01T10:00:00+00:00",
        "2026-03-01T08:00:00+00:00",
        None,
    ]


def test_scan_options(
    capsys: pytest.CaptureFixture[str], table_with_rows: str, tmp_path: Path
) -> None:
    uri = table_with_rows
    code, out, err = run(
        capsys,
        "scan",
        uri,
        "--filter",
        "amount > 6 and name != 'n9'",
        "--columns",
        "id",
        "--format",
        "jsonl",
    )
    assert code == 0, err
    assert jsonl(out) == [{"id": i} for i in (5, 6, 8, 10)]  # null name: not a match
    code, out, _ = run(capsys, "scan", uri, "--limit", "3", "--format", "jsonl")
    assert [r["id"] for r in jsonl(out)] == [1, 2, 3]
    code, out, _ = run(capsys, "scan", uri, "--limit", "0")
    assert "(0 rows)" in out
    code, out, _ = run(
        capsys,
        "scan",
        uri,
        "--filter",
        "ts >= '2026-01-09'",
        "--format",
        "jsonl",
    )
    assert [r["id"] for r in jsonl(out)] == [8, 9, 10]

    for name in ("out.parquet", "out.csv", "out.jsonl"):
        target = tmp_path / name
        code, _, err = run(capsys, "scan", uri, "--filter", "id in [2, 4]", "--output", str(target))
        assert code == 0, err
        assert "wrote 2 row(s)" in err
        if name.endswith(".parquet"):
            assert pq.read_table(target).column("id").to_pylist() == [2, 4]
        elif name.endswith(".csv"):
            assert pacsv.read_csv(target).column("id").to_pylist() == [2, 4]
        else:
            assert [r["id"] for r in jsonl(target.read_text())] == [2, 4]

    code, _, err = run(capsys, "scan", uri, "--output", str(tmp_path / "x.txt"))
    assert code == 2
    assert_one_line_error(err, ".parquet")
    snaps = lsm3.open_table(uri).snapshots()
    code, out, err = run(
        capsys, "scan", uri, "--as-of", str(snaps[0].timestamp_ms), "--format", "jsonl"
    )
    assert code == 0, err
    assert len(jsonl(out)) == 10
    code, _, err = run(capsys, "scan", uri, "--as-of", "yesterday")
    assert code == 2


def test_get_composite_key_and_partitions(
    capsys: pytest.CaptureFixture[str], local_uri: Location, tmp_path: Path
) -> None:
    uri = local_uri[0]
    code, _, err = run(
        capsys,
        "create",
        uri,
        "--schema",
        "tenant:string,id:int64,day:date32,v:decimal128(10,2)",
        "--primary-key",
        "tenant,id",
        "--partition-by",
        "tenant",
        "--buckets",
        "2",
        "--option",
        "row_group_rows=1000",
    )
    assert code == 0, err
    t = lsm3.open_table(uri)
    assert t.table_schema.partition_by == ("tenant",)
    assert t.table_schema.option("row_group_rows") == 1000
    (tmp_path / "r.csv").write_text(
        "tenant,id,day,v\nacme,1,2026-01-01,1.50\nacme,2,2026-01-02,2.25\nzeta,1,2026-01-03,\n"
    )
    assert main(["write", uri, str(tmp_path / "r.csv")]) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "get", uri, "acme,2", "zeta,1")
    assert code == 0, err
    got = jsonl(out)
    assert got[0] == {"tenant": "acme", "id": 2, "day": "2026-01-02", "v": "2.25"}
    assert got[1]["v"] is None
    code, out, _ = run(capsys, "get", uri, "acme,2", "--format", "table", "--columns", "id,v")
    assert out.splitlines()[0].split() == ["id", "v"]
    code, _, err = run(capsys, "get", uri, "acme")
    assert code == 2
    assert_one_line_error(err, "primary key is (tenant, id)")
    code, _, err = run(capsys, "get", uri, "acme,x")
    assert code == 2
    assert_one_line_error(err, "not a valid int64")
    code, out, err = run(capsys, "inspect", uri)
    assert code == 0, err
    assert "partition" in out and "acme" in out and "zeta" in out


# --------------------------------------------------------------------------- changes


def write_cdc(uri: str, path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))
    assert main(["write", uri, str(path), "--cdc"]) == 0


def test_changes(capsys: pytest.CaptureFixture[str], table_with_rows: str, tmp_path: Path) -> None:
    uri = table_with_rows
    write_cdc(
        uri,
        tmp_path / "cdc.jsonl",
        [
            '{"op": "u", "id": 1, "name": "one", "amount": 100.0, "ts": null}',
            '{"op": "d", "id": 2}',
            '{"op": "c", "id": 11, "name": "n11", "amount": 16.5, "ts": null}',
        ],
    )  # snapshot 2
    capsys.readouterr()
    code, out, err = run(capsys, "changes", uri, "--from", "1", "--format", "jsonl")
    assert code == 0, err
    got = [(r["id"], r["_row_kind"], r["name"]) for r in jsonl(out)]
    assert got == [(1, "+U", "one"), (2, "-D", "n2"), (11, "+I", "n11")]

    code, out, _ = run(
        capsys, "changes", uri, "--from", "1", "--include-update-before", "--format", "jsonl"
    )
    got = [(r["id"], r["_row_kind"], r["name"]) for r in jsonl(out)]
    assert got[:2] == [(1, "-U", "n1"), (1, "+U", "one")]

    # --from 0: every live row as an insert; --to bounds the range
    code, out, _ = run(capsys, "changes", uri, "--from", "0", "--format", "jsonl")
    assert {r["_row_kind"] for r in jsonl(out)} == {"+I"} and len(jsonl(out)) == 10
    code, out, _ = run(capsys, "changes", uri, "--from", "0", "--to", "1", "--format", "jsonl")
    assert sorted(r["id"] for r in jsonl(out)) == list(range(1, 11))
    code, out, _ = run(capsys, "changes", uri, "--from", "2", "--format", "jsonl")
    assert code == 0 and out == ""

    code, out, _ = run(capsys, "changes", uri, "--from", "1")
    assert out.splitlines()[0].split() == ["id", "name", "amount", "ts", "_row_kind"]
    assert out.strip().endswith("(3 rows)")
    code, out, _ = run(capsys, "changes", uri, "--from", "1", "--format", "csv")
    csv_rows = pacsv.read_csv(io.BytesIO(out.encode()))
    assert csv_rows.column("_row_kind").to_pylist() == ["+U", "-D", "+I"]
    target = tmp_path / "changes.parquet"
    code, _, err = run(capsys, "changes", uri, "--from", "1", "--output", str(target))
    assert code == 0, err
    assert "wrote 3 row(s)" in err
    assert pq.read_table(target).column("_row_kind").to_pylist() == ["+U", "-D", "+I"]

    for argv, status, message in (
        (["--from", "-1"], 2, "--from"),
        (["--from", "2", "--to", "1"], 2, "before --from"),
        (["--from", "1", "--output", "x.txt"], 2, ".parquet"),
        ([], 2, "--from"),
        (["--from", "7"], 1, "after snapshot 2"),
        (["--from", "0", "--to", "9"], 1, "snapshot 9"),
    ):
        code, _, err = run(capsys, "changes", uri, *argv)
        assert code == status, argv
        assert_one_line_error(err, message)


# --------------------------------------------------------------------------- tags


def test_tags(capsys: pytest.CaptureFixture[str], table_with_rows: str, tmp_path: Path) -> None:
    uri = table_with_rows
    code, out, err = run(capsys, "tag", uri, "v1")
    assert code == 0, err
    assert "tagged snapshot 1" in out
    (tmp_path / "gone.csv").write_text("id\n3\n")
    assert main(["write", uri, str(tmp_path / "gone.csv"), "--delete"]) == 0  # snapshot 2
    capsys.readouterr()
    code, out, err = run(capsys, "tag", uri, "before-delete", "--snapshot", "1")
    assert code == 0, err
    code, _, _ = run(capsys, "tag", uri, "now")
    assert lsm3.open_table(uri).tags() == {"v1": 1, "before-delete": 1, "now": 2}

    code, out, err = run(capsys, "tags", uri)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["tag", "snapshot", "time"]
    assert [line.split()[:2] for line in lines[2:5]] == [
        ["before-delete", "1"],
        ["v1", "1"],
        ["now", "2"],
    ]
    assert lines[-1] == "(3 tags)"
    code, out, _ = run(capsys, "tags", uri, "--format", "jsonl")
    docs = jsonl(out)
    assert [(d["name"], d["snapshot_id"]) for d in docs] == [
        ("before-delete", 1),
        ("v1", 1),
        ("now", 2),
    ]
    assert all(d["time"].endswith("Z") for d in docs)

    # scan and get read a tagged snapshot
    code, out, err = run(capsys, "scan", uri, "--tag", "v1", "--format", "jsonl")
    assert code == 0, err
    assert len(jsonl(out)) == 10
    code, out, _ = run(capsys, "scan", uri, "--tag", "now", "--format", "jsonl")
    assert len(jsonl(out)) == 9
    code, out, err = run(capsys, "get", uri, "3", "--tag", "v1")
    assert code == 0, err
    assert jsonl(out)[0]["name"] == "n3"
    code, out, _ = run(capsys, "get", uri, "3", "--tag", "now")
    assert code == 3 and jsonl(out) == [None]

    code, out, err = run(capsys, "untag", uri, "v1")
    assert code == 0, err
    assert "deleted tag 'v1'" in out
    assert "v1" not in lsm3.open_table(uri).tags()

    for argv, status, message in (
        (["tag", uri, "now"], 1, "already exists"),
        (["tag", uri, "x", "--snapshot", "99"], 1, "snapshot 99"),
        (["tag", uri, "bad/name"], 2, "invalid tag name"),
        (["untag", uri, "v1"], 1, "no tag 'v1'"),
        (["untag", uri, "../x"], 2, "invalid tag name"),
        (["scan", uri, "--tag", "v1"], 1, "no tag 'v1'"),
        (["scan", uri, "--tag", "now", "--snapshot", "1"], 2, "only one of"),
        (["scan", uri, "--tag", "now", "--as-of", "0"], 2, "only one of"),
        (["get", uri, "1", "--tag", "now", "--snapshot", "1"], 2, "only one of"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == status, argv
        assert_one_line_error(err, message)


def test_tag_needs_a_snapshot(capsys: pytest.CaptureFixture[str], local_uri: Location) -> None:
    uri = local_uri[0]
    assert main(["create", uri, "--schema", SCHEMA, "--primary-key", "id"]) == 0
    code, out, err = run(capsys, "tags", uri)
    assert code == 0, err
    assert "(0 tags)" in out
    code, _, err = run(capsys, "tag", uri, "v1")
    assert code == 1
    assert_one_line_error(err, "no snapshot to tag")


# --------------------------------------------------------------------------- schema, alter


def test_schema(capsys: pytest.CaptureFixture[str], local_uri: Location) -> None:
    uri = local_uri[0]
    argv = ["create", uri, "--schema", "tenant:string,id:int64,lsn:int64,note:string!"]
    argv += ["--primary-key", "tenant,id", "--partition-by", "tenant", "--buckets", "4"]
    assert main([*argv, "--option", "sequence_field=lsn"]) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "schema", uri)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:5] == [
        "schema        0",
        "primary key   tenant,id",
        "partition by  tenant",
        "buckets       4",
        "options       sequence_field=lsn",
    ]
    fields = [line.split(None, 4) for line in lines[8:]]
    assert fields == [
        ["1", "tenant", "string", "no", "primary key, partition"],
        ["2", "id", "int64", "no", "primary key"],
        ["3", "lsn", "int64", "yes", "sequence field"],
        ["4", "note", "string", "no"],
    ]
    code, out, _ = run(capsys, "schema", uri, "--json")
    assert json.loads(out) == lsm3.open_table(uri).table_schema.to_json()
    code, out, _ = run(capsys, "schema", uri, "--history", "--json")
    assert [doc["schema_id"] for doc in json.loads(out)] == [0]


def test_alter(capsys: pytest.CaptureFixture[str], table_with_rows: str) -> None:
    uri = table_with_rows
    code, out, err = run(
        capsys,
        "alter",
        uri,
        "--add-column",
        "qty:int32",
        "--widen-column",
        "qty:int64",  # in the order given: widens the column added just before
        "--rename-column",
        "name:label",
        "--drop-column",
        "amount",
        "--set-option",
        "row_group_rows=1000",
    )
    assert code == 0, err
    assert out.startswith("committed schema 1 (snapshot 2) to ")
    assert "added qty:int32; widened qty to int64; renamed name -> label; dropped amount" in out
    t = lsm3.open_table(uri)
    assert t.schema.names == ["id", "label", "ts", "qty"]
    assert t.schema.field("qty").type == pa.int64()
    assert t.table_schema.option("row_group_rows") == 1000
    assert [s.kind for s in t.snapshots()] == ["APPEND", "SCHEMA"]
    code, out, _ = run(capsys, "get", uri, "3")
    assert jsonl(out) == [{"id": 3, "label": "n3", "ts": "2026-01-04T00:00:00+00:00", "qty": None}]

    code, out, err = run(capsys, "schema", uri, "--history")
    assert code == 0, err
    blocks = re.split(r"\n\n(?=schema )", out)
    assert len(blocks) == 2
    assert "changes       created" in blocks[0]
    assert (
        "changes       renamed name -> label; dropped amount; added qty:int64; "
        "set row_group_rows=1000" in blocks[1]
    )
    code, out, _ = run(capsys, "schema", uri, "--history", "--json")
    assert [doc["schema_id"] for doc in json.loads(out)] == [0, 1]

    code, out, err = run(capsys, "alter", uri, "--set-option", "row_group_rows=1000")
    assert code == 0, err
    assert "nothing to commit" in out
    assert len(lsm3.open_table(uri).snapshots()) == 2


def test_alter_errors_commit_nothing(
    capsys: pytest.CaptureFixture[str], table_with_rows: str
) -> None:
    uri = table_with_rows
    for argv, status, message in (
        ([], 2, "nothing to alter"),
        (["--add-column", "x"], 2, "NAME:TYPE"),
        (["--add-column", "x:int99"], 2, "unknown type"),
        (["--rename-column", "name"], 2, "OLD:NEW"),
        (["--widen-column", "amount"], 2, "NAME:TYPE"),
        (["--drop-column", " "], 2, "column name"),
        (["--set-option", "oops"], 2, "KEY=VALUE"),
        (["--add-column", "ok:string", "--drop-column", "id"], 1, "cannot drop 'id'"),
        (["--add-column", "x:int64!"], 1, "must be nullable"),
        (["--widen-column", "amount:float32"], 1, "only widening"),
        (["--drop-column", "nope"], 1, "no column 'nope'"),
        (["--set-option", "bogus=1"], 1, "unknown table option"),
    ):
        code, _, err = run(capsys, "alter", uri, *argv)
        assert code == status, argv
        assert_one_line_error(err, message)
    t = lsm3.open_table(uri)
    assert len(t.snapshots()) == 1
    assert t.schema.names == ["id", "name", "amount", "ts"]


# --------------------------------------------------------------------------- README


def test_readme_command_line_block_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command of the README's "Command line" block succeeds, in order."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Command line", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [
        shlex.split(c, comments=True) for c in block.group(1).replace("\\\n", " ").splitlines()
    ]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "orders.csv").write_text(
        "id,customer,amount,status\n1,ann,10.0,new\n2,bob,75.5,paid\n3,cy,99.0,cancelled\n"
    )
    (tmp_path / "changes.jsonl").write_text(
        '{"op": "u", "id": 1, "customer": "ann", "amount": 60.0, "status": "paid"}\n'
        '{"op": "c", "id": 4, "customer": "dee", "amount": 5.0, "status": "new"}\n'
    )
    (tmp_path / "gone.csv").write_text("id\n3\n")
    assert len(commands) >= 10
    for argv in commands:
        assert argv[0] == "lsm3", argv
        code, _, err = run(capsys, *argv[1:])
        assert code == 0, (argv, err)
    assert lsm3.open_table("orders").schema.names == [
        "id",
        "customer",
        "total",
        "status",
        "note",
    ]


# --------------------------------------------------------------------------- errors


def test_errors_are_one_line_with_exit_1(
    capsys: pytest.CaptureFixture[str], table_with_rows: str, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nope")
    for argv in (
        ["scan", missing],
        ["get", missing, "1"],
        ["snapshots", missing],
        ["inspect", missing],
        ["changes", missing, "--from", "0"],
        ["tag", missing, "v1"],
        ["untag", missing, "v1"],
        ["tags", missing],
        ["schema", missing],
        ["alter", missing, "--drop-column", "name"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 1, argv
        assert_one_line_error(err, "no lsm3 table")
        assert out == ""
    code, _, err = run(capsys, "create", table_with_rows, "--schema", SCHEMA, "--primary-key", "id")
    assert code == 1
    assert_one_line_error(err, "already exists")
    code, _, err = run(capsys, "scan", table_with_rows, "--snapshot", "99")
    assert code == 1
    assert_one_line_error(err, "snapshot 99")
    code, _, err = run(capsys, "write", table_with_rows, str(tmp_path / "missing.csv"))
    assert code == 1
    assert_one_line_error(err, "does not exist")
    (tmp_path / "bad.jsonl").write_text('{"op": "x", "id": 1}\n')
    code, _, err = run(capsys, "write", table_with_rows, str(tmp_path / "bad.jsonl"), "--cdc")
    assert code == 1
    assert_one_line_error(err, "unknown CDC op")
    (tmp_path / "extra.csv").write_text("id,colour\n1,red\n")
    code, _, err = run(capsys, "write", table_with_rows, str(tmp_path / "extra.csv"))
    assert code == 1
    assert_one_line_error(err, "colour")
    code, _, err = run(
        capsys, "create", str(tmp_path / "t2"), "--schema", "id:float64", "--primary-key", "id"
    )
    assert code == 1
    assert_one_line_error(err, "keys must be")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], table_with_rows: str) -> None:
    cases = [
        (["scan"], "required"),
        (["scan", table_with_rows, "--bogus"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice"),
        (["create", "x", "--schema", "id:int65", "--primary-key", "id"], "unknown type"),
        (["create", "x", "--schema", "id", "--primary-key", "id"], "NAME:TYPE"),
        (
            ["create", "x", "--schema", "id:int64", "--primary-key", "id", "--option", "oops"],
            "KEY=VALUE",
        ),
        (["scan", table_with_rows, "--filter", "id >"], "invalid filter"),
        (["scan", table_with_rows, "--filter", "nope == 1"], "unknown column"),
        (["scan", table_with_rows, "--limit", "-1"], "--limit"),
        (["write", table_with_rows, "a.csv", "--cdc", "--delete"], "not allowed with"),
        (["write", table_with_rows, "a.txt"], "--format"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert_one_line_error(err, message)


def test_debug_shows_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "scan", str(tmp_path / "nope"), "--debug")
    assert code == 1
    assert "Traceback" in err and "TableNotFound" in err
    assert err.strip().splitlines()[-1].startswith("lsm3: error: ")
    code, _, err = run(capsys, "--debug", "scan", str(tmp_path / "nope"))
    assert code == 1 and "Traceback" in err


def test_storage_option_errors(capsys: pytest.CaptureFixture[str], moto_server: Any) -> None:
    code, _, err = run(
        capsys, "scan", "s3://no-such-bucket-lsm3/t", *opts(moto_server.storage_options())
    )
    assert code == 1
    assert_one_line_error(err)
    code, _, err = run(capsys, "scan", "s3://b/t", "--storage-option", "novalue")
    assert code == 2
    assert_one_line_error(err, "KEY=VALUE")


# --------------------------------------------------------------------------- schema grammar


def test_parse_schema() -> None:
    schema = parse_schema(
        "id:int64, name:string!, price:decimal128(10,2), ts:timestamp[ms,UTC], "
        "d:date32, f:float32, ok:bool, b:binary, t:time64[us], dur:duration[s], ls:large_string"
    )
    assert schema.field("id").type == pa.int64()
    assert not schema.field("name").nullable and schema.field("id").nullable
    assert schema.field("price").type == pa.decimal128(10, 2)
    assert schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("d").type == pa.date32()
    assert schema.field("f").type == pa.float32()
    assert schema.field("ok").type == pa.bool_()
    assert schema.field("t").type == pa.time64("us")
    assert schema.field("dur").type == pa.duration("s")
    assert schema.field("ls").type == pa.large_string()
    for bad in ("", "id", "id:", ":int64", "id:int128", "ts:timestamp[weeks]", "x:decimal(a,b)"):
        with pytest.raises(UsageError):
            parse_schema(bad)


def test_parse_key() -> None:
    schema = pa.schema([("t", pa.string()), ("id", pa.int64()), ("ts", pa.timestamp("us", "UTC"))])
    assert parse_key("a,b", schema, ["t"]) == "a,b"  # one key column: commas are data
    assert parse_key("x, 5", schema, ["t", "id"]) == ("x", 5)
    key = parse_key("7,2026-01-01 00:00:00", schema, ["id", "ts"])
    assert key[0] == 7 and key[1].year == 2026
    with pytest.raises(UsageError):
        parse_key("x", schema, ["t", "id"])


# --------------------------------------------------------------------------- filter language

FILTER_TABLE = pa.table(
    {
        "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
        "name": ["a", "b", None, "d", "x", "x"],
        "amount": [1.0, 2.5, 3.0, None, 5.0, 6.5],
        "ok": [True, False, True, None, False, True],
        "day": pa.array([0, 1, 2, 3, 4, 5], pa.int32()).cast(pa.date32()),
        "ts": pa.array(
            [1_767_225_600_000_000 + i * 3_600_000_000 for i in range(6)],
            pa.timestamp("us", tz="UTC"),
        ),
    }
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id > 3", [4, 5, 6]),
        ("id > 3 and name == 'x'", [5, 6]),
        ("id == 1 or id == 6", [1, 6]),
        ("not (id < 5)", [5, 6]),
        ("1 < id <= 3", [2, 3]),
        ("3 > id", [1, 2]),
        ("id != 2 and id >= 5", [5, 6]),
        ("name in ['a', 'd']", [1, 4]),
        ("name not in ('a', 'd', 'x')", [2]),  # null names match neither in nor not in
        ("id in [1, 2.0]", [1, 2]),
        ("name is None", [3]),
        ("name == None", [3]),
        ("amount is not None and amount < 3", [1, 2]),
        ("amount >= -1.5", [1, 2, 3, 5, 6]),
        ("ok", [1, 3, 6]),
        ("ok == False", [2, 5]),
        ("not ok", [2, 5]),
        ("amount > id", [2, 6]),
        ("day >= '1970-01-05'", [5, 6]),
        ("ts >= '2026-01-01 03:00:00'", [4, 5, 6]),
        ("ts < '2026-01-01T02:00:00+00:00'", [1, 2]),
        ("True", [1, 2, 3, 4, 5, 6]),
        ("(id == 1 or id == 2) and (name == 'b' or amount > 100)", [2]),
    ],
)
def test_filter_language(text: str, expected: list[int]) -> None:
    expr = parse_filter(text, FILTER_TABLE.schema)
    assert FILTER_TABLE.filter(expr).column("id").to_pylist() == expected


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch {marker}')",
        "open('{marker}', 'w')",
        "id.__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "name[0] == 'a'",
        "id + 1 > 2",
        "lambda: 1",
        "[x for x in (1,)]",
        "(y := 1)",
        "id if ok else name",
        "f'{{id}}' == '1'",
        "exec('import os')",
        "id == {{}}",
        "id is 1",
        "name in 'abc'",
        "name in [id]",
        "unknown_column > 1",
        "id > 'abc'",
        "name > 5",
        "id",
        "import os",
        "id = 1",
        "",
    ],
)
def test_filter_refuses_everything_else(text: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UsageError):
        parse_filter(text.format(marker=marker), FILTER_TABLE.schema)
    assert not marker.exists()


def test_hostile_filter_through_main(
    capsys: pytest.CaptureFixture[str], table_with_rows: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, out, err = run(
            capsys,
            "scan",
            table_with_rows,
            "--filter",
            f"__import__('os').system('touch {marker}')",
        )
    finally:
        os.chdir(cwd)
    assert code == 2
    assert_one_line_error(err, "function calls are not allowed")
    assert out == ""
    assert not marker.exists()
    code, _, err = run(capsys, "scan", table_with_rows, "--filter", "(" * 5000 + "1" + ")" * 5000)
    assert code == 2
    assert_one_line_error(err)
    code, _, err = run(capsys, "scan", table_with_rows, "--filter", "id > 1" + " " * 20_000)
    assert code == 2
    assert_one_line_error(err, "longer than")


def test_changes_as_a_consumer(
    capsys: pytest.CaptureFixture[str], table_with_rows: str, tmp_path: Path
) -> None:
    """--consumer reads from the stored position and moves it past what it printed."""
    uri = table_with_rows
    code, out, err = run(
        capsys, "changes", uri, "--consumer", "etl", "--from", "0", "--format", "jsonl"
    )
    assert code == 0, err
    assert {r["_row_kind"] for r in jsonl(out)} == {"+I"} and len(jsonl(out)) == 10
    assert "etl: at snapshot 1" in err
    code, out, err = run(capsys, "changes", uri, "--consumer", "etl", "--format", "jsonl")
    assert code == 0 and out == ""
    write_cdc(
        uri,
        tmp_path / "cdc.jsonl",
        ['{"op": "d", "id": 2, "name": null, "amount": null, "ts": null}'],
    )
    capsys.readouterr()
    code, out, err = run(capsys, "changes", uri, "--consumer", "etl", "--format", "jsonl")
    assert [(r["id"], r["_row_kind"], r["_snapshot_id"]) for r in jsonl(out)] == [(2, "-D", 2)]
    assert lsm3.open_table(uri).consumers() == {"etl": 2}
    code, _, err = run(capsys, "changes", uri, "--consumer", "../etl")
    assert code == 2 and "consumer id" in err
    code, _, err = run(capsys, "changes", uri, "--follow")
    assert code == 2 and "--consumer" in err
