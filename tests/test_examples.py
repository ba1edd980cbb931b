"""The examples run as users run them: real subprocesses, real signals.

* ``examples/quickstart.py`` (``make demo``) exits 0 (it checks itself against a dict model)
  and leaves no server behind.
* ``examples/stream_cdc.py`` is killed with SIGKILL in the middle of a stream and restarted:
  the table must equal the replay of the input, nothing lost, nothing applied twice, and every
  snapshot must equal the replay of the input up to the offset it recorded.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import lsm3

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.py"
STREAM = ROOT / "examples" / "stream_cdc.py"
SCHEMA = "id:int64,name:string,qty:int64,price:float64,updated_at:timestamp[us,UTC]"
COLUMNS = ["id", "name", "qty", "price", "updated_at"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- quickstart


def test_quickstart_runs_clean() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(QUICKSTART)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=ROOT,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all checks passed" in result.stdout
    assert "MISMATCH" not in result.stdout
    assert "Traceback" not in result.stderr
    assert elapsed < 60
    # the embedded server is gone
    m = re.search(r"http://127\.0\.0\.1:(\d+)", result.stdout)
    assert m is not None
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", int(m.group(1)))) != 0


def test_quickstart_runs_on_azurite() -> None:
    """``--store az``: the same demo on an embedded Azurite, through adlfs."""
    from lsm3.testing.emulators import azurite_script

    try:
        azurite_script()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    result = subprocess.run(
        [sys.executable, str(QUICKSTART), "--store", "az"],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "embedded Azurite" in result.stdout and "az://lsm3-demo/demo/" in result.stdout
    assert "all checks passed" in result.stdout and "MISMATCH" not in result.stdout


# --------------------------------------------------------------------------- stream_cdc input


def make_events(n: int, seed: int = 5) -> list[str]:
    """``n`` input lines of Debezium-style events with every shape stream_cdc accepts:
    initial reads, inserts, repeated updates, key-only deletes, payload envelopes, and a few
    blank lines and tombstones (``null``) that still occupy a position."""
    rng = random.Random(seed)
    live: list[int] = []
    next_id = 1
    lines: list[str] = []
    for i in range(n):
        lsn = 1_000 + i
        roll = rng.random()
        if roll < 0.01:
            lines.append("" if roll < 0.005 else "null")
            continue
        if i < 300:
            op = "r"
        elif not live or roll < 0.45:
            op = "c"
        elif roll < 0.85:
            op = "u"
        else:
            op = "d"
        if op in ("r", "c"):
            key = next_id
            next_id += 1
            live.append(key)
        elif op == "u":
            key = rng.choice(live[-50:])  # recent keys: several updates per commit
        else:
            key = live.pop(rng.randrange(len(live)))
        after = {
            "id": key,
            "name": rng.choice(["ann", "bob", "cy", None]),
            "qty": rng.randrange(100),
            "price": round(rng.uniform(0, 100), 2),
            "updated_at": 1_767_225_600_000_000 + lsn,
            "ignored_source_column": "x",
        }
        event: dict[str, Any] = {"op": op, "source": {"lsn": lsn, "db": "shop"}}
        if op == "d":
            event["before"], event["after"] = {"id": key}, None
        else:
            event["before"], event["after"] = None, after
        if rng.random() < 0.3:
            event = {"schema": {"type": "struct"}, "payload": event}
        lines.append(json.dumps(event))
    return lines


def replay(lines: list[str], upto: int | None = None) -> dict[int, dict[str, Any]]:
    """The expected table after the first ``upto`` input lines."""
    rows: dict[int, dict[str, Any]] = {}
    for text in lines[:upto]:
        if not text.strip() or text.strip() == "null":
            continue
        event = json.loads(text)
        event = event.get("payload", event) if "op" not in event else event
        if event["op"] == "d":
            rows.pop(event["before"]["id"], None)
        else:
            rows[event["after"]["id"]] = {c: event["after"][c] for c in COLUMNS}
    return rows


def table_rows(table: lsm3.Table, snapshot_id: int | None = None) -> dict[int, dict[str, Any]]:
    data = table.to_arrow(snapshot_id=snapshot_id)
    data = data.set_column(
        data.schema.get_field_index("updated_at"),
        "updated_at",
        data.column("updated_at").cast(pa.int64()),
    )
    return {r["id"]: r for r in data.to_pylist()}


def stream_cmd(uri: str, *extra: str) -> list[str]:
    return [sys.executable, str(STREAM), "--table", uri, *extra]


def committed_position(uri: str, options: dict[str, str] | None = None) -> int:
    try:
        table = lsm3.open_table(uri, storage_options=options)
    except lsm3.TableNotFound:
        return 0
    last = table.last_commit("cdc-test")
    return int(last.metadata["position"]) if last else 0


def check_snapshots(table: lsm3.Table, lines: list[str]) -> None:
    """Offsets strictly increase, and every snapshot equals the replay up to its offset."""
    positions = []
    for snap in table.snapshots():
        assert snap.writer_id == "cdc-test"
        position = snap.metadata["position"]
        positions.append(position)
        assert table_rows(table, snap.snapshot_id) == replay(lines, position), snap.snapshot_id
    assert positions == sorted(set(positions)), positions
    assert positions[-1] == len(lines)


# --------------------------------------------------------------------------- stream_cdc tests


def test_stream_cdc_sigkill_and_restart_is_exactly_once(tmp_path: Path) -> None:
    lines = make_events(5000)
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    uri = str(tmp_path / "table")
    common = ["--input", str(source), "--writer-id", "cdc-test", "--create", "--schema", SCHEMA]
    common += ["--commit-interval", "30"]

    first = subprocess.Popen(
        stream_cmd(uri, *common, "--commit-every", "150", "--rate", "2500"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while committed_position(uri) < 600:  # a few commits are visible
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "no commit became visible"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL
    killed_at = committed_position(uri)
    assert 0 < killed_at < len(lines), "the kill must land in the middle of the stream"

    second = subprocess.run(
        stream_cmd(uri, *common, "--commit-every", "400"),
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert second.returncode == 0, second.stderr
    assert f"after position {killed_at}" in second.stderr
    assert "ignoring input fields" in second.stderr  # ignored_source_column

    table = lsm3.open_table(uri)
    assert table_rows(table) == replay(lines)
    check_snapshots(table, lines)

    # a third run on the same input finds nothing to do
    before = len(table.snapshots())
    third = subprocess.run(
        stream_cmd(uri, *common), capture_output=True, text=True, timeout=60, env=_env()
    )
    assert third.returncode == 0, third.stderr
    assert len(lsm3.open_table(uri).snapshots()) == before


def test_stream_cdc_sigterm_commits_pending_events(tmp_path: Path) -> None:
    lines = make_events(20_000, seed=9)
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    uri = str(tmp_path / "table")
    proc = subprocess.Popen(
        stream_cmd(
            uri,
            "--input",
            str(source),
            "--writer-id",
            "cdc-test",
            "--create",
            "--schema",
            SCHEMA,
            "--commit-every",
            "1000000",
            "--commit-interval",
            "600",
            "--rate",
            "2000",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "table" / "schema").exists():  # created: now reading input
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(1.0)
        assert committed_position(uri) == 0  # nothing is due yet: all of it is pending
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in err
    position = committed_position(uri)
    assert 0 < position < len(lines)
    table = lsm3.open_table(uri)
    assert len(table.snapshots()) == 1
    assert table_rows(table) == replay(lines, position)


def test_stream_cdc_stdin_to_s3(tmp_path: Path, s3_bucket_uri: tuple[str, Any]) -> None:
    uri, options = s3_bucket_uri
    lines = make_events(1200, seed=3)
    so = [f"--storage-option={k}={v}" for k, v in options.items()]
    cmd = stream_cmd(
        uri,
        "--input",
        "-",
        "--writer-id",
        "cdc-test",
        "--create",
        "--schema",
        SCHEMA,
        "--commit-every",
        "500",
        "--quiet",
        *so,
    )
    data = "\n".join(lines) + "\n"
    result = subprocess.run(
        cmd, input=data, capture_output=True, text=True, timeout=120, env=_env()
    )
    assert result.returncode == 0, result.stderr
    table = lsm3.open_table(uri, storage_options=options)
    assert table_rows(table) == replay(lines)
    check_snapshots(table, lines)
    # the same stream again (e.g. a replayed topic): everything is skipped
    result = subprocess.run(
        cmd, input=data, capture_output=True, text=True, timeout=120, env=_env()
    )
    assert result.returncode == 0, result.stderr
    assert len(lsm3.open_table(uri, storage_options=options).snapshots()) == 3


def test_stream_cdc_bad_line_commits_what_precedes_it(tmp_path: Path) -> None:
    lines = make_events(700, seed=4)
    lines[500] = '{"op": "u", "after": {"id": 1, '  # truncated JSON
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    uri = str(tmp_path / "table")
    result = subprocess.run(
        stream_cmd(
            uri,
            "--input",
            str(source),
            "--writer-id",
            "cdc-test",
            "--create",
            "--schema",
            SCHEMA,
            "--commit-every",
            "200",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 1
    assert "stream_cdc: error: line 501 is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert committed_position(uri) == 500
    assert table_rows(lsm3.open_table(uri)) == replay(lines, 500)


def test_stream_cdc_generator_and_inferred_schema(tmp_path: Path) -> None:
    emitted = subprocess.run(
        [sys.executable, str(STREAM), "--generate", "1500", "--seed", "2", "--emit"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert emitted.returncode == 0, emitted.stderr
    lines = emitted.stdout.splitlines()
    assert len(lines) == 1500

    # the generator into a table, in two runs (resuming at 1000)
    uri = str(tmp_path / "generated")
    for n in ("1000", "1500"):
        result = subprocess.run(
            stream_cmd(
                uri,
                "--generate",
                n,
                "--seed",
                "2",
                "--create",
                "--writer-id",
                "cdc-test",
                "--commit-every",
                "300",
            ),
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        assert result.returncode == 0, result.stderr
    table = lsm3.open_table(uri)
    assert table_rows(table) == replay(lines)
    check_snapshots(table, lines)

    # the same events from a file into a table created with an inferred schema
    source = tmp_path / "gen.jsonl"
    source.write_text(emitted.stdout)
    uri2 = str(tmp_path / "inferred")
    result = subprocess.run(
        stream_cmd(uri2, "--input", str(source), "--create", "--writer-id", "cdc-test"),
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    inferred = lsm3.open_table(uri2)
    assert inferred.schema.field("updated_at").type == pa.int64()  # epoch micros as sent
    assert inferred.schema.field("price").type == pa.float64()
    got = {r["id"]: r for r in inferred.to_arrow().to_pylist()}
    assert got == replay(lines)


def test_stream_cdc_refuses_a_missing_table_without_create(tmp_path: Path) -> None:
    result = subprocess.run(
        stream_cmd(str(tmp_path / "none"), "--generate", "10"),
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("stream_cdc: error: no lsm3 table")


@pytest.mark.parametrize("argv", [["--generate", "5"], ["--table", "x"]])
def test_stream_cdc_usage(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(STREAM), *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
