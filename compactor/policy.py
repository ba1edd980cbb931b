"""Compaction policies: pure functions from the files of one bucket to compaction tasks.

No storage here: a policy sees the live files of one (partition, bucket), grouped into sorted
runs, and returns what to merge and into which level. That keeps policies testable with plain
lists, and lets the executor re-plan on any snapshot.

Sorted runs, newest first: the level-0 files of one flush (one ``run_id``) form a run, then
each level >= 1 is one run made of key-disjoint files, newer levels before older ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lsm3.format.metadata import DataFile


@dataclass(frozen=True)
class PolicyOptions:
    """The table options policies read (names as in ``lsm3.format.schema.DEFAULT_OPTIONS``)."""

    num_sorted_run_trigger: int = 5
    num_sorted_run_stop_trigger: int = 8
    max_size_amplification_percent: int = 200
    size_ratio_percent: int = 1
    num_levels: int = 6
    l0_file_trigger: int = 4
    level_size_ratio: int = 10
    level_base_bytes: int = 256 * 1024 * 1024

    @property
    def max_level(self) -> int:
        return self.num_levels - 1

    @staticmethod
    def from_options(options: dict[str, Any]) -> PolicyOptions:
        names = PolicyOptions.__dataclass_fields__
        return PolicyOptions(**{k: v for k, v in options.items() if k in names})


@dataclass(frozen=True)
class SortedRun:
    """Files whose key ranges are disjoint and that were written as one sorted sequence."""

    level: int
    files: tuple[DataFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def max_seq(self) -> int:
        return max(f.effective_max_seq for f in self.files)


@dataclass(frozen=True)
class Task:
    """Merge ``inputs`` (all from one partition and bucket) into ``output_level``."""

    partition: tuple[Any, ...]
    bucket: int
    inputs: tuple[DataFile, ...]
    output_level: int
    reason: str
    input_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_bytes", sum(f.size for f in self.inputs))


def sorted_runs(files: Sequence[DataFile]) -> list[SortedRun]:
    """The bucket's sorted runs, newest first."""
    by_run: dict[str, list[DataFile]] = {}
    for f in files:
        if f.level == 0:
            by_run.setdefault(f.run, []).append(f)
    level0 = [SortedRun(0, tuple(sorted(fs, key=lambda f: f.min_key))) for fs in by_run.values()]
    runs = sorted(level0, key=lambda r: r.max_seq, reverse=True)
    for level in sorted({f.level for f in files if f.level > 0}):
        in_level = sorted((f for f in files if f.level == level), key=lambda f: f.min_key)
        runs.append(SortedRun(level, tuple(in_level)))
    return runs


def _task(
    runs: Sequence[SortedRun], output_level: int, reason: str, files: Sequence[DataFile]
) -> Task:
    first = files[0]
    inputs = tuple(f for r in runs for f in r.files)
    return Task(first.partition, first.bucket, inputs, output_level, reason)


# --------------------------------------------------------------------------- universal


#: How far a pick forced by the run count extends: on through each older run no bigger than
#: (100 + this)% of what it holds, so through runs up to twice its size. A forced pick must
#: rewrite the newest runs; if it stopped at a run much smaller than the next older one, that
#: run would absorb every later compaction's new data, rewritten each time while it grows
#: towards its neighbour (with fixed-cadence compaction, quadratic in the neighbour's size).
#: Carrying into the neighbour once the pick holds half of it keeps each run at most half
#: the next older one, as in a binary counter, so a run is rewritten O(log n) times. Neither
#: does the pick stop at a run smaller than the older ones behind it (it takes every older run
#: up to twice its size), so a small old run never sits under a big new one, where every later
#: pick would rewrite the big one. ``python -m bench.policy_replay`` measures it: on the
#: stream workload with the compactor every 4 commits, write amplification 5.09 with the
#: size ratio's 1% here, 4.69 with 100%; every 2 commits 7.81 -> 5.38; every 3 5.84 -> 4.96.
FORCED_PICK_RATIO_PERCENT = 100


def universal(files: Sequence[DataFile], opts: PolicyOptions) -> list[Task]:
    """RocksDB/Paimon-style universal compaction of one bucket.

    1. Fewer runs than the trigger: nothing to do.
    2. Size amplification: if all runs but the oldest weigh more than
       ``max_size_amplification_percent`` of the oldest, merge everything.
    3. Size ratio: from the newest run, take runs while the next run is no bigger than the
       accumulated size times (100 + ``size_ratio_percent``)%.
    4. Otherwise merge the newest ``runs - trigger + 2``, at least, and on through each older
       run at most twice the size of the pick (``FORCED_PICK_RATIO_PERCENT``): a bucket leaves
       every compaction with fewer runs than the trigger, so a compactor that runs every k
       commits keeps it below ``trigger - 1 + k`` runs (8 for the defaults and k = 4, the stop
       trigger), instead of letting it sit at the trigger and grow past it.
    """
    runs = sorted_runs(files)
    if len(runs) < opts.num_sorted_run_trigger:
        return []
    rest = sum(r.size for r in runs[:-1])
    if rest * 100 > opts.max_size_amplification_percent * runs[-1].size:
        return [_task(runs, opts.max_level, "size-amplification", files)]
    picked = _pick_by_size_ratio(runs, opts.size_ratio_percent)
    enough = min(len(runs), len(runs) - opts.num_sorted_run_trigger + 2)
    if picked < enough:
        picked = _pick_by_size_ratio(runs, FORCED_PICK_RATIO_PERCENT, start=enough)
        reason = "run-count"
    else:
        reason = "size-ratio"
    if picked < 2:
        return []
    return [_universal_task(runs, picked, reason, opts, files)]


def _pick_by_size_ratio(runs: Sequence[SortedRun], ratio_percent: int, start: int = 1) -> int:
    """How many of the newest runs to merge: at least ``start``, then on through each older run
    no bigger than the runs taken so far (plus ``ratio_percent``)."""
    size = sum(r.size for r in runs[:start])
    count = start
    while count < len(runs):
        nxt = runs[count].size
        if size * (100 + ratio_percent) < nxt * 100:
            break
        size += nxt
        count += 1
    return count


def _universal_task(
    runs: Sequence[SortedRun],
    count: int,
    reason: str,
    opts: PolicyOptions,
    files: Sequence[DataFile],
) -> Task:
    """Merge the newest ``count`` runs into the level just above the next older run.

    Levels >= 1 must stay ordered by age, so the output goes one level above the next run
    left alone; if that would be level 0, the pick extends through the following runs until
    it includes one at level >= 1 and takes its level.
    """
    if count >= len(runs):
        return _task(runs, opts.max_level, reason, files)
    output = runs[count].level - 1
    while output < 1 and count < len(runs):
        output = runs[count].level
        count += 1
    if count >= len(runs):
        output = opts.max_level
    return _task(runs[:count], max(output, 1), reason, files)


# --------------------------------------------------------------------------- leveled


def leveled(files: Sequence[DataFile], opts: PolicyOptions) -> list[Task]:
    """LevelDB/RocksDB-style leveled compaction of one bucket.

    Level 0 is merged into level 1 once it holds ``l0_file_trigger`` files. A level i >= 1
    over its budget (``level_base_bytes * level_size_ratio**(i-1)``) pushes its oldest file,
    with the overlapping files of level i+1, down one level. Levels >= 1 keep key-disjoint
    files, so a point read touches at most one file per level.
    """
    level0 = [f for f in files if f.level == 0]
    by_level: dict[int, list[DataFile]] = {}
    for f in files:
        if f.level > 0:
            by_level.setdefault(f.level, []).append(f)
    if len({f.run for f in level0}) >= opts.l0_file_trigger:
        lo = min(f.min_key for f in level0)
        hi = max(f.max_key for f in level0)
        overlap = [f for f in by_level.get(1, []) if f.max_key >= lo and f.min_key <= hi]
        inputs = level0 + overlap
        return [_task([SortedRun(0, tuple(inputs))], 1, "level0-files", files)]
    for level in range(1, opts.max_level):
        in_level = by_level.get(level, [])
        budget = opts.level_base_bytes * opts.level_size_ratio ** (level - 1)
        if sum(f.size for f in in_level) <= budget:
            continue
        victim = min(in_level, key=lambda f: (f.created_ms, f.min_key))
        below = [
            f
            for f in by_level.get(level + 1, [])
            if f.max_key >= victim.min_key and f.min_key <= victim.max_key
        ]
        return [_task([SortedRun(level, (victim, *below))], level + 1, f"level{level}-size", files)]
    return []


# --------------------------------------------------------------------------- full


def full(files: Sequence[DataFile], opts: PolicyOptions) -> list[Task]:
    """Everything into one sorted run at the last level (tombstones dropped)."""
    runs = sorted_runs(files)
    if not runs or (len(runs) == 1 and runs[0].level == opts.max_level):
        return []
    return [_task(runs, opts.max_level, "full", files)]


POLICIES = {"universal": universal, "leveled": leveled, "full": full}


def plan(files: Sequence[DataFile], policy: str, opts: PolicyOptions) -> list[Task]:
    """Tasks for every (partition, bucket) of ``files`` under ``policy``."""
    groups: dict[tuple[tuple[Any, ...], int], list[DataFile]] = {}
    for f in files:
        groups.setdefault((f.partition, f.bucket), []).append(f)
    tasks: list[Task] = []
    for key in sorted(groups, key=lambda k: (repr(k[0]), k[1])):
        tasks.extend(POLICIES[policy](groups[key], opts))
    return tasks


def drops_tombstones(task: Task, bucket_files: Sequence[DataFile], sequence_field: bool) -> bool:
    """Whether the task's output is the oldest data for its key range, so deletes and the
    versions they shadow can be dropped.

    True when no other live file of the bucket overlaps the inputs' key range with older
    data. Never with a sequence field: there versions are ordered by data, not by commit, so
    a record arriving later with a smaller sequence value must still meet the tombstone.
    """
    if sequence_field:
        return False
    names = {f.path for f in task.inputs}
    lo = min(f.min_key for f in task.inputs)
    hi = max(f.max_key for f in task.inputs)
    newest_input = max(f.effective_max_seq for f in task.inputs)
    for f in bucket_files:
        if f.path in names or f.max_key < lo or f.min_key > hi:
            continue
        if f.effective_min_seq <= newest_input:
            return False
    return True
