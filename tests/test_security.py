"""Security: secrets stay secret, paths stay inside their root, data is read only when it
verifies, and nothing is made public.

* A canary secret passed as ``storage_options`` (and one in the AWS environment) must not
  appear in logs (every logger at DEBUG, botocore included), error messages, the reprs of
  tables, stores and catalogs, ``lsm3 inspect`` and ``lsm3-compactor`` output, or any
  object lsm3 writes (snapshot metadata included).
* Table and catalog paths cannot escape their root: keys with ``..``, manifests and data
  paths outside the table, catalog names and locations that are not plain identifiers.
* Data files are read only through live manifest entries, and only when size and checksum
  verify: a planted or swapped file is never returned.
* Nothing lsm3 writes carries an ACL or a grant: the boto3 calls never pass one, and on moto
  every object and the bucket stay private (owner-only).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from helpers import clear_read_caches

import compactor
import lsm3
from catalog.client import Catalog, connect
from catalog.errors import CorruptMetadata, InvalidIdentifier
from lsm3.io.local import LocalStore
from lsm3.io.store import open_store
from lsm3.testing.devserver import LocalS3
from lsm3.testing.faults import FaultyStore

CANARY = "CANARY-SECRET-7f3e9a1c55d04b2e"
ENV_CANARY = "CANARY-ENV-SECRET-0b5d7c2e9a4f"
TOKEN_CANARY = "CANARY-TOKEN-3c1e8f"
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
REPO = Path(__file__).resolve().parent.parent


def _leaks(text: str) -> list[str]:
    return [c for c in (CANARY, ENV_CANARY, TOKEN_CANARY) if c in text]


@pytest.fixture
def secret_location(moto_server: LocalS3) -> tuple[str, dict[str, str]]:
    """A fresh moto bucket and storage options carrying the canary secret (moto accepts any
    credentials)."""
    import uuid

    bucket = f"sec-{uuid.uuid4().hex[:12]}"
    moto_server.create_bucket(bucket)
    options = {
        "endpoint_url": moto_server.endpoint_url,
        "region": moto_server.region,
        "access_key_id": "AKIACANARYKEYID",
        "secret_access_key": CANARY,
        "session_token": TOKEN_CANARY,
    }
    return f"s3://{bucket}/t", options


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)  # the root logger: lsm3, compactor, boto3, botocore
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def _exercise(uri: str, options: dict[str, Any] | None) -> list[str]:
    """Everything a user does with a table, and the failures they can meet; returns every
    text lsm3 showed them (reprs, error messages)."""
    texts: list[str] = []
    t = lsm3.create_table(uri, SCHEMA, "id", storage_options=options)
    for i in range(3):
        w = t.writer("w")
        w.upsert([{"id": i, "v": "x"}])
        w.commit(metadata={"offset": i})
    t.create_tag("v1")
    compactor.compact(t, options={"num_sorted_run_trigger": 2})
    compactor.expire_snapshots(t, retain_last=1, older_than=dt.timedelta(0))
    compactor.remove_orphan_files(t, older_than=dt.timedelta(0))
    texts += [repr(t), str(t), repr(t.store), str(t.store), t.store.describe(), t.uri]
    texts += [repr(t.current_snapshot()), repr(t.files()), json.dumps(t.store_stats())]
    bucket = uri.split("/")[2]
    for bad in (
        lambda: lsm3.open_table(uri.replace(bucket, bucket + "-missing"), options),
        lambda: lsm3.open_table(uri + "/nothing-here", options),
        lambda: lsm3.create_table(uri, SCHEMA, "id", storage_options=options),
        lambda: t.to_arrow(snapshot_id=999),
        lambda: lsm3.open_table(uri, {**(options or {}), "bogus_option": 1}),
    ):
        with pytest.raises(lsm3.Lsm3Error) as info:
            bad()
        exc: BaseException | None = info.value
        while exc is not None:  # the whole chain, as a traceback would show it
            texts += [str(exc), repr(exc)]
            exc = exc.__cause__ or exc.__context__
    return texts


def test_storage_option_secret_never_leaks(
    secret_location: tuple[str, dict[str, str]], every_log: pytest.LogCaptureFixture
) -> None:
    uri, options = secret_location
    texts = _exercise(uri, options)
    assert not _leaks("\n".join(texts))
    assert every_log.records, "logging was captured"
    # The secret key is in no log line of anyone. The session token is in botocore's own
    # DEBUG lines (it logs request headers, x-amz-security-token included; see
    # docs/RELIABILITY.md): lsm3 never turns those on, and its own loggers never show it.
    assert CANARY not in every_log.text
    ours = [
        r for r in every_log.records if r.name.split(".")[0] in ("lsm3", "compactor", "catalog")
    ]
    assert not _leaks("\n".join(r.getMessage() for r in ours))
    # Every object lsm3 wrote (snapshots with their metadata, manifests, schema, tags, data).
    store = open_store(uri, options)
    for info in store.list(""):
        assert not _leaks(store.get(info.key).decode("latin-1")), info.key


def test_environment_secret_never_leaks(
    moto_server: LocalS3, every_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    bucket = f"sec-{uuid.uuid4().hex[:12]}"
    moto_server.create_bucket(bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVCANARY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_CANARY)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", moto_server.region)
    texts = _exercise(f"s3://{bucket}/t", None)
    assert not _leaks("\n".join(texts))
    assert not _leaks(every_log.text)
    cat = connect(f"s3://{bucket}/wh")
    cat.create_namespace("ns")
    cat.create_table("ns.t", SCHEMA, "id")
    assert not _leaks(repr(cat) + repr(cat.load_table("ns.t")) + repr(cat.describe_table("ns.t")))


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def test_cli_output_and_errors_never_show_the_secret(
    secret_location: tuple[str, dict[str, str]],
) -> None:
    uri, options = secret_location
    t = lsm3.create_table(uri, SCHEMA, "id", storage_options=options)
    w = t.writer()
    w.upsert([{"id": 1, "v": "x"}])
    w.commit()
    so = [a for k, v in options.items() for a in ("--storage-option", f"{k}={v}")]
    bucket = uri.split("/")[2]
    from concurrent.futures import ThreadPoolExecutor

    commands = [
        ["lsm3", "inspect", uri, "--debug", *so],
        ["lsm3", "inspect", uri, "--json", *so],
        ["lsm3", "inspect", uri.replace(bucket, bucket + "-missing"), "--debug", *so],
        ["lsm3", "scan", uri + "-none", *so],
        ["compactor", "--once", "--json", uri, *so],
        ["compactor", "--once", "--debug", uri + "-none", *so],
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = list(pool.map(_cli, commands))
    assert runs[0].returncode == 0 and runs[0].stdout
    assert runs[2].returncode != 0 and runs[5].returncode != 0  # the failures did fail
    for r in runs:
        assert not _leaks(r.stdout + r.stderr), r.args


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/etc/passwd", "data/../../../etc/passwd", "a/.."]
)
def test_local_store_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    store = LocalStore(str(tmp_path / "root"))
    for op in (
        lambda: store.put(key, b"x"),
        lambda: store.put_if_absent(key, b"x"),
        lambda: store.get(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(lsm3.InvalidInput):
            op()
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("manifests", ["manifest/../../../outside.json"]),
        ("manifests", ["/etc/passwd"]),
        ("manifests", ["manifest/%2e%2e/x/../../y.json"]),
        ("delta_manifest", "../snapshot/x.json"),
    ],
)
def test_a_snapshot_cannot_make_a_reader_leave_the_table(
    tmp_path: Path, field: str, value: Any
) -> None:
    root = tmp_path / "t"
    t = lsm3.create_table(str(root), SCHEMA, "id")
    w = t.writer()
    w.upsert([{"id": 1, "v": "x"}])
    w.commit()
    key = "snapshot/snapshot-00000000000000000001.json"
    doc = json.loads(t.store.get(key))
    doc[field] = value
    t.store.put(key, json.dumps(doc).encode())
    spy = FaultyStore(LocalStore(str(root)), record=True)
    with pytest.raises(lsm3.CorruptMetadata, match="not inside the table root"):
        lsm3.open_table(spy).to_arrow()
    assert all(".." not in k and not k.startswith("/") for _, k in spy.calls), spy.calls


def test_a_manifest_cannot_point_a_reader_outside_the_table(tmp_path: Path) -> None:
    (tmp_path / "secret.parquet").write_bytes(b"PAR1 not for you PAR1")
    root = tmp_path / "t"
    t = lsm3.create_table(str(root), SCHEMA, "id")
    w = t.writer()
    w.upsert([{"id": 1, "v": "x"}])
    snap = w.commit()
    assert snap is not None
    doc = json.loads(t.store.get(snap.manifests[0]))
    doc["entries"][0]["file"]["path"] = "data/../../secret.parquet"
    t.store.put(snap.manifests[0], json.dumps(doc).encode())
    spy = FaultyStore(LocalStore(str(root)), record=True)
    with pytest.raises(lsm3.CorruptMetadata):
        lsm3.open_table(spy).to_arrow()
    assert not any("secret" in k for _, k in spy.calls)


@pytest.mark.parametrize(
    "name",
    [
        "../etc",
        "a/b",
        "a.b.c",
        "..",
        ".",
        "ns\x00",
        "ns-1",
        " ns",
        "ns ",
        "n\u0430me",
        "catalog",
        "",
    ],
)
def test_catalog_names_cannot_become_paths(tmp_path: Path, name: str) -> None:
    cat = Catalog(LocalStore(str(tmp_path / "wh")))
    with pytest.raises(InvalidIdentifier):
        cat.create_namespace(name)
    with pytest.raises(InvalidIdentifier):
        cat.create_table(f"{name}.t" if "." not in name else name, SCHEMA, "id")
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize(
    "location",
    [
        "../outside-" + "0" * 32,
        "ns/../../t-" + "0" * 32,
        "/abs/t-" + "0" * 32,
        "ns/t-" + "0" * 31 + "g",
        "catalog/t-" + "0" * 32,
        "s3://other/t-" + "0" * 32,
    ],
)
def test_a_catalog_state_cannot_point_outside_the_warehouse(tmp_path: Path, location: str) -> None:
    store = LocalStore(str(tmp_path / "wh"))
    cat = Catalog(store)
    cat.create_namespace("ns")
    cat.create_table("ns.t", SCHEMA, "id")
    key = "catalog/state-00000000000000000002.json"
    doc = json.loads(store.get(key))
    doc["namespaces"]["ns"]["tables"]["t"]["location"] = location
    store.put(key, json.dumps(doc).encode())
    with pytest.raises(CorruptMetadata):
        Catalog(LocalStore(str(tmp_path / "wh"))).load_table("ns.t")


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "x" * 200, "a\x00"])
def test_tag_names_cannot_become_paths(tmp_path: Path, name: str) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, "id")
    w = t.writer()
    w.upsert([{"id": 1, "v": "x"}])
    w.commit()
    with pytest.raises(lsm3.InvalidInput):
        t.create_tag(name)


# --------------------------------------------------------------------------- verified reads


def test_data_is_read_only_through_verified_live_manifest_entries(tmp_path: Path) -> None:
    root = tmp_path / "t"
    t = lsm3.create_table(str(root), SCHEMA, "id", options={"num_sorted_run_trigger": 2})
    for i in range(4):
        w = t.writer()
        w.upsert([{"id": i, "v": f"v{i}"}])
        w.commit()
    compactor.compact(t)  # leaves removed (no longer live) files behind until expiry
    # a planted file that no manifest names, and one that claims to be a live file's twin
    live = {f.path for f in t.files()}
    planted = "data/bucket-0/" + "f" * 32 + ".parquet"
    t.store.put(planted, t.store.get(next(iter(live))))
    spy = FaultyStore(LocalStore(str(root)), record=True)
    reader = lsm3.open_table(spy)
    reader.to_arrow()
    reader.get_many([0, 1, 2, 3, 99])
    reader.count()
    data_reads = {k for op, k in spy.calls if k.startswith("data/") and op.startswith("get")}
    assert data_reads and data_reads <= live, data_reads - live
    # a live file swapped for another valid run of the same size is refused, not returned
    victim = next(iter(live))
    good = t.store.get(victim)
    swapped = bytearray(good)
    swapped[len(swapped) // 2] ^= 0x01
    t.store.put(victim, bytes(swapped))
    clear_read_caches()
    with pytest.raises(lsm3.CorruptDataFile):
        lsm3.open_table(str(root)).to_arrow()


# --------------------------------------------------------------------------- ACLs


_ACL_PARAMS = {
    "ACL",
    "GrantRead",
    "GrantReadACP",
    "GrantWriteACP",
    "GrantFullControl",
    "GrantWrite",
}
_ACL_OPERATIONS = {
    "PutObjectAcl",
    "PutBucketAcl",
    "PutBucketPolicy",
    "DeletePublicAccessBlock",
    "PutPublicAccessBlock",
    "PutBucketOwnershipControls",
}


def test_nothing_is_made_public(
    s3_bucket_uri: tuple[str, dict[str, str]], moto_server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, options = s3_bucket_uri
    import lsm3.io.s3 as storage

    store = open_store(uri, options)
    assert isinstance(store, storage.S3Store)
    calls: list[tuple[str, dict[str, Any]]] = []

    def spy(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        calls.append((model.name, dict(params)))

    store._client.meta.events.register("before-parameter-build.s3", spy)
    monkeypatch.setattr(storage, "_MULTIPART_THRESHOLD", 1024)  # multipart uploads too
    try:
        t = lsm3.create_table(store, SCHEMA, "id", options={"num_sorted_run_trigger": 2})
        for i in range(3):
            w = t.writer("w")
            w.upsert([{"id": j, "v": "x" * 200} for j in range(i, i + 50)])
            w.commit()
        t.create_tag("v1")
        compactor.compact(t)
        compactor.expire_snapshots(t, retain_last=1, older_than=dt.timedelta(0))
        compactor.remove_orphan_files(t, older_than=dt.timedelta(0))
        cat = Catalog(store.child("wh"))
        cat.create_namespace("ns")
        cat.create_table("ns.t", SCHEMA, "id")
        cat.drop_table("ns.t", purge=True)
    finally:
        store._client.meta.events.unregister("before-parameter-build.s3", spy)
    names = {n for n, _ in calls}
    assert {"PutObject", "CreateMultipartUpload"} <= names, names
    assert not names & _ACL_OPERATIONS
    for name, params in calls:
        assert not _ACL_PARAMS & set(params), (name, params)
    client = moto_server.client()
    bucket, prefix = uri[len("s3://") :].split("/", 1)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) >= 8
    from botocore.exceptions import ClientError

    in_parts = {
        prefix + "/" + p["Key"].split(prefix + "/", 1)[-1]
        for n, p in calls
        if n == "CreateMultipartUpload"
    }
    checked = 0
    for key in keys:
        if key in in_parts:  # moto 5.2.5 answers GetObjectAcl with 500 for these
            continue
        try:
            grants = client.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        except ClientError:  # moto 5.2.5 answers 500 for objects uploaded in parts
            continue
        assert [g["Permission"] for g in grants] == ["FULL_CONTROL"], (key, grants)
        assert grants[0]["Grantee"]["Type"] == "CanonicalUser"
        checked += 1
    assert checked >= 8
    grants = client.get_bucket_acl(Bucket=bucket)["Grants"]
    assert all(g["Grantee"].get("Type") == "CanonicalUser" for g in grants), grants

    with pytest.raises(ClientError):
        client.get_bucket_policy(Bucket=bucket)
