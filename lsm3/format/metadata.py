"""Manifest and snapshot models and their JSON codec, field by field as in docs/FORMAT.md.

Snapshots and manifests are immutable JSON objects. Decoding is strict: a wrong type, a missing
field, a newer format version or a path that leaves the table root raises CorruptMetadata (or
UnsupportedFormatVersion), never a half-read object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lsm3.errors import CorruptMetadata, UnsupportedFormatVersion
from lsm3.format.keys import key_to_json
from lsm3.format.schema import FORMAT_VERSION

SNAPSHOT_KINDS = ("APPEND", "COMPACT", "SCHEMA")
#: Snapshots that give a manifest a sequence base (docs/FORMAT.md, section 4b) are version 3,
#: those that name a manifest list (section 4a) without one version 2; the others are written
#: as version 1, which older readers still read. Readers read all three.
SNAPSHOT_FORMAT_VERSION = 3
SAFE_PATH = re.compile(r"^[A-Za-z0-9._=%+\-]+(/[A-Za-z0-9._=%+\-]+)*$")


def check_relative_path(path: Any, prefix: str, what: str) -> str:
    """A path from metadata must stay inside the table root, under ``prefix``."""
    if (
        not isinstance(path, str)
        or not path.startswith(prefix)
        or not SAFE_PATH.match(path)
        or any(part in ("", ".", "..") or len(part) > 255 for part in path.split("/"))
        or len(path) > 1024
    ):
        raise CorruptMetadata(
            f"{what} names path {path!r}, which is not inside the table root under {prefix!r}; "
            "refusing to read it"
        )
    return path


@dataclass(frozen=True)
class DataFile:
    """One immutable sorted run file and what readers need to prune and verify it."""

    path: str
    level: int
    partition: tuple[Any, ...]
    bucket: int
    min_key: tuple[Any, ...]
    max_key: tuple[Any, ...]
    min_seq: int
    max_seq: int
    seq_offset: int
    rows: int
    deletes: int
    size: int
    checksum: str
    footer_checksum: str
    schema_id: int
    created_ms: int
    run_id: str = ""  # files sharing a run id form one key-disjoint sorted run

    @property
    def run(self) -> str:
        """The sorted run this file belongs to (its own path when it has no run id)."""
        return self.run_id or self.path

    @property
    def effective_min_seq(self) -> int:
        return self.min_seq + self.seq_offset

    @property
    def effective_max_seq(self) -> int:
        return self.max_seq + self.seq_offset

    def with_offset(self, seq_offset: int) -> DataFile:
        # A copy of the fields rather than dataclasses.replace, which runs the frozen
        # __init__: a cold open applies manifests' sequence bases to every listed entry.
        out = object.__new__(DataFile)
        out.__dict__.update(self.__dict__, seq_offset=seq_offset)
        return out

    def to_json(self, key_types: Sequence[pa.DataType], part_types: Sequence[pa.DataType]) -> dict:
        return {
            "path": self.path,
            "level": self.level,
            "partition": key_to_json(self.partition, part_types),
            "bucket": self.bucket,
            "min_key": key_to_json(self.min_key, key_types),
            "max_key": key_to_json(self.max_key, key_types),
            "min_seq": self.min_seq,
            "max_seq": self.max_seq,
            "seq_offset": self.seq_offset,
            "rows": self.rows,
            "deletes": self.deletes,
            "size": self.size,
            "checksum": self.checksum,
            "footer_checksum": self.footer_checksum,
            "schema_id": self.schema_id,
            "created_ms": self.created_ms,
            "run_id": self.run_id,
        }


def metadata_int(v: Any) -> int:
    """A 64-bit integer field of metadata (CorruptMetadata otherwise)."""
    return _int(v)


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or abs(v) >= 2**63:
        raise CorruptMetadata(f"expected a 64-bit integer in metadata, got {v!r}")
    return v


def _seq_base(v: Any) -> int:
    if _int(v) < 0:
        raise CorruptMetadata(f"a sequence base must not be negative, got {v!r}")
    return int(v)


def seq_base(v: Any) -> int:
    """A manifest's sequence base from metadata: a non-negative 64-bit integer."""
    return _seq_base(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise CorruptMetadata(f"expected a string in metadata, got {v!r}")
    return v


@dataclass(frozen=True)
class ManifestEntry:
    """``add`` puts a file into the live set; ``remove`` takes it out (compaction only)."""

    op: str
    file: DataFile


@dataclass(frozen=True)
class WriterRecord:
    """The last commit of a named writer, carried in every snapshot for exactly-once resume."""

    commit_id: str
    snapshot_id: int
    metadata: dict[str, Any]


def writers_to_json(writers: dict[str, WriterRecord]) -> dict[str, Any]:
    return {
        w: {"commit_id": r.commit_id, "snapshot_id": r.snapshot_id, "metadata": r.metadata}
        for w, r in sorted(writers.items())
    }


def writers_from_json(doc: Any, what: str) -> dict[str, WriterRecord]:
    if not isinstance(doc, dict):
        raise CorruptMetadata(f"{what}: writers must be an object")
    try:
        return {
            _str(w): WriterRecord(
                _str(r["commit_id"]), _int(r["snapshot_id"]), dict(r.get("metadata") or {})
            )
            for w, r in doc.items()
        }
    except KeyError as exc:
        raise CorruptMetadata(f"{what}: a writer record is missing {exc}") from None


@dataclass(frozen=True)
class CompactorLease:
    """Which compactor may commit COMPACT snapshots, and until when (ms since epoch)."""

    epoch: int
    owner: str
    lease_until_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "owner": self.owner, "lease_until_ms": self.lease_until_ms}

    @staticmethod
    def from_json(j: Any, what: str) -> CompactorLease | None:
        if j is None:
            return None
        if not isinstance(j, dict):
            raise CorruptMetadata(f"{what}: compactor must be an object or null")
        try:
            return CompactorLease(_int(j["epoch"]), _str(j["owner"]), _int(j["lease_until_ms"]))
        except KeyError as exc:
            raise CorruptMetadata(f"{what}: compactor lease is missing {exc}") from None


@dataclass(frozen=True)
class Snapshot:
    """One committed version of the table."""

    snapshot_id: int
    parent_id: int | None
    schema_id: int
    timestamp_ms: int
    kind: str
    manifests: tuple[str, ...]
    next_sequence: int
    writer_id: str | None = None
    commit_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, int] = field(default_factory=dict)
    writers: dict[str, WriterRecord] = field(default_factory=dict)
    compactor: CompactorLease | None = None
    delta_manifest: str | None = None
    #: Version 2: the manifest list holding the manifests before ``manifests`` (the tail) and
    #: the writer records before ``writers`` (the recent ones); None in version 1.
    manifest_list: str | None = None
    #: The manifest listing this commit's changelog files (docs/FORMAT.md, section 16), or
    #: None: written under the changelog producers that store changes.
    changelog_manifest: str | None = None
    #: Version 3: the sequence base of each manifest of the tail, added to the ``seq_offset``
    #: of its entries (empty: all 0), and that of ``delta_manifest`` (section 4b).
    manifest_offsets: tuple[int, ...] = ()
    delta_offset: int = 0

    @property
    def format_version(self) -> int:
        if self.delta_offset or any(self.manifest_offsets):
            return 3
        return 2 if self.manifest_list is not None else 1

    @property
    def tail(self) -> tuple[tuple[str, int], ...]:
        """The tail's manifests with their sequence bases."""
        bases = self.manifest_offsets or (0,) * len(self.manifests)
        return tuple(zip(self.manifests, bases, strict=True))

    @property
    def is_lease_only(self) -> bool:
        """A compactor lease change (acquire, renew, release) that changes no file: expiry's
        ``retain_last`` does not count these (docs/FORMAT.md, section 12)."""
        return self.kind == "COMPACT" and self.delta_manifest is None

    @property
    def referenced_manifests(self) -> tuple[str, ...]:
        """Every object under ``manifest/`` this snapshot names itself: its manifest list,
        its tail of manifests and its own delta. The manifests the list names are needed too
        (``ManifestReader.referenced`` adds them)."""
        out = list(self.manifests)
        if self.delta_manifest and self.delta_manifest not in self.manifests:
            out.append(self.delta_manifest)
        if self.manifest_list is not None:
            out.append(self.manifest_list)
        if self.changelog_manifest is not None:
            out.append(self.changelog_manifest)
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        doc = {
            "format": "lsm3",
            "format_version": self.format_version,
            "snapshot_id": self.snapshot_id,
            "parent_id": self.parent_id,
            "schema_id": self.schema_id,
            "timestamp_ms": self.timestamp_ms,
            "kind": self.kind,
            "manifests": list(self.manifests),
            "next_sequence": self.next_sequence,
            "writer_id": self.writer_id,
            "commit_id": self.commit_id,
            "metadata": self.metadata,
            "summary": self.summary,
            "writers": writers_to_json(self.writers),
            "compactor": self.compactor.to_json() if self.compactor else None,
            "delta_manifest": self.delta_manifest,
        }
        if self.manifest_list is not None:
            doc["manifest_list"] = self.manifest_list
        if self.changelog_manifest is not None:
            doc["changelog_manifest"] = self.changelog_manifest
        if any(self.manifest_offsets):
            doc["manifest_offsets"] = list(self.manifest_offsets)
        if self.delta_offset:
            doc["delta_offset"] = self.delta_offset
        return doc

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), indent=1).encode()

    @staticmethod
    def decode(raw: bytes, what: str) -> Snapshot:
        doc = _load_json(raw, what)
        _check_header(doc, "lsm3", what, SNAPSHOT_FORMAT_VERSION)
        try:
            kind = _str(doc["kind"])
            if kind not in SNAPSHOT_KINDS:
                raise CorruptMetadata(f"{what} has unknown kind {kind!r}")
            parent = doc["parent_id"]
            manifests = doc["manifests"]
            if not isinstance(manifests, list):
                raise CorruptMetadata(f"{what}: manifests is not a list")
            metadata = doc.get("metadata") or {}
            summary = doc.get("summary") or {}
            writers_doc = doc.get("writers") or {}
            if not all(isinstance(x, dict) for x in (metadata, summary, writers_doc)):
                raise CorruptMetadata(f"{what}: metadata, summary and writers must be objects")
            writers = writers_from_json(writers_doc, what)
            listed = doc.get("manifest_list")
            changelog = doc.get("changelog_manifest")
            paths = tuple(check_relative_path(m, "manifest/", what) for m in manifests)
            offsets = tuple(_seq_base(v) for v in doc.get("manifest_offsets") or ())
            if offsets and len(offsets) != len(paths):
                raise CorruptMetadata(
                    f"{what}: manifest_offsets has {len(offsets)} items for "
                    f"{len(manifests)} manifests"
                )
            return Snapshot(
                snapshot_id=_int(doc["snapshot_id"]),
                parent_id=None if parent is None else _int(parent),
                schema_id=_int(doc["schema_id"]),
                timestamp_ms=_int(doc["timestamp_ms"]),
                kind=kind,
                manifests=paths,
                next_sequence=_int(doc["next_sequence"]),
                writer_id=None if doc.get("writer_id") is None else _str(doc["writer_id"]),
                commit_id=None if doc.get("commit_id") is None else _str(doc["commit_id"]),
                metadata=dict(metadata),
                summary={str(k): _int(v) for k, v in summary.items()},
                writers=writers,
                compactor=CompactorLease.from_json(doc.get("compactor"), what),
                delta_manifest=(
                    None
                    if doc.get("delta_manifest") is None
                    else check_relative_path(doc["delta_manifest"], "manifest/", what)
                ),
                manifest_list=(
                    None if listed is None else check_relative_path(listed, "manifest/", what)
                ),
                changelog_manifest=(
                    None if changelog is None else check_relative_path(changelog, "manifest/", what)
                ),
                manifest_offsets=offsets,
                delta_offset=_seq_base(doc.get("delta_offset", 0)),
            )
        except KeyError as exc:
            raise CorruptMetadata(f"{what} is missing field {exc}") from None
        except (TypeError, AttributeError, ValueError) as exc:
            raise CorruptMetadata(f"{what} is malformed: {exc}") from None
        except CorruptMetadata as exc:
            if what in str(exc):
                raise
            raise CorruptMetadata(f"{what}: {exc}") from None


def _load_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptMetadata(f"{what} is not valid JSON ({exc}); the object is corrupt") from None
    if not isinstance(doc, dict):
        raise CorruptMetadata(f"{what} is not a JSON object; the object is corrupt")
    return doc


def load_json(raw: bytes, what: str) -> dict[str, Any]:
    """A metadata object's JSON document (CorruptMetadata if it is not one)."""
    return _load_json(raw, what)


def check_header(doc: dict[str, Any], expected: str, what: str, max_version: int) -> None:
    """Refuse an object of another kind, or of a newer version than ``max_version``."""
    _check_header(doc, expected, what, max_version)


def _check_header(
    doc: dict[str, Any], expected: str, what: str, max_version: int = FORMAT_VERSION
) -> None:
    if doc.get("format") != expected:
        raise CorruptMetadata(
            f"{what} is not an lsm3 object (format={doc.get('format')!r}, expected {expected!r})"
        )
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CorruptMetadata(f"{what} has no integer format_version")
    if version > max_version:
        raise UnsupportedFormatVersion(
            f"{what} uses format version {version}; this lsm3 reads up to {max_version}: "
            "upgrade lsm3 to read this table"
        )
