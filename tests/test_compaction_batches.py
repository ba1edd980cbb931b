"""Batched compaction commits: an executor that hands over the outputs of several finished
tasks together (``run_batches``, as the Ray executor does) gets them committed in one COMPACT
snapshot; a batch in which one task lost its inputs to another commit falls back to one
commit per task, abandoning only that task. Either way no row is lost or duplicated: the
table reads as the model and as a local compaction leaves it."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

import lsm3
from compactor import compact
from compactor.executor import Admit, Job, LocalExecutor, Outputs, write_outputs
from compactor.policy import PolicyOptions, plan
from lsm3.write.commit import commit_files

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.int64())])


def make_table(root: Path) -> tuple[lsm3.Table, dict[int, int]]:
    """4 buckets, 3 overlapping commits with updates and deletes; the dict model."""
    t = lsm3.create_table(str(root), SCHEMA, "id", buckets=4)
    rng = random.Random(11)
    model: dict[int, int] = {}
    for c in range(3):
        ids = rng.sample(range(2000), 600)
        gone = rng.sample(ids, 60)
        with t.writer() as w:
            w.upsert(pa.table({"id": ids, "v": [c * 10_000 + i for i in ids]}))
            w.delete(pa.table({"id": gone}))
        model.update({i: c * 10_000 + i for i in ids})
        for i in gone:
            model.pop(i, None)
    return t, model


def as_model(t: lsm3.Table) -> dict[int, int]:
    rows = t.to_arrow()
    assert len(set(rows.column("id").to_pylist())) == rows.num_rows  # no duplicated key
    return dict(zip(rows.column("id").to_pylist(), rows.column("v").to_pylist(), strict=True))


class AllAtOnce(LocalExecutor):
    """Runs every job, then hands all outputs over as one batch; ``before_handover`` runs in
    between (a rival commit)."""

    def __init__(self, before_handover: Callable[[], None] | None = None) -> None:
        self.before_handover = before_handover

    def run_batches(
        self, table: Any, jobs: Sequence[Job], admit: Admit, heartbeat: Callable[[], None]
    ) -> Iterator[list[Outputs]]:
        batch = list(self.run(table, jobs, admit, heartbeat))
        if self.before_handover is not None:
            self.before_handover()
        yield batch


def compactions(t: lsm3.Table, after: int) -> list[int]:
    """Snapshots after ``after`` that removed files (lease commits remove none)."""
    return [
        s.snapshot_id
        for s in t.snapshots()
        if s.snapshot_id > after and s.summary.get("removed_files", 0) > 0
    ]


def test_tasks_finished_together_commit_in_one_snapshot(tmp_path: Path) -> None:
    t, model = make_table(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    before = t.refresh()
    assert before is not None
    result = compact(t, policy="full", executor=AllAtOnce())
    assert len(result.tasks) == 4 and not result.abandoned
    assert len({r.snapshot_id for r in result.tasks}) == 1
    assert compactions(t, before.snapshot_id) == [result.tasks[0].snapshot_id]  # one for four
    local = compact(str(tmp_path / "b"), policy="full")
    b = lsm3.open_table(str(tmp_path / "b"))
    assert as_model(t) == as_model(b) == model
    assert sorted((f.bucket, f.rows, f.min_key, f.max_key) for f in t.files()) == sorted(
        (f.bucket, f.rows, f.min_key, f.max_key) for f in b.files()
    )
    assert len(local.tasks) == 4 and sum(r.requests for r in result.tasks) > 0


def test_a_batch_with_a_lost_input_commits_the_others_one_by_one(tmp_path: Path) -> None:
    t, model = make_table(tmp_path / "t")
    before = t.refresh()
    assert before is not None

    def rival_compacts_bucket_0() -> None:
        """A rival commit removes bucket 0's inputs (compacted on their own) before the
        batch is committed."""
        rival = lsm3.open_table(str(tmp_path / "t"))
        task = next(x for x in plan(rival.files_of(rival.refresh()), "full", PolicyOptions()))
        commit_files(
            rival,
            added=write_outputs(rival, task, False),
            removed=list(task.inputs),
            seq_count=0,
            kind="COMPACT",
            writer_id=None,
            commit_id="rival",
            metadata={},
            assign_offset=False,
        )
        lost.append(task.bucket)

    lost: list[int] = []
    result = compact(t, policy="full", executor=AllAtOnce(rival_compacts_bucket_0))
    assert len(result.tasks) == 3 and len(result.abandoned) == 1
    assert {r.bucket for r in result.tasks} == {0, 1, 2, 3} - set(lost)
    assert len({r.snapshot_id for r in result.tasks}) == 3  # fell back to one commit each
    assert as_model(lsm3.open_table(str(tmp_path / "t"))) == model
