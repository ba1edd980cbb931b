"""The catalog: namespaces and tables by name over a warehouse, committed by conditional puts.

Functional tests run on a local directory and on moto. Races between real processes run on a
local directory and on SeaweedFS, whose conditional puts are atomic under contention (moto's
are not: two conditional puts both won in 1 of 40 forced races).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import catalog
import lsm3
from catalog.log import LATEST_HINT, state_key
from lsm3.errors import PreconditionFailed, StorageError
from lsm3.io.store import ObjectInfo, ObjectStore

Location = tuple[str, Any]

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
    ]
)


def _rows(ids: list[int], tag: str = "v") -> pa.Table:
    return pa.table({"id": ids, "name": [f"{tag}{i}" for i in ids]}, schema=SCHEMA)


def _write(table: lsm3.Table, ids: list[int], tag: str = "v") -> None:
    with table.writer() as writer:
        writer.upsert(_rows(ids, tag))
        writer.commit()


def _ids(table: lsm3.Table) -> list[int]:
    return sorted(table.to_arrow(columns=["id"]).column("id").to_pylist())


@pytest.fixture
def warehouse(table_location: Location) -> Location:
    """``(uri, storage_options)`` of an empty warehouse, local and on moto."""
    return table_location


@pytest.fixture
def cat(warehouse: Location) -> catalog.Catalog:
    return catalog.connect(*warehouse)


def _objects(cat: catalog.Catalog, location: str) -> list[str]:
    return [i.key for i in cat.store.child(location).list("")]


# --------------------------------------------------------------------------- namespaces


def test_namespaces(cat: catalog.Catalog) -> None:
    assert cat.list_namespaces() == []
    cat.create_namespace("sales")
    cat.create_namespace("Analytics_2")
    assert cat.list_namespaces() == ["Analytics_2", "sales"]
    assert cat.namespace_exists("sales") and not cat.namespace_exists("hr")
    with pytest.raises(catalog.NamespaceAlreadyExists, match="'sales' already exists"):
        cat.create_namespace("sales")
    assert cat.list_tables("sales") == []
    cat.drop_namespace("sales")
    assert cat.list_namespaces() == ["Analytics_2"]
    with pytest.raises(catalog.NamespaceNotFound, match="'sales' does not exist"):
        cat.drop_namespace("sales")
    with pytest.raises(catalog.NamespaceNotFound):
        cat.list_tables("sales")
    with pytest.raises(catalog.NamespaceNotFound):
        cat.create_table("sales.orders", SCHEMA, primary_key="id")


def test_drop_namespace_refuses_a_non_empty_namespace(cat: catalog.Catalog) -> None:
    cat.create_namespace("sales")
    cat.create_table("sales.orders", SCHEMA, primary_key="id")
    with pytest.raises(catalog.NamespaceNotEmpty, match=r"1 table\(s\) \(orders\)"):
        cat.drop_namespace("sales")
    assert cat.list_namespaces() == ["sales"]
    cat.drop_table("sales.orders")
    cat.drop_namespace("sales")
    assert cat.list_namespaces() == []


# --------------------------------------------------------------------------- tables


def test_create_load_and_list_tables(cat: catalog.Catalog, warehouse: Location) -> None:
    cat.create_namespace("sales")
    cat.create_namespace("hr")
    orders = cat.create_table(
        "sales.orders", SCHEMA, primary_key=["id"], buckets=4, options={"row_group_rows": 512}
    )
    assert isinstance(orders, lsm3.Table)
    assert orders.primary_key == ("id",)
    assert orders.table_schema.buckets == 4
    assert orders.table_schema.option("row_group_rows") == 512
    _write(orders, [1, 2, 3])
    cat.create_table(("hr", "people"), SCHEMA, primary_key="id")
    cat.create_table("sales.customers", SCHEMA, primary_key="id")

    assert cat.list_tables("sales") == ["sales.customers", "sales.orders"]
    assert cat.list_tables("hr") == ["hr.people"]
    assert cat.list_tables() == ["hr.people", "sales.customers", "sales.orders"]
    assert cat.table_exists("sales.orders") and cat.table_exists(("hr", "people"))
    assert not cat.table_exists("sales.people") and not cat.table_exists("nope.orders")

    # Another process (a fresh connection) sees the same tables and data.
    other = catalog.connect(*warehouse)
    loaded = other.load_table("sales.orders")
    assert _ids(loaded) == [1, 2, 3]
    info = other.describe_table("sales.orders")
    assert info.uri == orders.uri == loaded.uri
    assert info.location == f"sales/orders-{info.uuid.replace('-', '')}"
    assert info.uri == f"{cat.uri}/{info.location}"
    # The table is a plain lsm3 table: open it by URI too.
    assert _ids(lsm3.open_table(info.uri, storage_options=warehouse[1])) == [1, 2, 3]

    with pytest.raises(lsm3.TableAlreadyExists, match=r"sales\.orders already exists"):
        cat.create_table("sales.orders", SCHEMA, primary_key="id")
    with pytest.raises(lsm3.TableNotFound, match=r"sales\.refunds does not exist"):
        cat.load_table("sales.refunds")
    with pytest.raises(lsm3.TableNotFound, match="namespace 'nope' does not exist either"):
        cat.load_table("nope.orders")
    assert catalog.TableNotFound is lsm3.TableNotFound
    assert catalog.TableAlreadyExists is lsm3.TableAlreadyExists


def test_rename_keeps_data_and_releases_the_old_name(
    cat: catalog.Catalog, warehouse: Location
) -> None:
    cat.create_namespace("sales")
    cat.create_namespace("archive")
    t = cat.create_table("sales.orders", SCHEMA, primary_key="id")
    _write(t, [1, 2])
    before = cat.describe_table("sales.orders")

    cat.rename_table("sales.orders", "sales.orders_v2")
    assert cat.list_tables("sales") == ["sales.orders_v2"]
    assert not cat.table_exists("sales.orders")
    with pytest.raises(lsm3.TableNotFound):
        cat.load_table("sales.orders")
    after = cat.describe_table("sales.orders_v2")
    assert (after.uuid, after.location) == (before.uuid, before.location)  # metadata only
    renamed = catalog.connect(*warehouse).load_table("sales.orders_v2")
    assert _ids(renamed) == [1, 2]
    _write(renamed, [3])
    assert _ids(cat.load_table("sales.orders_v2")) == [1, 2, 3]

    # The old name is free again, for a new, empty table in a new location.
    fresh = cat.create_table("sales.orders", SCHEMA, primary_key="id")
    assert _ids(fresh) == []
    assert cat.describe_table("sales.orders").location != before.location

    # Across namespaces; onto a taken name; from a missing name.
    cat.rename_table("sales.orders_v2", "archive.orders_2025")
    assert _ids(cat.load_table("archive.orders_2025")) == [1, 2, 3]
    with pytest.raises(lsm3.TableAlreadyExists):
        cat.rename_table("archive.orders_2025", "sales.orders")
    with pytest.raises(lsm3.TableNotFound):
        cat.rename_table("sales.orders_v2", "sales.x")
    with pytest.raises(catalog.NamespaceNotFound):
        cat.rename_table("sales.orders", "nope.orders")
    with pytest.raises(lsm3.TableNotFound):
        cat.drop_table("nope.orders")
    assert cat.list_tables() == ["archive.orders_2025", "sales.orders"]


def test_drop_without_purge_keeps_the_objects(cat: catalog.Catalog, warehouse: Location) -> None:
    cat.create_namespace("sales")
    t = cat.create_table("sales.orders", SCHEMA, primary_key="id")
    _write(t, [1, 2, 3])
    info = cat.describe_table("sales.orders")
    kept = _objects(cat, info.location)
    assert any(k.startswith("data/") for k in kept) and "schema/schema-0.json" in kept

    cat.drop_table("sales.orders", purge=False)
    assert not cat.table_exists("sales.orders")
    assert cat.list_tables() == []
    assert _objects(cat, info.location) == kept
    assert _ids(lsm3.open_table(info.uri, storage_options=warehouse[1])) == [1, 2, 3]
    with pytest.raises(lsm3.TableNotFound):
        cat.drop_table("sales.orders")

    # Recreating the name never sees the old files.
    again = cat.create_table("sales.orders", SCHEMA, primary_key="id")
    assert _ids(again) == [] and again.files() == []
    assert cat.describe_table("sales.orders").location != info.location


def test_drop_with_purge_deletes_the_objects(cat: catalog.Catalog, warehouse: Location) -> None:
    cat.create_namespace("sales")
    keep = cat.create_table("sales.keep", SCHEMA, primary_key="id")
    _write(keep, [7])
    t = cat.create_table("sales.orders", SCHEMA, primary_key="id")
    _write(t, [1, 2, 3])
    _write(t, [4])
    info = cat.describe_table("sales.orders")
    assert len(_objects(cat, info.location)) > 4

    cat.drop_table("sales.orders", purge=True)
    assert _objects(cat, info.location) == []
    assert cat.list_tables() == ["sales.keep"]
    assert _ids(cat.load_table("sales.keep")) == [7]  # a neighbour is untouched
    if warehouse[1] is None:  # a local warehouse also loses the empty directories
        assert not (Path(warehouse[0]) / info.location).exists()
    with pytest.raises(lsm3.TableNotFound):
        lsm3.open_table(info.uri, storage_options=warehouse[1])


def test_state_objects_are_numbered_immutable_and_complete(
    cat: catalog.Catalog, warehouse: Location
) -> None:
    cat.create_namespace("sales")
    cat.create_table("sales.orders", SCHEMA, primary_key="id")
    cat.rename_table("sales.orders", "sales.o2")
    keys = [i.key for i in cat.store.list("catalog/")]
    assert keys == [LATEST_HINT, *(state_key(i) for i in (1, 2, 3))]
    docs = [json.loads(cat.store.get(state_key(i))) for i in (1, 2, 3)]
    assert [d["state_id"] for d in docs] == [1, 2, 3]
    assert [d["parent_id"] for d in docs] == [None, 1, 2]
    assert docs[0]["namespaces"]["sales"]["tables"] == {}
    assert [d["operation"] for d in docs] == [
        "create_namespace sales",
        "create_table sales.orders",
        "rename_table sales.orders sales.o2",
    ]
    entry = docs[2]["namespaces"]["sales"]["tables"]["o2"]
    assert entry == docs[1]["namespaces"]["sales"]["tables"]["orders"]
    assert set(entry) == {"location", "uuid", "created_ms"}
    assert cat.store.get(LATEST_HINT) == b"3"
    with pytest.raises(PreconditionFailed):  # what a stale committer meets
        cat.store.put_if_absent(state_key(3), b"{}")

    # The hint is advisory: stale or missing, a new connection still finds state 3.
    for hint in (b"1", b"junk"):
        cat.store.put(LATEST_HINT, hint)
        assert catalog.connect(*warehouse).list_tables() == ["sales.o2"]
    cat.store.delete(LATEST_HINT)
    assert catalog.connect(*warehouse).refresh().state_id == 3


def test_memory_warehouse() -> None:
    cat = catalog.connect("memory://catalog-test-" + os.urandom(4).hex())
    cat.create_namespace("m")
    t = cat.create_table("m.t", SCHEMA, primary_key="id")
    _write(t, [5])
    assert _ids(cat.load_table("m.t")) == [5]
    location = cat.describe_table("m.t").location
    cat.drop_table("m.t", purge=True)
    assert _objects(cat, location) == []


# --------------------------------------------------------------------------- identifiers

HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "a\\b",
    "/abs",
    "x" * 129,
    "s\u0430les",  # Cyrillic a
    "\u0455ales",  # Cyrillic dze, looks like s
    "sales\u200b",  # zero-width space
    "\ufb01le",  # a ligature that NFKC folds to "file"
    "a b",
    " a",
    "a\x00b",
    "a\n",
    "a\t",
    "1abc",
    "a-b",
    "a.b",
    "a%2fb",
    "~",
    "*",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_hostile_names_are_refused(tmp_path: Path, name: str) -> None:
    cat = catalog.connect(str(tmp_path / "wh"))
    cat.create_namespace("ok")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    calls = [
        lambda: cat.create_namespace(name),
        lambda: cat.drop_namespace(name),
        lambda: cat.namespace_exists(name),
        lambda: cat.list_tables(name),
        lambda: cat.create_table(f"ok.{name}", SCHEMA, primary_key="id"),
        lambda: cat.create_table((name, "t"), SCHEMA, primary_key="id"),
        lambda: cat.create_table(("ok", name), SCHEMA, primary_key="id"),
        lambda: cat.load_table(("ok", name)),
        lambda: cat.table_exists(("ok", name)),
        lambda: cat.rename_table("ok.t", ("ok", name)),
        lambda: cat.drop_table(("ok", name), purge=True),
    ]
    for call in calls:
        with pytest.raises(catalog.InvalidIdentifier) as info:
            call()
        assert isinstance(info.value, lsm3.InvalidInput)
        assert "invalid" in str(info.value) or "two parts" in str(info.value)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "identifier",
    ["orders", "ok.", ".orders", "ok.orders.x", "ok/orders", "../etc.passwd", ("ok",), 7, None],
    ids=repr,
)
def test_malformed_table_identifiers_are_refused(tmp_path: Path, identifier: Any) -> None:
    cat = catalog.connect(str(tmp_path / "wh"))
    with pytest.raises(catalog.InvalidIdentifier):
        cat.create_table(identifier, SCHEMA, primary_key="id")
    with pytest.raises(catalog.InvalidIdentifier):
        cat.load_table(identifier)


def test_identifier_rule_boundaries(tmp_path: Path) -> None:
    cat = catalog.connect(str(tmp_path / "wh"))
    for good in ("_x", "A1", "x" * 128, "_"):
        cat.create_namespace(good)
        cat.create_table((good, "x" * 128), SCHEMA, primary_key="id")
    assert len(cat.list_tables()) == 4
    for reserved in ("catalog", "Catalog", "CATALOG"):
        with pytest.raises(catalog.InvalidIdentifier, match="reserved"):
            cat.create_namespace(reserved)
    with pytest.raises(catalog.InvalidIdentifier, match="1 to 128 ASCII"):
        cat.create_namespace("x" * 129)


# --------------------------------------------------------------------------- corruption


def _latest_key(cat: catalog.Catalog) -> str:
    return state_key(cat.refresh().state_id)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda doc: b"{not json", "not valid JSON"),
        (lambda doc: b"[1, 2]", "not a JSON object"),
        (lambda doc: {**doc, "format": "other"}, "not a catalog state"),
        (lambda doc: {k: v for k, v in doc.items() if k != "namespaces"}, "missing field"),
        (lambda doc: {**doc, "state_id": "2"}, "malformed"),
        (lambda doc: {**doc, "state_id": 5}, "holds catalog state 5"),
        (lambda doc: _set_location(doc, "../../etc"), "inside the warehouse root"),
        (lambda doc: _set_location(doc, "sales/orders-" + "0" * 32), "does not end in its uuid"),
        (lambda doc: _set_location(doc, "catalog/x-" + doc["_uuid_hex"]), "inside the warehouse"),
        (lambda doc: _set_uuid(doc, "not-a-uuid"), "malformed"),
        (
            lambda doc: {**doc, "namespaces": {"../x": {"created_ms": 0, "tables": {}}}},
            "invalid namespace",
        ),
    ],
)
def test_corrupt_state_gives_a_clear_error(
    cat: catalog.Catalog, warehouse: Location, mutate: Any, match: str
) -> None:
    cat.create_namespace("sales")
    cat.create_table("sales.orders", SCHEMA, primary_key="id")
    key = _latest_key(cat)
    doc = json.loads(cat.store.get(key))
    entry = doc["namespaces"]["sales"]["tables"]["orders"]
    doc["_uuid_hex"] = entry["uuid"].replace("-", "")
    bad = mutate(doc)
    if isinstance(bad, dict):
        bad.pop("_uuid_hex", None)
        bad = json.dumps(bad).encode()
    cat.store.put(key, bad)  # simulate a damaged object (nothing in lsm3 overwrites states)

    fresh = catalog.connect(*warehouse)
    with pytest.raises(lsm3.CorruptMetadata, match=match) as info:
        fresh.list_tables()
    assert "catalog state 2" in str(info.value) or "state 5" in str(info.value)


def _set_location(doc: dict[str, Any], location: str) -> dict[str, Any]:
    doc["namespaces"]["sales"]["tables"]["orders"]["location"] = location
    return doc


def _set_uuid(doc: dict[str, Any], value: str) -> dict[str, Any]:
    doc["namespaces"]["sales"]["tables"]["orders"]["uuid"] = value
    return doc


def test_newer_format_version_is_refused(cat: catalog.Catalog, warehouse: Location) -> None:
    cat.create_namespace("sales")
    doc = json.loads(cat.store.get(state_key(1)))
    cat.store.put(state_key(1), json.dumps({**doc, "format_version": 2}).encode())
    with pytest.raises(catalog.UnsupportedFormatVersion, match="upgrade lsm3"):
        catalog.connect(*warehouse).list_namespaces()


# --------------------------------------------------------------------------- commit protocol


class _LostResponseStore(ObjectStore):
    """Delegates to a store; the first state put lands but reports a timeout."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner.url, inner.stats)
        self.inner = inner
        self.failed = 0

    def put_if_absent(self, key: str, data: bytes) -> None:
        self.inner.put_if_absent(key, data)
        if key.startswith("catalog/state-") and not self.failed:
            self.failed += 1
            raise StorageError("read timeout (the PUT may have landed)")

    def put(self, key: str, data: Any) -> None:
        self.inner.put(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        self.inner.put_if_match(key, data, etag)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_range(
        self, key: str, start: int, length: int, expected_size: int | None = None
    ) -> bytes:
        return self.inner.get_range(key, start, length, expected_size)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        return self.inner.list(prefix, start_after)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_a_commit_whose_response_was_lost_is_applied_once(warehouse: Location) -> None:
    inner = catalog.connect(*warehouse).store
    flaky = _LostResponseStore(inner)
    cat = catalog.Catalog(flaky)
    cat.create_namespace("sales")  # lands, reports a failure, is recognised by its commit id
    assert flaky.failed == 1
    assert cat.list_namespaces() == ["sales"]
    assert [i.key for i in inner.list("catalog/state-")] == [state_key(1)]


class _AlwaysTakenStore(_LostResponseStore):
    def put_if_absent(self, key: str, data: bytes) -> None:
        raise PreconditionFailed(f"{key} already exists")


def test_commit_gives_up_after_bounded_retries(tmp_path: Path) -> None:
    store = catalog.connect(str(tmp_path)).store
    cat = catalog.Catalog(_AlwaysTakenStore(store), commit_retries=3)
    with pytest.raises(lsm3.CommitConflict, match="gave up after 4 attempts"):
        cat.create_namespace("sales")


def test_a_create_that_loses_the_name_at_commit_cleans_up(tmp_path: Path) -> None:
    """The slow path of a race: the name was free when checked, taken at commit time."""
    winner = catalog.connect(str(tmp_path))
    winner.create_namespace("sales")
    loser = catalog.connect(str(tmp_path))
    stale = loser.refresh()
    winner.create_table("sales.orders", SCHEMA, primary_key="id")
    loser.refresh = lambda: stale  # type: ignore[method-assign]  # the check sees the old state
    with pytest.raises(lsm3.TableAlreadyExists, match=r"sales\.orders already exists"):
        loser.create_table("sales.orders", SCHEMA, primary_key="id")
    dirs = sorted(p.name for p in (tmp_path / "sales").iterdir())
    assert dirs == [winner.describe_table("sales.orders").location.split("/")[1]]


def test_threads_creating_different_tables_all_land(tmp_path: Path) -> None:
    uri = str(tmp_path / "wh")
    catalog.connect(uri).create_namespace("ns")
    threads, per_thread = 8, 4
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(i: int) -> None:
        try:
            cat = catalog.connect(uri)  # its own view, as if another process
            barrier.wait()
            for j in range(per_thread):
                cat.create_table(f"ns.t{i}_{j}", SCHEMA, primary_key="id")
                if j % 2:
                    cat.create_namespace(f"extra_{i}_{j}")
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not errors, errors
    cat = catalog.connect(uri)
    expected = sorted(f"ns.t{i}_{j}" for i in range(threads) for j in range(per_thread))
    assert cat.list_tables("ns") == expected
    assert len(cat.list_namespaces()) == 1 + threads * per_thread // 2
    assert cat.refresh().state_id == 1 + threads * per_thread * 3 // 2
    assert len(list((tmp_path / "wh" / "ns").iterdir())) == threads * per_thread


# --------------------------------------------------------------------------- process races

RACE_WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import pyarrow as pa

    import catalog
    import lsm3

    uri, options, sync, me, n, rounds = sys.argv[1:7]
    options, sync, n, rounds = json.loads(options), Path(sync), int(n), int(rounds)
    cat = catalog.connect(uri, options)
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False)])
    for r in range(rounds):
        (sync / f"ready-{r}-{me}").touch()
        deadline = time.monotonic() + 60
        while len(list(sync.glob(f"ready-{r}-*"))) < n:  # a barrier across processes
            if time.monotonic() > deadline:
                sys.exit("barrier timeout")
            time.sleep(0.0005)
        try:
            cat.create_table(f"race.t{r}", schema, primary_key="id")
            print(f"{r} WON", flush=True)
        except lsm3.TableAlreadyExists as exc:
            print(f"{r} EXISTS {exc}", flush=True)
    """
)


def _race(uri: str, options: Any, tmp_path: Path, processes: int, rounds: int) -> None:
    catalog.connect(uri, options).create_namespace("race")
    sync = tmp_path / "sync"
    sync.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACE_WORKER,
                uri,
                json.dumps(options),
                str(sync),
                str(i),
                str(processes),
                str(rounds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        outputs.append(out.splitlines())
    for r in range(rounds):
        mine = [line for out in outputs for line in out if line.startswith(f"{r} ")]
        assert len(mine) == processes, mine
        won = [line for line in mine if line.endswith("WON")]
        assert len(won) == 1, mine  # exactly one winner per name
        for line in mine:
            if not line.endswith("WON"):
                assert f"race.t{r} already exists" in line, line
    cat = catalog.connect(uri, options)
    assert cat.list_tables("race") == sorted(f"race.t{r}" for r in range(rounds))
    for r in range(rounds):
        table = cat.load_table(f"race.t{r}")
        assert table.files() == []
        location = cat.describe_table(f"race.t{r}").location
        assert "schema/schema-0.json" in _objects(cat, location)
    # Every loser cleaned up: one table location per name, no orphans.
    locations = {i.key.split("/")[1] for i in cat.store.list("race/")}
    assert len(locations) == rounds, sorted(locations)


def test_processes_racing_for_one_name_local(tmp_path: Path) -> None:
    _race(str(tmp_path / "wh"), None, tmp_path, processes=4, rounds=6)


def test_processes_racing_for_one_name_seaweedfs(
    seaweed_bucket_uri: Location, tmp_path: Path
) -> None:
    uri, options = seaweed_bucket_uri
    _race(uri, options, tmp_path, processes=4, rounds=4)
