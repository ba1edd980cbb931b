"""The compactor job (``compactor.job``, ``python -m compactor``): one pass, JSON lines, exit
codes, maintenance in the same pass, and real processes stopped by SIGTERM or killed with
SIGKILL in the middle of a compaction.
"""

from __future__ import annotations

import io
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from helpers import data_files, model_rows, sorted_rows

import catalog
import lsm3
from compactor import Fenced
from compactor.job import (
    Reporter,
    TableOutcome,
    main,
    parse_args,
    parse_duration,
    parse_size,
    run,
    stop_on_signals,
    targets,
)
from compactor.lease import Lease

Location = tuple[str, dict[str, str] | None]
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
REPO = Path(__file__).resolve().parents[1]


def build(
    location: Location, commits: int = 8, rows: int = 40, buckets: int = 2, step: int = 10
) -> tuple[lsm3.Table, dict[int, dict]]:
    """A table of ``commits`` overlapping upsert commits (and a few deletes) and its model."""
    uri, options = location
    t = lsm3.create_table(uri, SCHEMA, primary_key="id", buckets=buckets, storage_options=options)
    return t, fill(t, commits, rows, step)


def fill(t: lsm3.Table, commits: int = 8, rows: int = 40, step: int = 10) -> dict[int, dict]:
    """Commit ``commits`` overlapping upserts (and a few deletes) to ``t``; the model."""
    model: dict[int, dict] = {}
    for i in range(commits):
        ids = list(range(i * step, i * step + rows))
        with t.writer() as w:
            w.upsert({"id": ids, "v": [f"{i}-{k}" for k in ids]})
            model.update({k: {"id": k, "v": f"{i}-{k}"} for k in ids})
            if i % 3 == 1:
                w.delete([i * step])
                model.pop(i * step, None)
    return model


def rows_of(location: Location, snapshot_id: int | None = None) -> list[dict]:
    t = lsm3.open_table(location[0], storage_options=location[1])
    return sorted_rows(t.to_arrow(snapshot_id=snapshot_id), t.primary_key)


def storage_args(location: Location) -> list[str]:
    return [f"--storage-option={k}={v}" for k, v in (location[1] or {}).items()]


def referenced_files(t: lsm3.Table) -> set[str]:
    """Data files live in some snapshot present (what time travel can still read)."""
    return {f.path for s in t.snapshots() for f in t.files(s.snapshot_id)}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- in process


def test_once_compacts_and_logs_json_lines(
    table_location: Location, capsys: pytest.CaptureFixture[str]
) -> None:
    t, model = build(table_location)
    files_before = len(t.files())
    old = t.current_snapshot()
    assert old is not None
    old_rows = rows_of(table_location, old.snapshot_id)

    code = main(["--once", "--owner", "test", *storage_args(table_location), table_location[0]])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = json_lines(out)
    tasks = [d for d in lines if d["event"] == "task"]
    (summary,) = [d for d in lines if d["event"] == "table"]
    assert tasks
    for d in tasks:
        assert {"inputs", "outputs", "bytes_read", "bytes_written", "requests", "seconds"} <= set(d)
        assert d["uri"] == table_location[0] and d["inputs"] > d["outputs"] >= 1
    assert summary["status"] == "ok" and summary["exit_code"] == 0
    assert summary["compaction"]["tasks"] == len(tasks)
    assert summary["compaction"]["files_before"] == files_before
    files_after = len(lsm3.open_table(t.uri, table_location[1]).files())
    assert summary["compaction"]["files_after"] == files_after < files_before
    assert rows_of(table_location) == model_rows(model)
    assert rows_of(table_location, old.snapshot_id) == old_rows


def test_maintenance_runs_in_the_same_pass(
    local_uri: Location, capsys: pytest.CaptureFixture[str]
) -> None:
    t, model = build(local_uri)
    w = t.writer()
    w.upsert([{"id": 10_000, "v": "aborted"}])
    (aborted,) = w.flush()
    w.abort()
    args = ["--once", "--json", "--policy", "full", "--owner", "test"]
    args += ["--expire", "--retain-last", "2", "--expire-older-than", "0"]
    args += ["--remove-orphans", "--orphan-grace", "0", local_uri[0]]
    assert main(args) == 0
    (summary,) = [d for d in json_lines(capsys.readouterr().out) if d["event"] == "table"]
    # Two data snapshots kept (the compaction's commits); the lease commits between and
    # after them are kept but not counted.
    assert summary["expire"]["retained_snapshots"] >= 2
    assert summary["expire"]["files"] > 0 and summary["orphans"]["files"] >= 1
    fresh = lsm3.open_table(local_uri[0])
    assert len([s for s in fresh.snapshots() if not s.is_lease_only]) == 2
    assert rows_of(local_uri) == model_rows(model)
    on_disk = {str(p.relative_to(local_uri[0])) for p in data_files(local_uri[0])}
    assert on_disk == referenced_files(fresh)
    assert aborted.path not in on_disk


def test_byte_budget_stops_after_the_first_task(
    local_uri: Location, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model = build(local_uri, buckets=4)
    assert main(["--once", "--policy", "full", "--max-bytes", "1", local_uri[0]]) == 0
    lines = json_lines(capsys.readouterr().out)
    (summary,) = [d for d in lines if d["event"] == "table"]
    assert summary["compaction"]["stopped_by"] == "max_bytes"
    assert summary["compaction"]["tasks"] == 1 == len([d for d in lines if d["event"] == "task"])
    assert rows_of(local_uri) == model_rows(model)


def test_missing_table_is_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nothing-here")
    assert main(["--once", missing]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("lsm3-compactor: error: ")
    assert "Traceback" not in err and "no lsm3 table" in err
    assert json_lines(out)[-1]["status"] == "error"
    assert main(["--once", "--debug", missing]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_lease_held_by_another_compactor_is_exit_3(
    local_uri: Location, capsys: pytest.CaptureFixture[str]
) -> None:
    t, model = build(local_uri)
    Lease(t, "someone-else", 600).acquire()
    files = len(t.files())
    assert main(["--once", "--owner", "me", "--wait-for-lease", "0.2", local_uri[0]]) == 3
    out, err = capsys.readouterr()
    assert json_lines(out)[-1]["status"] == "lease-held"
    assert "someone-else" in err and err.count("\n") == 1
    assert len(lsm3.open_table(local_uri[0]).files()) == files
    assert rows_of(local_uri) == model_rows(model)
    # The holder itself (same owner) takes the lease over at once.
    assert main(["--once", "--owner", "someone-else", local_uri[0]]) == 0


def test_fenced_is_exit_4(
    local_uri: Location, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build(local_uri)

    def fenced(*args: Any, **kwargs: Any) -> None:
        raise Fenced("compactor 'me' lost its lease (epoch 1) to 'other' (epoch 2)")

    monkeypatch.setattr("compactor.job.compact", fenced)
    assert main(["--once", local_uri[0]]) == 4
    assert json_lines(capsys.readouterr().out)[-1]["status"] == "fenced"


def test_the_most_severe_status_wins(
    local_uri: Location, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t, _ = build(local_uri)
    Lease(t, "someone-else", 600).acquire()
    assert main(["--once", local_uri[0]]) == 3
    assert main(["--once", local_uri[0], str(tmp_path / "missing")]) == 1
    statuses = [d["status"] for d in json_lines(capsys.readouterr().out)]
    assert statuses == ["lease-held", "lease-held", "error"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--interval", "soon", "t"],
        ["--interval", "0", "t"],
        ["--once", "--interval", "5", "t"],
        ["--option", "no-equals-sign", "t"],
        ["--option", "not_an_option=1", "t"],
        ["--max-bytes", "lots", "t"],
        ["--orphan-grace", "-1d", "t"],
        ["--retain-last", "0", "t"],
        ["--namespace", "sales", "t"],
        ["--warehouse", "wh", "--namespace", "bad-name"],
        ["--warehouse", "wh", "--namespace", "catalog"],
    ],
)
def test_usage_errors_are_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lsm3-compactor: error: ")


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for line in ("0 ", "1 ", "2 ", "3 ", "4 "):
        assert f"\n  {line}" in text
    assert "--once" in text and "--interval" in text and "lease" in text


def test_sizes_and_durations() -> None:
    assert parse_size("1000") == 1000
    assert parse_size("2KiB") == 2048 and parse_size("2k") == 2048 and parse_size("2kB") == 2000
    assert parse_size("1.5GiB") == 3 * 2**29 and parse_size("3TB") == 3 * 10**12
    assert parse_duration("90").total_seconds() == 90
    assert parse_duration("15m").total_seconds() == 900
    assert parse_duration("1d").total_seconds() == 86400
    assert parse_duration("250ms").total_seconds() == 0.25


# --------------------------------------------------------------------------- warehouse


def warehouse_with(location: Location, *names: str) -> tuple[catalog.Catalog, dict[str, dict]]:
    """A warehouse at ``location`` holding the tables ``names`` (namespace.table), each of
    several overlapping commits; the catalog and each table's model."""
    cat = catalog.connect(*location)
    models = {}
    for name in names:
        ns = name.split(".")[0]
        if not cat.namespace_exists(ns):
            cat.create_namespace(ns)
        models[name] = fill(cat.create_table(name, SCHEMA, primary_key="id", buckets=2))
    return cat, models


def catalog_rows(cat: catalog.Catalog, name: str) -> list[dict]:
    return sorted_rows(cat.load_table(name).to_arrow(), ["id"])


def test_warehouse_compacts_every_table_of_every_namespace(
    table_location: Location, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ("billing.invoices", "sales.orders")
    cat, models = warehouse_with(table_location, *names)
    files = {name: len(cat.load_table(name).files()) for name in names}

    argv = ["--once", "--owner", "test", "--warehouse", table_location[0]]
    code = main([*argv, *storage_args(table_location)])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = json_lines(out)
    summaries = {d["table"]: d for d in lines if d["event"] == "table"}
    assert sorted(summaries) == list(names)
    for name in names:
        d = summaries[name]
        assert d["status"] == "ok" and d["uri"] == cat.describe_table(name).uri
        assert d["compaction"]["files_before"] == files[name]
        assert d["compaction"]["files_after"] == len(cat.load_table(name).files()) < files[name]
        assert catalog_rows(cat, name) == model_rows(models[name])
    assert {d["table"] for d in lines if d["event"] == "task"} == set(names)


def test_warehouse_namespaces_and_uris_together(
    tmp_path: Path, local_uri: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh = str(tmp_path / "wh")
    cat, _ = warehouse_with((wh, None), "sales.orders", "billing.invoices")
    build(local_uri)
    untouched = len(cat.load_table("billing.invoices").files())
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["--once", "--warehouse", wh, "--namespace", "sales", "--namespace", "sales"]
    assert main([*argv, local_uri[0]]) == 0
    lines = [ln.split("\r")[-1].replace("\x1b[K", "") for ln in terminal.getvalue().splitlines()]
    summaries = [line for line in lines if ": compacted" in line]
    assert [line.split(": ")[0] for line in summaries] == [local_uri[0], "sales.orders"]
    assert len(cat.load_table("billing.invoices").files()) == untouched


def test_warehouse_tables_are_listed_at_every_pass(tmp_path: Path) -> None:
    wh = str(tmp_path / "wh")
    cat, _ = warehouse_with((wh, None), "sales.a")
    config = parse_args(["--interval", "0.05", "--warehouse", wh, "--owner", "test"])
    assert [t.name for t in targets(config)] == ["sales.a"]
    stop = threading.Event()
    seen: list[tuple[int, str, str]] = []

    class Watch(Reporter):
        def table_finished(self, outcome: TableOutcome) -> None:
            seen.append((outcome.pass_number, outcome.table, outcome.status))
            if outcome.pass_number == 1:
                fill(cat.create_table("sales.b", SCHEMA, primary_key="id"))
            if outcome.table == "sales.b":
                stop.set()

    assert run(config, stop, Watch(io.StringIO(), io.StringIO(), False)) == 0
    assert seen == [(1, "sales.a", "ok"), (2, "sales.a", "ok"), (2, "sales.b", "ok")]
    assert len(cat.load_table("sales.b").files()) == 1


def test_a_table_dropped_during_the_pass_is_skipped(tmp_path: Path) -> None:
    wh = str(tmp_path / "wh")
    cat, models = warehouse_with((wh, None), "sales.a", "sales.b")
    seen: list[tuple[str, str, str | None]] = []

    class Watch(Reporter):
        def table_finished(self, outcome: TableOutcome) -> None:
            seen.append((outcome.table, outcome.status, outcome.error))
            if outcome.table == "sales.a":
                cat.drop_table("sales.b", purge=True)

    config = parse_args(["--once", "--warehouse", wh])
    assert run(config, threading.Event(), Watch(io.StringIO(), io.StringIO(), False)) == 0
    assert seen == [("sales.a", "ok", None), ("sales.b", "dropped", None)]
    assert catalog_rows(cat, "sales.a") == model_rows(models["sales.a"])


def test_a_warehouse_that_cannot_be_listed_is_exit_1_and_the_uris_still_run(
    tmp_path: Path, local_uri: Location, capsys: pytest.CaptureFixture[str]
) -> None:
    wh = str(tmp_path / "wh")
    warehouse_with((wh, None), "sales.a")
    build(local_uri)
    assert main(["--once", "--warehouse", wh, "--namespace", "nowhere", local_uri[0]]) == 1
    out, err = capsys.readouterr()
    lines = json_lines(out)
    assert [(d["event"], d["status"]) for d in lines if d["event"] != "task"] == [
        ("warehouse", "error"),
        ("table", "ok"),
    ]
    assert lines[-1]["table"] == local_uri[0] and lines[-1]["compaction"]["tasks"] >= 1
    assert err.count("\n") == 1
    assert err.startswith(f"lsm3-compactor: error: warehouse {wh}: namespace 'nowhere'")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_progress_bar_not_json(
    local_uri: Location, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build(local_uri, buckets=3)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["--once", "--policy", "full", local_uri[0]]) == 0
    text = terminal.getvalue()
    assert "\r" in text and "[" in text and "100%" in text and "#" in text
    assert "compacted 3 task(s)" in text
    assert capsys.readouterr().out == ""
    terminal.truncate(0)
    assert main(["--once", "--json", local_uri[0]]) == 0  # --json wins over the terminal
    assert json_lines(capsys.readouterr().out)[-1]["event"] == "table"


def test_a_signal_landing_inside_stop_wait_cannot_deadlock() -> None:
    """The handler runs in the main thread wherever it is, even inside ``stop.wait()`` with
    the Event's lock held: it must not take that lock (``Event.set`` would, forever)."""
    stop = threading.Event()
    with stop_on_signals(stop) as received:
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)

        def signal_inside_wait() -> None:
            with stop._cond:  # type: ignore[attr-defined]  # what Event.wait holds
                handler(signal.SIGTERM, None)

        worker = threading.Thread(target=signal_inside_wait, daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "the signal handler blocked on the Event's lock"
        assert stop.wait(timeout=10) and received == ["SIGTERM"]
        with pytest.raises(KeyboardInterrupt):  # a second signal abandons the work
            handler(signal.SIGINT, None)


# --------------------------------------------------------------------------- real processes


class Job:
    """``python -m compactor`` as a child process, its stdout lines read by a thread."""

    def __init__(self, *args: str) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by `jobs`)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "compactor", "--json", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def until(self, event: str, count: int = 1, timeout: float = 120) -> bool:
        """Wait for the ``count``-th line of ``event``; False if the process ended first."""
        seen = 0
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                return False
            if line["event"] == event:
                seen += 1
                if seen == count:
                    return True

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        """Wait for the exit: (exit status, stderr)."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=timeout)
        self.stderr.seek(0)
        return self.proc.returncode, self.stderr.read()


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    """Child processes started by a test; none outlives it."""
    started: list[Job] = []
    yield started
    for job in started:
        if job.proc.poll() is None:
            job.proc.kill()
        job.proc.wait()
        job.stderr.close()


def test_sigterm_stops_the_loop_gracefully(local_uri: Location, jobs: list[Job]) -> None:
    uri = local_uri[0]
    _, model = build(local_uri, commits=10, rows=3000, step=1000, buckets=8)
    job = Job("--interval", "1", "--policy", "full", "--owner", "loop", uri)
    jobs.append(job)
    assert job.until("task"), job.finish()
    job.proc.send_signal(signal.SIGTERM)  # mid-pass: the current task finishes, then exit
    code, err = job.finish()
    assert code == 0, err
    assert rows_of(local_uri) == model_rows(model)
    # The lease was released on the way out: another owner compacts at once.
    assert main(["--once", "--policy", "full", "--owner", "next", uri]) == 0
    assert len(lsm3.open_table(uri).files()) == 8
    assert rows_of(local_uri) == model_rows(model)

    job = Job("--interval", "1", "--owner", "loop", uri)
    jobs.append(job)
    assert job.until("table", count=2)  # idle passes: nothing to do
    job.proc.send_signal(signal.SIGINT)
    code, err = job.finish()
    assert code == 0, err
    assert rows_of(local_uri) == model_rows(model)


def big_table(uri: str, commits: int = 12, rows: int = 150_000, step: int = 50_000) -> pa.Table:
    """A 4-bucket table large enough that one compaction task takes a noticeable moment:
    overlapping upserts, a deleted range every third commit. Returns the expected rows,
    computed without the table (commit ``i`` covers ids ``[i*step, i*step+rows)``)."""
    assert rows == 3 * step  # an id is covered by up to three consecutive commits

    def values(ids: np.ndarray, commit: np.ndarray | int) -> pa.Array:
        return pc.utf8_rpad(pc.cast(pa.array(ids * 100 + commit), pa.string()), 40, ".")

    t = lsm3.create_table(uri, SCHEMA, primary_key="id", buckets=4)
    for i in range(commits):
        ids = np.arange(i * step, i * step + rows, dtype=np.int64)
        with t.writer() as w:
            w.upsert(pa.table({"id": ids, "v": values(ids, i)}))
            if i % 3 == 1:
                w.delete(pa.table({"id": ids[:1000]}))
    k = np.arange(0, (commits - 1) * step + rows, dtype=np.int64)
    last = np.minimum(k // step, commits - 1)
    keep = ~(((k % step) < 1000) & (last % 3 == 1) & (k // step < commits))
    return pa.table({"id": k[keep], "v": values(k[keep], last[keep])})


def assert_reads(uri: str, expected: pa.Table, what: str) -> None:
    got = lsm3.open_table(uri).to_arrow().sort_by("id")
    assert got.num_rows == expected.num_rows, what
    assert got.column("id").equals(expected.column("id")), what
    assert got.column("v").equals(expected.column("v")), what


def test_sigkill_mid_compaction_leaves_a_correct_table(
    local_uri: Location, jobs: list[Job]
) -> None:
    uri = local_uri[0]
    expected = big_table(uri)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    killed = 0
    for attempt in range(3):
        job = Job("--once", "--policy", "full", "--owner", "crashy", uri)
        jobs.append(job)
        # Kill at a random moment: after the first committed task, or anywhere from start-up.
        if attempt == 1 or job.until("task"):
            threading.Event().wait(rng.uniform(0, 2.0 if attempt == 1 else 0.25))
            job.proc.send_signal(signal.SIGKILL)
        code, _ = job.finish()
        killed += code == -signal.SIGKILL
        assert_reads(uri, expected, f"seed {seed}, after run {attempt}")
    assert killed >= 1, f"seed {seed}: no run was killed mid-compaction"

    # A later run (the same owner takes the dead one's lease over) finishes the work and
    # removes what the killed runs uploaded but never committed.
    args = ["--once", "--policy", "full", "--owner", "crashy"]
    assert main([*args, "--remove-orphans", "--orphan-grace", "0", uri]) == 0
    fresh = lsm3.open_table(uri)
    assert len(fresh.files()) == 4
    assert_reads(uri, expected, f"seed {seed}, after the final run")
    assert {str(p.relative_to(uri)) for p in data_files(uri)} == referenced_files(fresh)
