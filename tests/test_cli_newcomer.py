"""The ``lsm3`` command as a new user meets it (issue 19): scans that stream and stop at a screen,
CSV nulls that survive a round trip, progress on a terminal and quiet in a pipe, logging with
``-v``, and errors that name flags, times, columns and lines rather than Python arguments."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import lsm3
from lsm3.cli import main
from lsm3.cli.io import write_rows
from lsm3.cli.progress import Progress


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_warehouse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LSM3_WAREHOUSE", raising=False)
    monkeypatch.delenv("LSM3_PROGRESS", raising=False)


@pytest.fixture
def people(tmp_path: Path) -> Path:
    """A palmerpenguins-like CSV: empty and NA fields in string and numeric columns."""
    path = tmp_path / "people.csv"
    path.write_text(
        'id,name,sex,mass\n1,ann,female,3750\n2,bob,NA,NA\n3,cy,,3800\n4,"",male,\n'
        '5,"NA",female,4000\n'
    )
    return path


def _create(capsys: pytest.CaptureFixture[str], uri: str, schema: str, key: str = "id") -> None:
    code, _, err = run(capsys, "create", uri, "--schema", schema, "--primary-key", key)
    assert code == 0, err


# --------------------------------------------------------------------------- scan streams


def test_scan_to_the_screen_shows_a_screenful_and_says_how_many_were_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), pa.schema([("id", pa.int64())]), "id")
    with t.writer() as w:
        w.upsert({"id": list(range(100))})
    code, out, err = run(capsys, "scan", t.uri)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 + 20 + 1, out
    assert "(20 of 100 rows shown; --limit N for more" in lines[-1]
    code, out, _ = run(capsys, "scan", t.uri, "--filter", "id >= 90")
    assert "(10 rows)" in out
    code, out, _ = run(capsys, "scan", t.uri, "--format", "csv")
    assert len(out.splitlines()) == 101  # csv and jsonl: every row
    code, out, _ = run(capsys, "changes", t.uri, "--from", "0")
    assert len(out.splitlines()) == 2 + 20 + 1 and "(20 of 100 rows shown" in out, out


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_rows_reach_stdout_batch_by_batch(fmt: str) -> None:
    """The first batch is written (and flushed) before the second is even read."""
    schema = pa.schema([("id", pa.int64())])
    out = io.StringIO()

    def batches() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"id": [1, 2]}, schema=schema)
        assert out.getvalue().count("1") >= 1, "nothing written after the first batch"
        raise RuntimeError("the scan fails later")

    with pytest.raises(RuntimeError, match="later"):
        write_rows(schema, batches(), None, fmt, out)
    assert "2" in out.getvalue()


# --------------------------------------------------------------------------- CSV nulls


def test_csv_nulls_are_nulls_in_every_column(
    tmp_path: Path, people: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = str(tmp_path / "p")
    _create(capsys, uri, "id:int64,name:string,sex:string,mass:float64")
    code, _, err = run(capsys, "write", uri, str(people), "--allow-empty-key")
    assert code == 0, err
    rows = {r["id"]: r for r in lsm3.open_table(uri).to_arrow().to_pylist()}
    assert rows[2]["sex"] is None and rows[3]["sex"] is None  # NA and empty: null
    assert rows[4]["name"] == "" and rows[5]["name"] == "NA"  # quoted: the string itself
    assert rows[2]["mass"] is None and rows[4]["mass"] is None
    code, out, _ = run(capsys, "scan", uri, "--filter", "sex is None", "--format", "jsonl")
    assert sorted(json.loads(line)["id"] for line in out.splitlines()) == [2, 3]


def test_null_values_flag_changes_what_reads_as_null(
    tmp_path: Path, people: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = str(tmp_path / "p")
    _create(capsys, uri, "id:int64,name:string,sex:string,mass:string")
    code, _, err = run(capsys, "write", uri, str(people), "--null-values", "")
    assert code == 0, err
    rows = {r["id"]: r for r in lsm3.open_table(uri).to_arrow().to_pylist()}
    assert rows[2]["sex"] == "NA" and rows[3]["sex"] is None


def test_scan_to_csv_and_write_back_is_lossless(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = pa.schema([("id", pa.int64()), ("s", pa.string()), ("x", pa.float64())])
    src = lsm3.create_table(str(tmp_path / "src"), schema, "id")
    data = pa.table(
        {"id": [1, 2, 3, 4], "s": [None, "", "NA", "a,b"], "x": [None, 1.5, float("nan"), 0.0]},
        schema=schema,
    )
    with src.writer() as w:
        w.upsert(data)
    out_csv = tmp_path / "x.csv"
    assert run(capsys, "scan", src.uri, "--output", str(out_csv))[0] == 0
    dst = str(tmp_path / "dst")
    _create(capsys, dst, "id:int64,s:string,x:float64")
    code, _, err = run(capsys, "write", dst, str(out_csv))
    assert code == 0, err
    back = lsm3.open_table(dst).to_arrow().to_pylist()
    assert [r["s"] for r in back] == [None, "", "NA", "a,b"]
    assert back[0]["x"] is None and back[1]["x"] == 1.5


def test_an_empty_string_key_is_refused_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = str(tmp_path / "k")
    _create(capsys, uri, "code:string,n:int64", key="code")
    data = tmp_path / "k.csv"
    data.write_text('code,n\na,1\n"",2\n')
    code, _, err = run(capsys, "write", uri, str(data))
    assert code == 1
    assert "line 3" in err and "'code'" in err and "--allow-empty-key" in err
    assert lsm3.open_table(uri).current_snapshot() is None  # nothing committed
    code, _, err = run(capsys, "write", uri, str(data), "--allow-empty-key")
    assert code == 0, err
    assert lsm3.open_table(uri).get("") == {"code": "", "n": 2}


def test_a_csv_type_error_names_the_column_and_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = str(tmp_path / "t")
    _create(capsys, uri, "id:int64,year:int64")
    data = tmp_path / "bad.csv"
    data.write_text("id,year\n1,2013\n2,2014\n3,20x4\n")
    code, _, err = run(capsys, "write", uri, str(data))
    assert code == 1
    assert "line 4" in err and "'year'" in err and "'20x4'" in err and "int64" in err, err


# --------------------------------------------------------------------------- progress, logging


def test_progress_line_counts_rows_bytes_and_rate() -> None:
    stream = io.StringIO()
    progress = Progress("write", stream, enabled=True)
    progress._interval = 0.0
    progress.add(1000, 2048)
    progress.add(500)
    text = stream.getvalue()
    assert text.startswith("\r") and "1,500 rows" in text and "rows/s" in text and "KiB" in text
    progress.clear()
    assert stream.getvalue().endswith("\r")
    quiet = io.StringIO()
    Progress("write", quiet).add(10)  # not a terminal
    assert quiet.getvalue() == ""


def _big_csv(tmp_path: Path) -> tuple[str, Path]:
    uri = str(tmp_path / "t")
    lsm3.create_table(uri, pa.schema([("id", pa.int64()), ("v", pa.string())]), "id")
    data = tmp_path / "rows.csv"
    data.write_text("id,v\n" + "".join(f"{i},v{i}\n" for i in range(5000)))
    return uri, data


def test_write_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    uri, data = _big_csv(tmp_path)
    master, slave = pty.openpty()
    env = {**os.environ, "LSM3_PROGRESS_INTERVAL": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("LSM3_WAREHOUSE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "lsm3", "write", uri, str(data)],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        timeout=120,
    )
    os.close(slave)
    seen = b""
    try:
        while chunk := os.read(master, 65536):
            seen += chunk
    except OSError:  # the other end is closed: all read
        pass
    os.close(master)
    assert proc.returncode == 0
    assert b"rows/s" in seen and b"5,000 rows" in seen, seen


def test_write_is_quiet_when_piped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri, data = _big_csv(tmp_path)
    code, out, err = run(capsys, "write", uri, str(data))
    assert code == 0 and err == "" and out.startswith("committed snapshot 1")


def test_verbose_logs_lsm3_records_and_warnings_read_as_lsm3_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, data = _big_csv(tmp_path)
    lsm3.open_table(uri).set_options(
        {"num_sorted_run_stop_trigger": 2, "num_sorted_run_trigger": 2}
    )
    code, _, err = run(capsys, "-v", "write", uri, str(data))
    assert code == 0
    assert "lsm3: info: lsm3.write.writer: committed snapshot" in err, err
    code, _, err = run(capsys, "write", uri, str(data))
    assert err.startswith("lsm3: warning: write stall threshold"), err
    code, _, err = run(capsys, "write", uri, str(data))
    assert "write stall" not in err  # once, not at every commit
    code, _, err = run(capsys, "write", uri, str(data), "-vv")
    assert "lsm3: debug: lsm3.write.writer: uploaded" in err


# --------------------------------------------------------------------------- errors in CLI terms


def test_errors_name_commands_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope")
    code, _, err = run(capsys, "scan", missing)
    assert code == 1 and f"'lsm3 create {missing}" in err and "lsm3.create_table" not in err
    uri = str(tmp_path / "t")
    _create(capsys, uri, "id:int64,v:string")
    events = tmp_path / "e.jsonl"
    events.write_text('{"kind": "c", "id": 1, "v": "a"}\n')
    code, _, err = run(capsys, "write", uri, str(events), "--cdc")
    assert code == 2 and "--op-column" in err and "op_column=" not in err, err
    code, _, err = run(capsys, "write", uri, str(events), "--cdc", "--op-column", "kind")
    assert code == 0, err
    code, _, err = run(capsys, "scan", uri, "--as-of", "2001-02-03T04:05")
    assert code == 1 and "--as-of 2001-02-03T04:05 (2001-02-03T04:05:00.000Z)" in err, err
    assert "oldest retained snapshot (1)" in err
    code, _, err = run(capsys, "create", uri, "--schema", "id:int64", "--primary-key", "id")
    assert code == 1 and "lsm3 write" in err and "lsm3.open_table" not in err


def test_memory_tables_are_refused_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "create", "memory://x", "--schema", "id:int64", "--primary-key", "id"
    )
    assert code == 2 and "created" not in out and "memory://" in err and "directory" in err


def test_a_mistyped_warehouse_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wh = str(tmp_path / "wh")
    assert run(capsys, "--warehouse", wh, "namespaces", "create", "sales")[0] == 0
    assert run(capsys, "--warehouse", wh, "tables")[0] == 0
    code, out, err = run(capsys, "--warehouse", str(tmp_path / "whx"), "tables")
    assert code == 1 and out == "" and "no warehouse catalog" in err, err
    code, _, err = run(capsys, "--warehouse", str(tmp_path / "whx"), "namespaces")
    assert code == 1 and "namespaces create" in err


def test_create_like_takes_the_columns_of_a_sample_file(
    tmp_path: Path, people: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = str(tmp_path / "p")
    code, out, err = run(capsys, "create", uri, "--like", str(people), "--primary-key", "id")
    assert code == 0, err
    table = lsm3.open_table(uri)
    assert table.schema.names == ["id", "name", "sex", "mass"]
    assert table.schema.field("id").type == pa.int64() and "columns from" in out
    code, _, err = run(capsys, "write", uri, str(people), "--allow-empty-key")
    assert code == 0, err
    code, _, err = run(capsys, "create", str(tmp_path / "q"), "--primary-key", "id")
    assert code == 2 and "--like" in err
