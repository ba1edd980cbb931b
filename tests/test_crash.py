"""Crash points: writers, the compactor and maintenance killed with SIGKILL mid-flight.

Two kinds of kill, each followed by checks through a fresh reader (``tests/soak.py`` has the
harness and its checkers):

* *enumerated*: a forked child runs one commit, one compaction or one maintenance run on a
  fresh copy of the same table and ``lsm3.testing.faults.FaultyStore`` kills it with SIGKILL just
  before its n-th request (and just after each request that changes something), for every
  n until the run completes. After each kill: the history is linear, every snapshot reads as
  the model, what is left over is exactly what ``remove_orphan_files`` finds, and the
  restarted work (the same commit id again, a new compaction) lands exactly once;
* *random*: ``examples/stream_cdc.py`` and ``python -m compactor`` run as real processes and
  are killed at random moments, round after round; every commit that returned must be there
  exactly once, at the snapshot it returned, and every snapshot must read as the generator's
  events up to the source offset committed with it.

``make soak`` runs the same harnesses for much longer.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from soak import check_orphans, run_crash_points, run_sigkills

import lsm3
from compactor.maintenance import remove_orphan_files
from lsm3.io.local import LocalStore


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.getLogger("lsm3").setLevel(logging.ERROR)
    yield
    logging.getLogger("lsm3").setLevel(logging.NOTSET)


@pytest.mark.parametrize(
    ("scenario", "stride", "min_kills"),
    [("writer", 1, 12), ("compactor", 3, 10), ("maintenance", 3, 8)],
)
def test_kill_at_every_request(tmp_path: Path, scenario: str, stride: int, min_kills: int) -> None:
    figures = run_crash_points(str(tmp_path / "t"), scenario, stride=stride)
    assert not figures.anomalies, figures.anomalies
    assert sum(figures.kills.values()) >= min_kills, figures.kills
    assert figures.completed == 2  # one run without a kill per pass: every point was covered
    if scenario == "writer":
        assert figures.commits_verified == sum(figures.kills.values()) + 2


@pytest.mark.parametrize(("scenario", "stride"), [("writer", 2), ("compactor", 5)])
def test_kill_at_every_request_of_a_table_storing_its_changes(
    tmp_path: Path, scenario: str, stride: int
) -> None:
    """The same kills on a table with ``changelog_producer = "lookup"``: a killed commit's
    changelog files are orphans, a committed one's are not, and after every kill and resume
    the stored changelog, applied commit by commit, gives the table at every snapshot."""
    options = {"changelog_producer": "lookup"}
    figures = run_crash_points(str(tmp_path / "t"), scenario, stride=stride, options=options)
    assert not figures.anomalies, figures.anomalies
    assert sum(figures.kills.values()) >= 6, figures.kills
    assert figures.completed == 2


def test_sigkill_stream_cdc_and_the_compactor_at_random_moments(tmp_path: Path) -> None:
    figures = run_sigkills(str(tmp_path / "t"), seconds=8, seed=3, min_rounds=5)
    assert not figures.anomalies, figures.anomalies
    assert figures.kills["writer (stream_cdc.py)"] >= 5
    assert figures.commits_verified >= 5


def test_sigkill_a_changelog_consumer_beside_the_writer_and_the_compactor(tmp_path: Path) -> None:
    """examples/consume_changes.py mirrors a ``lookup`` table into DuckDB while the writer and
    the compactor (with expiry) run; all three are SIGKILLed at random moments, round after
    round, and after each round the mirror must equal the table at the snapshot it reached."""
    figures = run_sigkills(
        str(tmp_path / "t"),
        seconds=8,
        seed=4,
        min_rounds=4,
        consumer=True,
        changelog_producer="lookup",
    )
    assert not figures.anomalies, figures.anomalies
    assert figures.kills["writer (stream_cdc.py)"] >= 4
    assert figures.mirrors_verified >= 2, figures


def test_temp_files_of_a_killed_local_put_are_cleaned_up(tmp_path: Path) -> None:
    root = str(tmp_path / "t")
    table = lsm3.create_table(LocalStore(root), pa.schema([("id", pa.int64())]), "id")
    pid = os.fork()
    if pid == 0:  # the child dies inside the snapshot put, between writing and linking
        os.link = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # type: ignore[assignment]
        try:
            w = table.writer()
            w.upsert([{"id": 1}])
            w.commit()
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    leftovers = check_orphans(lsm3.open_table(root), root)
    assert leftovers["tmp_files"] == 1  # the crash really left one behind
    remove_orphan_files(lsm3.open_table(root), older_than=dt.timedelta(0))
    assert check_orphans(lsm3.open_table(root), root)["tmp_files"] == 0
