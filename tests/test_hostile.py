"""Hostile input: fuzzed metadata, damaged Parquet files and malformed CDC batches.

Every decoder of something read from storage (snapshot, manifest, schema, tag, catalog
state, the LATEST hint) is fed malformed JSON, wrong types, huge numbers, deep nesting and
paths outside the table root, by hypothesis, as raw bytes and as mutations of real documents.
Each input must end in a decoded object of the right shape or a clear ``Lsm3Error``
(CorruptMetadata for metadata): never another exception, a hang or an interpreter crash.
Damaged Parquet files (truncated, bit-flipped) must be refused with CorruptDataFile; with
forged checksums the decoder still may only fail cleanly (checked in a child process, so a
crash of the native decoder would show as a failure, not kill the test run). CDC batches with
wrong types, nulls in keys, unknown ops and duplicate keys either commit exactly what a dict
model says or raise an ``Lsm3Error`` and commit nothing.

A bug found by these fuzzers gets a regression test; while it is open, a strict-xfail test
pins it and the fuzzers count an input that hits it (``KNOWN_BUGS``) instead of failing, so
they keep checking everything else. ``make soak`` runs the same fuzzers with many more examples
(``run_hostile``) and reports how every input ended.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from helpers import clear_read_caches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsm3
from catalog.client import Catalog
from catalog.state import CatalogState
from lsm3.errors import CorruptDataFile, CorruptMetadata, Lsm3Error
from lsm3.format.manifest_codec import decode_manifest
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import TableSchema
from lsm3.format.tags import decode_tag
from lsm3.io.memory import MemoryStore
from lsm3.read.lookup import lookup
from lsm3.read.runfile import OpenRun, checksum_of, footer_checksum_of

EXAMPLES = int(os.environ.get("LSM3_HOSTILE_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

#: (decoder, outcome) -> how many inputs ended so; outcome is "decoded", "refused <Error>",
#: "known bug <Exception>" or "ESCAPED <Exception>" (a failure).
OUTCOMES: Counter[tuple[str, str]] = Counter()


# --------------------------------------------------------------------------- known bugs

#: (decoder, exception type, message fragment) of open bugs the fuzzers hit; each has an
#: xfail test below. Remove the entry with the fix (the xfail test then fails: XPASS). The
#: decoder bugs found so far (RecursionError and OverflowError from schema objects,
#: ValueError from snapshots, tags, base64 keys and huge LATEST hints, OverflowError from CDC
#: data) are fixed, so an input that hits one again fails the fuzzer.
KNOWN_BUGS: list[tuple[str, type[BaseException], str]] = []


def _known(decoder: str, exc: BaseException) -> bool:
    return any(
        decoder == d and isinstance(exc, t) and frag in str(exc) for d, t, frag in KNOWN_BUGS
    )


def outcome_of(decoder: str, fn: Callable[[], Any]) -> tuple[str, Any]:
    """Run one decode; classify how it ended; fail the test on an unexpected exception."""
    try:
        value = fn()
        result, outcome = value, "decoded"
    except Lsm3Error as exc:
        result, outcome = exc, f"refused {type(exc).__name__}"
    except Exception as exc:
        if not _known(decoder, exc):
            OUTCOMES[(decoder, f"ESCAPED {type(exc).__name__}")] += 1
            raise AssertionError(
                f"{decoder}: {type(exc).__name__} escaped instead of an Lsm3Error: {exc}"
            ) from exc
        result, outcome = exc, f"known bug {type(exc).__name__}"
    OUTCOMES[(decoder, outcome)] += 1
    return outcome, result


# --------------------------------------------------------------------------- real documents


def _real_documents() -> dict[str, Any]:
    """A snapshot, manifests, a schema, a tag and a catalog state written by lsm3 itself."""
    name = f"hostile-{uuid.uuid4().hex}"
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("at", pa.timestamp("us", "UTC")),
            ("price", pa.decimal128(10, 2)),
        ]
    )
    t = lsm3.create_table(f"memory://{name}/t", schema, "id", buckets=4)
    w = t.writer("w")
    w.upsert(
        [
            {"id": i, "name": f"n{i}", "tags": ["a"], "at": i, "price": Decimal("1.25")}
            for i in range(9)
        ]
    )
    w.commit(metadata={"offset": 9})
    t.create_tag("v1")
    b = lsm3.create_table(
        f"memory://{name}/b",
        pa.schema([("region", pa.string()), ("k", pa.binary()), ("v", pa.int64())]),
        ["region", "k"],
        partition_by="region",
        buckets=2,
    )
    bw = b.writer()
    bw.upsert([{"region": "eu", "k": b"\x00\xff", "v": 1}, {"region": "us", "k": b"a", "v": 2}])
    bsnap = bw.commit()
    assert bsnap is not None
    store = MemoryStore(name)
    cat = Catalog(store.child("wh"))
    cat.create_namespace("sales")
    cat.create_table("sales.orders", pa.schema([("id", pa.int64())]), "id")
    snap = t.current_snapshot()
    assert snap is not None
    docs = {
        "snapshot": json.loads(t.store.get(f"snapshot/snapshot-{1:020d}.json")),
        "manifest": json.loads(t.store.get(snap.manifests[0])),
        "manifest-binary-key": json.loads(b.store.get(bsnap.manifests[0])),
        "schema": json.loads(t.store.get("schema/schema-0.json")),
        "tag": json.loads(t.store.get("tag/v1.json")),
        "catalog": json.loads(store.get(f"wh/catalog/state-{2:020d}.json")),
    }
    with lsm3.io.memory._MEMORY_LOCK:
        lsm3.io.memory._MEMORY_SPACES.pop(name, None)
    return docs


DOCS = _real_documents()
_INT_KEY = [pa.int64()]
_BIN_KEY = ([pa.string(), pa.binary()], [pa.string()])

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "snapshot": lambda raw: Snapshot.decode(raw, "snapshot"),
    "manifest": lambda raw: decode_manifest(raw, _INT_KEY, [], "manifest"),
    "manifest-binary-key": lambda raw: decode_manifest(raw, *_BIN_KEY, "manifest"),
    "schema": lambda raw: TableSchema.decode(raw, "schema"),
    "tag": lambda raw: decode_tag(raw, "tag"),
    "catalog": lambda raw: CatalogState.decode(raw, "catalog state"),
}


def check_shape(decoder: str, value: Any) -> None:
    """A decoded object must have the types the format promises (nothing slipped through)."""
    snaps: list[Snapshot] = []
    if decoder in ("snapshot", "tag"):
        snaps = [value]
    for s in snaps:
        assert isinstance(s.snapshot_id, int) and isinstance(s.next_sequence, int)
        assert all(m.startswith("manifest/") and ".." not in m for m in s.manifests)
        assert isinstance(s.metadata, dict) and isinstance(s.writers, dict)
        for r in s.writers.values():
            assert isinstance(r.commit_id, str) and isinstance(r.metadata, dict)
    if decoder.startswith("manifest"):
        for e in value:
            assert e.op in ("add", "remove") and isinstance(e.file, DataFile)
            assert e.file.path.startswith("data/") and ".." not in e.file.path.split("/")
    if decoder == "catalog":
        for ns in value.namespaces.values():
            for entry in ns.tables.values():
                assert ".." not in entry.location and not entry.location.startswith("/")


# --------------------------------------------------------------------------- strategies

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ESCAPING_PATHS = st.sampled_from(
    [
        "../outside.json",
        "/etc/passwd",
        "manifest/../../../etc/passwd",
        "data/../../secret.parquet",
        "manifest/a//b.json",
        "manifest/./x.json",
        "data\\..\\x.parquet",
        "s3://other-bucket/x.parquet",
        "file:///etc/passwd",
        "manifest/\x00.json",
        "data/x\n.parquet",
        "manifest/" + "a" * 5000,
        "",
        "manifest",
        "snapshot/snapshot-00000000000000000001.json",
        "sales/../catalog/state-1",
        "sales/orders-" + "0" * 32 + "/../../x",
    ]
)
HOSTILE_VALUES = JSON_VALUES | ESCAPING_PATHS | st.just(2**63) | st.just(-(2**63) - 1)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, decoder: str, base: Any = None) -> bytes:
    """A real document with one place changed: a value replaced (by junk, a huge number, an
    escaping path), a key removed, or a key added."""
    doc = copy.deepcopy(DOCS[decoder] if base is None else base)
    paths = [p for p in _paths(doc) if p]
    path = draw(st.sampled_from(paths))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(HOSTILE_VALUES)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=10))] = draw(HOSTILE_VALUES)
    else:
        parent.append(draw(HOSTILE_VALUES))
    return json.dumps(doc).encode()


def raw_junk() -> st.SearchStrategy[bytes]:
    deep = st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n)
    deep_obj = st.integers(1, 100_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)
    unclosed = st.integers(1, 100_000).map(lambda n: b"[" * n)
    huge = st.integers(4000, 20_000).map(lambda n: b'{"snapshot_id": 1' + b"0" * n + b"}")
    return (
        st.binary(max_size=200)
        | st.text(max_size=100).map(str.encode)
        | JSON_VALUES.map(lambda v: json.dumps(v).encode())
        | deep
        | deep_obj
        | unclosed
        | huge
        | st.sampled_from(
            [b"", b"\xef\xbb\xbf{}", "{}".encode("utf-16"), b"\x00" * 64, b"nul\x00l", b"NaN"]
        )
    )


def check_decoder(decoder: str, raw: bytes) -> str:
    outcome, value = outcome_of(decoder, lambda: DECODERS[decoder](raw))
    if outcome == "decoded":
        check_shape(decoder, value)
    elif outcome.startswith("refused"):
        assert isinstance(value, CorruptMetadata), value
    return outcome


# --------------------------------------------------------------------------- metadata fuzzers


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@FUZZ
@given(data=st.data())
def test_fuzzed_metadata_is_decoded_or_refused(decoder: str, data: st.DataObject) -> None:
    raw = data.draw(mutated(decoder) | raw_junk())
    check_decoder(decoder, raw)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_real_documents_decode(decoder: str) -> None:
    assert check_decoder(decoder, json.dumps(DOCS[decoder]).encode()) == "decoded"


@pytest.mark.parametrize("decoder", ["snapshot", "manifest", "tag", "catalog"])
@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deep_nesting_is_corrupt_metadata(decoder: str, depth: int) -> None:
    assert check_decoder(decoder, b"[" * depth + b"]" * depth).startswith("refused")
    assert check_decoder(decoder, b'{"a":' * depth + b"1" + b"}" * depth).startswith("refused")


def test_deeply_nested_schema_is_corrupt_metadata() -> None:
    with pytest.raises(CorruptMetadata):
        TableSchema.decode(b"[" * 100_000 + b"]" * 100_000, "schema")


@pytest.mark.parametrize(
    "type_json",
    [
        {"type": "decimal128", "precision": 2**63, "scale": 2},
        {"type": "fixed_size_binary", "byte_width": 2**64},
    ],
)
def test_schema_with_a_huge_type_parameter_is_corrupt_metadata(type_json: Any) -> None:
    doc = copy.deepcopy(DOCS["schema"])
    doc["fields"][1]["type"] = type_json
    with pytest.raises(CorruptMetadata):
        TableSchema.decode(json.dumps(doc).encode(), "schema")


def test_snapshot_with_a_string_writer_metadata_is_corrupt_metadata() -> None:
    doc = copy.deepcopy(DOCS["snapshot"])
    doc["writers"] = {"w": {"commit_id": "c", "snapshot_id": 1, "metadata": "oops"}}
    with pytest.raises(CorruptMetadata):
        Snapshot.decode(json.dumps(doc).encode(), "snapshot")


def test_manifest_with_a_bad_base64_key_is_corrupt_metadata() -> None:
    doc = copy.deepcopy(DOCS["manifest-binary-key"])
    doc["entries"][0]["file"]["min_key"] = ["eu", "abc"]
    with pytest.raises(CorruptMetadata):
        decode_manifest(json.dumps(doc).encode(), *_BIN_KEY, "manifest")


def test_huge_latest_hint_is_ignored(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), pa.schema([("id", pa.int64())]), "id")
    w = t.writer()
    w.upsert([{"id": 1}])
    w.commit()
    t.store.put("snapshot/LATEST", b"9" * 5000)
    assert lsm3.open_table(str(tmp_path / "t")).to_arrow().num_rows == 1


HINTS = (
    st.binary(max_size=40)
    | st.text(max_size=40).map(str.encode)
    | st.integers(0, 10**30).map(lambda i: str(i).encode())
    | st.integers(4000, 6000).map(lambda n: b"9" * n)
)


@FUZZ
@given(hint=HINTS)
def test_fuzzed_latest_hint_never_breaks_discovery(hint: bytes) -> None:
    t = _hint_table()
    t.store.put("snapshot/LATEST", hint)
    outcome, value = outcome_of("latest-hint", lambda: lsm3.open_table(t.store).refresh())
    if not outcome.startswith("known bug"):
        assert outcome == "decoded" and value is not None and value.snapshot_id == 2, value


_HINT_TABLE: list[lsm3.Table] = []


def _hint_table() -> lsm3.Table:
    if not _HINT_TABLE:
        t = lsm3.create_table(
            f"memory://hint-{uuid.uuid4().hex}", pa.schema([("id", pa.int64())]), "id"
        )
        for i in range(2):
            w = t.writer()
            w.upsert([{"id": i}])
            w.commit()
        _HINT_TABLE.append(t)
    return _HINT_TABLE[0]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["fields"][0].update(id=1.9),
        lambda d: d.update(buckets=4.7),
        lambda d: d["fields"][1].update(nullable="false"),
        lambda d: d.update(schema_id="0"),
    ],
)
def test_schema_with_wrong_types_is_refused(change: Callable[[dict], None]) -> None:
    doc = copy.deepcopy(DOCS["schema"])
    change(doc)
    with pytest.raises(CorruptMetadata):
        TableSchema.decode(json.dumps(doc).encode(), "schema")


# --------------------------------------------------------------------------- planted metadata


@pytest.fixture
def planted(tmp_path: Path) -> lsm3.Table:
    t = lsm3.create_table(
        str(tmp_path / "t"), pa.schema([("id", pa.int64()), ("v", pa.string())]), "id"
    )
    for i in range(3):
        w = t.writer("w")
        w.upsert([{"id": i, "v": str(i)}])
        w.commit()
    return t


@settings(
    max_examples=max(10, EXAMPLES // 2),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_planted_snapshot_or_manifest_fails_cleanly_through_the_table(
    planted: lsm3.Table, data: st.DataObject
) -> None:
    """A damaged newest snapshot or manifest, read through open/refresh/scan/get/inspect
    paths: a clear error or a result, never another exception."""
    store = planted.store
    snap = lsm3.open_table(store).current_snapshot()
    assert snap is not None
    which = data.draw(st.sampled_from(["snapshot", "manifest"]))
    key = (
        f"snapshot/snapshot-{snap.snapshot_id:020d}.json"
        if which == "snapshot"
        else snap.manifests[-1]
    )
    original = store.get(key)
    raw = data.draw(mutated(which, json.loads(original)) | raw_junk())
    store.put(key, raw)
    try:
        outcome_of(which, lambda: _read_everything(store))
    finally:
        store.put(key, original)


def _read_everything(store: Any) -> None:
    t = lsm3.open_table(store)
    t.to_arrow()
    t.get(1)
    t.snapshots()
    t.files()


# --------------------------------------------------------------------------- damaged Parquet


def _sample_run() -> tuple[bytes, lsm3.Table]:
    t = lsm3.create_table(
        f"memory://pq-{uuid.uuid4().hex}",
        pa.schema([("id", pa.int64()), ("name", pa.string()), ("x", pa.float64())]),
        "id",
        options={"row_group_rows": 50},
    )
    w = t.writer()
    w.upsert([{"id": i, "name": f"name-{i}" * (i % 3), "x": i / 7} for i in range(300)])
    w.commit()
    f = t.files()[0]
    return t.store.get(f.path), t


def test_truncated_or_flipped_data_files_are_refused() -> None:
    """Manifest entry unchanged: every damage is caught by size, checksum or page CRCs. A
    point lookup reads only the footer and the row groups it needs: damage elsewhere may go
    unnoticed by it, but it must still return the right row."""
    body, t = _sample_run()
    f = t.files_of(t.current_snapshot())[0]
    right = t.get(5)
    rng = random.Random(7)
    damages: list[bytes] = [body[:n] for n in (0, 1, 4, len(body) // 2, len(body) - 1)]
    for _ in range(30):
        b = bytearray(body)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        damages.append(bytes(b))
    damages.append(body + b"\x00")
    for damaged in damages:
        t.store.put(f.path, damaged)
        clear_read_caches()
        outcome, exc = outcome_of("parquet-scan", t.to_arrow)
        assert outcome == "refused CorruptDataFile", (outcome, exc)
        outcome, got = outcome_of("parquet-get", lambda: t.get(5))
        assert outcome == "refused CorruptDataFile" or got == right, (outcome, got)
    t.store.put(f.path, body)


def test_data_files_fetched_in_parts_are_size_checked(
    s3_bucket_uri: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On S3 a large run is fetched as several ranged GETs at once; an object of another size
    than its manifest entry says is refused all the same, and nothing committed changes."""
    import lsm3.io.s3

    monkeypatch.setattr(lsm3.io.s3, "PART_BYTES", 1000)
    uri, options = s3_bucket_uri
    t = lsm3.create_table(
        uri,
        pa.schema([("id", pa.int64()), ("name", pa.string())]),
        "id",
        storage_options=options,
        options={"row_group_rows": 50},
    )
    with t.writer() as w:
        w.upsert([{"id": i, "name": f"name-{i}"} for i in range(300)])
    f = t.files()[0]
    assert f.bytes > 3000  # fetched in several parts
    body = t.store.get(f.path)
    expected = t.to_arrow()
    clear_read_caches()
    fresh = lsm3.open_table(uri, storage_options=options)
    assert fresh.to_arrow().equals(expected)
    assert fresh.store.stats.requests["GET"] >= f.bytes // 1000  # the parts, then metadata
    for damaged in (body[:-1], body + b"\x00"):
        t.store.put(f.path, damaged)
        clear_read_caches()
        with pytest.raises(CorruptDataFile, match="size"):
            t.to_arrow()
    t.store.put(f.path, body)
    clear_read_caches()
    assert t.to_arrow().equals(expected)


def damaged_copy(body: bytes, seed: int, i: int) -> tuple[str, bytes]:
    """Input ``i`` of fuzz run ``seed`` (reproducible on its own): how it was damaged, and
    the damaged bytes."""
    rng = random.Random(seed * 1_000_003 + i)
    b = bytearray(body)
    kind = rng.choice(["flip", "flip", "flips", "truncate", "zero"])
    if kind == "flip":
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "flips":
        for _ in range(rng.randint(2, 20)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "truncate":
        b = b[: rng.randrange(len(b))]
    else:
        start = rng.randrange(len(b))
        b[start : start + rng.randint(1, 64)] = bytes(min(64, len(b) - start))
    return kind, bytes(b)


def parquet_fuzz(n: int, seed: int, start: int = 0, emit: Callable[[str], None] = print) -> None:
    """Damaged files *with forged checksums* (an entry that matches the damage), decoded by
    the whole-file reader and by the ranged point-lookup reader. Reports, one line each,
    ``TRY <i> <reader>`` before a decode (so a parent can tell which input killed the process)
    and ``DONE <reader> <kind>: <outcome>`` after: refused (a clear error), same (the damage
    did not change what was read), different (a wrong result the forged checksum let
    through), or ESCAPED (anything else: the parent test fails)."""
    body, t = _sample_run()
    f = t.files_of(t.current_snapshot())[0]
    schema = t.table_schema
    expected = OpenRun(t.store, f, schema).read(["id", "name", "x"])
    for i in range(start, n):
        kind, damaged = damaged_copy(body, seed, i)
        forged = _forged(damaged, t, f"fuzz{i}", footer=len(damaged) >= 8)
        for reader in ("whole-file", "lookup"):
            emit(f"TRY {i} {reader}")
            try:
                if reader == "whole-file":
                    got = OpenRun(t.store, forged, schema).read(["id", "name", "x"])
                    same = got.equals(expected)
                else:
                    got_rows = lookup(t.store, schema, [forged], [0, 150, 299], None)
                    same = got_rows == [expected.slice(k, 1).to_pylist()[0] for k in (0, 150, 299)]
                outcome = "same" if same else "different"
            except Lsm3Error as exc:
                outcome = f"refused {type(exc).__name__}"
            except Exception as exc:  # the parent test fails on it
                outcome = f"ESCAPED {type(exc).__name__}: {str(exc)[:80]}"
            emit(f"DONE {reader} {kind}: {outcome}")
        t.store.delete(forged.path)


def run_parquet_fuzz(
    n: int, seed: int, timeout: float = 300
) -> tuple[Counter[str], list[tuple[int, str, str]]]:
    """parquet_fuzz in child processes: a crash of the native decoder is counted (and the
    run goes on with the next input), not the end of the test run. Returns the outcome
    counts and the crashes as (input index, reader, the end of stderr)."""
    counts: Counter[str] = Counter()
    crashes: list[tuple[int, str, str]] = []
    start = 0
    while start < n:
        proc = subprocess.run(
            [sys.executable, __file__, "parquet-fuzz", str(n), str(seed), str(start)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        last: tuple[int, str] | None = None
        for line in proc.stdout.splitlines():
            if line.startswith("TRY "):
                _, index, reader = line.split(" ", 2)
                last = (int(index), reader)
            elif line.startswith("DONE "):
                counts[line[len("DONE ") :]] += 1
        if proc.returncode == 0:
            break
        if last is None:
            raise AssertionError(f"the Parquet fuzz child failed: {proc.stderr[-2000:]}")
        kind, _ = damaged_copy(_sample_run()[0], seed, last[0])
        counts[f"{last[1]} {kind}: CRASHED the interpreter (exit {proc.returncode})"] += 1
        crashes.append((last[0], last[1], proc.stderr.strip()[-300:]))
        start = last[0] + 1
    return counts, crashes


def test_damaged_parquet_with_forged_checksums_never_crashes() -> None:
    counts, crashes = run_parquet_fuzz(max(20, EXAMPLES), seed=1)
    escaped = {k: v for k, v in counts.items() if "ESCAPED" in k}
    assert not escaped, escaped
    assert not crashes, crashes
    assert sum(counts.values()) >= 40


def type_mismatch_lookup() -> None:
    """A point lookup and a whole-file read of a run whose footer gives the key column's chunk
    the physical type BOOLEAN instead of INT64, with an entry that matches the damage (the
    first column chunk's ColumnMetaData starts ``1c 15 04``: struct, field 1 ``type`` = INT64
    in Thrift's compact encoding). The fuzz found such footers at random; this builds one on
    purpose. The lookup must refuse it; the whole-file read refuses it or reads it exactly."""
    body, t = _sample_run()
    n = int.from_bytes(body[-8:-4], "little")
    at = body.index(b"\x1c\x15\x04", len(body) - 8 - n) + 2
    forged = _forged(body[:at] + b"\x00" + body[at + 1 :], t, "type-mismatch")
    f = t.files_of(t.current_snapshot())[0]
    with contextlib.suppress(CorruptDataFile):
        lookup(t.store, t.table_schema, [forged], [5], None)
        raise AssertionError("lookup accepted a footer with a mismatched physical type")
    print("lookup: refused")
    columns = ["id", "name", "x"]
    try:  # the whole-file reader decodes by the schema's type: refused or exact, never wrong
        got = OpenRun(t.store, forged, t.table_schema).read(columns)
    except CorruptDataFile:
        print("whole-file read: refused")
    else:
        assert got.equals(OpenRun(t.store, f, t.table_schema).read(columns))
        print("whole-file read: exact")


def test_damaged_footer_does_not_abort_the_interpreter() -> None:
    """Regression: pyarrow 26 aborts the interpreter (an uncatchable C++ exception, SIGABRT)
    when it builds statistics for a column chunk whose physical type disagrees with the
    schema; lsm3 checks the types first (lsm3/read/runindex.py ``_key_column_of``)."""
    proc = subprocess.run(
        [sys.executable, __file__, "type-mismatch"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "lookup: refused" in proc.stdout and "whole-file read:" in proc.stdout, proc.stdout


def _forged(body: bytes, t: lsm3.Table, name: str, footer: bool = True) -> DataFile:
    """A manifest entry for ``body`` whose size and checksums match it (a forged entry)."""
    f = t.files_of(t.current_snapshot())[0]
    try:
        footer_crc = footer_checksum_of(body) if footer else ""
    except Exception:
        footer_crc = ""
    forged = DataFile(
        **{
            **f.__dict__,
            "path": f"data/bucket-0/{name}.parquet",
            "size": len(body),
            "checksum": checksum_of(body),
            "footer_checksum": footer_crc,
        }
    )
    t.store.put(forged.path, body)
    return forged


@pytest.mark.parametrize("damage", [b"_lsm3_kinX", b"_lsm3_kin\xf8"])
@pytest.mark.parametrize("where", ["schema", "chunk"])
@pytest.mark.parametrize("reader", ["scan", "get"])
def test_file_with_a_renamed_column_is_refused_or_read_exactly(
    damage: bytes, where: str, reader: str
) -> None:
    """Regression: a file that matches its entry's checksums but whose footer names a column
    differently (a buggy or foreign writer), or not in UTF-8, is CorruptDataFile when the
    schema says so, never a bare KeyError or UnicodeDecodeError; a damaged column-chunk path
    that the decoder does not use may be read, but then exactly."""
    body, t = _sample_run()
    n = int.from_bytes(body[-8:-4], "little")
    footer = len(body) - 8 - n
    # the footer's schema elements come first; each row group's chunks repeat the path
    at = body.index(b"_lsm3_kind", footer) if where == "schema" else body.rindex(b"_lsm3_kind")
    bad = body[:at] + damage + body[at + 10 :]
    forged = _forged(bad, t, "renamed")
    schema = t.table_schema
    f = t.files_of(t.current_snapshot())[0]

    def read(entry: DataFile) -> Any:
        if reader == "scan":
            return OpenRun(t.store, entry, schema).read(["id", "name", "x"])
        return lookup(t.store, schema, [entry], [5, 299], None)

    if where == "schema":
        with pytest.raises(CorruptDataFile):
            read(forged)
    else:
        with contextlib.suppress(CorruptDataFile):
            assert read(forged) == read(f)


# --------------------------------------------------------------------------- CDC batches

CDC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("qty", pa.int32(), nullable=False),
    ]
)
VALID_OPS = ["c", "r", "u", "d", "+I", "+U", "-U", "-D"]
POISON = {
    "op": ["x", None, "D", "insert", 5, ""],
    "id": [None, "abc", 1.5, 2**70, -(2**64), [1]],
    "name": [[1, 2], {"a": 1}, b"\xff\xfe"],
    "qty": [2**40, "many", 1.5],
}


@st.composite
def cdc_batch(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool]:
    """Rows with duplicate keys in one batch, and maybe one poisoned cell."""
    n = draw(st.integers(1, 12))
    rows = [
        {
            "op": draw(st.sampled_from(VALID_OPS)),
            "id": draw(st.integers(0, 6)),
            "name": draw(st.none() | st.text(max_size=5)),
            "qty": draw(st.integers(-(2**31), 2**31 - 1)),
        }
        for _ in range(n)
    ]
    poisoned = draw(st.booleans())
    if poisoned:
        row = draw(st.sampled_from(rows))
        column = draw(st.sampled_from(sorted(POISON)))
        row[column] = draw(st.sampled_from(POISON[column]))
        if (column == "qty" and row["op"] in ("d", "-D")) or (column != "op" and row["op"] == "-U"):
            row["op"] = "c"  # deletes ignore values, and "-U" before-images are skipped whole
    return rows, poisoned


_CDC_TABLES: list[lsm3.Table] = []


@FUZZ
@given(batch=cdc_batch())
def test_fuzzed_cdc_batches_commit_the_model_or_nothing(
    batch: tuple[list[dict[str, Any]], bool],
) -> None:
    rows, poisoned = batch
    if not _CDC_TABLES:
        _CDC_TABLES.append(lsm3.create_table(f"memory://cdc-{uuid.uuid4().hex}", CDC_SCHEMA, "id"))
    t = _CDC_TABLES[0]
    before = {r["id"]: r for r in t.to_arrow().to_pylist()}
    sid_before = t.refresh()
    model = dict(before)
    for r in [] if poisoned else rows:
        if r["op"] in ("d", "-D"):
            model.pop(r["id"], None)
        elif r["op"] != "-U":
            model[r["id"]] = {"id": r["id"], "name": r["name"], "qty": r["qty"]}
    w = t.writer()

    def apply() -> None:
        w.apply_cdc(rows)
        w.commit()

    outcome, exc = outcome_of("cdc", apply)
    if poisoned:
        assert not outcome.startswith("decoded"), f"a poisoned batch was accepted: {rows}"
        w.abort()
        assert t.refresh() == sid_before  # nothing committed
        assert {r["id"]: r for r in t.to_arrow().to_pylist()} == before
    else:
        assert outcome == "decoded", exc
        assert {r["id"]: r for r in t.to_arrow().to_pylist()} == model


@pytest.mark.parametrize("value", [2**70, 2**63, -(2**64)])
def test_integer_beyond_64_bits_is_a_schema_mismatch(value: int) -> None:
    t = lsm3.create_table(f"memory://ovf-{uuid.uuid4().hex}", CDC_SCHEMA, "id")
    w = t.writer()
    with pytest.raises(lsm3.SchemaMismatch):
        w.apply_cdc([{"op": "c", "id": value, "name": "a", "qty": 1}])


# --------------------------------------------------------------------------- the soak's entry


def run_hostile(examples: int) -> Counter[tuple[str, str]]:
    """Every fuzzer above with ``examples`` inputs each; returns how the inputs ended."""
    OUTCOMES.clear()
    heavy = settings(FUZZ, max_examples=examples)

    def fuzz(decoder: str) -> Callable[[st.DataObject], None]:
        def one(data: st.DataObject) -> None:
            check_decoder(decoder, data.draw(mutated(decoder) | raw_junk()))

        return one

    for decoder in sorted(DECODERS):
        heavy(given(data=st.data())(fuzz(decoder)))()
    heavy(given(hint=HINTS)(test_fuzzed_latest_hint_never_breaks_discovery.hypothesis.inner_test))()  # type: ignore[attr-defined]
    heavy(
        given(batch=cdc_batch())(
            test_fuzzed_cdc_batches_commit_the_model_or_nothing.hypothesis.inner_test
        )
    )()  # type: ignore[attr-defined]
    counts, _ = run_parquet_fuzz(examples, seed=examples, timeout=1800)
    for key, value in counts.items():
        reader_kind, outcome = key.split(": ", 1)
        OUTCOMES[(f"parquet {reader_kind}", outcome)] += value
    return Counter(OUTCOMES)


if __name__ == "__main__" and sys.argv[1:2] == ["type-mismatch"]:
    type_mismatch_lookup()
    os._exit(0)
if __name__ == "__main__" and sys.argv[1:2] == ["parquet-fuzz"]:
    parquet_fuzz(
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
        emit=lambda line: print(line, flush=True),
    )
    os._exit(0)  # skip interpreter teardown (see docs/RELIABILITY.md on aborts at exit)


def test_the_dataset_path_refuses_damaged_data_files_or_reads_them_exactly() -> None:
    """``to_pyarrow_dataset`` hands clean files to the engine as lazy fragments read by byte
    ranges: a damaged footer is refused when the dataset is built (footer checksum), a
    damaged data page fails the engine's scan (page CRC); no damage yields other rows."""
    body, t = _sample_run()
    f = t.files_of(t.current_snapshot())[0]
    right = t.to_arrow().sort_by("id")
    rng = random.Random(11)
    caught = 0
    for _ in range(40):
        b = bytearray(body)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        t.store.put(f.path, bytes(b))
        clear_read_caches()
        try:
            got = t.to_pyarrow_dataset().to_table().sort_by("id")
        except (lsm3.CorruptDataFile, OSError, pa.ArrowException):
            caught += 1
            continue
        assert got.equals(right)
    assert caught >= 20, caught  # most flips land in a checked page or the footer
    t.store.put(f.path, body)
