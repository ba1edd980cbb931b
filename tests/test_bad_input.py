"""Bad input and damaged tables: each case raises the right error, says what is wrong, and
leaves committed state exactly as it was."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers import (
    all_objects,
    clear_read_caches,
    data_files,
    flip_byte,
    snapshot_file,
    sorted_rows,
    table_dir,
)

import lsm3

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string()), ("n", pa.int32())])
GOOD = [{"id": i, "v": f"v{i}", "n": i} for i in range(10)]


class Seeded:
    """A local table with two commits, and what its committed state looked like."""

    def __init__(self, uri: str, table: lsm3.Table) -> None:
        self.uri = uri
        self.table = table
        self.snapshot_id = table.current_snapshot().snapshot_id
        self.rows = sorted_rows(table.to_arrow(), ["id"])
        self.objects = all_objects(uri)

    def assert_unchanged(self, *, check_objects: bool = True) -> None:
        """Same snapshot, same rows, through this table object and through a fresh open."""
        for t in (self.table, lsm3.open_table(self.uri)):
            assert t.refresh().snapshot_id == self.snapshot_id
            assert sorted_rows(t.to_arrow(), ["id"]) == self.rows
            assert [s.snapshot_id for s in t.snapshots()] == list(range(1, self.snapshot_id + 1))
        if check_objects:
            new = {p for p in all_objects(self.uri) - self.objects if not p.startswith("data/")}
            assert new == set(), f"a failed operation wrote metadata: {new}"


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    uri = str(tmp_path / "t")
    t = lsm3.create_table(uri, SCHEMA, ["id"])
    with t.writer() as w:
        w.upsert(GOOD)
    with t.writer() as w:
        w.upsert([{"id": 3, "v": "three", "n": 33}])
        w.delete([9])
    return Seeded(uri, t)


def raises_in_writer(
    seeded: Seeded, action: Callable[[lsm3.Writer], Any], error: type[Exception]
) -> Exception:
    """Run ``action`` in a ``with`` writer after a good batch; the whole block must fail."""
    with pytest.raises(error) as info, seeded.table.writer() as w:
        w.upsert([{"id": 100, "v": "pending", "n": 1}])
        action(w)
    seeded.assert_unchanged()
    return info.value


# --------------------------------------------------------------------------- schema mismatch


def test_missing_column(seeded: Seeded) -> None:
    err = raises_in_writer(seeded, lambda w: w.upsert([{"id": 1, "v": "x"}]), lsm3.SchemaMismatch)
    assert "'n'" in str(err) and "missing" in str(err)


def test_extra_column(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.upsert([{"id": 1, "v": "x", "n": 1, "colour": "red"}]),
        lsm3.SchemaMismatch,
    )
    assert "colour" in str(err)


def test_string_that_is_not_a_number(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.upsert({"id": ["abc"], "v": ["x"], "n": [1]}),
        lsm3.SchemaMismatch,
    )
    assert "'id'" in str(err) and "int64" in str(err)


def test_int64_overflowing_int32(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.upsert({"id": [1], "v": ["x"], "n": [2**31]}),
        lsm3.SchemaMismatch,
    )
    assert "'n'" in str(err) and "int32" in str(err)


def test_float_with_fraction_into_int(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.upsert({"id": [1.5], "v": ["x"], "n": [1]}),
        lsm3.SchemaMismatch,
    )
    assert "'id'" in str(err)


def test_null_primary_key(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.upsert([{"id": 1, "v": "a", "n": 1}, {"id": None, "v": "b", "n": 2}]),
        lsm3.SchemaMismatch,
    )
    assert "'id'" in str(err) and "null" in str(err)


def test_null_primary_key_in_cdc(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.apply_cdc({"op": ["d"], "id": [None], "v": [None], "n": [None]}),
        lsm3.SchemaMismatch,
    )
    assert "'id'" in str(err) and "null" in str(err)


def test_null_in_non_nullable_column(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64()), pa.field("v", pa.string(), nullable=False)])
    t = lsm3.create_table(str(tmp_path / "t"), schema, ["id"])
    with pytest.raises(lsm3.SchemaMismatch) as info, t.writer() as w:
        w.upsert([{"id": 1, "v": None}])
    assert "'v'" in str(info.value)
    with pytest.raises(lsm3.SchemaMismatch), t.writer() as w:
        w.apply_cdc({"op": ["c"], "id": [1], "v": [None]})
    # a delete may carry nulls in value columns
    with t.writer() as w:
        w.apply_cdc({"op": ["c", "d"], "id": [1, 2], "v": ["a", None]})
    assert t.to_arrow().to_pylist() == [{"id": 1, "v": "a"}]


def test_delete_with_wrong_key_type(seeded: Seeded) -> None:
    err = raises_in_writer(seeded, lambda w: w.delete(["abc"]), lsm3.SchemaMismatch)
    assert "'id'" in str(err)


def test_delete_missing_primary_key_column(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.delete([{"v": "v1", "n": 1}]),
        (lsm3.SchemaMismatch, lsm3.InvalidInput),  # type: ignore[arg-type]
    )
    assert "'id'" in str(err)


def test_delete_list_of_mixed_type_keys(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.delete([1, "a"]),
        (lsm3.SchemaMismatch, lsm3.InvalidInput),  # type: ignore[arg-type]
    )
    assert "'id'" in str(err)


def test_composite_key_of_wrong_arity(tmp_path: Path) -> None:
    schema = pa.schema([("a", pa.int64()), ("b", pa.string()), ("x", pa.int64())])
    t = lsm3.create_table(str(tmp_path / "t"), schema, ["a", "b"])
    with t.writer() as w:
        w.upsert([{"a": 1, "b": "x", "x": 1}])
    with pytest.raises(lsm3.InvalidInput) as info, t.writer() as w:
        w.delete([1])
    assert "'a'" in str(info.value) and "'b'" in str(info.value)
    with pytest.raises(lsm3.InvalidInput):
        t.get((1, "x", 3))
    with pytest.raises(lsm3.InvalidInput):
        t.get_many([(1,)])
    assert t.get((1, "x")) == {"a": 1, "b": "x", "x": 1}
    assert t.current_snapshot().snapshot_id == 1


def test_get_with_a_key_of_the_wrong_type(seeded: Seeded) -> None:
    with pytest.raises(lsm3.InvalidInput) as info:
        seeded.table.get("abc")
    assert "'id'" in str(info.value)
    with pytest.raises(lsm3.InvalidInput):
        seeded.table.get(None)
    seeded.assert_unchanged()


def test_sequence_field_null_or_missing_in_delete(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64()), ("lsn", pa.int64())])
    t = lsm3.create_table(str(tmp_path / "t"), schema, ["id"], options={"sequence_field": "lsn"})
    with t.writer() as w:
        w.upsert([{"id": 1, "lsn": 1}])
    with pytest.raises(lsm3.SchemaMismatch) as info, t.writer() as w:
        w.upsert([{"id": 2, "lsn": None}])
    assert "lsn" in str(info.value)
    with pytest.raises(lsm3.SchemaMismatch) as info, t.writer() as w:
        w.delete([1])
    assert "lsn" in str(info.value)
    assert t.to_arrow().to_pylist() == [{"id": 1, "lsn": 1}]
    assert len(t.snapshots()) == 1


# --------------------------------------------------------------------------- CDC ops


def test_unknown_cdc_op(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.apply_cdc({"op": ["c", "upsert"], "id": [1, 2], "v": ["a", "b"], "n": [1, 2]}),
        lsm3.InvalidInput,
    )
    assert "'upsert'" in str(err) and "'op'" in str(err)


def test_null_cdc_op(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.apply_cdc({"op": ["c", None], "id": [1, 2], "v": ["a", "b"], "n": [1, 2]}),
        lsm3.InvalidInput,
    )
    assert "None" in str(err) and "'op'" in str(err)


def test_missing_op_column(seeded: Seeded) -> None:
    err = raises_in_writer(
        seeded,
        lambda w: w.apply_cdc({"id": [1], "v": ["a"], "n": [1]}),
        lsm3.SchemaMismatch,
    )
    assert "'op'" in str(err)
    err = raises_in_writer(
        seeded,
        lambda w: w.apply_cdc({"op": ["c"], "id": [1], "v": ["a"], "n": [1]}, op_column="kind"),
        lsm3.SchemaMismatch,
    )
    assert "'kind'" in str(err)


def test_not_a_table(seeded: Seeded) -> None:
    err = raises_in_writer(seeded, lambda w: w.upsert(42), lsm3.InvalidInput)
    assert "int" in str(err)
    raises_in_writer(seeded, lambda w: w.upsert([1, 2, 3]), lsm3.InvalidInput)


def test_bad_batch_caught_inside_writer_does_not_poison_it(seeded: Seeded) -> None:
    w = seeded.table.writer()
    w.upsert([{"id": 200, "v": "ok", "n": 1}])
    with pytest.raises(lsm3.SchemaMismatch):
        w.upsert([{"id": 201, "v": "ok", "n": 1}, {"id": 202, "v": "bad", "n": 2**40}])
    with pytest.raises(lsm3.InvalidInput):
        w.apply_cdc({"op": ["c", "??"], "id": [203, 204], "v": ["a", "b"], "n": [1, 2]})
    snap = w.commit()
    assert snap is not None and snap.snapshot_id == seeded.snapshot_id + 1
    got = sorted_rows(seeded.table.to_arrow(), ["id"])
    assert got == [*seeded.rows, {"id": 200, "v": "ok", "n": 1}]


def test_empty_batches_are_a_noop(seeded: Seeded) -> None:
    with seeded.table.writer() as w:
        w.upsert([])
        w.upsert(SCHEMA.empty_table())
        w.delete([])
        w.apply_cdc({"op": [], "id": [], "v": [], "n": []})
        assert w.commit() is None
    seeded.assert_unchanged()


def test_bad_writer_and_commit_arguments(seeded: Seeded) -> None:
    with pytest.raises(lsm3.InvalidInput):
        seeded.table.writer(writer_id="")
    with pytest.raises(lsm3.InvalidInput):
        seeded.table.writer(writer_id=7)  # type: ignore[arg-type]
    w = seeded.table.writer("w")
    w.upsert([{"id": 300, "v": "x", "n": 1}])
    with pytest.raises(lsm3.InvalidInput) as info:
        w.commit(metadata={"when": object()})
    assert "JSON" in str(info.value)
    with pytest.raises(lsm3.InvalidInput):
        w.commit(commit_id="")
    w.abort()
    seeded.assert_unchanged()


def test_bad_read_arguments(seeded: Seeded) -> None:
    t = seeded.table
    with pytest.raises(lsm3.InvalidInput):
        t.to_arrow(snapshot_id=-1)
    with pytest.raises(lsm3.InvalidInput):
        t.to_arrow(snapshot_id="1")  # type: ignore[arg-type]
    with pytest.raises(lsm3.InvalidInput):
        t.to_arrow(snapshot_id=1, as_of=0)
    with pytest.raises(lsm3.InvalidInput) as info:
        t.to_arrow(filter="id > 3")  # type: ignore[arg-type]
    assert "Expression" in str(info.value)
    with pytest.raises(lsm3.InvalidInput) as info:
        t.to_arrow(columns=["id", "missing"])
    assert "missing" in str(info.value)
    with pytest.raises(lsm3.InvalidInput):
        t.to_arrow(columns="id")  # type: ignore[arg-type]
    with pytest.raises(lsm3.InvalidInput):
        t.to_arrow(filter=pc.field("missing") > 1)
    with pytest.raises(lsm3.SnapshotNotFound) as info:
        t.to_arrow(snapshot_id=77)
    assert "77" in str(info.value)
    seeded.assert_unchanged()


# --------------------------------------------------------------------------- table existence


def test_open_table_where_there_is_none(tmp_path: Path) -> None:
    with pytest.raises(lsm3.TableNotFound) as info:
        lsm3.open_table(str(tmp_path / "nothing-here"))
    assert "nothing-here" in str(info.value)
    (tmp_path / "not-a-table").mkdir()
    (tmp_path / "not-a-table" / "readme.txt").write_text("hi")
    with pytest.raises(lsm3.TableNotFound):
        lsm3.open_table(str(tmp_path / "not-a-table"))
    assert not (tmp_path / "nothing-here").exists()


def test_open_table_on_an_empty_s3_prefix(s3_bucket_uri: tuple[str, dict]) -> None:
    uri, options = s3_bucket_uri
    with pytest.raises(lsm3.TableNotFound) as info:
        lsm3.open_table(uri, storage_options=options)
    assert uri in str(info.value)


def test_create_table_twice(seeded: Seeded) -> None:
    other = pa.schema([("k", pa.string())])
    for schema, pk in ((SCHEMA, ["id"]), (other, ["k"])):
        with pytest.raises(lsm3.TableAlreadyExists) as info:
            lsm3.create_table(seeded.uri, schema, primary_key=pk)
        assert "already exists" in str(info.value)
    seeded.assert_unchanged()
    assert lsm3.open_table(seeded.uri).schema == seeded.table.schema


# --------------------------------------------------------------------------- table definitions


BAD_DEFINITIONS: list[tuple[str, dict[str, Any], str]] = [
    ("pk not in schema", {"primary_key": ["nope"]}, "nope"),
    ("empty pk", {"primary_key": []}, "primary_key"),
    ("repeated pk", {"primary_key": ["id", "id"]}, "id"),
    (
        "float pk",
        {"schema": pa.schema([("f", pa.float64()), ("v", pa.int64())]), "primary_key": ["f"]},
        "'f'",
    ),
    (
        "list pk",
        {"schema": pa.schema([("l", pa.list_(pa.int64()))]), "primary_key": ["l"]},
        "'l'",
    ),
    ("partition not in pk", {"partition_by": ["v"]}, "'v'"),
    ("partition not in schema", {"partition_by": ["zone"]}, "zone"),
    (
        "reserved column name",
        {"schema": pa.schema([("id", pa.int64()), ("_lsm3_x", pa.int64())])},
        "_lsm3_x",
    ),
    (
        "duplicate column",
        {"schema": pa.schema([("id", pa.int64()), ("v", pa.int64()), ("v", pa.string())])},
        "duplicate",
    ),
    ("zero buckets", {"buckets": 0}, "buckets"),
    ("fractional buckets", {"buckets": 1.5}, "buckets"),
    ("unknown option", {"options": {"memtable_size": 10}}, "memtable_size"),
    ("non-positive option", {"options": {"memtable_bytes": 0}}, "memtable_bytes"),
    ("string option", {"options": {"row_group_rows": "many"}}, "row_group_rows"),
    ("sequence field not a column", {"options": {"sequence_field": "lsn"}}, "lsn"),
    ("sequence field is a string", {"options": {"sequence_field": "v"}}, "'v'"),
    ("sequence field is the key", {"options": {"sequence_field": "id"}}, "'id'"),
    ("schema is not an Arrow schema", {"schema": {"id": "int64"}}, "pyarrow.Schema"),
]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [pytest.param(c, n, id=name) for name, c, n in BAD_DEFINITIONS],
)
def test_invalid_table_definition(tmp_path: Path, changes: dict[str, Any], needle: str) -> None:
    uri = str(tmp_path / "t")
    kwargs: dict[str, Any] = {"schema": SCHEMA, "primary_key": ["id"], **changes}
    with pytest.raises(lsm3.InvalidInput) as info:
        lsm3.create_table(uri, **kwargs)
    assert needle in str(info.value)
    # nothing was created: the location is still free
    with pytest.raises(lsm3.TableNotFound):
        lsm3.open_table(uri)
    lsm3.create_table(uri, SCHEMA, ["id"])


# --------------------------------------------------------------------------- damaged metadata


def _rewrite_json(path: Path, change: Callable[[dict], Any]) -> None:
    doc = json.loads(path.read_text())
    result = change(doc)
    path.write_text(json.dumps(doc if result is None else result))


@pytest.fixture
def restore(seeded: Seeded) -> Iterator[Callable[[Path], None]]:
    """Remember files before a test damages them; put them back and check the table after."""
    saved: dict[Path, bytes] = {}

    def remember(path: Path) -> None:
        saved.setdefault(path, path.read_bytes())

    yield remember
    for path, raw in saved.items():
        path.write_bytes(raw)
    clear_read_caches()
    seeded.assert_unchanged()


def _expect(error: type[Exception], *needles: str) -> Callable[[Callable[[], Any]], None]:
    def check(fn: Callable[[], Any]) -> None:
        with pytest.raises(error) as info:
            fn()
        for needle in needles:
            assert needle in str(info.value), (needle, str(info.value))

    return check


def test_corrupt_latest_snapshot_json(seeded: Seeded, restore: Callable) -> None:
    path = snapshot_file(seeded.uri, 2)
    restore(path)
    path.write_bytes(b'{"format": "lsm3", "snapshot_id": 2, garbage')
    check = _expect(lsm3.CorruptMetadata, "snapshot 2")
    check(lambda: lsm3.open_table(seeded.uri))


def test_corrupt_new_snapshot_seen_by_refresh_and_writers(
    seeded: Seeded, restore: Callable
) -> None:
    path = snapshot_file(seeded.uri, 3)
    path.write_bytes(b"\x00\xffnot json at all")
    check = _expect(lsm3.CorruptMetadata, "snapshot 3")
    check(seeded.table.refresh)
    assert seeded.table.current_snapshot().snapshot_id == 2  # still pinned to a good one
    # a writer refuses to commit on top of it (never overwrites an existing snapshot object)

    def commit() -> None:
        with seeded.table.writer() as w:
            w.upsert([{"id": 500, "v": "x", "n": 1}])

    check(commit)
    assert path.read_bytes() == b"\x00\xffnot json at all"
    assert not snapshot_file(seeded.uri, 4).exists()
    path.unlink()


def test_corrupt_old_snapshot_read_by_time_travel(seeded: Seeded, restore: Callable) -> None:
    path = snapshot_file(seeded.uri, 1)
    restore(path)
    path.write_text("[1, 2, 3]")
    t = lsm3.open_table(seeded.uri)  # opening needs only the latest snapshot
    check = _expect(lsm3.CorruptMetadata, "snapshot 1")
    check(lambda: t.to_arrow(snapshot_id=1))
    check(lambda: t.get(1, snapshot_id=1))
    check(t.snapshots)


def test_snapshot_from_a_newer_format_version(seeded: Seeded, restore: Callable) -> None:
    path = snapshot_file(seeded.uri, 2)
    restore(path)
    _rewrite_json(path, lambda d: d.update(format_version=99))
    check = _expect(lsm3.UnsupportedFormatVersion, "99")
    check(lambda: lsm3.open_table(seeded.uri))
    assert issubclass(lsm3.UnsupportedFormatVersion, lsm3.CorruptMetadata)


def test_schema_from_a_newer_format_version(seeded: Seeded, restore: Callable) -> None:
    path = table_dir(seeded.uri) / "schema" / "schema-0.json"
    restore(path)
    _rewrite_json(path, lambda d: d.update(format_version=99))
    _expect(lsm3.UnsupportedFormatVersion, "99")(lambda: lsm3.open_table(seeded.uri))


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"commitInfo": {"operation": "WRITE"}}, id="delta-log-entry"),
        pytest.param(
            {"format": "iceberg", "format_version": 1, "snapshot_id": 2}, id="other-format"
        ),
        pytest.param({"format": "lsm3", "snapshot_id": 2}, id="no-version"),
        pytest.param(None, id="json-null"),
        pytest.param("snapshot", id="json-string"),
    ],
)
def test_foreign_snapshot_object(seeded: Seeded, restore: Callable, doc: Any) -> None:
    path = snapshot_file(seeded.uri, 2)
    restore(path)
    path.write_text(json.dumps(doc))
    _expect(lsm3.CorruptMetadata, "snapshot 2")(lambda: lsm3.open_table(seeded.uri))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("snapshot_id", "2"),
        ("snapshot_id", 5),  # the object's name says 2
        ("parent_id", 1.5),
        ("kind", "MERGE"),
        ("manifests", "manifest/x.json"),
        ("next_sequence", None),
        ("timestamp_ms", True),
    ],
)
def test_snapshot_with_malformed_fields(
    seeded: Seeded, restore: Callable, field: str, value: Any
) -> None:
    path = snapshot_file(seeded.uri, 2)
    restore(path)
    _rewrite_json(path, lambda d: d.update({field: value}))
    _expect(lsm3.CorruptMetadata)(lambda: lsm3.open_table(seeded.uri))


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "/etc/passwd", "s3://other/x", "manifest/../../../etc/passwd"],
)
def test_snapshot_listing_a_manifest_outside_the_root(
    seeded: Seeded, restore: Callable, bad: str
) -> None:
    path = snapshot_file(seeded.uri, 2)
    restore(path)
    _rewrite_json(path, lambda d: d["manifests"].append(bad))
    _expect(lsm3.CorruptMetadata, bad)(lambda: lsm3.open_table(seeded.uri).to_arrow())


def _manifest_paths(uri: str, snapshot_id: int) -> list[Path]:
    doc = json.loads(snapshot_file(uri, snapshot_id).read_text())
    return [table_dir(uri) / m for m in doc["manifests"]]


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "s3://other/x",
        "file:///etc/passwd",
        "data/../../../etc/passwd",
        "data/bucket-0/../../../x.parquet",
        "schema/schema-0.json",
        "",
    ],
)
def test_manifest_entry_path_outside_the_root(seeded: Seeded, restore: Callable, bad: str) -> None:
    manifest = _manifest_paths(seeded.uri, 2)[-1]
    restore(manifest)
    _rewrite_json(manifest, lambda d: d["entries"][0]["file"].update(path=bad))
    check = _expect(lsm3.CorruptMetadata, repr(bad))
    t = lsm3.open_table(seeded.uri)
    check(t.to_arrow)
    check(lambda: t.get(3))
    check(t.files)
    check(lambda: t.to_arrow(snapshot_id=2))
    assert sorted_rows(t.to_arrow(snapshot_id=1), ["id"]) == GOOD  # other snapshots still read


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d.update(format="not-a-manifest"), id="foreign"),
        pytest.param(lambda d: d.update(format_version=99), id="newer-version"),
        pytest.param(lambda d: d.update(entries={"a": 1}), id="entries-not-a-list"),
        pytest.param(lambda d: d["entries"][0].update(op="replace"), id="unknown-op"),
        pytest.param(lambda d: d["entries"][0]["file"].pop("checksum"), id="missing-field"),
        pytest.param(lambda d: d["entries"][0]["file"].update(size="12"), id="wrong-type"),
        pytest.param(lambda d: d["entries"][0]["file"].update(rows=-1), id="negative-rows"),
        pytest.param(lambda d: d["entries"][0]["file"].update(min_key=[1, 2]), id="bad-key"),
    ],
)
def test_malformed_manifest(seeded: Seeded, restore: Callable, change: Callable) -> None:
    manifest = _manifest_paths(seeded.uri, 2)[-1]
    restore(manifest)
    _rewrite_json(manifest, change)
    t = lsm3.open_table(seeded.uri)
    _expect(lsm3.CorruptMetadata, "manifest")(t.to_arrow)


def test_missing_manifest(seeded: Seeded, restore: Callable) -> None:
    manifest = _manifest_paths(seeded.uri, 2)[-1]
    restore(manifest)
    manifest.unlink()
    _expect(lsm3.CorruptMetadata, "missing")(lambda: lsm3.open_table(seeded.uri).to_arrow())


# --------------------------------------------------------------------------- damaged data files


def _newest_data_file(seeded: Seeded) -> Path:
    path = seeded.table.files()[-1].path
    return table_dir(seeded.uri) / path


def test_data_file_with_a_flipped_byte(seeded: Seeded, restore: Callable) -> None:
    path = _newest_data_file(seeded)
    restore(path)
    size = path.stat().st_size
    flip_byte(path, size // 2)
    assert path.stat().st_size == size
    t = lsm3.open_table(seeded.uri)
    check = _expect(lsm3.CorruptDataFile, path.name, "checksum")
    check(t.to_arrow)
    check(lambda: t.to_batches().read_all())
    check(t.to_pyarrow_dataset)


def test_truncated_data_file(seeded: Seeded, restore: Callable) -> None:
    path = _newest_data_file(seeded)
    restore(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    t = lsm3.open_table(seeded.uri)
    check = _expect(lsm3.CorruptDataFile, path.name)
    check(t.to_arrow)
    check(lambda: t.get(3))
    check(lambda: t.get_many([0, 3, 9]))


def test_missing_data_file(seeded: Seeded, restore: Callable) -> None:
    path = _newest_data_file(seeded)
    restore(path)
    path.unlink()
    t = lsm3.open_table(seeded.uri)
    check = _expect(lsm3.CorruptDataFile, path.name)
    check(t.to_arrow)
    check(lambda: t.get(3))


def test_data_file_swapped_for_another_valid_run(seeded: Seeded, restore: Callable) -> None:
    """Both files are valid Parquet; only the manifest's checksum tells them apart."""
    first, second = (table_dir(seeded.uri) / f.path for f in seeded.table.files())
    restore(second)
    second.write_bytes(first.read_bytes())
    _expect(lsm3.CorruptDataFile, second.name)(lsm3.open_table(seeded.uri).to_arrow)


@pytest.fixture
def binary_table(tmp_path: Path) -> tuple[lsm3.Table, bytes, Path]:
    """A table with one incompressible 3000-byte value, so its bytes sit verbatim in a page."""
    schema = pa.schema([("id", pa.int64()), ("blob", pa.binary())])
    t = lsm3.create_table(str(tmp_path / "b"), schema, ["id"])
    payload = random.Random(1234).randbytes(3000)
    with t.writer() as w:
        w.upsert({"id": [1, 2], "blob": [payload, b"small"]})
    [path] = data_files(str(tmp_path / "b"))
    return t, payload, path


def _flip_in_data_page(path: Path, payload: bytes) -> None:
    """Flip a byte of ``payload`` in the copy the row is decoded from (not in statistics)."""
    raw = path.read_bytes()
    needle = payload[1000:1100]
    hits = []
    start = 0
    while (i := raw.find(needle, start)) >= 0:
        hits.append(i)
        start = i + 1
    assert hits, "payload not stored verbatim"
    # Try each copy until the decoded value changes: that copy is the data page.
    for i in hits:
        flipped = bytearray(raw)
        flipped[i + 10] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            value = pq.read_table(path).column("blob")[0].as_py()
        except (OSError, pa.ArrowInvalid):
            return
        if value != payload:
            return
    raise AssertionError("could not damage the data page")


def test_flipped_byte_in_a_value_is_caught_by_scans(
    binary_table: tuple[lsm3.Table, bytes, Path],
) -> None:
    t, payload, path = binary_table
    _flip_in_data_page(path, payload)
    t2 = lsm3.open_table(t.uri)
    with pytest.raises(lsm3.CorruptDataFile) as info:
        t2.to_arrow()
    assert "checksum" in str(info.value)


def test_flipped_byte_in_a_value_is_caught_by_get(
    binary_table: tuple[lsm3.Table, bytes, Path],
) -> None:
    t, payload, path = binary_table
    _flip_in_data_page(path, payload)
    clear_read_caches()
    t2 = lsm3.open_table(t.uri)
    with pytest.raises(lsm3.CorruptDataFile):
        row = t2.get(1)
        assert row is not None and row["blob"] == payload  # never reached when fixed


def test_data_file_with_bytes_appended_is_caught_by_get(seeded: Seeded, restore: Callable) -> None:
    path = _newest_data_file(seeded)
    restore(path)
    path.write_bytes(path.read_bytes() + b"\x00" * 16)
    clear_read_caches()
    t = lsm3.open_table(seeded.uri)
    _expect(lsm3.CorruptDataFile, path.name)(t.to_arrow)
    _expect(lsm3.CorruptDataFile, path.name)(lambda: t.get(3))
