"""The commit-identity harness: writers that go on after failed commits, committers paused
across rival commits, compaction and expiry, and tags racing expiry.

The random-fault harness (``soak.run_random_faults``) opens a fresh writer for every attempt
and never pauses a committer, so it could not see a writer that drops or re-applies a batch
after an ambiguous failure, nor a commit that lands under a name expiry had freed. This one
keeps one long-lived *main* writer (named or anonymous, by seed) and, per step, either:

* writes a batch and commits it with a fault at a random request of the commit (lost
  response, 5xx, reset, timeout), optionally followed by an outage for the rest of the call,
  and goes on writing whatever ``commit()`` said;
* commits with a pause just before its snapshot put, during which rival writers commit,
  the compactor runs and expiry deletes snapshots (``FaultyStore.pause``: no sleeps);
* lets a rival writer commit, or creates a tag while expiry runs under its feet.

Every batch carries its id in the commit metadata. Before any expiry the harness records the
APPEND snapshots of the history, so at the end it knows the order in which batches landed and
checks, through a fresh fault-free reader: no batch landed twice; every batch written before
a ``commit()`` that returned landed; the table (newest, a random retained snapshot, every
tag) equals the fold of the landed batches in snapshot order; a cold reader given any
earlier id as its (advisory) LATEST hint, and a reader that lived through it all and only
refreshes, both find the newest snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

import lsm3
from compactor import compact
from compactor.maintenance import expire_snapshots, remove_orphan_files
from lsm3.io.store import ObjectStore
from lsm3.testing.faults import FaultyStore, Injection

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
KEYS = 24
FAULTS = ("ambiguous", "ambiguous", "transient", "reset", "timeout")

Rows = dict[int, str | None]  # key -> value, None for a delete


@dataclass
class IdentityFigures:
    runs: int = 0
    steps: int = 0
    batches: int = 0
    rival_batches: int = 0
    failed_commits: int = 0
    settled_later: int = 0
    pauses: int = 0
    expiries: int = 0
    compactions: int = 0
    tags: int = 0
    tags_refused: int = 0
    uncertain: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    snapshots_checked: int = 0
    anomalies: list[str] = field(default_factory=list)

    def merge(self, other: IdentityFigures) -> None:
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, Counter):
                mine.update(theirs)
            else:
                setattr(self, name, mine + theirs)


class _Run:
    def __init__(
        self,
        inner: ObjectStore,
        seed: int,
        figures: IdentityFigures,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.inner = inner
        self.figures = figures
        self.store = FaultyStore(inner, seed=seed, hang_seconds=0.0)
        options = {"commit_retries": 2, **(options or {})}
        self.stores_changes = options.get("changelog_producer") == "lookup"
        self.table = lsm3.create_table(self.store, SCHEMA, "id", options=options)
        self.named = self.rng.random() < 0.5
        self.writer = self.table.writer("main" if self.named else None)
        self.contents: dict[str, Rows] = {}  # batch id -> what it wrote
        self.landed: dict[int, str] = {}  # snapshot id -> batch id, as recorded
        self.must_land: set[str] = set()
        self.open_batch: str | None = None  # rows in the main writer, not yet committed
        self.attempted: list[str] = []  # batches of failed attempts, in order
        self.next_id = 0
        # A reader that lives through everything and only refreshes (a long-running process).
        self.reader = lsm3.open_table(inner)

    # ---- bookkeeping

    def anomaly(self, text: str) -> None:
        self.figures.anomalies.append(
            f"seed {self.seed} ({'named' if self.named else 'anonymous'}): {text}"
        )

    def fresh(self) -> lsm3.Table:
        return lsm3.open_table(self.inner)

    def record(self) -> None:
        """Note which batch each APPEND snapshot of the history carries (before expiry)."""
        t = self.fresh()
        for sid in t.snapshot_ids():
            if sid in self.landed:
                continue
            snap = t.log.try_load(sid)
            if snap is not None and snap.kind == "APPEND" and "batch" in snap.metadata:
                batch = snap.metadata["batch"]
                if batch in self.landed.values():
                    self.anomaly(f"batch {batch} landed twice (snapshots {sid} and before)")
                self.landed[sid] = batch

    def new_batch(self, prefix: str) -> tuple[str, Rows]:
        self.next_id += 1
        bid = f"{prefix}{self.next_id}"
        rows: Rows = {}
        for _ in range(self.rng.randint(1, 6)):
            k = self.rng.randrange(KEYS)
            rows[k] = None if self.rng.random() < 0.2 else f"{bid}-{k}"
        self.contents[bid] = rows
        return bid, rows

    @staticmethod
    def write(w: lsm3.Writer, rows: Rows) -> None:
        for k, v in rows.items():  # one call per record: later calls are newer
            if v is None:
                w.delete([k])
            else:
                w.upsert([{"id": k, "v": v}])

    # ---- actions of others (through the fault-free store)

    def rival_commits(self, n: int) -> None:
        for _ in range(n):
            bid, rows = self.new_batch("r")
            w = self.fresh().writer()
            self.write(w, rows)
            w.commit(metadata={"batch": bid})
            self.must_land.add(bid)
            self.figures.rival_batches += 1

    def expire(self) -> None:
        self.record()
        expire_snapshots(self.fresh(), retain_last=self.rng.randint(1, 3), older_than=0)
        self.figures.expiries += 1

    def compact(self) -> None:
        with contextlib.suppress(lsm3.Lsm3Error):  # a lease held by a paused compactor
            compact(self.fresh(), policy=self.rng.choice(["full", "universal"]), owner="rival")
        self.figures.compactions += 1

    def interference(self) -> Callable[[], None]:
        plan = [self.rng.choice(["rivals", "compact", "expire"]) for _ in range(3)]

        def run() -> None:
            self.figures.pauses += 1
            for what in plan:
                if what == "rivals":
                    self.rival_commits(self.rng.randint(1, 12))
                elif what == "compact":
                    self.compact()
                else:
                    self.expire()

        return run

    # ---- the main writer

    def main_commit(self) -> None:
        if self.open_batch is None:
            bid, rows = self.new_batch("m")
            self.write(self.writer, rows)
            self.open_batch = bid
        bid = self.open_batch
        mode = self.rng.choice(["fault", "fault", "pause", "plain"])
        if mode == "fault":
            kind = self.rng.choice(FAULTS)
            self.store.script(
                kind, self.rng.choice(["write", "*"]), "*", nth=self.rng.randint(1, 8)
            )
            if self.rng.random() < 0.5:

                def offline(injection: Injection) -> None:
                    self.figures.injected[injection.fault] += 1
                    self.store.script("reset", "*", "*", nth=1, times=None)

                self.store.on_inject = offline
            else:
                self.store.on_inject = lambda i: self.figures.injected.update([i.fault])
        elif mode == "pause":
            nth = self.rng.randint(1, 2)
            self.store.pause("put_if_absent", "snapshot/*", self.interference(), nth=nth)
        commit_id = f"{bid}" if self.named and self.rng.random() < 0.7 else None
        unresolved_before = self.writer.unresolved_commit
        try:
            self.writer.commit(commit_id=commit_id, metadata={"batch": bid})
        except lsm3.CommitUncertain:
            # Allowed only for an anonymous writer whose history was expired meanwhile: the
            # batches may have landed (once) or not; the writer drops them.
            self.figures.uncertain += 1
            if self.named:
                self.anomaly("a named writer could not settle its commit")
            self.writer.abort()
            self.attempted = []
            self.open_batch = None
            return
        except lsm3.Lsm3Error:
            self.figures.failed_commits += 1
            if self.writer.unresolved_commit not in (None, unresolved_before):
                self.attempted.append(bid)  # this batch's attempt failed: kept apart
                self.open_batch = None
            # else nothing of this batch was attempted (a flush, or settling an earlier
            # attempt, failed): its rows are still in the writer and commit next time
            return
        finally:
            self.store.clear()
            self.store.on_inject = None
        self.figures.settled_later += len(self.attempted)
        self.must_land.update([*self.attempted, bid])
        self.attempted = []
        self.open_batch = None
        self.figures.batches += 1

    def tag_during_expiry(self) -> None:
        ids = self.fresh().snapshot_ids()
        if not ids:
            return
        sid = self.rng.choice(ids)
        name = f"t{self.next_id}"
        self.next_id += 1
        self.store.pause("put_if_absent", "tag/*", self.expire)
        try:
            self.table.create_tag(name, snapshot_id=sid)
            self.figures.tags += 1
        except lsm3.SnapshotNotFound:
            self.figures.tags_refused += 1
        finally:
            self.store.clear()

    # ---- verification

    def fold(self, upto: int) -> dict[int, str]:
        state: dict[int, str] = {}
        for sid in sorted(self.landed):
            if sid > upto:
                break
            for k, v in self.contents[self.landed[sid]].items():
                if v is None:
                    state.pop(k, None)
                else:
                    state[k] = v
        return state

    def check(self, changelog: bool = False) -> None:
        """The checks of the module docstring; with ``changelog`` (on a table that stores
        its changes) also that the stored changelog replays to every retained snapshot."""
        self.record()
        t = self.fresh()
        if changelog and self.stores_changes:
            from soak import Anomaly, check_changelog  # soak imports this module

            try:
                check_changelog(t)
            except Anomaly as exc:
                self.anomaly(f"changelog: {exc}")
        missing = self.must_land - set(self.landed.values())
        if missing:
            self.anomaly(f"batches reported committed but not in the history: {sorted(missing)}")
        counts = Counter(self.landed.values())
        twice = [b for b, n in counts.items() if n > 1]
        if twice:
            self.anomaly(f"batches applied more than once: {twice}")
        ids = t.snapshot_ids()
        if ids:
            self.check_latest(ids[-1])
        targets = {("newest", ids[-1]), ("retained", self.rng.choice(ids))} if ids else set()
        targets |= {(f"tag {n}", s) for n, s in t.tags().items()}
        for what, sid in targets:
            try:
                if what.startswith("tag "):
                    read = t.to_arrow(tag=what[4:])
                else:
                    read = t.to_arrow(snapshot_id=sid)
            except lsm3.Lsm3Error as exc:
                self.anomaly(f"{what} (snapshot {sid}) cannot be read: {exc}")
                continue
            got = {r["id"]: r["v"] for r in read.to_pylist()}
            self.figures.snapshots_checked += 1
            if got != self.fold(sid):
                self.anomaly(f"{what} (snapshot {sid}) differs from the fold of landed batches")

    def check_latest(self, newest: int) -> None:
        """Every way of finding the newest snapshot finds ``newest``: a cold reader whose
        advisory LATEST hint holds any id ever used (stale, expired, or re-taken by a paused
        committer: all are legal hints), and the long-lived reader's refresh."""
        hint = self.rng.randint(1, newest)
        self.inner.put("snapshot/LATEST", str(hint).encode())
        found = {
            f"a cold reader with the hint {hint}": self.fresh().current_snapshot(),
            "the long-lived reader's refresh": self.reader.refresh(),
        }
        for who, snap in found.items():
            if snap is None or snap.snapshot_id != newest:
                got = snap.snapshot_id if snap else None
                self.anomaly(f"{who} took snapshot {got} for the newest, not {newest}")


def run_continued_writers(
    inner: ObjectStore, seed: int, steps: int = 40, options: dict[str, Any] | None = None
) -> IdentityFigures:
    """One run of the harness on ``inner`` (an empty table root); see the module docstring.
    ``options``: table options (with ``changelog_producer = "lookup"`` the stored changelog
    is replayed against every retained snapshot every ten steps and at the end)."""
    figures = IdentityFigures(runs=1)
    for name in ("lsm3", "compactor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    run = _Run(inner, seed, figures, options)
    for step in range(steps):
        figures.steps += 1
        roll = run.rng.random()
        if roll < 0.6:
            run.main_commit()
        elif roll < 0.75:
            run.rival_commits(1)
        elif roll < 0.85:
            run.tag_during_expiry()
        elif roll < 0.92:
            run.compact()
        else:
            run.expire()
        run.check(changelog=step % 10 == 9)
        if figures.anomalies:
            break
    # Settle the writer: what it still holds, and one batch more, land exactly once.
    if run.open_batch is None:
        run.open_batch, rows = run.new_batch("f")
        run.write(run.writer, rows)
    with contextlib.suppress(lsm3.CommitUncertain):
        run.writer.commit(metadata={"batch": run.open_batch})
        run.must_land.update([*run.attempted, run.open_batch])
    run.check()
    remove_orphan_files(run.fresh(), older_than=0)
    run.check(changelog=True)
    return figures
