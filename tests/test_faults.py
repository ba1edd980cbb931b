"""Fault injection: requests that fail, hang, or succeed while the client sees an error.

``lsm3.testing.faults.FaultyStore`` wraps a real store (a local directory, moto over HTTP) and makes
chosen requests fail the way S3 requests fail once the client's own retries are spent. The
rules checked here (docs/RELIABILITY.md has the table of which operation is retried where):

* a snapshot put whose response is lost (it landed, the client saw an error) is applied at
  most once: the commit identity ``(writer_id, commit_id)`` recognises it;
* a failed data-file, manifest or metadata request either succeeds after lsm3's retry or
  raises a clear ``Lsm3Error`` with nothing committed;
* random faults during a sequence of commits, compactions, expiry, orphan removal and reads
  leave every committed state readable and equal to a dict model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from helpers import clear_read_caches
from soak import check_chain, check_orphans, run_random_faults

import compactor
import lsm3
import lsm3.io.retry
from catalog.client import Catalog
from compactor.maintenance import expire_snapshots, remove_orphan_files
from lsm3.errors import StorageError
from lsm3.io.local import LocalStore
from lsm3.io.store import ObjectStore, open_store
from lsm3.testing.faults import RETRYABLE_FAULTS, FaultyStore, InjectedFault, Rule

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
Location = tuple[str, dict | None]


pytestmark = pytest.mark.usefixtures("quiet_lsm3")


@pytest.fixture
def inner(tmp_path: Path) -> ObjectStore:
    """The real store under the faults: a local directory."""
    return LocalStore(str(tmp_path / "t"), fsync=False)


@pytest.fixture
def any_inner(table_location: Location) -> ObjectStore:
    """A local directory, then moto over HTTP (for the tests worth running on both)."""
    uri, options = table_location
    return open_store(uri, options)


def new_table(inner: ObjectStore, **options: Any) -> tuple[FaultyStore, lsm3.Table]:
    store = FaultyStore(inner, hang_seconds=0.01)
    table = lsm3.create_table(store, SCHEMA, "id", options=options or None)
    return store, table


def rows(inner: ObjectStore) -> dict[int, str]:
    """The latest committed rows, read through a fresh, fault-free table."""
    return {r["id"]: r["v"] for r in lsm3.open_table(inner).to_arrow().to_pylist()}


def snapshot_count(inner: ObjectStore) -> int:
    return len(lsm3.open_table(inner).snapshot_ids())


def commit(table: lsm3.Table, values: dict[int, str], **kwargs: Any) -> lsm3.Snapshot | None:
    w = table.writer(kwargs.pop("writer_id", None))
    w.upsert([{"id": k, "v": v} for k, v in values.items()])
    return w.commit(**kwargs)


# --------------------------------------------------------------------------- the store itself


def test_rules_select_by_operation_key_and_count(tmp_path: Path) -> None:
    store = FaultyStore(LocalStore(str(tmp_path)))
    store.script("transient", "put_if_absent", "snapshot/*", nth=3)
    for i in range(1, 3):
        store.put_if_absent(f"snapshot/{i}", b"x")
    store.put_if_absent("manifest/3", b"x")  # another prefix: not counted
    with pytest.raises(InjectedFault) as info:
        store.put_if_absent("snapshot/3", b"x")
    assert isinstance(info.value, StorageError) and info.value.fault == "transient"
    assert store.head("snapshot/3") is None  # a transient failure did nothing
    store.put_if_absent("snapshot/3", b"x")  # fired once only
    assert [(i.op, i.key) for i in store.injected] == [("put_if_absent", "snapshot/3")]


def test_ambiguous_fault_applies_the_request(tmp_path: Path) -> None:
    store = FaultyStore(LocalStore(str(tmp_path)))
    store.script("ambiguous", "put", nth=1)
    with pytest.raises(InjectedFault) as info:
        store.put("data/x", b"payload")
    assert info.value.applied
    assert store.get("data/x") == b"payload"
    store.script("ambiguous", "delete", nth=1)
    with pytest.raises(InjectedFault):
        store.delete("data/x")
    assert store.head("data/x") is None


def test_random_mode_is_reproducible(tmp_path: Path) -> None:
    def run(seed: int) -> list[tuple[int, str]]:
        store = FaultyStore.random(LocalStore(str(tmp_path)), 0.3, seed=seed, hang_seconds=0)
        for i in range(60):
            with contextlib.suppress(InjectedFault):
                store.put(f"k{i % 5}", b"x")
        return [(i.seq, i.fault) for i in store.injected]

    assert run(1) == run(1) and run(1) != run(2)
    assert {f for _, f in run(1)} == set(RETRYABLE_FAULTS)


def test_timeout_hangs_then_fails(tmp_path: Path) -> None:
    store = FaultyStore(LocalStore(str(tmp_path)), [Rule("timeout", "get")], hang_seconds=0.2)
    store.put("k", b"v")
    started = time.monotonic()
    with pytest.raises(InjectedFault, match="timeout"):
        store.get("k")
    assert time.monotonic() - started >= 0.2


# --------------------------------------------------------------------------- ambiguous commits


@pytest.mark.parametrize("writer_id", [None, "w"])
def test_ambiguous_snapshot_put_is_applied_once(
    any_inner: ObjectStore, writer_id: str | None
) -> None:
    inner = any_inner
    store, table = new_table(inner)
    commit(table, {1: "a"})
    store.script("ambiguous", "put_if_absent", "snapshot/*")
    snap = commit(table, {2: "b"}, writer_id=writer_id)
    assert snap is not None and snap.snapshot_id == 2
    assert [i.fault for i in store.injected] == ["ambiguous"] and store.injected[0].applied
    snaps = check_chain(lsm3.open_table(inner))
    assert [s.snapshot_id for s in snaps] == [1, 2]
    assert rows(inner) == {1: "a", 2: "b"}


def test_ambiguous_put_while_another_writer_commits(table_location: Location) -> None:
    """The lost response hides our snapshot 2; a rival then commits 3 before our retry
    looks. The retry must find snapshot 2 among those committed since its first attempt,
    not commit a fourth."""
    inner = open_store(*table_location)
    _, table = new_table(inner)
    commit(table, {1: "a"})
    rival = lsm3.open_table(*table_location)  # its own store object, no faults

    class PutThenRival(FaultyStore):
        def put_if_absent(self, key: str, data: bytes) -> None:
            try:
                super().put_if_absent(key, data)
            finally:
                if key.startswith("snapshot/") and self.injected and not hasattr(self, "done"):
                    self.done = True
                    commit(rival, {1: "rival"})

    racing = PutThenRival(inner).script("ambiguous", "put_if_absent", "snapshot/*")
    snap = commit(lsm3.open_table(racing), {2: "b"}, writer_id="w", commit_id="c-2")
    assert snap is not None and snap.snapshot_id == 2
    snaps = check_chain(lsm3.open_table(inner))
    assert [s.commit_id for s in snaps][1] == "c-2"
    assert len(snaps) == 3 and rows(inner) == {1: "rival", 2: "b"}


class _LandsThen412(FaultyStore):
    """What boto3's own retry does after a lost response: the first PUT landed, the retried
    PUT gets 412 Precondition Failed."""

    def put_if_absent(self, key: str, data: bytes) -> None:
        self.inner.put_if_absent(key, data)
        if key.startswith("snapshot/") and not getattr(self, "fired", False):
            self.fired = True
            raise lsm3.errors.PreconditionFailed(f"{key}: 412 (after our own put landed)")


@pytest.mark.parametrize("writer_id", [None, "w"])
def test_412_for_our_own_landed_put_is_recognised(
    inner: ObjectStore, writer_id: str | None
) -> None:
    _, table = new_table(inner)
    commit(table, {1: "a"})
    store = _LandsThen412(inner)
    snap = commit(lsm3.open_table(store), {2: "b"}, writer_id=writer_id)
    assert store.fired and snap is not None and snap.snapshot_id == 2
    assert snapshot_count(inner) == 2 and rows(inner) == {1: "a", 2: "b"}


def test_named_commit_retried_after_an_error_lands_once(inner: ObjectStore) -> None:
    """The put landed, the client then lost the read that would have told it so, and the
    call raised. Retrying with the same (writer_id, commit_id) is the documented
    exactly-once pattern: the retry finds the commit instead of applying it again."""
    store, table = new_table(inner)
    commit(table, {1: "a"})
    w = table.writer("w")
    store.on_inject = lambda i: (
        i.fault == "ambiguous"
        and store.script("transient", "get", "snapshot/*", times=None)
        and store.script("transient", "list", "snapshot/*", times=None)
    )
    store.script("ambiguous", "put_if_absent", "snapshot/*")
    w.upsert([{"id": 2, "v": "b"}])
    with pytest.raises(lsm3.Lsm3Error):
        w.commit(commit_id="offset-7", metadata={"offset": 7})
    store.clear()
    store.on_inject = None
    rival = lsm3.open_table(inner)
    commit(rival, {2: "rival"})
    w2 = lsm3.open_table(store).writer("w")
    w2.upsert([{"id": 2, "v": "b"}])
    again = w2.commit(commit_id="offset-7", metadata={"offset": 7})
    assert again is not None and again.snapshot_id == 2
    assert snapshot_count(inner) == 3 and rows(inner) == {1: "a", 2: "rival"}
    assert lsm3.open_table(inner).last_commit("w").metadata == {"offset": 7}  # type: ignore[union-attr]


def test_anonymous_commit_retried_after_an_error_lands_once(tmp_path: Path) -> None:
    inner = LocalStore(str(tmp_path))
    store, table = new_table(inner)
    commit(table, {1: "a"})
    w = table.writer()
    # the put lands but its response is lost, then the read that would find it fails
    store.on_inject = lambda i: (
        i.fault == "ambiguous"
        and store.script("transient", "get", "snapshot/*", times=lsm3.io.retry.ATTEMPTS)
    )
    store.script("ambiguous", "put_if_absent", "snapshot/*")
    w.upsert([{"id": 5, "v": "A"}])
    with pytest.raises(lsm3.Lsm3Error):
        w.commit()  # landed as snapshot 2, but the call raised
    commit(lsm3.open_table(inner), {5: "B"})  # a later writer updates key 5: snapshot 3
    w.commit()  # the retry the writer's docstring invites
    assert rows(inner)[5] == "B", "the retry re-applied key 5 over a newer commit"
    assert snapshot_count(inner) == 3


# --------------------------------------------------------------------------- failed requests


@pytest.mark.parametrize("fault", ["transient", "ambiguous"])
def test_failed_data_file_put_commits_nothing(any_inner: ObjectStore, fault: str) -> None:
    inner = any_inner
    store, table = new_table(inner)
    commit(table, {1: "a"})
    store.script(fault, "put", "data/*", times=lsm3.io.retry.ATTEMPTS)  # past every retry
    w = table.writer("w")
    w.upsert([{"id": 2, "v": "b"}])
    with pytest.raises(lsm3.StorageError):
        w.commit(commit_id="c2")
    assert snapshot_count(inner) == 1 and rows(inner) == {1: "a"}
    w.abort()  # rebuild the batch and commit again: it lands once
    w2 = table.writer("w")
    w2.upsert([{"id": 2, "v": "b"}])
    assert w2.commit(commit_id="c2") is not None
    assert rows(inner) == {1: "a", 2: "b"}
    assert check_orphans(lsm3.open_table(inner))["orphans"] <= 1  # an "ambiguous" upload
    store.clear()
    store.script(fault, "put", "data/*")  # one failure: retried, absorbed
    with table.writer("w") as w3:
        w3.upsert([{"id": 3, "v": "c"}])
    assert rows(inner) == {1: "a", 2: "b", 3: "c"}


def test_commit_retried_after_a_failed_data_put_keeps_the_rows(tmp_path: Path) -> None:
    inner = LocalStore(str(tmp_path))
    store, table = new_table(inner)
    store.script("transient", "put", "data/*", times=lsm3.io.retry.ATTEMPTS)
    w = table.writer("w")
    w.upsert([{"id": 1, "v": "a"}])
    with pytest.raises(lsm3.StorageError):
        w.commit(commit_id="offset-1", metadata={"offset": 1})
    w.commit(commit_id="offset-1", metadata={"offset": 1})  # retry on the same writer
    assert rows(inner) == {1: "a"}, "the offset was committed without its rows"


@pytest.mark.parametrize("fault", RETRYABLE_FAULTS)
def test_failed_manifest_put_commits_nothing_and_commit_can_be_retried(
    inner: ObjectStore, fault: str
) -> None:
    store, table = new_table(inner)
    store.script(fault, "put_if_absent", "manifest/*")
    w = table.writer("w")
    w.upsert([{"id": 1, "v": "a"}])
    with pytest.raises(lsm3.StorageError):
        w.commit(commit_id="c1")
    assert snapshot_count(inner) == 0
    assert w.commit(commit_id="c1") is not None  # data already uploaded: only metadata again
    assert rows(inner) == {1: "a"} and snapshot_count(inner) == 1


@pytest.mark.parametrize("fault", RETRYABLE_FAULTS)
def test_failed_snapshot_put_is_retried_by_the_log(inner: ObjectStore, fault: str) -> None:
    store, table = new_table(inner)
    store.script(fault, "put_if_absent", "snapshot/*", times=2)
    snap = commit(table, {1: "a"})
    assert snap is not None and snap.snapshot_id == 1
    assert len(store.injected) == (1 if fault == "ambiguous" else 2)
    assert rows(inner) == {1: "a"} and snapshot_count(inner) == 1


def test_latest_hint_failure_does_not_fail_the_commit(inner: ObjectStore) -> None:
    store, table = new_table(inner, latest_hint_interval=1)
    store.script("transient", "put", "snapshot/LATEST")
    assert commit(table, {1: "a"}) is not None
    assert rows(inner) == {1: "a"}


READS = {
    "get": lambda store: lsm3.open_table(store),  # the schema object
    "list": lambda store: lsm3.open_table(store),  # no LATEST hint yet: discovery lists
    "get_buffer": lambda store: lsm3.open_table(store).to_arrow(),  # whole data files
}


@pytest.mark.parametrize("op", sorted(READS))
def test_failed_reads_raise_a_storage_error_never_a_wrong_result(
    inner: ObjectStore, op: str
) -> None:
    store, table = new_table(inner)
    commit(table, {1: "a", 2: "b"})
    commit(table, {2: "c"})
    clear_read_caches()
    store.script("transient", op, times=None)
    with pytest.raises(lsm3.StorageError):
        READS[op](store)
    assert store.injected
    store.clear()
    assert lsm3.open_table(store).to_arrow().num_rows == 2


def test_a_failed_refresh_raises_a_storage_error_never_an_old_snapshot(
    inner: ObjectStore,
) -> None:
    """A refresh that finds no next snapshot asks the expiry markers whether the one it knows
    is still history (a LIST): when that fails it must raise, not answer with what it knew."""
    store, table = new_table(inner)
    commit(table, {1: "a"})
    reader = lsm3.open_table(store)
    store.script("transient", "list", times=None)  # nothing new: only the markers' LIST fails
    with pytest.raises(lsm3.StorageError):
        reader.refresh()
    assert store.injected
    store.clear()
    commit(table, {1: "b"})
    store.script("transient", "get", "snapshot/*", times=None)  # the probe of the next id fails
    with pytest.raises(lsm3.StorageError):
        reader.refresh()
    store.clear()
    assert reader.refresh().snapshot_id == 2  # type: ignore[union-attr]


def _get_after_footer_cached(store: FaultyStore, fault_op: str) -> None:
    t = lsm3.open_table(store)
    assert t.get(1) is not None  # footer cached
    from lsm3.read.runindex import KEY_BLOCKS, ROW_BLOCKS

    KEY_BLOCKS.clear()  # but keep the footer
    ROW_BLOCKS.clear()
    store.script("transient", fault_op, times=None)
    t.get(1)


def test_failed_row_group_read_raises_a_storage_error(inner: ObjectStore) -> None:
    store, table = new_table(inner)
    commit(table, {1: "a"})
    with pytest.raises(lsm3.StorageError, match="injected"):
        _get_after_footer_cached(store, "get_range")


def test_failed_footer_read_is_a_storage_error_not_corruption(tmp_path: Path) -> None:
    store, table = new_table(LocalStore(str(tmp_path)))
    commit(table, {1: "a"})
    clear_read_caches()
    store.script("transient", "get_range", times=None)
    with pytest.raises(lsm3.Lsm3Error) as info:
        lsm3.open_table(store).get(1)
    assert not isinstance(info.value, lsm3.CorruptDataFile), info.value


def test_permanent_errors_are_not_retried_for_long(tmp_path: Path) -> None:
    """A 403 on the snapshot put is retried like a lost response (safe: the put is
    conditional), but within the bounded commit_retries."""
    inner = LocalStore(str(tmp_path))
    store, table = new_table(inner, commit_retries=2)
    store.script("denied", "put_if_absent", "snapshot/*", times=None)
    with pytest.raises(lsm3.Lsm3Error):
        commit(table, {1: "a"})
    assert len(store.injected) == 3 and snapshot_count(inner) == 0


def test_permanent_error_is_reported_as_itself(tmp_path: Path) -> None:
    inner = LocalStore(str(tmp_path))
    store, table = new_table(inner, commit_retries=2)
    store.script("denied", "put_if_absent", "snapshot/*", times=None)
    with pytest.raises(lsm3.Lsm3Error, match="AccessDenied"):
        commit(table, {1: "a"})


# --------------------------------------------------------------------------- compactor, maintenance


@pytest.mark.parametrize(
    ("fault", "op", "pattern"),
    [
        ("ambiguous", "put", "data/*"),
        ("reset", "get_buffer", "data/*"),
        ("transient", "put_if_absent", "manifest/*"),
        ("ambiguous", "put_if_absent", "snapshot/*"),
    ],
)
def test_compaction_under_a_fault_keeps_the_table(
    inner: ObjectStore, fault: str, op: str, pattern: str
) -> None:
    store, table = new_table(inner, num_sorted_run_trigger=2)
    expected: dict[int, str] = {}
    for i in range(4):
        values = {i: f"v{i}", 0: f"zero{i}"}
        commit(table, values)
        expected.update(values)
    store.script(fault, op, pattern, nth=1 if "snapshot" not in pattern else 2)
    try:
        result = compactor.compact(lsm3.open_table(store), owner="c1")
        assert result.tasks, "the compaction absorbed the fault and ran"
    except lsm3.Lsm3Error as exc:
        assert isinstance(exc, StorageError), exc
    assert store.injected, "the fault was injected"
    check_chain(lsm3.open_table(inner))
    assert rows(inner) == expected
    store.clear()
    compactor.compact(lsm3.open_table(store), owner="c1")  # the same owner takes over at once
    assert rows(inner) == expected
    assert len(lsm3.open_table(inner).files()) == 1
    assert check_orphans(lsm3.open_table(inner))["orphans"] <= 2


@pytest.mark.parametrize("fault", ["transient", "ambiguous"])
def test_expiry_interrupted_by_a_fault_leaves_a_contiguous_history(
    inner: ObjectStore, fault: str
) -> None:
    store, table = new_table(inner)
    for i in range(8):
        commit(table, {i: "x"})
    store.script(fault, "delete", "snapshot/*", nth=3)
    with contextlib.suppress(lsm3.StorageError):
        expire_snapshots(lsm3.open_table(store), retain_last=2, older_than=dt.timedelta(0))
    t = lsm3.open_table(inner)
    snaps = check_chain(t)
    assert snaps[-1].snapshot_id == 8 and len(snaps) < 8
    for s in snaps:
        t.to_arrow(snapshot_id=s.snapshot_id)
    store.clear()
    expire_snapshots(lsm3.open_table(store), retain_last=2, older_than=dt.timedelta(0))
    remove_orphan_files(lsm3.open_table(store), older_than=dt.timedelta(0))
    assert rows(inner) == {i: "x" for i in range(8)}
    assert check_orphans(lsm3.open_table(inner))["orphans"] == 0


def test_orphan_removal_under_faults_never_deletes_live_files(inner: ObjectStore) -> None:
    store, table = new_table(inner)
    for i in range(5):
        commit(table, {i: "x"})
    store.inner.put("data/bucket-0/0123456789abcdef0123456789abcdef.parquet", b"orphan")
    for fault, op in [("transient", "list"), ("reset", "get"), ("ambiguous", "delete_many")]:
        store.clear()
        store.script(fault, op, nth=2)
        with contextlib.suppress(lsm3.StorageError):
            remove_orphan_files(lsm3.open_table(store), older_than=dt.timedelta(0))
        assert rows(inner) == {i: "x" for i in range(5)}


def test_catalog_change_with_a_lost_response_is_applied_once(tmp_path: Path) -> None:
    store = FaultyStore(LocalStore(str(tmp_path)))
    cat = Catalog(store)
    cat.create_namespace("sales")
    store.script("ambiguous", "put_if_absent", "catalog/state-*")
    cat.create_table("sales.orders", SCHEMA, "id")
    assert store.injected and store.injected[0].applied
    fresh = Catalog(LocalStore(str(tmp_path)))
    assert fresh.list_tables() == ["sales.orders"]
    assert fresh.refresh().state_id == 2


# --------------------------------------------------------------------------- random faults


@pytest.mark.parametrize("seed", range(3))
def test_random_faults_keep_every_snapshot_equal_to_the_model(seed: int) -> None:
    figures = run_random_faults(seed, steps=24, probability=0.08)
    assert not figures.anomalies, figures.anomalies
    assert figures.commits >= 5 and sum(figures.injected.values()) >= 5


@pytest.mark.parametrize("seed", range(2))
def test_random_faults_on_a_table_storing_its_changes(seed: int) -> None:
    """The same with ``changelog_producer = "lookup"``: failed changelog uploads and commits
    retried on a moved parent must still leave a changelog that replays to every snapshot."""
    options = {"changelog_producer": "lookup"}
    figures = run_random_faults(100 + seed, steps=30, probability=0.08, options=options)
    assert not figures.anomalies, figures.anomalies
    assert figures.commits >= 5 and sum(figures.injected.values()) >= 5


def test_random_faults_on_moto(s3_bucket_uri: Location) -> None:
    uri, options = s3_bucket_uri
    figures = run_random_faults(
        11, steps=8, probability=0.1, backend="s3", root=uri, storage_options=options
    )
    assert not figures.anomalies, figures.anomalies


# --------------------------------------------------------------------------- the retry layer

RETRIED_CALLS = {
    "get": lambda s: s.get("k"),
    "get_buffer": lambda s: s.get_buffer("k"),
    "get_range": lambda s: s.get_range("k", 0, 2, expected_size=5),
    "head": lambda s: s.head("k"),
    "list": lambda s: s.list(""),
    "put": lambda s: s.put("fresh", b"x"),
    "delete": lambda s: s.delete("gone"),
}


@pytest.mark.parametrize("op", sorted(RETRIED_CALLS))
@pytest.mark.parametrize("fault", RETRYABLE_FAULTS)
def test_safe_requests_are_retried_with_a_bound(op: str, fault: str) -> None:
    faulty = FaultyStore(open_store("memory://retry-" + op + fault), hang_seconds=0.001)
    faulty.inner.put("k", b"hello")
    store = lsm3.io.retry.RetryingStore(faulty, sleep=lambda s: None)
    call = RETRIED_CALLS[op]
    faulty.script(fault, op, times=lsm3.io.retry.ATTEMPTS - 1)  # heals on the last attempt
    call(store)
    assert len(faulty.injected) == lsm3.io.retry.ATTEMPTS - 1
    assert store.retries == lsm3.io.retry.ATTEMPTS - 1
    faulty.script(fault, op, times=lsm3.io.retry.ATTEMPTS)  # never heals: raised, bounded
    with pytest.raises(InjectedFault):
        call(store)
    assert len(faulty.injected) == 2 * lsm3.io.retry.ATTEMPTS - 1


@pytest.mark.parametrize("op", ["put_if_absent", "put_if_match"])
def test_conditional_puts_are_never_retried_by_the_store(op: str) -> None:
    """Whether a failed conditional put landed is for the commit loop to find out."""
    faulty = FaultyStore(open_store("memory://retry-cond-" + op))
    faulty.inner.put("k", b"v")
    etag = faulty.inner.get_with_etag("k")[1]
    store = lsm3.io.retry.RetryingStore(faulty, sleep=lambda s: None)
    faulty.script("transient", op)
    with pytest.raises(InjectedFault):
        if op == "put_if_absent":
            store.put_if_absent("new", b"v")
        else:
            store.put_if_match("k", b"w", etag or "")
    assert len(faulty.injected) == 1 and store.retries == 0


def test_permanent_errors_are_not_retried() -> None:
    faulty = FaultyStore(open_store("memory://retry-permanent"), record=True)
    store = lsm3.io.retry.RetryingStore(faulty, sleep=lambda s: None)
    with pytest.raises(lsm3.errors.ObjectNotFound):
        store.get("missing")
    assert faulty.calls == [("get", "missing")] and store.retries == 0


def test_tables_and_catalogs_reach_storage_through_one_retry_layer(tmp_path: Path) -> None:
    inner = LocalStore(str(tmp_path))
    table = lsm3.create_table(inner, pa.schema([("id", pa.int64())]), "id")
    assert isinstance(table.store, lsm3.io.retry.RetryingStore)
    again = lsm3.open_table(table.store)
    assert again.store is table.store  # never wrapped twice
    cat = Catalog(LocalStore(str(tmp_path / "wh")))
    assert isinstance(cat.store, lsm3.io.retry.RetryingStore)
    assert isinstance(cat.store.child("a/b"), lsm3.io.retry.RetryingStore)
    assert not isinstance(cat.store.child("a/b").inner, lsm3.io.retry.RetryingStore)
