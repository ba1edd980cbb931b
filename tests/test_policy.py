"""Unit and property tests of the compaction policies (``compactor.policy``): pure functions of
hand-built ``DataFile`` lists, no storage.

The property tests also run a small in-memory LSM (file contents as ``{key: (seq, delete)}``)
through the policies: writers flush level-0 files, the policy plans, a task replaces its inputs
by key-disjoint outputs (dropping tombstones when ``drops_tombstones`` says so) and the merged
view must never change, while the level structure the policies rely on is kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compactor.policy import (
    PolicyOptions,
    Task,
    drops_tombstones,
    full,
    leveled,
    plan,
    sorted_runs,
    universal,
)
from lsm3.format.metadata import DataFile

_paths = itertools.count()


def df(
    level: int,
    lo: Any,
    hi: Any,
    seq: tuple[int, int] = (0, 0),
    size: int = 100,
    *,
    partition: tuple[Any, ...] = (),
    bucket: int = 0,
    deletes: int = 0,
    created_ms: int = 0,
    seq_offset: int = 0,
) -> DataFile:
    """A hand-built data file; ``lo``/``hi`` are key values (tuples for composite keys)."""
    n = next(_paths)
    return DataFile(
        path=f"data/bucket-{bucket}/{n:032x}.parquet",
        level=level,
        partition=partition,
        bucket=bucket,
        min_key=lo if isinstance(lo, tuple) else (lo,),
        max_key=hi if isinstance(hi, tuple) else (hi,),
        min_seq=seq[0],
        max_seq=seq[1],
        seq_offset=seq_offset,
        rows=10,
        deletes=deletes,
        size=size,
        checksum="crc32:00000000",
        footer_checksum="crc32:00000000",
        schema_id=0,
        created_ms=created_ms or n,
    )


def paths(files: Iterable[DataFile]) -> set[str]:
    return {f.path for f in files}


def l0_files(sizes: Sequence[int], first_seq: int = 1000, lo: int = 0, hi: int = 100) -> list:
    """Level-0 files, newest first, each a run of its own."""
    out = []
    seq = first_seq + 10 * len(sizes)
    for size in sizes:
        out.append(df(0, lo, hi, (seq, seq + 9), size))
        seq -= 10
    return out


OPTS = PolicyOptions()  # trigger 5, amp 200 %, ratio 1 %, 6 levels (max level 5)


# --------------------------------------------------------------------------- sorted runs


def test_sorted_runs_level0_newest_first_then_levels_by_number() -> None:
    old0 = df(0, 0, 9, (10, 19))
    new0 = df(0, 5, 6, (30, 39))
    mid0 = df(0, 0, 99, (20, 29))
    l3b = df(3, 50, 60, (1, 2))
    l3a = df(3, 0, 40, (1, 2))
    l1 = df(1, 0, 99, (5, 6))
    runs = sorted_runs([l3b, old0, l1, new0, l3a, mid0])
    assert [r.level for r in runs] == [0, 0, 0, 1, 3]
    assert [r.files for r in runs[:3]] == [(new0,), (mid0,), (old0,)]
    assert runs[3].files == (l1,)
    assert runs[4].files == (l3a, l3b)  # a level's files in key order
    assert runs[4].size == l3a.size + l3b.size


def test_sorted_runs_order_level0_by_effective_sequence() -> None:
    # stored sequences say a is newer, the offsets say b is
    a = df(0, 0, 9, (50, 60), seq_offset=0)
    b = df(0, 0, 9, (0, 5), seq_offset=100)
    assert [r.files[0] for r in sorted_runs([a, b])] == [b, a]


# --------------------------------------------------------------------------- universal


def test_universal_below_trigger_does_nothing() -> None:
    files = [*l0_files([10, 10, 10]), df(5, 0, 100, (0, 9), 10)]
    assert len(sorted_runs(files)) == 4
    assert universal(files, OPTS) == []
    # exactly at the trigger it may act
    assert universal(files, PolicyOptions(num_sorted_run_trigger=4)) != []


def test_universal_empty_and_single_file() -> None:
    assert universal([], PolicyOptions(num_sorted_run_trigger=1)) == []
    assert universal([df(0, 0, 1)], PolicyOptions(num_sorted_run_trigger=1)) == []


def test_universal_size_amplification_merges_everything_to_max_level() -> None:
    files = [*l0_files([100, 100, 100, 100]), df(3, 0, 100, (0, 9), 100)]
    (task,) = universal(files, OPTS)
    assert task.reason == "size-amplification"
    assert paths(task.inputs) == paths(files)
    assert task.output_level == OPTS.max_level == 5
    assert task.input_bytes == 500


def test_universal_size_amplification_threshold_is_strict() -> None:
    # rest = 200 % of the oldest exactly: no amplification pick
    files = [*l0_files([1, 1, 1, 197]), df(5, 0, 100, (0, 9), 100)]
    tasks = universal(files, OPTS)
    assert all(t.reason != "size-amplification" for t in tasks)
    files = [*l0_files([1, 1, 1, 198]), df(5, 0, 100, (0, 9), 100)]
    (task,) = universal(files, OPTS)
    assert task.reason == "size-amplification"


def test_universal_size_ratio_picks_newest_similar_runs() -> None:
    new = l0_files([10, 10])
    l2 = df(2, 0, 100, (500, 599), 1000)
    l4 = df(4, 0, 100, (100, 199), 5000)
    l5 = df(5, 0, 100, (0, 99), 100_000)
    (task,) = universal([*new, l2, l4, l5], PolicyOptions(num_sorted_run_trigger=5))
    assert task.reason == "size-ratio"
    assert paths(task.inputs) == paths(new)
    assert task.output_level == 1  # one above the next run left alone (level 2)
    # trigger 4: the size ratio's two runs would leave 4 runs, not fewer than the trigger
    (task,) = universal([*new, l2, l4, l5], PolicyOptions(num_sorted_run_trigger=4))
    assert task.reason == "run-count"
    assert paths(task.inputs) == paths([*new, l2])
    assert task.output_level == 3


def test_universal_size_ratio_extends_through_levels() -> None:
    new = l0_files([10])
    l1 = df(1, 0, 100, (800, 899), 10)
    l3 = df(3, 0, 100, (500, 599), 15)
    l5 = df(5, 0, 100, (0, 99), 10_000)
    (task,) = universal([*new, l1, l3, l5], PolicyOptions(num_sorted_run_trigger=4))
    assert task.reason == "size-ratio"
    assert paths(task.inputs) == paths([*new, l1, l3])
    assert task.output_level == 4


def test_universal_size_ratio_uses_ratio_percent() -> None:
    new = l0_files([100, 110])
    l5 = df(5, 0, 100, (0, 99), 100_000)
    # 110 > 100 * 101 %: not similar at 1 %, so only the run count forces the same pick
    (task,) = universal([*new, l5], PolicyOptions(num_sorted_run_trigger=3))
    assert task.reason == "run-count"
    assert paths(task.inputs) == paths(new)
    (task,) = universal([*new, l5], PolicyOptions(num_sorted_run_trigger=3, size_ratio_percent=10))
    assert task.reason == "size-ratio"
    assert paths(task.inputs) == paths(new)
    assert task.output_level == 4


def test_universal_picking_the_oldest_run_outputs_to_max_level() -> None:
    new = l0_files([10, 10])
    l3 = df(3, 0, 100, (0, 99), 20)  # rest = 20 <= 200 % of 20: no amplification pick
    (task,) = universal([*new, l3], PolicyOptions(num_sorted_run_trigger=3))
    assert task.reason == "size-ratio"
    assert paths(task.inputs) == paths([*new, l3])
    assert task.output_level == 5  # not level 3: everything merged goes to the last level


def test_universal_forced_pick_by_run_count() -> None:
    # sizes grow 10x per run: the size ratio never picks two runs, amplification is low
    l0 = l0_files([1, 10])
    l1 = df(1, 0, 100, (800, 899), 100)
    l2 = df(2, 0, 100, (600, 699), 1000)
    l3 = df(3, 0, 100, (400, 499), 10_000)
    l5 = df(5, 0, 100, (0, 99), 100_000)
    files = [*l0, l1, l2, l3, l5]
    assert len(sorted_runs(files)) == 6
    # runs (6) >= trigger (5): merge the newest 6 - 5 + 2 = 3 runs, leaving 4 (< trigger);
    # the next run left alone is level 2 -> output level 1
    (task,) = universal(files, PolicyOptions(num_sorted_run_trigger=5))
    assert task.reason == "run-count"
    assert paths(task.inputs) == paths([*l0, l1])
    assert task.output_level == 1
    # trigger 4: the newest 4 runs, next is level 3 -> output level 2
    (task,) = universal(files, PolicyOptions(num_sorted_run_trigger=4))
    assert task.reason == "run-count"
    assert paths(task.inputs) == paths([*l0, l1, l2])
    assert task.output_level == 2
    # trigger 3: the newest 5 runs, next is level 5 -> output 4
    (task,) = universal(files, PolicyOptions(num_sorted_run_trigger=3))
    assert paths(task.inputs) == paths([*l0, l1, l2, l3])
    assert task.output_level == 4
    # exactly at the trigger: the newest 2 runs (both level 0, so level 1 joins the pick)
    (task,) = universal(files, PolicyOptions(num_sorted_run_trigger=6))
    assert paths(task.inputs) == paths([*l0, l1])
    # one run below the trigger: nothing to do
    assert universal(files, PolicyOptions(num_sorted_run_trigger=7)) == []


def test_universal_forced_pick_goes_on_through_smaller_older_runs() -> None:
    """A big new run over small old ones (left by earlier picks): the forced pick does not
    stop at the big run, which every later pick would then rewrite; it takes the older runs
    no bigger than what it holds (the stream benchmark's write amplification was 26 before)."""
    l0 = l0_files([1, 1, 1, 1])
    l2 = df(2, 0, 100, (500, 599), 7000)
    l3 = df(3, 0, 100, (400, 499), 500)
    l4 = df(4, 0, 100, (300, 399), 2000)
    l5 = df(5, 0, 100, (0, 99), 100_000)
    (task,) = universal([*l0, l2, l3, l4, l5], PolicyOptions(num_sorted_run_trigger=5))
    assert task.reason == "run-count"
    assert paths(task.inputs) == paths([*l0, l2, l3, l4])
    assert task.output_level == 4


def test_universal_forced_pick_carries_into_an_older_run_up_to_twice_its_size() -> None:
    """The forced pick (4 new runs and level 2: 14) carries into level 3 (20 <= 2 x 14), so the
    level-2 run does not absorb every later compaction while it grows towards level 3; it
    stops before level 4 (100 > 2 x 34)."""
    l0 = l0_files([1, 1, 1, 1])
    l2 = df(2, 0, 100, (500, 599), 10)
    l3 = df(3, 0, 100, (400, 499), 20)
    l4 = df(4, 0, 100, (300, 399), 100)
    l5 = df(5, 0, 100, (0, 99), 100_000)
    (task,) = universal([*l0, l2, l3, l4, l5], PolicyOptions(num_sorted_run_trigger=5))
    assert task.reason == "run-count"
    assert paths(task.inputs) == paths([*l0, l2, l3])
    assert task.output_level == 3
    # an older run more than twice the pick stays: only the forced minimum is merged
    l3 = df(3, 0, 100, (400, 499), 29)
    (task,) = universal([*l0, l2, l3, l4, l5], PolicyOptions(num_sorted_run_trigger=5))
    assert paths(task.inputs) == paths([*l0, l2])
    assert task.output_level == 2


def test_universal_never_outputs_level0_and_takes_every_older_level0_run() -> None:
    # two similar new runs, then dissimilar level-0 runs: output cannot be level 0, so the
    # pick extends through every remaining level-0 run to the first level >= 1 run
    l0 = l0_files([10, 10, 1000, 1000])
    l2 = df(2, 0, 100, (500, 599), 100_000)
    l5 = df(5, 0, 100, (0, 99), 1_000_000)
    (task,) = universal([*l0, l2, l5], PolicyOptions(num_sorted_run_trigger=6))
    assert paths(task.inputs) == paths([*l0, l2])
    assert task.output_level == 2
    # with only level-0 runs left after the pick, everything goes to the last level
    l0 = l0_files([10, 10, 1000, 100_000])
    (task,) = universal(l0, PolicyOptions(num_sorted_run_trigger=3))
    assert paths(task.inputs) == paths(l0)
    assert task.output_level == 5


def test_universal_level_runs_made_of_several_files() -> None:
    l0 = l0_files([10, 10])
    l4 = [df(4, 0, 40, (100, 150), 500), df(4, 41, 90, (151, 199), 500)]
    l5 = [df(5, 0, 50, (0, 50), 50_000), df(5, 51, 99, (51, 99), 50_000)]
    (task,) = universal([*l0, *l4, *l5], PolicyOptions(num_sorted_run_trigger=4))
    assert paths(task.inputs) == paths(l0)
    assert task.output_level == 3


# --------------------------------------------------------------------------- leveled


LEVELED = PolicyOptions(l0_file_trigger=4, level_base_bytes=1000, level_size_ratio=10)


def test_leveled_below_l0_trigger_and_within_budgets_does_nothing() -> None:
    files = [
        df(0, 0, 10, (100, 109)),
        df(0, 5, 20, (110, 119)),
        df(0, 40, 50, (120, 129)),
        df(1, 0, 30, (50, 59), 500),
        df(1, 31, 90, (60, 69), 500),  # level 1 holds exactly its budget
        df(2, 0, 90, (0, 9), 10_000),
    ]
    assert leveled(files, LEVELED) == []


def test_leveled_l0_trigger_includes_overlapping_level1_files() -> None:
    l0 = [
        df(0, 10, 20, (100, 109)),
        df(0, 15, 30, (110, 119)),
        df(0, 5, 12, (120, 129)),
        df(0, 40, 45, (130, 139)),
    ]
    before = df(1, 0, 4, (0, 9))  # entirely below the level-0 range [5, 45]
    touching_low = df(1, 5, 5, (10, 19))  # shares the boundary key 5
    inside = df(1, 20, 25, (20, 29))
    across_high = df(1, 44, 60, (30, 39))
    after = df(1, 70, 80, (40, 49))
    l2 = df(2, 0, 99, (0, 0))
    (task,) = leveled([*l0, before, touching_low, inside, across_high, after, l2], LEVELED)
    assert task.reason == "level0-files"
    assert task.output_level == 1
    assert paths(task.inputs) == paths([*l0, touching_low, inside, across_high])


def test_leveled_l0_trigger_takes_every_level0_file() -> None:
    # even level-0 files far apart are all merged: level 1 must hold no data older than L0
    l0 = [df(0, i * 100, i * 100 + 5, (100 + i * 10, 109 + i * 10)) for i in range(5)]
    (task,) = leveled(l0, LEVELED)
    assert paths(task.inputs) == paths(l0)
    assert task.output_level == 1


def test_leveled_level_over_budget_pushes_oldest_file_with_overlaps_below() -> None:
    l1_old = df(1, 0, 30, (10, 19), 600, created_ms=1)
    l1_new = df(1, 31, 60, (20, 29), 600, created_ms=2)
    l2_hit = df(2, 25, 29, (0, 9), 100)
    l2_touch = df(2, 30, 33, (0, 9), 100)  # shares only the victim's last key
    l2_near = df(2, 36, 40, (0, 9), 100)  # under the other level-1 file only
    l2_miss = df(2, 61, 90, (0, 9), 100)
    files = [l1_new, l1_old, l2_hit, l2_touch, l2_near, l2_miss]
    (task,) = leveled(files, LEVELED)
    assert task.reason == "level1-size"
    assert task.output_level == 2
    assert paths(task.inputs) == paths([l1_old, l2_hit, l2_touch])


def test_leveled_deeper_level_budget_grows_by_ratio() -> None:
    # level 2 budget = 1000 * 10 = 10_000
    l2 = [df(2, 0, 10, (10, 19), 6000, created_ms=5), df(2, 20, 30, (20, 29), 4000)]
    l3 = [df(3, 0, 5, (0, 9), 10), df(3, 6, 9, (0, 9), 10), df(3, 11, 19, (0, 9), 10)]
    assert leveled([*l2, *l3], LEVELED) == []  # exactly on budget
    l2.append(df(2, 40, 50, (30, 39), 1))
    (task,) = leveled([*l2, *l3], LEVELED)
    assert task.reason == "level2-size"
    assert task.output_level == 3
    oldest = min(l2, key=lambda f: f.created_ms)
    assert paths(task.inputs) == paths([oldest, l3[0], l3[1]])


def test_leveled_never_pushes_past_the_last_level() -> None:
    files = [df(5, 0, 10, (0, 9), 10**15), df(4, 20, 30, (10, 19), 100)]
    assert leveled(files, LEVELED) == []


def test_leveled_l0_trigger_comes_before_level_budgets() -> None:
    l0 = [df(0, 0, 5, (100 + i, 100 + i)) for i in range(4)]
    l1 = df(1, 50, 60, (10, 19), 10**6)  # far over budget, does not overlap level 0
    (task,) = leveled([*l0, l1], LEVELED)
    assert task.reason == "level0-files"
    assert paths(task.inputs) == paths(l0)


# --------------------------------------------------------------------------- full


def test_full_merges_everything_to_the_last_level() -> None:
    files = [*l0_files([1, 2, 3]), df(2, 0, 9, (0, 9)), df(5, 10, 20, (0, 9))]
    (task,) = full(files, OPTS)
    assert task.reason == "full"
    assert task.output_level == 5
    assert paths(task.inputs) == paths(files)


@pytest.mark.parametrize("level", [0, 1, 4])
def test_full_single_run_not_at_last_level_is_rewritten(level: int) -> None:
    (task,) = full([df(level, 0, 9, (0, 9))], OPTS)
    assert task.output_level == 5


def test_full_nothing_to_do() -> None:
    assert full([], OPTS) == []
    one_run = [df(5, 0, 9, (0, 9)), df(5, 10, 19, (0, 9)), df(5, 20, 29, (0, 9))]
    assert full(one_run, OPTS) == []
    assert full(one_run, PolicyOptions(num_levels=3)) != []  # level 5 is not last of 3


# --------------------------------------------------------------------------- plan


def test_plan_one_task_per_partition_and_bucket() -> None:
    files = []
    for part in [("eu",), ("us",)]:
        for bucket in range(3):
            for i in range(2):
                files.append(df(0, 0, 9, (i * 10, i * 10 + 9), partition=part, bucket=bucket))
    tasks = plan(files, "full", OPTS)
    assert len(tasks) == 6
    assert {(t.partition, t.bucket) for t in tasks} == {
        (p, b) for p in [("eu",), ("us",)] for b in range(3)
    }
    for t in tasks:
        assert len(t.inputs) == 2
        assert all((f.partition, f.bucket) == (t.partition, t.bucket) for f in t.inputs)
    assert plan(files, "universal", OPTS) == []  # 2 runs per bucket < trigger 5
    assert plan([], "leveled", OPTS) == []


# --------------------------------------------------------------------------- tombstones


def test_drops_tombstones_when_task_holds_all_the_bucket() -> None:
    files = [df(0, 0, 9, (10, 19), deletes=2), df(5, 0, 9, (0, 9))]
    task = Task((), 0, tuple(files), 5, "full")
    assert drops_tombstones(task, files, sequence_field=False)
    assert not drops_tombstones(task, files, sequence_field=True)


def test_keeps_tombstones_when_older_overlapping_data_stays_outside() -> None:
    new = df(0, 0, 9, (10, 19), deletes=2)
    old = df(5, 5, 50, (0, 9))
    task = Task((), 0, (new,), 4, "size-ratio")
    assert not drops_tombstones(task, [new, old], sequence_field=False)
    # the shared key may be just the boundary
    edge = df(5, 9, 50, (0, 9))
    assert not drops_tombstones(task, [new, edge], sequence_field=False)


def test_drops_tombstones_when_other_files_are_newer_or_disjoint() -> None:
    inputs = (df(1, 0, 9, (10, 19), deletes=2), df(2, 3, 20, (0, 9)))
    newer = df(0, 0, 30, (20, 29))  # overlaps, but every row is newer than the inputs
    disjoint_old = df(5, 21, 90, (0, 3))  # older, but holds no key of the inputs' range
    task = Task((), 0, inputs, 2, "level1-size")
    bucket = [*inputs, newer, disjoint_old]
    assert drops_tombstones(task, bucket, sequence_field=False)
    assert not drops_tombstones(task, bucket, sequence_field=True)
    # a file overlapping in key and holding some older rows keeps the tombstones
    mixed = df(0, 15, 16, (18, 25))
    assert not drops_tombstones(task, [*bucket, mixed], sequence_field=False)


def test_drops_tombstones_uses_effective_sequence_numbers() -> None:
    inp = df(0, 0, 9, (0, 9), seq_offset=100, deletes=1)  # effective 100..109
    other = df(0, 0, 9, (50, 60), seq_offset=0)  # effective 50..60: older
    task = Task((), 0, (inp,), 1, "x")
    assert not drops_tombstones(task, [inp, other], sequence_field=False)
    later = df(0, 0, 9, (0, 5), seq_offset=200)
    assert drops_tombstones(task, [inp, later], sequence_field=False)


def test_drops_tombstones_composite_keys() -> None:
    inp = df(0, (1, "a"), (1, "m"), (10, 19), deletes=1)
    same_tenant_after = df(5, (1, "n"), (2, "a"), (0, 9))
    task = Task((), 0, (inp,), 4, "x")
    assert drops_tombstones(task, [inp, same_tenant_after], sequence_field=False)
    overlapping = df(5, (1, "c"), (1, "d"), (0, 9))
    assert not drops_tombstones(task, [inp, overlapping], sequence_field=False)


# --------------------------------------------------------------------------- properties


def check_task_shape(task: Task, files: Sequence[DataFile], opts: PolicyOptions) -> None:
    live = paths(files)
    inputs = [f.path for f in task.inputs]
    assert task.inputs, "a task without inputs"
    assert len(inputs) == len(set(inputs)), "an input listed twice"
    assert set(inputs) <= live, "an input that is not live"
    assert all((f.partition, f.bucket) == (task.partition, task.bucket) for f in task.inputs)
    assert 1 <= task.output_level <= opts.max_level
    assert task.input_bytes == sum(f.size for f in task.inputs)


file_sets = st.lists(
    st.tuples(
        st.sampled_from([(), ("a",), ("b",)]),  # partition
        st.integers(0, 2),  # bucket
        st.integers(0, 5),  # level
        st.integers(0, 50),  # min key
        st.integers(0, 20),  # key span
        st.integers(0, 500),  # min seq
        st.integers(0, 50),  # seq span
        st.integers(1, 5000),  # size
    ),
    max_size=30,
)

policy_options = st.builds(
    PolicyOptions,
    num_sorted_run_trigger=st.integers(1, 6),
    max_size_amplification_percent=st.integers(1, 400),
    size_ratio_percent=st.integers(0, 100),
    num_levels=st.integers(2, 7),
    l0_file_trigger=st.integers(1, 5),
    level_size_ratio=st.integers(1, 10),
    level_base_bytes=st.integers(1, 20_000),
)


@settings(max_examples=200, deadline=None)
@given(
    specs=file_sets, opts=policy_options, policy=st.sampled_from(["universal", "leveled", "full"])
)
def test_any_file_set_gives_well_formed_tasks(
    specs: list[tuple], opts: PolicyOptions, policy: str
) -> None:
    files = [
        df(level, lo, lo + span, (s, s + ss), size, partition=p, bucket=b)
        for p, b, level, lo, span, s, ss, size in specs
        if level <= opts.max_level
    ]
    tasks = plan(files, policy, opts)
    groups = {(t.partition, t.bucket) for t in tasks}
    assert len(groups) == len(tasks), "two tasks for one bucket in one plan"
    for task in tasks:
        check_task_shape(task, files, opts)
        bucket = [f for f in files if (f.partition, f.bucket) == (task.partition, task.bucket)]
        if policy == "full":
            assert paths(task.inputs) == paths(bucket)
            assert drops_tombstones(task, bucket, sequence_field=False)
        assert not drops_tombstones(task, bucket, sequence_field=True)


# A small in-memory LSM: each file holds {key: (seq, is_delete)}.


@dataclass
class Bucket:
    opts: PolicyOptions
    contents: dict[str, dict[int, tuple[int, bool]]] = field(default_factory=dict)
    files: list[DataFile] = field(default_factory=list)
    next_seq: int = 0
    split: int = 4  # keys per output file: outputs are several key-disjoint files

    def make_file(self, level: int, content: dict[int, tuple[int, bool]]) -> DataFile:
        seqs = [s for s, _ in content.values()]
        f = df(
            level,
            min(content),
            max(content),
            (min(seqs), max(seqs)),
            size=8 * len(content) + 16,
            deletes=sum(d for _, d in content.values()),
        )
        self.contents[f.path] = content
        return f

    def flush(self, ops: list[tuple[int, bool]]) -> None:
        content: dict[int, tuple[int, bool]] = {}
        for key, deleted in ops:  # later ops on a key win, as in a memtable
            content[key] = (self.next_seq, deleted)
            self.next_seq += 1
        if content:
            self.files.append(self.make_file(0, content))

    def view(self) -> dict[int, int]:
        newest: dict[int, tuple[int, bool]] = {}
        for f in self.files:
            for key, (seq, deleted) in self.contents[f.path].items():
                if key not in newest or seq > newest[key][0]:
                    newest[key] = (seq, deleted)
        return {k: s for k, (s, d) in newest.items() if not d}

    def apply(self, task: Task, drop: bool) -> None:
        merged: dict[int, tuple[int, bool]] = {}
        for f in task.inputs:
            for key, (seq, deleted) in self.contents[f.path].items():
                if key not in merged or seq > merged[key][0]:
                    merged[key] = (seq, deleted)
        if drop:
            merged = {k: v for k, v in merged.items() if not v[1]}
        keys = sorted(merged)
        outputs = [
            self.make_file(task.output_level, {k: merged[k] for k in keys[i : i + self.split]})
            for i in range(0, len(keys), self.split)
        ]
        gone = paths(task.inputs)
        self.files = [f for f in self.files if f.path not in gone] + outputs


def check_levels_disjoint(files: Sequence[DataFile]) -> None:
    for level in {f.level for f in files if f.level >= 1}:
        in_level = sorted((f for f in files if f.level == level), key=lambda f: f.min_key)
        for a, b in itertools.pairwise(in_level):
            assert a.max_key < b.min_key, f"level {level} files overlap: {a} / {b}"


def check_universal_age_order(files: Sequence[DataFile]) -> None:
    """Level >= 1 runs newest to oldest by level; every level-0 file newer than all of them."""
    deeper = [r for r in sorted_runs(files) if r.level >= 1]
    for newer, older in itertools.pairwise(deeper):
        newest_of_older = max(f.effective_max_seq for f in older.files)
        oldest_of_newer = min(f.effective_min_seq for f in newer.files)
        assert oldest_of_newer > newest_of_older, (
            f"level {newer.level} holds data older than level {older.level}"
        )
    if deeper:
        deepest_newest = max(f.effective_max_seq for r in deeper for f in r.files)
        for f in files:
            if f.level == 0:
                assert f.effective_min_seq > deepest_newest, "a level-0 file older than a level"


def check_leveled_age_order(bucket: Bucket) -> None:
    """Per key: the version in a lower level is newer than the one in a deeper level."""
    versions: dict[int, list[tuple[int, int]]] = {}
    for f in bucket.files:
        for key, (seq, _) in bucket.contents[f.path].items():
            versions.setdefault(key, []).append((f.level, seq))
    for key, vs in versions.items():
        vs.sort()
        for (la, sa), (lb, sb) in itertools.pairwise(vs):
            if la >= 1 and lb > la:
                assert sa > sb, f"key {key}: level {la} seq {sa} older than level {lb} seq {sb}"


_ops = st.lists(st.tuples(st.integers(0, 120), st.booleans()), min_size=1, max_size=10)
steps = st.lists(
    st.tuples(
        st.sampled_from(["flush", "flush", "compact", "compact-with-concurrent-flush"]), _ops
    ),
    min_size=8,
    max_size=60,
)


@pytest.mark.parametrize("policy", ["universal", "leveled", "full"])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    opts=st.builds(
        PolicyOptions,
        num_sorted_run_trigger=st.integers(2, 5),
        max_size_amplification_percent=st.integers(50, 2000),
        size_ratio_percent=st.integers(0, 50),
        num_levels=st.integers(2, 7),
        l0_file_trigger=st.integers(1, 4),
        level_size_ratio=st.integers(1, 4),
        level_base_bytes=st.integers(20, 400),
    ),
    split=st.integers(1, 8),
    script=steps,
)
def test_policies_keep_the_view_and_the_level_structure(
    policy: str, opts: PolicyOptions, split: int, script: list[tuple[str, Any]]
) -> None:
    """Flush and compact in any order: the merged view never changes through compaction,
    level >= 1 files stay key-disjoint, and the age order each policy relies on holds."""
    bucket = Bucket(opts, split=split)
    for step, ops in script:
        if step == "flush":
            bucket.flush(ops)
            continue
        planned_on = list(bucket.files)
        tasks = plan(planned_on, policy, opts)
        assert len(tasks) <= 1
        if not tasks:
            continue
        (task,) = tasks
        check_task_shape(task, planned_on, opts)
        drop = drops_tombstones(task, planned_on, sequence_field=False)
        if step == "compact-with-concurrent-flush":
            bucket.flush(ops)  # a writer commits between planning and the compaction commit
        before = bucket.view()
        bucket.apply(task, drop)
        assert bucket.view() == before, "compaction changed the merged view"
        check_levels_disjoint(bucket.files)
        if policy == "universal":
            check_universal_age_order(bucket.files)
            levels = [r.level for r in sorted_runs(bucket.files) if r.level >= 1]
            assert len(levels) == len(set(levels))
        elif policy == "leveled":
            check_leveled_age_order(bucket)
        else:
            assert all(f.level in (0, opts.max_level) for f in bucket.files)
    # compacting to a fixpoint never loops forever and leaves a bounded number of runs
    for _ in range(5000):
        tasks = plan(bucket.files, policy, opts)
        if not tasks:
            break
        before = bucket.view()
        bucket.apply(tasks[0], drops_tombstones(tasks[0], bucket.files, sequence_field=False))
        assert bucket.view() == before
    else:
        pytest.fail(f"{policy} keeps planning tasks: {plan(bucket.files, policy, opts)}")
    if policy == "universal":
        assert len(sorted_runs(bucket.files)) <= opts.num_sorted_run_trigger
    elif policy == "full":
        assert len(sorted_runs(bucket.files)) <= 1
        assert all(
            not d for c in (bucket.contents[f.path] for f in bucket.files) for _, d in c.values()
        )
    else:
        assert sum(1 for f in bucket.files if f.level == 0) < opts.l0_file_trigger


valid_universal_states = st.builds(
    lambda l0_sizes, levels, sizes: (l0_sizes, sorted(set(levels)), sizes),
    st.lists(st.integers(1, 1000), max_size=6),
    st.lists(st.integers(1, 5), max_size=5),
    st.lists(st.integers(1, 100_000), min_size=5, max_size=5),
)


@settings(max_examples=200, deadline=None)
@given(
    state=valid_universal_states,
    opts=st.builds(
        PolicyOptions,
        num_sorted_run_trigger=st.integers(1, 6),
        max_size_amplification_percent=st.integers(1, 400),
        size_ratio_percent=st.integers(0, 100),
    ),
)
def test_universal_task_keeps_levels_ordered_by_age(
    state: tuple[list[int], list[int], list[int]], opts: PolicyOptions
) -> None:
    """From any well-ordered state, applying a universal task (inputs replaced by one run at
    the output level) leaves the level >= 1 runs ordered newest to oldest by level, and
    fewer runs than the trigger."""
    l0_sizes, levels, sizes = state
    files: list[DataFile] = []
    seq = 0
    for level, size in zip(reversed(levels), sizes, strict=False):  # oldest (deepest) first
        files.append(df(level, 0, 100, (seq, seq + 9), size))
        seq += 10
    for size in l0_sizes:
        files.append(df(0, 0, 100, (seq, seq + 9), size))
        seq += 10
    check_universal_age_order(files)
    for task in universal(files, opts):
        check_task_shape(task, files, opts)
        runs = sorted_runs(files)
        picked = paths(task.inputs)
        # the inputs are whole runs, and a prefix of the runs newest first
        flags = [paths(r.files) <= picked for r in runs]
        assert all(paths(r.files) <= picked or not (paths(r.files) & picked) for r in runs)
        assert flags == sorted(flags, reverse=True), "the pick is not the newest runs"
        if all(flags):
            assert task.output_level == opts.max_level
        seqs = [f.effective_min_seq for f in task.inputs] + [
            f.effective_max_seq for f in task.inputs
        ]
        out = df(task.output_level, 0, 100, (min(seqs), max(seqs)))
        after = [f for f in files if f.path not in picked] + [out]
        assert all(f.level != task.output_level for f in files if f.path not in picked), (
            "the output level is taken by a run outside the task"
        )
        check_universal_age_order(after)
        # a compaction leaves fewer runs than the trigger (or one run, at trigger 1)
        assert len(sorted_runs(after)) < max(2, opts.num_sorted_run_trigger), (
            len(runs),
            len(sorted_runs(after)),
        )
    if len(sorted_runs(files)) >= max(2, opts.num_sorted_run_trigger):
        assert universal(files, opts), "at the trigger, universal must compact"
