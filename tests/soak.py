#!/usr/bin/env python3
"""Reliability harness: fault, crash, race and load runs, and the soak that runs them long.

The fast tests (tests/test_faults.py, test_crash.py, test_races.py, test_load.py) call the
``run_*`` functions below with small budgets; ``make soak`` (``python tests/soak.py``) calls
them with large ones and writes the figures into docs/RELIABILITY.md. The same file is the
entry point of the worker subprocesses the crash and race runs start
(``python tests/soak.py race-writer ...``), so a test and the soak exercise the same code.

Every run checks the same things, with the checkers of the first section:

* the snapshot history is linear (ids contiguous, each parent the previous id, timestamps and
  sequence numbers never decreasing) and every (writer, commit id) appears at most once;
* every commit whose call returned is in the history, at the snapshot it returned;
* every snapshot reads exactly as a plain-Python model says it should;
* after a crash, what is left over is exactly what ``remove_orphan_files`` would remove.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import logging
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from identity_harness import IdentityFigures, run_continued_writers

import lsm3
from compactor.maintenance import expire_snapshots, remove_orphan_files
from compactor.references import changelog_files
from lsm3.io.local import LocalStore
from lsm3.io.memory import MemoryStore
from lsm3.io.store import ObjectStore, open_store
from lsm3.testing.faults import FaultyStore

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
THIS = str(Path(__file__).resolve())
RELIABILITY_MD = REPO / "docs" / "RELIABILITY.md"

log = logging.getLogger("soak")


class Anomaly(AssertionError):
    """A checker found the table in a state the format forbids."""


# =========================================================================== checkers


def row_hash(values: tuple[Any, ...]) -> int:
    """A hash of one row (within this process), for order-independent table digests."""
    return hash(values) & 0xFFFFFFFFFFFFFFFF


def table_rows(t: pa.Table) -> list[tuple[Any, ...]]:
    """Rows as tuples of plain values (timestamps as their int64 storage value)."""
    cols = []
    for i, f in enumerate(t.schema):
        col = t.column(i)
        if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type):
            col = col.cast(pa.int64())
        cols.append(col.to_pylist())
    return list(zip(*cols, strict=True)) if cols else []


def digest_of_rows(rows: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
    """(row count, order-independent digest)."""
    return len(rows), sum(row_hash(r) for r in rows) & 0xFFFFFFFFFFFFFFFF


def table_digest(table: lsm3.Table, snapshot_id: int) -> tuple[int, int]:
    return digest_of_rows(table_rows(table.to_arrow(snapshot_id=snapshot_id)))


def check_chain(table: lsm3.Table) -> list[lsm3.Snapshot]:
    """The retained snapshots, after checking the history is linear (raises Anomaly)."""
    ids = table.snapshot_ids()
    if ids and ids != list(range(ids[0], ids[-1] + 1)):
        raise Anomaly(f"snapshot ids are not contiguous: {ids}")
    snaps = [table.log.load(i) for i in ids]
    seen: dict[tuple[str | None, str], int] = {}
    prev: lsm3.Snapshot | None = None
    for s in snaps:
        expected_parent = None if s.snapshot_id == 1 else s.snapshot_id - 1
        if s.parent_id != expected_parent:
            raise Anomaly(f"snapshot {s.snapshot_id} has parent {s.parent_id}")
        if prev is not None:
            if s.timestamp_ms < prev.timestamp_ms:
                raise Anomaly(f"snapshot {s.snapshot_id} is older than its parent")
            if s.next_sequence < prev.next_sequence:
                raise Anomaly(f"snapshot {s.snapshot_id} moved next_sequence backwards")
        if s.commit_id is not None:
            ident = (s.writer_id, s.commit_id)
            if ident in seen:
                raise Anomaly(
                    f"commit {ident} applied twice: snapshots {seen[ident]} and {s.snapshot_id}"
                )
            seen[ident] = s.snapshot_id
        prev = s
    return snaps


def named_by_detached(table: lsm3.Table) -> set[str]:
    """What the snapshot objects outside the history keep from orphan removal (docs/FORMAT.md,
    section 6: ids at or below the newest expiry marker, left by an expiry killed before it
    deleted them or put by a paused committer, which still rebases onto its files): what
    such a snapshot needs if all its manifests are there, else whatever its remaining
    manifests name, until expiry deletes the snapshot."""
    history = set(table.snapshot_ids())
    named: set[str] = set()
    for sid in table.log.list_ids():
        snap = None if sid in history else table.log.try_load(sid)
        if snap is None:
            continue
        try:  # complete: what it needs, as for any snapshot
            named |= table.manifests.referenced(snap)
            named.update(f.path for f in table.files_of(snap))
            named.update(f.path for f in changelog_files(table, snap))
            continue
        except lsm3.CorruptMetadata:  # expiry deleted some of its manifests already
            pass
        schema = table.schema_at(snap.schema_id)
        for path in snap.referenced_manifests:
            if table.store.head(path) is None:
                continue
            named.add(path)
            if path != snap.manifest_list:  # every file a remaining manifest names
                named.update(e.file.path for e in table.manifests.entries(path, schema))
    return named


def check_orphans(table: lsm3.Table, local_root: str | None = None) -> dict[str, Any]:
    """Compare what is left over in the table with what ``remove_orphan_files`` (dry run,
    no grace period) would delete; returns the figures, raises Anomaly on a difference.

    Left over = every object under ``data/`` and ``manifest/`` that no retained or tagged
    snapshot references (its live files and the changelog files its commit stored), and the
    temporary files of local puts killed mid-write anywhere.
    ``tmp_files`` counts those temporary files (and, with ``local_root``, any the store's
    listing would hide from orphan removal).
    """
    store = table.store
    referenced: set[str] = set()
    for s in [*table.snapshots(), *table.tagged_snapshots().values()]:
        referenced.update(table.manifests.referenced(s))
        referenced.update(f.path for f in table.files_of(s))
        referenced.update(f.path for f in changelog_files(table, s))  # section 16
    referenced |= named_by_detached(table)
    temporary = re.compile(r"\.[0-9a-f]{32}\.tmp$")  # of local puts killed mid-write
    everything = [i.key for i in store.list("")]
    leftovers = {
        k
        for k in everything
        if (k.startswith(("data/", "manifest/")) and k not in referenced)
        or (k.startswith(("snapshot/", "schema/", "tag/")) and temporary.search(k))
    }
    strays = [
        k
        for k in everything
        if not k.startswith(("data/", "manifest/", "snapshot/", "schema/", "tag/", "consumer/"))
    ]
    bad_snapshots = [
        k
        for k in everything
        if k.startswith("snapshot/")
        and k != "snapshot/LATEST"
        and not re.fullmatch(r"snapshot/snapshot-\d{20}\.json", k)
        and not re.fullmatch(r"snapshot/expired/\d{20}", k)
        and not temporary.search(k)
    ]
    dry = remove_orphan_files(table, older_than=dt.timedelta(0), dry_run=True)
    if set(dry.removed) != leftovers:
        raise Anomaly(
            f"orphan removal would delete {sorted(set(dry.removed) - leftovers)[:5]} that are "
            f"referenced, or miss {sorted(leftovers - set(dry.removed))[:5]}"
        )
    if strays or bad_snapshots:
        raise Anomaly(f"unexpected objects in the table root: {strays + bad_snapshots}")
    tmp_files = [k for k in everything if k.endswith(".tmp")]
    if local_root is not None:  # what the store's listing might hide
        for dirpath, _dirs, files in os.walk(local_root):
            rel = os.path.relpath(dirpath, local_root).replace(os.sep, "/")
            tmp_files += [
                f"{rel}/{f}" for f in files if f.endswith(".tmp") and f"{rel}/{f}" not in everything
            ]
    return {"orphans": len(leftovers), "tmp_files": len(tmp_files), "tmp_paths": tmp_files}


# =========================================================================== random faults

FAULT_SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string()), ("n", pa.int64())])
FAULT_OPTIONS = {
    "num_sorted_run_trigger": 3,
    "row_group_rows": 8,
    "manifest_merge_threshold": 4,
    "latest_hint_interval": 3,
    "commit_retries": 8,
}


@dataclass
class FaultFigures:
    """What a random-fault run injected and how each operation it hit ended."""

    runs: int = 0
    steps: int = 0
    commits: int = 0
    snapshots_verified: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    #: (fault kind, outcome) -> count; outcome is "absorbed" (the operation succeeded anyway)
    #: or "raised <Error>" (the operation raised a clear lsm3 error, nothing half-done)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_op: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)

    def merge(self, other: FaultFigures) -> None:
        self.runs += other.runs
        self.steps += other.steps
        self.commits += other.commits
        self.snapshots_verified += other.snapshots_verified
        self.injected.update(other.injected)
        self.outcomes.update(other.outcomes)
        self.by_op.update(other.by_op)
        self.anomalies += other.anomalies


def _model_rows(model: dict[int, tuple[str, int]]) -> list[tuple[Any, ...]]:
    return [(k, v, n) for k, (v, n) in model.items()]


def run_random_faults(
    seed: int,
    steps: int = 30,
    probability: float = 0.08,
    backend: str = "memory",
    root: str | None = None,
    storage_options: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> FaultFigures:
    """Commits, compactions, expiry, orphan removal and reads on a table whose store fails
    ``probability`` of its requests (every retryable kind), checked against a dict model
    after every step through a fault-free view of the same objects. ``options`` are table
    options beside FAULT_OPTIONS; with ``changelog_producer = "lookup"`` the stored
    changelog is also replayed against every retained snapshot every few steps.

    The client follows the documented exactly-once pattern: a named writer, an explicit
    commit id per batch, and on an error it rebuilds the batch and commits again with the
    same id (rebuilding, rather than calling ``commit()`` again on the same writer, works
    around the data-loss bug described in docs/RELIABILITY.md).
    """
    rng = random.Random(seed)
    figures = FaultFigures(runs=1)
    if backend == "memory":
        clean: ObjectStore = MemoryStore(f"faults-{seed}-{uuid.uuid4().hex}")
    elif backend == "local":
        assert root is not None
        clean = LocalStore(root, fsync=False)
    else:  # "s3": root is the URI
        assert root is not None
        clean = lsm3.io.store.open_store(root, storage_options)
    faulty = FaultyStore.random(clean, probability, seed=seed, hang_seconds=0.002)
    faulty.enabled = False
    lsm3.create_table(clean, FAULT_SCHEMA, "id", options={**FAULT_OPTIONS, **(options or {})})
    stores_changes = (options or {}).get("changelog_producer") == "lookup"
    faulty.enabled = True
    checker = lsm3.open_table(clean)

    model: dict[int, tuple[str, int]] = {}
    states: dict[str, tuple[int, int]] = {}  # commit id -> digest of the model after it
    expected: dict[int, tuple[int, int]] = {}  # snapshot id -> digest
    last_digest = (0, 0)
    verified_upto = 0
    checked_upto = 0

    def attempt(what: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        before = len(faulty.injected)
        try:
            result = fn()
            ok, outcome = True, "absorbed"
        except lsm3.Lsm3Error as exc:
            result, ok, outcome = exc, False, f"raised {type(exc).__name__}"
        except Exception as exc:
            figures.anomalies.append(f"seed {seed}: {what} raised {type(exc).__name__}: {exc}")
            result, ok, outcome = exc, False, f"crashed {type(exc).__name__}"
        hits = faulty.injected[before:]
        for i, inj in enumerate(hits):
            figures.injected[inj.fault] += 1
            # Only the last fault of a failed operation made it fail; lsm3 got past the others.
            last = i == len(hits) - 1
            figures.outcomes[(inj.fault, outcome if last else "absorbed")] += 1
            figures.by_op[inj.op] += 1
        return ok, result

    def open_faulty() -> lsm3.Table | None:
        ok, t = attempt("open_table", lambda: lsm3.open_table(faulty))
        return t if ok else None

    for step in range(steps):
        figures.steps += 1
        roll = rng.random()
        if roll < 0.55:  # a commit, retried with the same id until it lands
            cid = f"c{step}"
            batch = []
            new_model = dict(model)
            for _ in range(rng.randint(1, 12)):
                k = rng.randrange(40)
                if rng.random() < 0.2:
                    batch.append(("d", k))
                    new_model.pop(k, None)
                else:
                    row = (f"s{step}-{k}", rng.randrange(1000))
                    batch.append(("u", (k, *row)))
                    new_model[k] = row
            states[cid] = digest_of_rows(_model_rows(new_model))

            def commit(batch: list[tuple[str, Any]] = batch, cid: str = cid) -> lsm3.Snapshot:
                t = lsm3.open_table(faulty)
                w = t.writer("w")
                for op, arg in batch:
                    if op == "u":
                        w.upsert([{"id": arg[0], "v": arg[1], "n": arg[2]}])
                    else:
                        w.delete([arg])
                snap = w.commit(commit_id=cid, metadata={"step": cid})
                assert snap is not None
                return snap

            for _ in range(40):
                ok, _snap = attempt("commit", commit)
                if ok:
                    break
            else:
                figures.anomalies.append(f"seed {seed}: commit {cid} never landed in 40 tries")
                continue
            figures.commits += 1
            model = new_model
        elif roll < 0.75:
            import compactor

            t = open_faulty()
            if t is not None:
                attempt(
                    "compact",
                    lambda t=t: compactor.compact(t, owner="fault-test", max_rounds=4),
                )
        elif roll < 0.82:
            t = open_faulty()
            if t is not None:
                attempt(
                    "expire",
                    lambda t=t: expire_snapshots(t, retain_last=3, older_than=dt.timedelta(0)),
                )
        elif roll < 0.87:
            t = open_faulty()
            if t is not None:  # safe: no writer is uploading while it runs
                attempt(
                    "orphans",
                    lambda t=t: remove_orphan_files(t, older_than=dt.timedelta(0)),
                )
        else:  # a read through the faulty store: the right rows or a clear error
            t = open_faulty()
            if t is not None and t.current_snapshot() is not None:
                ok, got = attempt("read", lambda t=t: table_rows(t.to_arrow()))
                sid = t.current_snapshot().snapshot_id  # type: ignore[union-attr]
                if ok and sid in expected and digest_of_rows(got) != expected[sid]:
                    figures.anomalies.append(f"seed {seed}: faulty read of {sid} is wrong")

        # ---- verify through the fault-free view
        checker = lsm3.open_table(clean)
        try:
            snaps = check_chain(checker)
        except Anomaly as exc:
            figures.anomalies.append(f"seed {seed} step {step}: {exc}")
            break
        for s in snaps:
            if s.snapshot_id <= verified_upto:
                continue
            if s.kind == "APPEND":
                digest = states.get(s.commit_id or "")
                if digest is None:
                    figures.anomalies.append(f"seed {seed}: unknown commit {s.commit_id}")
                    continue
                last_digest = digest
            expected[s.snapshot_id] = last_digest
            verified_upto = s.snapshot_id
        fresh = [s for s in snaps if s.snapshot_id > checked_upto]
        sample = rng.sample(snaps, min(2, len(snaps))) if step < steps - 1 else snaps
        checked_upto = verified_upto
        for s in {s.snapshot_id: s for s in [*fresh, *sample]}.values():
            got = table_digest(checker, s.snapshot_id)
            figures.snapshots_verified += 1
            if got != expected.get(s.snapshot_id):
                figures.anomalies.append(
                    f"seed {seed} step {step}: snapshot {s.snapshot_id} ({s.kind}) reads "
                    f"{got[0]} rows, differing from the model"
                )
        if snaps and expected.get(snaps[-1].snapshot_id) != digest_of_rows(_model_rows(model)):
            figures.anomalies.append(f"seed {seed} step {step}: the latest snapshot lost a commit")
        if stores_changes and (step % 5 == 4 or step == steps - 1):
            try:
                check_changelog(checker)
            except Anomaly as exc:
                figures.anomalies.append(f"seed {seed} step {step}: {exc}")
        if figures.anomalies:
            break
    if backend == "memory":
        with lsm3.io.memory._MEMORY_LOCK:
            lsm3.io.memory._MEMORY_SPACES.pop(clean.url[len("memory://") :], None)
    return figures


# =========================================================================== crash points


@dataclass
class CrashFigures:
    """Kills survived and what was checked after each."""

    kills: Counter[str] = field(default_factory=Counter)  # by what was killed
    completed: int = 0  # runs that finished before their crash point (no kill)
    commits_verified: int = 0  # commits whose call returned, found exactly once
    snapshots_verified: int = 0
    orphans_seen: int = 0  # left over after kills, all of them found by orphan removal
    orphans_removed: int = 0
    tmp_files: int = 0  # temporary files of interrupted local puts (orphan removal misses them)
    mirrors_verified: int = 0  # DuckDB mirrors compared with the table at their position
    anomalies: list[str] = field(default_factory=list)

    def merge(self, other: CrashFigures) -> None:
        self.kills.update(other.kills)
        self.completed += other.completed
        self.commits_verified += other.commits_verified
        self.snapshots_verified += other.snapshots_verified
        self.orphans_seen += other.orphans_seen
        self.orphans_removed += other.orphans_removed
        self.tmp_files += other.tmp_files
        self.mirrors_verified += other.mirrors_verified
        self.anomalies += other.anomalies


class Tracker:
    """The expected digest of every snapshot, from the digests after each commit id.

    APPEND snapshots must read as the model after their commit; COMPACT and SCHEMA ones as
    their parent. ``verify`` checks the new snapshots and a sample of the older ones.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.after_commit: dict[str, tuple[int, int]] = {}
        self.expected: dict[int, tuple[int, int]] = {}
        self.last = (0, 0)
        self.upto = 0

    def verify(self, table: lsm3.Table, figures: Any, sample: int = 2) -> list[lsm3.Snapshot]:
        snaps = check_chain(table)
        fresh = [s for s in snaps if s.snapshot_id > self.upto]
        for s in fresh:
            if s.kind == "APPEND":
                digest = self.after_commit.get(s.commit_id or "")
                if digest is None:
                    raise Anomaly(f"snapshot {s.snapshot_id} holds unknown commit {s.commit_id}")
                self.last = digest
            self.expected[s.snapshot_id] = self.last
            self.upto = s.snapshot_id
        older = [s for s in snaps if s not in fresh]
        for s in [*fresh, *self.rng.sample(older, min(sample, len(older)))]:
            got = table_digest(table, s.snapshot_id)
            figures.snapshots_verified += 1
            if got != self.expected[s.snapshot_id]:
                raise Anomaly(
                    f"snapshot {s.snapshot_id} ({s.kind}) reads {got[0]} rows, expected "
                    f"{self.expected[s.snapshot_id][0]}: not the model"
                )
        return snaps


def _fork_and_crash(target: Callable[[], None]) -> int:
    """Run ``target`` in a forked child; its exit code (-9: killed at the crash point)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into the parent's code (pytest, atexit hooks)
        code = 0
        try:
            logging.disable(logging.CRITICAL)
            target()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _crash_rule(when: str, nth: int) -> list[Any]:
    from lsm3.testing.faults import Rule

    ops = "*" if when == "before" else ("write", "delete")  # after a read = before the next
    return [Rule(f"crash_{when}", ops, "*", nth=nth)]


def run_crash_points(
    root: str,
    scenario: str,
    seed: int = 0,
    limit: int = 400,
    stride: int = 1,
    options: dict[str, Any] | None = None,
) -> CrashFigures:
    """Kill a writer commit, a compaction or a maintenance run at every request in turn
    (before each request, and after each request that changes something), each in a forked
    child on a fresh copy of the same table, so the n-th request is the same in every run;
    after every kill check the table, then resume as a restarted process would, and check
    again (including that orphan removal finds exactly what the kill left over).

    ``scenario`` is ``writer``, ``compactor`` or ``maintenance``; ``options`` are table
    options beside FAULT_OPTIONS (with ``changelog_producer = "lookup"`` every check also
    replays the stored changelog against the table's reads, ``check_changelog``).
    """
    import compactor

    figures = CrashFigures()
    rng = random.Random(seed)
    template = root + "-template"
    base_store = LocalStore(template, fsync=False)
    lsm3.create_table(base_store, FAULT_SCHEMA, "id", options={**FAULT_OPTIONS, **(options or {})})
    stores_changes = (options or {}).get("changelog_producer") == "lookup"
    after_commit: dict[str, tuple[int, int]] = {}
    model: dict[int, tuple[str, int]] = {}

    def batch(cid: str, model: dict[int, tuple[str, int]]) -> tuple[list[Any], dict]:
        ops: list[tuple[str, Any]] = []
        after = dict(model)
        for _ in range(rng.randint(2, 10)):
            k = rng.randrange(30)
            if rng.random() < 0.2:
                ops.append(("d", k))
                after.pop(k, None)
            else:
                row = (f"{cid}-{k}", rng.randrange(100))
                ops.append(("u", (k, *row)))
                after[k] = row
        after_commit[cid] = digest_of_rows(_model_rows(after))
        return ops, after

    def do_commit(store: ObjectStore, cid: str, ops: list[tuple[str, Any]]) -> None:
        w = lsm3.open_table(store).writer("w")
        for op, arg in ops:
            if op == "u":
                w.upsert([{"id": arg[0], "v": arg[1], "n": arg[2]}])
            else:
                w.delete([arg])
        w.commit(commit_id=cid, metadata={"cid": cid})

    def maintain(store: ObjectStore) -> None:
        t = lsm3.open_table(store)
        expire_snapshots(t, retain_last=3, older_than=dt.timedelta(0))
        remove_orphan_files(t, older_than=dt.timedelta(0))

    # The table every crash starts from: 6 commits, so there is something to compact and
    # to expire.
    for i in range(6):
        ops, model = batch(f"base{i}", model)
        do_commit(base_store, f"base{i}", ops)
    if scenario != "writer":
        # A first compaction, so the next one merges levels and expiry has snapshots whose
        # files are no longer live (an expiry killed before deleting them leaves them around)
        compactor.compact(lsm3.open_table(base_store), owner="crash-compactor")
        for i in range(6, 9):
            ops, model = batch(f"base{i}", model)
            do_commit(base_store, f"base{i}", ops)
    last_ops, last_model = batch("last", model)

    def run(store: ObjectStore) -> None:
        if scenario == "writer":
            do_commit(store, "last", last_ops)
        elif scenario == "compactor":
            compactor.compact(lsm3.open_table(store), owner="crash-compactor", max_rounds=2)
        else:
            maintain(store)

    for when in ("before", "after"):
        for nth in [*range(1, limit + 1, stride), limit + 1]:
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(template, root)
            clean = LocalStore(root, fsync=False)
            tracker = Tracker(rng)
            tracker.after_commit = after_commit
            faulty = FaultyStore(clean, _crash_rule(when, nth))
            code = _fork_and_crash(lambda faulty=faulty: run(faulty))  # type: ignore[misc]
            if code == -signal.SIGKILL:
                figures.kills[f"{scenario}, {when} a request"] += 1
            elif code == 0:
                figures.completed += 1
            else:
                figures.anomalies.append(f"{scenario}: child exited with {code}")
                return figures
            where = f"{scenario} killed {when} request {nth}"
            try:
                t = lsm3.open_table(clean)
                tracker.verify(t, figures, sample=100)
                if stores_changes:
                    check_changelog(t)
                leftovers = check_orphans(t, root)
                figures.orphans_seen += leftovers["orphans"]
                figures.tmp_files += leftovers["tmp_files"]
                run(clean)  # the restarted process does it again, without faults
                t = lsm3.open_table(clean)
                tracker.verify(t, figures, sample=100)
                if scenario == "writer":
                    last = t.last_commit("w")
                    if last is None or last.commit_id != "last":
                        raise Anomaly("the resumed commit is not the writer's last commit")
                    figures.commits_verified += 1
                if table_digest(t, t.current_snapshot().snapshot_id) != digest_of_rows(  # type: ignore[union-attr]
                    _model_rows(last_model if scenario == "writer" else model)
                ):
                    raise Anomaly("the latest snapshot differs from the model")
                if stores_changes:
                    check_changelog(t)
                removed = remove_orphan_files(t, older_than=dt.timedelta(0))
                figures.orphans_removed += removed.files
                if check_orphans(lsm3.open_table(clean), None)["orphans"]:
                    raise Anomaly("orphans left after orphan removal")
            except (Anomaly, lsm3.Lsm3Error) as exc:
                figures.anomalies.append(f"{where}: {type(exc).__name__}: {exc}")
                return figures
            if code == 0:
                break
    shutil.rmtree(template, ignore_errors=True)
    return figures


# =========================================================================== random SIGKILLs


def load_stream_cdc() -> Any:
    """examples/stream_cdc.py as a module (its event generator is the crash runs' model)."""
    spec = importlib.util.spec_from_file_location("stream_cdc", REPO / "examples/stream_cdc.py")
    assert spec is not None and spec.loader is not None
    if "stream_cdc" in sys.modules:
        return sys.modules["stream_cdc"]
    module = importlib.util.module_from_spec(spec)
    sys.modules["stream_cdc"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class CdcModel:
    """Replays the generator's events; the digest of the table after any position."""

    def __init__(self, seed: int) -> None:
        self.events = load_stream_cdc().generate_events(10**9, seed)
        self.rows: dict[int, tuple[Any, ...]] = {}
        self.digest = 0
        self.position = 0
        self.at: dict[int, tuple[int, int]] = {0: (0, 0)}

    def advance(self, position: int) -> tuple[int, int]:
        if position in self.at:
            return self.at[position]
        if position < self.position:
            raise Anomaly(f"commit positions went backwards to {position}")
        mask = 0xFFFFFFFFFFFFFFFF
        while self.position < position:
            self.position, event = next(self.events)
            if event["op"] == "d":
                old = self.rows.pop(event["before"]["id"], None)
            else:
                a = event["after"]
                row = (a["id"], a["name"], a["qty"], a["price"], a["updated_at"])
                old = self.rows.get(a["id"])
                self.rows[a["id"]] = row
                self.digest = (self.digest + row_hash(row)) & mask
            if old is not None:
                self.digest = (self.digest - row_hash(old)) & mask
        self.at[position] = (len(self.rows), self.digest)
        return self.at[position]


_COMMIT_LINE = re.compile(r"snapshot (\d+): positions (\d+)-(\d+)")


def check_mirror(t: lsm3.Table, path: str) -> None:
    """examples/consume_changes.py's DuckDB mirror equals the table read at the snapshot the
    mirror says it reached (raises Anomaly), and each commit was applied once."""
    import duckdb

    con = duckdb.connect(path, read_only=True)
    try:
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        if "mirror" not in tables or "lsm3_position" not in tables:
            return  # killed before it created its tables
        (top,) = con.execute("SELECT max(snapshot_id) FROM lsm3_position").fetchall()[0]
        position = int(top) if top is not None else 0
        mirrored = con.sql("SELECT * FROM mirror").to_arrow_table()
        ((twice,),) = con.execute(
            "SELECT count(*) - count(DISTINCT snapshot_id) FROM lsm3_applied"
        ).fetchall()
    finally:
        con.close()
    if twice:
        raise Anomaly(f"the consumer applied {twice} commit(s) twice")
    if position == 0:
        if mirrored.num_rows:
            raise Anomaly("the mirror holds rows before its first commit")
        return
    try:
        want = table_digest(t, position)
    except lsm3.SnapshotNotFound as exc:
        raise Anomaly(f"the consumer's snapshot {position} was expired under it") from exc
    got = digest_of_rows(table_rows(mirrored.select(t.schema.names).cast(t.schema)))
    if got != want:
        raise Anomaly(
            f"the DuckDB mirror ({got[0]} rows) differs from the table at snapshot {position} "
            f"({want[0]} rows)"
        )


def run_sigkills(
    root: str,
    seconds: float,
    seed: int = 0,
    rate: int = 1500,
    compactor_too: bool = True,
    orphan_sweep_every: int = 4,
    min_rounds: int = 1,
    check_every_snapshot: bool = False,
    consumer: bool = False,
    changelog_producer: str = "none",
) -> CrashFigures:
    """Run examples/stream_cdc.py and ``python -m compactor`` as real processes on one local
    table and SIGKILL them at random moments, round after round, for ``seconds``. After each
    round (both processes dead) a fresh reader checks: the history is linear; every commit
    whose call returned (the writer logged it) is there, exactly once; every snapshot reads
    as the generator's events up to its committed position; orphans are exactly what
    ``remove_orphan_files`` finds. Every few rounds orphans are really removed (safe: no
    process is running), and the next round resumes from what was committed. With
    ``check_every_snapshot`` every new snapshot is read (slower), not only the newest three
    and two older ones. On an anomaly the table and the processes' logs are kept beside
    ``root`` (``<root>-anomaly``, ``<root>-logs``) for a post-mortem.

    With ``consumer``, examples/consume_changes.py keeps a DuckDB mirror in sync from the
    second round on and is SIGKILLed at a random moment too; after each round the mirror
    must equal the table read at the snapshot DuckDB says it reached, which expiry (the
    compactor runs with ``--expire``) must not have taken. ``changelog_producer`` is the
    table's (created here, before the first round, when it is not ``none``)."""
    rng = random.Random(seed)
    figures = CrashFigures()
    model = CdcModel(seed)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if changelog_producer != "none":
        stream_cdc = load_stream_cdc()
        lsm3.create_table(
            root,
            stream_cdc.parse_schema(stream_cdc.GENERATOR_SCHEMA),
            "id",
            options={"changelog_producer": changelog_producer},
        )
    mirror = root + "-mirror.duckdb"
    consumer_cmd = [
        PYTHON,
        str(REPO / "examples/consume_changes.py"),
        "--table",
        root,
        "--duckdb",
        mirror,
        "--poll",
        "0.1",
    ]
    writer_cmd = [
        PYTHON,
        str(REPO / "examples/stream_cdc.py"),
        "--table",
        root,
        "--create",
        "--generate",
        str(10**9),
        "--seed",
        str(seed),
        "--writer-id",
        "cdc",
        "--commit-every",
        "60",
        "--commit-interval",
        "0.2",
        "--rate",
        str(rate),
    ]
    compactor_cmd = [
        PYTHON,
        "-m",
        "compactor",
        "--interval",
        "0.3",
        "--owner",
        "crash-compactor",
        "--option",
        "num_sorted_run_trigger=3",
        "--expire",
        "--retain-last",
        "40",
        "--expire-older-than",
        "0",
        "--json",
        root,
    ]
    returned: dict[int, int] = {}  # snapshot id -> position, for every commit that returned
    expected: dict[int, tuple[int, int]] = {}
    last_append = (0, 0)
    verified_upto = 0
    checked_upto = 0
    deadline = time.monotonic() + seconds
    rounds = 0
    logdir = Path(root + "-logs")
    logdir.mkdir(parents=True, exist_ok=True)
    while time.monotonic() < deadline or rounds < min_rounds:
        rounds += 1
        err_path = logdir / f"writer-{rounds}.log"
        with open(err_path, "wb") as err:
            writer = subprocess.Popen(
                writer_cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=REPO
            )
        comp = None
        comp_log = logdir / f"compactor-{rounds}.log"
        if compactor_too and rounds > 1:  # the first round creates the table
            with open(comp_log, "wb") as out:
                comp = subprocess.Popen(
                    compactor_cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
                )
        follower = None
        follower_log = logdir / f"consumer-{rounds}.log"
        if consumer and rounds > 1:
            with open(follower_log, "wb") as out:
                follower = subprocess.Popen(
                    consumer_cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
                )
        # Kill the writer at a random moment of its work (after it opened the table and
        # found its resume point), the compactor and the consumer at random moments of their
        # lives.
        started = time.monotonic()
        while writer.poll() is None and time.monotonic() - started < 20:
            if b"writer 'cdc'" in err_path.read_bytes():
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 1.5))
        comp_kill_at = started + rng.uniform(0.5, 2.5)
        writer.kill()
        writer.wait()
        figures.kills["writer (stream_cdc.py)"] += 1
        if comp is not None:
            time.sleep(max(0.0, comp_kill_at - time.monotonic()))
            if comp.poll() is None:
                comp.kill()
                figures.kills["compactor (python -m compactor)"] += 1
            comp.wait()
        if follower is not None:
            time.sleep(max(0.0, started + rng.uniform(0.5, 3.0) - time.monotonic()))
            if follower.poll() is None:
                follower.kill()
                figures.kills["consumer (consume_changes.py)"] += 1
            follower.wait()
            log_text = follower_log.read_text(errors="replace")
            if "Traceback" in log_text:
                figures.anomalies.append(f"round {rounds}: the consumer failed: {log_text[-800:]}")
                break
        text = err_path.read_text(errors="replace")
        if "Traceback" in text or "error:" in text:
            figures.anomalies.append(f"round {rounds}: the writer failed: {text[-800:]}")
            break
        for m in _COMMIT_LINE.finditer(text):
            returned[int(m.group(1))] = int(m.group(3))
        for old in (
            logdir / f"writer-{rounds - 3}.log",
            logdir / f"compactor-{rounds - 3}.log",
            logdir / f"consumer-{rounds - 3}.log",
        ):
            if old.exists():  # a post-mortem needs the last rounds' logs only
                old.unlink()
        # ---- a fresh reader checks everything
        try:
            t = lsm3.open_table(root)
            snaps = check_chain(t)
            by_id = {s.snapshot_id: s for s in snaps}
            first = snaps[0].snapshot_id if snaps else 1
            for sid, position in list(returned.items()):
                if sid < first:
                    returned.pop(sid)  # expired: verified in an earlier round
                    continue
                s = by_id.get(sid)
                if s is None or s.commit_id != f"position-{position}":
                    raise Anomaly(f"returned commit (snapshot {sid}, position {position}) lost")
                figures.commits_verified += 1
                returned.pop(sid)
            for s in snaps:
                if s.snapshot_id <= verified_upto:
                    continue
                if s.kind == "APPEND":
                    if s.writer_id != "cdc" or not (s.commit_id or "").startswith("position-"):
                        raise Anomaly(f"snapshot {s.snapshot_id} was not made by the writer")
                    position = int(s.metadata["position"])
                    if s.commit_id != f"position-{position}":
                        raise Anomaly(f"snapshot {s.snapshot_id}: commit id and offset differ")
                    last_append = model.advance(position)
                elif s.summary.get("added_rows", 0) and s.kind != "COMPACT":
                    raise Anomaly(f"snapshot {s.snapshot_id} of kind {s.kind} adds rows")
                expected[s.snapshot_id] = last_append
                verified_upto = s.snapshot_id
            older = [s for s in snaps if s.snapshot_id < verified_upto - 2]
            if check_every_snapshot:
                to_check = [s for s in snaps if s.snapshot_id > checked_upto]
            else:
                to_check = snaps[-3:]
            checked_upto = verified_upto
            for s in [*to_check, *rng.sample(older, min(2, len(older)))]:
                if table_digest(t, s.snapshot_id) != expected[s.snapshot_id]:
                    raise Anomaly(f"snapshot {s.snapshot_id} ({s.kind}) differs from the model")
                figures.snapshots_verified += 1
            if consumer and os.path.exists(mirror):
                check_mirror(t, mirror)
                figures.mirrors_verified += 1
            leftovers = check_orphans(t, root)
            figures.orphans_seen += leftovers["orphans"]
            figures.tmp_files = max(figures.tmp_files, leftovers["tmp_files"])
            if rounds % orphan_sweep_every == 0:
                removed = remove_orphan_files(t, older_than=dt.timedelta(0))
                figures.orphans_removed += removed.files
                if check_orphans(lsm3.open_table(root), None)["orphans"]:
                    raise Anomaly("orphans left after orphan removal")
        except (Anomaly, lsm3.Lsm3Error) as exc:
            figures.anomalies.append(f"round {rounds}: {type(exc).__name__}: {exc}")
            shutil.copytree(root, root + "-anomaly", dirs_exist_ok=True)
            break
    figures.completed = rounds
    return figures


# =========================================================================== races

RACE_SCHEMA = pa.schema(
    [("id", pa.int64()), ("w", pa.string()), ("c", pa.int64()), ("v", pa.string())]
)
RACE_KEYS = 60
# The aggregating race: a commit applied twice (or lost, or rebased onto the wrong parent)
# changes a sum and a concatenation for good, where under deduplicate a later upsert of the
# same key can hide it; and its writers store complete changes (``lookup``), computed ahead
# on the snapshot they knew and again on the parent a retry lands on.
RACE_AGGREGATION_OPTIONS = {
    "merge_engine": "aggregation",
    "fields.c.aggregate_function": "sum",
    "fields.v.aggregate_function": "listagg",
    "changelog_producer": "lookup",
}


def race_plan(writer: int, commit: int) -> list[tuple[str, Any]]:
    """What commit ``commit`` of writer ``writer`` does: upserts and deletes on keys that
    every writer shares, so the commit order decides the result."""
    rng = random.Random(writer * 1_000_003 + commit)
    keys = rng.sample(range(RACE_KEYS), 8)
    ops: list[tuple[str, Any]] = [("d", k) for k in keys[6:]]
    ops += [("u", (k, f"w{writer}", commit, f"w{writer}c{commit}k{k}")) for k in keys[:6]]
    return ops


def race_fold(state: dict[int, tuple[Any, ...]], op: str, arg: Any, aggregate: bool) -> None:
    """Apply one planned operation to the model ``state`` (key -> row): a delete removes
    the key; an upsert replaces the row, or under ``aggregate`` (RACE_AGGREGATION_OPTIONS)
    keeps the newest ``w``, adds ``c`` and appends ``v`` to the live row's."""
    if op == "d":
        state.pop(arg, None)
        return
    old = state.get(arg[0]) if aggregate else None
    if old is None:
        state[arg[0]] = arg
    else:
        state[arg[0]] = (arg[0], arg[1], old[2] + arg[2], f"{old[3]},{arg[3]}")


def race_writer_main(args: argparse.Namespace) -> int:
    """A race writer process: commits its plan until its time is up, printing each commit
    that returned; an error means retrying the same commit id (exactly once)."""
    options = json.loads(args.storage_options) if args.storage_options else None
    table = lsm3.open_table(args.uri, options)
    print("READY", flush=True)  # imports and opening done: wait for the start signal
    sys.stdin.readline()
    deadline = time.monotonic() + args.seconds
    rng = random.Random(args.writer)
    commit = 0
    while time.monotonic() < deadline:
        cid = f"w{args.writer}-c{commit}"
        w = table.writer(f"w{args.writer}")
        for op, arg in race_plan(args.writer, commit):
            if op == "u":
                w.upsert([dict(zip(RACE_SCHEMA.names, arg, strict=True))])
            else:
                w.delete([arg])
        try:
            snap = w.commit(commit_id=cid, metadata={"commit": commit})
        except lsm3.Lsm3Error as exc:
            print(f"FAILED {cid} {type(exc).__name__}", flush=True)
            w.abort()
            continue  # the same commit id again
        assert snap is not None
        print(f"COMMITTED {cid} {snap.snapshot_id}", flush=True)
        commit += 1
        time.sleep(rng.uniform(args.pause / 2, args.pause * 1.5))
    return 0


@dataclass
class RaceFigures:
    runs: int = 0
    writers: int = 0
    seconds: float = 0.0
    commits: int = 0  # writer commits that returned, each found exactly once
    failed_attempts: int = 0  # commit calls that raised and were retried with the same id
    snapshots: int = 0
    compactions: int = 0  # COMPACT snapshots that changed files
    reads_checked: int = 0  # reader observations compared with the model at their snapshot
    anomalies: list[str] = field(default_factory=list)

    def merge(self, other: RaceFigures) -> None:
        for name in (
            "runs",
            "writers",
            "seconds",
            "commits",
            "failed_attempts",
            "snapshots",
            "compactions",
            "reads_checked",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.anomalies += other.anomalies


def _race_rows(t: lsm3.Table, sid: int) -> list[tuple[Any, ...]]:
    return table_rows(t.to_arrow(snapshot_id=sid))


def run_races(
    uri: str,
    storage_options: dict[str, Any] | None,
    seconds: float,
    writers: int = 3,
    readers: int = 2,
    pause: float = 0.3,
    seed: int = 0,
    verify_all: bool = True,
    aggregate: bool = False,
) -> RaceFigures:
    """Writer processes, a compactor process and reader threads on one table for
    ``seconds``; then the history must be linear, every commit that returned must be in it
    exactly once, and every read must equal the model at the snapshot it read. With
    ``aggregate`` the table sums and concatenates (RACE_AGGREGATION_OPTIONS) and its stored
    changelog, applied commit by commit, must give the model at every snapshot, with
    before-images equal to the model's previous rows."""
    figures = RaceFigures(runs=1, writers=writers, seconds=seconds)
    options: dict[str, Any] = {
        "num_sorted_run_trigger": 3,
        "commit_retries": 64,
        "row_group_rows": 16,
    }
    if aggregate:
        options.update(RACE_AGGREGATION_OPTIONS)
    lsm3.create_table(uri, RACE_SCHEMA, "id", options=options, storage_options=storage_options)
    opts = json.dumps(storage_options or {})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [
                PYTHON,
                THIS,
                "race-writer",
                uri,
                "--writer",
                str(i),
                "--seconds",
                str(seconds),
                "--pause",
                str(pause),
                "--storage-options",
                opts,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
            text=True,
        )
        for i in range(writers)
    ]
    for p in procs:  # start the race when every writer has imported and opened the table
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "READY":
            raise AssertionError(f"race writer did not start: {line!r} {p.communicate()[1]}")
    so_args: list[str] = []
    for k, v in (storage_options or {}).items():
        so_args += ["--storage-option", f"{k}={v}"]
    comp = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "compactor",
            "--interval",
            "0.5",
            "--owner",
            "race",
            "--json",
            "--option",
            "num_sorted_run_trigger=3",
            *so_args,
            uri,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
        text=True,
    )
    observations: list[tuple[int, tuple[int, int], dict[int, Any]]] = []
    stop = threading.Event()
    reader_errors: list[str] = []

    def reader(i: int) -> None:
        rng = random.Random(seed * 100 + i)
        t = lsm3.open_table(uri, storage_options)
        while not stop.is_set():
            try:
                snap = t.refresh()
                if snap is None:
                    time.sleep(0.05)
                    continue
                sid = snap.snapshot_id
                if rng.random() < 0.3:  # time travel to an older snapshot
                    sid = rng.randint(max(1, sid - 10), sid)
                rows = _race_rows(t, sid)
                keys = rng.sample(range(RACE_KEYS), 5)
                got = dict(zip(keys, t.get_many(keys, snapshot_id=sid), strict=True))
                observations.append((sid, digest_of_rows(rows), got))
            except lsm3.SnapshotNotFound:
                continue
            except Exception as exc:
                reader_errors.append(f"reader {i}: {type(exc).__name__}: {exc}")
                return
            time.sleep(rng.uniform(0.0, 0.1))

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(readers)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("GO\n")
        p.stdin.flush()
    for th in threads:
        th.start()
    returned: dict[str, int] = {}
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=seconds + 120)
        if p.returncode != 0:
            figures.anomalies.append(f"writer {i} exited with {p.returncode}: {err[-500:]}")
        for line in out.splitlines():
            parts = line.split()
            if parts[:1] == ["COMMITTED"]:
                returned[parts[1]] = int(parts[2])
            elif parts[:1] == ["FAILED"]:
                figures.failed_attempts += 1
    stop.set()
    for th in threads:
        th.join(timeout=60)
    comp.send_signal(signal.SIGTERM)
    try:
        _, comp_err = comp.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        comp.kill()
        _, comp_err = comp.communicate()
    # 0: stopped after its pass; 3: lease held; -SIGTERM: stopped before it had installed its
    # signal handlers (a short race on a slow machine)
    if comp.returncode not in (0, 3, -signal.SIGTERM):
        figures.anomalies.append(f"compactor exited with {comp.returncode}: {comp_err[-500:]}")
    figures.anomalies += reader_errors

    # ---- the checker
    t = lsm3.open_table(uri, storage_options)
    try:
        snaps = check_chain(t)
    except Anomaly as exc:
        figures.anomalies.append(str(exc))
        return figures
    figures.snapshots = len(snaps)
    model: dict[int, tuple[Any, ...]] = {}
    expected: dict[int, tuple[int, int]] = {}
    states: dict[int, dict[int, tuple[Any, ...]]] = {}
    for s in snaps:
        if s.kind == "APPEND":
            m = re.fullmatch(r"w(\d+)-c(\d+)", s.commit_id or "")
            if m is None or s.writer_id != f"w{m.group(1)}":
                figures.anomalies.append(f"snapshot {s.snapshot_id} holds unknown commit")
                continue
            for op, arg in race_plan(int(m.group(1)), int(m.group(2))):
                race_fold(model, op, arg, aggregate)
        elif s.summary.get("removed_files"):
            figures.compactions += 1
        expected[s.snapshot_id] = digest_of_rows(list(model.values()))
        states[s.snapshot_id] = dict(model)
    in_chain = {s.commit_id: s.snapshot_id for s in snaps if s.kind == "APPEND"}
    for cid, sid in returned.items():
        if in_chain.get(cid) != sid:
            figures.anomalies.append(
                f"commit {cid} returned snapshot {sid}, chain has {in_chain.get(cid)}"
            )
    figures.commits = len(returned)
    seen = {sid for sid, _, _ in observations}
    unseen = [s for s in snaps if s.snapshot_id not in seen]
    if not verify_all:  # the newest and a sample of what no reader saw
        unseen = snaps[-2:] + random.Random(seed).sample(unseen, min(8, len(unseen)))
    for s in unseen:
        if _digest_or_none(t, s.snapshot_id) != expected[s.snapshot_id]:
            figures.anomalies.append(f"snapshot {s.snapshot_id} differs from the model")
    for sid, digest, got in observations:
        figures.reads_checked += 1
        if expected.get(sid) != digest:
            figures.anomalies.append(f"a reader saw snapshot {sid} differently from the model")
        for k, row in got.items():
            want = states[sid].get(k)
            have = None if row is None else tuple(row[n] for n in RACE_SCHEMA.names)
            if have != want:
                figures.anomalies.append(f"get({k}) at snapshot {sid} returned {have}, not {want}")
    if aggregate:
        figures.anomalies += replay_changelog(t, snaps, states)
    return figures


def replay_changelog(
    t: lsm3.Table, snaps: list[lsm3.Snapshot], states: dict[int, dict[Any, tuple[Any, ...]]]
) -> list[str]:
    """Apply the table's changelog commit by commit from the first retained snapshot's
    state (``states``: snapshot id -> key -> row, the key a row's first value): each
    ``-U``/``-D`` must carry the row the table held, each ``+I`` must be a new key, and after
    each snapshot's changes the result must be ``states`` at that snapshot (compactions
    contribute nothing)."""
    if len(snaps) < 2:
        return []
    anomalies: list[str] = []
    names = t.schema.names
    first = snaps[0].snapshot_id
    changes = t.changelog(first, snaps[-1].snapshot_id).to_pylist()
    by_snapshot: dict[int, list[dict[str, Any]]] = {}
    for change in changes:
        by_snapshot.setdefault(change["_snapshot_id"], []).append(change)
    state = dict(states[first])
    for s in snaps[1:]:
        for change in by_snapshot.pop(s.snapshot_id, []):
            row = tuple(change[n] for n in names)
            kind, key = change["_row_kind"], row[0]
            if kind in ("-U", "-D"):
                if state.get(key) != row:
                    anomalies.append(
                        f"snapshot {s.snapshot_id}: {kind} of key {key} carries {row}, "
                        f"the table held {state.get(key)}"
                    )
                state.pop(key, None)
            elif kind == "+I" and key in state:
                anomalies.append(f"snapshot {s.snapshot_id}: +I of key {key}, which was live")
            else:
                state[key] = row
        if state != states[s.snapshot_id]:
            anomalies.append(
                f"the changelog applied up to snapshot {s.snapshot_id} differs from the table"
            )
            state = dict(states[s.snapshot_id])  # report each divergence once
    if by_snapshot:
        anomalies.append(f"changes of snapshots outside the history: {sorted(by_snapshot)}")
    return anomalies


def check_changelog(t: lsm3.Table) -> None:
    """The stored changelog of every retained commit, applied in order, gives the table as
    read at each snapshot (raises Anomaly): for tables whose producer stores complete
    changes (``lookup``)."""
    snaps = t.snapshots()
    states = {
        s.snapshot_id: {r[0]: r for r in table_rows(t.to_arrow(snapshot_id=s.snapshot_id))}
        for s in snaps
    }
    anomalies = replay_changelog(t, snaps, states)
    if anomalies:
        raise Anomaly("; ".join(anomalies[:3]))


def _digest_or_none(t: lsm3.Table, sid: int) -> tuple[int, int] | None:
    try:
        return digest_of_rows(_race_rows(t, sid))
    except lsm3.Lsm3Error:
        return None


# =========================================================================== load

LOAD_SCHEMA = pa.schema([("id", pa.int64()), ("payload", pa.string()), ("n", pa.int64())])


def load_worker_main(args: argparse.Namespace) -> int:
    """A writer at a sustained rate with a small memtable budget; prints JSON figures."""
    import compactor

    stall_log: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "write stall" in record.getMessage():
                stall_log.append(record.getMessage())

    logging.getLogger("lsm3.write.writer").addHandler(Catch())
    options = {
        "memtable_bytes": args.memtable_bytes,
        "write_stall": args.stall,
        "num_sorted_run_stop_trigger": args.stop_trigger,
        "num_sorted_run_trigger": max(2, args.stop_trigger - 3),
        "write_stall_timeout_seconds": 30,
        "latest_hint_interval": 8,
    }
    table = lsm3.create_table(
        LocalStore(args.root, fsync=False), LOAD_SCHEMA, "id", options=options
    )
    # The compactor runs as its own process (as deployed), so this process's memory figures
    # are the writer's alone.
    comp = None
    if args.compact_every > 0:
        comp = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "compactor",
                "--interval",
                str(args.compact_every),
                "--owner",
                "load",
                "--json",
                args.root,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
            text=True,
        )
    pool = pa.default_memory_pool()
    rng = random.Random(0)
    payload = "x" * 48
    writer = table.writer("load")

    def commit_through_stalls() -> int:
        """Commit; on a stall, compact (the operator's answer) and commit again. Returns the
        number of stalls."""
        stalls = 0
        while True:
            try:
                writer.commit()
                return stalls
            except lsm3.WriteStalled:
                stalls += 1
                compactor.compact(table, owner="load")

    started = time.monotonic()
    rows = batches = commits = stalled = 0
    stall_wait = 0.0
    peak_half: int | None = None
    key_space = args.keys
    while time.monotonic() - started < args.seconds:
        ids = [rng.randrange(key_space) for _ in range(args.batch_rows)]
        writer.upsert(
            pa.table(
                {
                    "id": pa.array(ids, pa.int64()),
                    "payload": pa.array([payload + str(i) for i in ids]),
                    "n": pa.array([batches] * len(ids), pa.int64()),
                }
            )
        )
        rows += len(ids)
        batches += 1
        if batches % args.commit_every == 0:
            t0 = time.monotonic()
            stalled += commit_through_stalls()
            stall_wait += time.monotonic() - t0
            commits += 1
        if peak_half is None and time.monotonic() - started >= args.seconds / 2:
            peak_half = pool.max_memory()
        ahead = started + rows / args.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    stalled += commit_through_stalls()  # the last batch can stall as well
    elapsed = time.monotonic() - started
    compactions = 0
    if comp is not None:
        comp.send_signal(signal.SIGTERM)
        out, _ = comp.communicate(timeout=120)
        compactions = sum('"event": "task"' in line for line in out.splitlines())
    result = {
        "rows": rows,
        "batches": batches,
        "commits": commits,
        "seconds": round(elapsed, 2),
        "rate": round(rows / elapsed),
        "memtable_bytes": args.memtable_bytes,
        "stall": args.stall,
        "peak_arrow_bytes": pool.max_memory(),
        "peak_arrow_bytes_half": peak_half,
        "rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "stall_warnings": len(stall_log),
        "stall_errors": stalled,
        "commit_seconds": round(stall_wait, 2),
        "compactions": compactions,
        "files": len(lsm3.open_table(LocalStore(args.root)).files()),
        "live_rows": lsm3.open_table(LocalStore(args.root)).count(),
    }
    print(json.dumps(result), flush=True)
    return 0


def run_load(
    root: str,
    seconds: float,
    rate: int = 20_000,
    memtable_bytes: int = 1 << 20,
    stall: str = "warn",
    stop_trigger: int = 8,
    compact_every: float = 0.0,
    commit_every: int = 20,
    batch_rows: int = 1000,
    keys: int = 200_000,
) -> dict[str, Any]:
    """Run the load worker in a fresh process (clean memory figures); its JSON figures."""
    cmd = [PYTHON, THIS, "load-worker", root, "--seconds", str(seconds), "--rate", str(rate)]
    cmd += ["--memtable-bytes", str(memtable_bytes), "--stall", stall]
    cmd += ["--stop-trigger", str(stop_trigger), "--compact-every", str(compact_every)]
    cmd += ["--commit-every", str(commit_every), "--batch-rows", str(batch_rows)]
    cmd += ["--keys", str(keys)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 300, cwd=REPO, check=False
    )
    if out.returncode != 0:
        raise AssertionError(f"load worker failed ({out.returncode}): {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# =========================================================================== command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/soak.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    soak = sub.add_parser("run", help="the soak: every harness, long; writes the figures")
    soak.add_argument("--minutes", type=float, default=12.0, help="total budget (default 12)")
    soak.add_argument("--workdir", default=None, help="where tables go (default: a temp dir)")
    soak.add_argument("--no-write", action="store_true", help="do not update RELIABILITY.md")
    rw = sub.add_parser("race-writer")
    rw.add_argument("uri")
    rw.add_argument("--writer", type=int, required=True)
    rw.add_argument("--seconds", type=float, required=True)
    rw.add_argument("--pause", type=float, default=0.3)
    rw.add_argument("--storage-options", default="")
    lw = sub.add_parser("load-worker")
    lw.add_argument("root")
    lw.add_argument("--seconds", type=float, required=True)
    lw.add_argument("--rate", type=float, required=True)
    lw.add_argument("--memtable-bytes", type=int, required=True)
    lw.add_argument("--stall", default="warn")
    lw.add_argument("--stop-trigger", type=int, default=8)
    lw.add_argument("--compact-every", type=float, default=0.0)
    lw.add_argument("--commit-every", type=int, default=20)
    lw.add_argument("--batch-rows", type=int, default=1000)
    lw.add_argument("--keys", type=int, default=200_000)
    args = parser.parse_args(argv)
    if args.command == "race-writer":
        return race_writer_main(args)
    if args.command == "load-worker":
        return load_worker_main(args)
    return soak_main(args)


def soak_main(args: argparse.Namespace) -> int:
    """Every harness, for about ``--minutes``; prints the figures and writes them into
    docs/RELIABILITY.md (between the soak markers)."""
    import platform
    import tempfile

    from lsm3.testing.devserver import LocalS3Server

    logging.basicConfig(level=logging.ERROR)
    logging.disable(logging.WARNING)
    scale = args.minutes / 12.0
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lsm3-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {}

    def phase(name: str) -> Callable[[Callable[[], Any]], Any]:
        def run(fn: Callable[[], Any]) -> Any:
            t0 = time.monotonic()
            print(f"[soak] {name} ...", flush=True)
            result = fn()
            report[f"{name}_seconds"] = round(time.monotonic() - t0)
            print(f"[soak] {name} done in {time.monotonic() - t0:.0f} s", flush=True)
            return result

        return run

    def budget(seconds: float) -> float:
        return seconds * scale

    # ---- faults
    def faults() -> FaultFigures:
        total = FaultFigures()
        deadline = time.monotonic() + budget(80)
        seed = 0
        while time.monotonic() < deadline:
            backend = ("memory", "local")[seed % 2]
            root = str(work / f"faults-{seed}") if backend == "local" else None
            # every third run on a table that stores its changes
            options = {"changelog_producer": "lookup"} if seed % 3 == 2 else None
            total.merge(
                run_random_faults(
                    seed, steps=40, probability=0.1, backend=backend, root=root, options=options
                )
            )
            seed += 1
        with LocalS3Server.start_moto() as server:
            for i in range(max(1, int(3 * scale))):
                bucket = f"soak-faults-{i}-{uuid.uuid4().hex[:8]}"
                server.s3.create_bucket(bucket)
                total.merge(
                    run_random_faults(
                        1000 + i,
                        steps=25,
                        probability=0.1,
                        backend="s3",
                        root=f"s3://{bucket}/t",
                        storage_options=server.s3.storage_options(),
                    )
                )
        return total

    report["faults"] = phase("faults")(faults)

    # ---- crash points and random kills
    def crashes() -> CrashFigures:
        total = CrashFigures()
        for scenario in ("writer", "compactor", "maintenance"):
            total.merge(run_crash_points(str(work / f"crash-{scenario}"), scenario, seed=1))
            total.merge(
                run_crash_points(
                    str(work / f"crash-{scenario}-lookup"),
                    scenario,
                    seed=2,
                    options={"changelog_producer": "lookup"},
                )
            )
        total.merge(run_sigkills(str(work / "sigkill"), seconds=budget(160), seed=5))
        total.merge(
            run_sigkills(
                str(work / "sigkill-consumer"),
                seconds=budget(80),
                seed=6,
                consumer=True,
                changelog_producer="lookup",
            )
        )
        return total

    report["crash"] = phase("crash")(crashes)

    # ---- races
    def races() -> RaceFigures:
        total = RaceFigures()
        with LocalS3Server.start_seaweedfs() as server:
            for i in range(3):
                bucket = f"soak-race-{i}-{uuid.uuid4().hex[:8]}"
                server.s3.create_bucket(bucket)
                total.merge(
                    run_races(
                        f"s3://{bucket}/t",
                        server.s3.storage_options(),
                        seconds=budget(30),
                        writers=3 + i % 2,
                        seed=i,
                        aggregate=i == 2,
                    )
                )
        for i in range(2):
            total.merge(
                run_races(
                    str(work / f"race-local-{i}"),
                    None,
                    seconds=budget(20),
                    writers=4,
                    pause=0.1,
                    seed=10 + i,
                    aggregate=i == 1,
                )
            )
        return total

    report["races"] = phase("races")(races)

    # ---- continued writers, paused committers (the commit-identity harness)
    def identity() -> IdentityFigures:
        total = IdentityFigures()
        deadline = time.monotonic() + budget(60)
        seed = 0
        while time.monotonic() < deadline:
            root = work / f"identity-{seed}"
            # every other run on a table that stores its changes
            options = {"changelog_producer": "lookup"} if seed % 2 else None
            inner = LocalStore(str(root), fsync=False)
            total.merge(run_continued_writers(inner, seed, 60, options=options))
            seed += 1
        with LocalS3Server.start_seaweedfs() as server:
            for i in range(max(1, int(4 * scale))):
                bucket = f"soak-identity-{i}-{uuid.uuid4().hex[:8]}"
                server.s3.create_bucket(bucket)
                inner = open_store(f"s3://{bucket}/t", server.s3.storage_options())
                total.merge(run_continued_writers(inner, 5000 + i, 40))
        return total

    report["identity"] = phase("identity")(identity)

    # ---- hostile input
    def hostile() -> Counter[tuple[str, str]]:
        import test_hostile

        return test_hostile.run_hostile(max(50, int(400 * scale)))

    report["hostile"] = phase("hostile")(hostile)

    # ---- load
    def load() -> list[dict[str, Any]]:
        runs = []
        for memtable in (1 << 20, 8 << 20):
            runs.append(
                run_load(
                    str(work / f"load-{memtable}"),
                    seconds=budget(40),
                    rate=20_000,
                    memtable_bytes=memtable,
                    compact_every=2.0,
                    commit_every=25,
                )
            )
        runs.append(
            run_load(
                str(work / "load-error"),
                seconds=budget(10),
                rate=20_000,
                memtable_bytes=1 << 20,
                stall="error",
                stop_trigger=4,
                commit_every=10,
            )
        )
        return runs

    report["load"] = phase("load")(load)
    report["total_seconds"] = round(time.monotonic() - started)
    report["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report["machine"] = (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, pyarrow {pa.__version__}"
    )
    report["command"] = f"make soak ARGS='--minutes {args.minutes:g}'"
    text = render(report)
    print(text)
    if not args.no_write:
        write_figures(text)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    anomalies = report["faults"].anomalies + report["crash"].anomalies + report["races"].anomalies
    anomalies += report["identity"].anomalies
    escaped = [k for k in report["hostile"] if k[1].startswith("ESCAPED")]
    return 1 if anomalies or escaped else 0


BEGIN = "<!-- soak figures: begin (written by tests/soak.py) -->"
END = "<!-- soak figures: end -->"


def write_figures(text: str) -> None:
    doc = RELIABILITY_MD.read_text() if RELIABILITY_MD.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    RELIABILITY_MD.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render(r: dict[str, Any]) -> str:
    """The figures as Markdown."""
    f: FaultFigures = r["faults"]
    c: CrashFigures = r["crash"]
    ra: RaceFigures = r["races"]
    h: Counter[tuple[str, str]] = r["hostile"]
    ci: IdentityFigures = r["identity"]
    out = [
        f"Run {r['when']} on {r['machine']}: `{r['command']}` took {r['total_seconds']} s "
        f"(faults {r['faults_seconds']} s, crashes {r['crash_seconds']} s, races "
        f"{r['races_seconds']} s, commit identity {r['identity_seconds']} s, hostile input "
        f"{r['hostile_seconds']} s, load "
        f"{r['load_seconds']} s).",
        "",
        "**Kills survived** (every one followed by the checks of the crash section):",
        "",
        _table(["what was killed", "kills"], sorted(c.kills.items())),
        "",
        f"Runs that reached their end before the crash point: {c.completed}. Commits whose "
        f"call returned, found exactly once: {c.commits_verified}. Snapshot reads compared "
        f"with the model: {c.snapshots_verified}. DuckDB mirrors of a killed changelog "
        f"consumer compared with the table at their position: {c.mirrors_verified}. "
        f"Orphans left by the kills: {c.orphans_seen} "
        f"(every one found by `remove_orphan_files`; {c.orphans_removed} removed by the "
        f"sweeps). Temporary files of interrupted local puts, invisible to orphan removal: "
        f"{c.tmp_files}. Anomalies: **{len(c.anomalies)}**.",
        "",
        f"**Injected faults** ({f.runs} random-fault runs, {f.steps} steps, {f.commits} "
        f"commits, {f.snapshots_verified} snapshot reads compared with the model; "
        f"anomalies: **{len(f.anomalies)}**). Outcome of the operation each fault hit: "
        "*absorbed* = lsm3 retried and the operation succeeded; *raised* = the operation "
        "failed with the error shown and nothing was half-committed (the client then "
        "retried with the same commit id):",
        "",
        _table(
            ["fault", "injected", "outcomes"],
            [
                (
                    kind,
                    n,
                    ", ".join(f"{o}: {m}" for (k, o), m in sorted(f.outcomes.items()) if k == kind),
                )
                for kind, n in sorted(f.injected.items())
            ],
        ),
        "",
        "Faults by request: "
        + ", ".join(f"{op} {n}" for op, n in sorted(f.by_op.items(), key=lambda x: -x[1]))
        + ".",
        "",
        f"**Races**: {ra.runs} runs ({ra.writers} writer processes in all, "
        f"{ra.seconds:.0f} s of racing, SeaweedFS and a local directory, a compactor process "
        f"and 2 reader threads each): {ra.commits} commits returned and found exactly once, "
        f"{ra.failed_attempts} failed attempts retried with the same commit id, "
        f"{ra.snapshots} snapshots, {ra.compactions} compactions, {ra.reads_checked} reads "
        f"compared with the model at their snapshot. Anomalies: **{len(ra.anomalies)}**.",
        "",
        f"**Continued writers and paused committers** ({ci.runs} runs of the "
        f"commit-identity harness, {ci.steps} steps, local directory and SeaweedFS): "
        f"{ci.batches} main-writer commits returned, {ci.failed_commits} raised (faults "
        f"injected: {', '.join(f'{k} {n}' for k, n in sorted(ci.injected.items()))}) and the "
        f"writer went on, {ci.settled_later} failed batches settled by a later commit, "
        f"{ci.uncertain} undecidable (CommitUncertain, anonymous writer after expiry); "
        f"{ci.rival_batches} rival commits, {ci.pauses} pauses before a snapshot put spanning "
        f"rival commits, {ci.compactions} compactions and {ci.expiries} expiries; "
        f"{ci.tags} tags created and {ci.tags_refused} refused while expiry ran; "
        f"{ci.snapshots_checked} reads compared with the fold of landed batches. Anomalies: "
        f"**{len(ci.anomalies)}**.",
        "",
        "**Hostile inputs** (how each input ended):",
        "",
        _table(
            ["input", "outcome", "count"],
            [(d, o, n) for (d, o), n in sorted(h.items())],
        ),
        "",
        "**Sustained load** (one fresh process each, 20,000 rows/s target, 1,000-row batches):",
        "",
        _table(
            [
                "memtable budget",
                "stall mode",
                "rows",
                "rate/s",
                "commits",
                "files",
                "peak Arrow memory",
                "at half time",
                "peak RSS",
                "stall warnings",
                "stall errors",
            ],
            [
                (
                    _mib(x["memtable_bytes"]),
                    x["stall"],
                    x["rows"],
                    x["rate"],
                    x["commits"],
                    x["files"],
                    _mib(x["peak_arrow_bytes"]),
                    _mib(x["peak_arrow_bytes_half"] or 0),
                    _mib(x["rss_peak_bytes"]),
                    x["stall_warnings"],
                    x["stall_errors"],
                )
                for x in r["load"]
            ],
        ),
    ]
    anomalies = f.anomalies + c.anomalies + ra.anomalies + ci.anomalies
    if anomalies:
        out += ["", "Anomalies:", ""] + [f"- {a}" for a in anomalies[:20]]
    return "\n".join(out)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


if __name__ == "__main__":
    sys.exit(main())
