"""The catalog state model and its strict JSON codec (docs/FORMAT.md, section Catalog).

One catalog state is the whole map namespace -> table -> entry at one version. It is small
(about 150 bytes per table), immutable once written, and decoded strictly: a malformed state
raises CorruptMetadata, and a table location that could leave the warehouse root is refused,
because every later path is built from it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from catalog.errors import CorruptMetadata, UnsupportedFormatVersion
from catalog.identifiers import NAME_PATTERN, RESERVED_NAMESPACES

FORMAT = "lsm3-catalog"
FORMAT_VERSION = 1
#: ``<namespace>/<table>-<32 hex>``: where a table was created. Rename keeps it.
_LOCATION = re.compile(rf"({NAME_PATTERN})/({NAME_PATTERN})-([0-9a-f]{{32}})")
_NAME = re.compile(NAME_PATTERN)


def new_location(namespace: str, table: str, table_uuid: uuid.UUID) -> str:
    return f"{namespace}/{table}-{table_uuid.hex}"


@dataclass(frozen=True)
class TableEntry:
    """A registered table: where its objects are and which table it is."""

    location: str  # relative to the warehouse root, see new_location
    uuid: str  # canonical lower-case UUID string; its hex is the location's suffix
    created_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"location": self.location, "uuid": self.uuid, "created_ms": self.created_ms}


@dataclass(frozen=True)
class NamespaceEntry:
    created_ms: int
    tables: Mapping[str, TableEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "created_ms": self.created_ms,
            "tables": {name: t.to_json() for name, t in sorted(self.tables.items())},
        }


@dataclass(frozen=True)
class CatalogState:
    """Catalog version ``state_id`` (0: the empty catalog before any commit)."""

    state_id: int
    parent_id: int | None
    timestamp_ms: int
    commit_id: str | None
    operation: str | None
    namespaces: Mapping[str, NamespaceEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "state_id": self.state_id,
            "parent_id": self.parent_id,
            "timestamp_ms": self.timestamp_ms,
            "commit_id": self.commit_id,
            "operation": self.operation,
            "namespaces": {n: e.to_json() for n, e in sorted(self.namespaces.items())},
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), indent=1).encode()

    @staticmethod
    def decode(raw: bytes, what: str) -> CatalogState:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CorruptMetadata(
                f"{what} is not valid JSON ({exc}); the object is corrupt"
            ) from None
        if not isinstance(doc, dict):
            raise CorruptMetadata(f"{what} is not a JSON object; the object is corrupt")
        try:
            return _decode(doc, what)
        except KeyError as exc:
            raise CorruptMetadata(f"{what} is missing field {exc}") from None
        except (TypeError, AttributeError, ValueError) as exc:
            raise CorruptMetadata(f"{what} is malformed: {exc}") from None


EMPTY = CatalogState(0, None, 0, None, None, {})


def _int(v: Any, field: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{field} must be an integer, got {v!r}")
    return v


def _str(v: Any, field: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{field} must be a string, got {v!r}")
    return v


def _obj(v: Any, field: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"{field} must be an object")
    return v


def _decode(doc: dict[str, Any], what: str) -> CatalogState:
    if doc.get("format") != FORMAT:
        raise CorruptMetadata(f"{what} is not a catalog state (format {doc.get('format')!r})")
    version = _int(doc["format_version"], "format_version")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatVersion(
            f"{what} has catalog format version {version}; this lsm3 reads up to "
            f"{FORMAT_VERSION}: upgrade lsm3"
        )
    parent = doc["parent_id"]
    seen_uuids: set[str] = set()
    namespaces: dict[str, NamespaceEntry] = {}
    for ns, ns_doc in _obj(doc["namespaces"], "namespaces").items():
        if _NAME.fullmatch(ns) is None or ns.lower() in RESERVED_NAMESPACES:
            raise CorruptMetadata(f"{what} registers an invalid namespace name {ns!r}")
        ns_doc = _obj(ns_doc, f"namespace {ns}")
        tables: dict[str, TableEntry] = {}
        for name, t in _obj(ns_doc["tables"], f"tables of {ns}").items():
            if _NAME.fullmatch(name) is None:
                raise CorruptMetadata(f"{what} registers an invalid table name {ns}.{name!r}")
            entry = _decode_table(_obj(t, f"table {ns}.{name}"), f"{what}, table {ns}.{name}")
            if entry.uuid in seen_uuids:
                raise CorruptMetadata(f"{what} registers table uuid {entry.uuid} twice")
            seen_uuids.add(entry.uuid)
            tables[name] = entry
        namespaces[ns] = NamespaceEntry(_int(ns_doc["created_ms"], "created_ms"), tables)
    commit_id = doc.get("commit_id")
    operation = doc.get("operation")
    return CatalogState(
        state_id=_int(doc["state_id"], "state_id"),
        parent_id=None if parent is None else _int(parent, "parent_id"),
        timestamp_ms=_int(doc["timestamp_ms"], "timestamp_ms"),
        commit_id=None if commit_id is None else _str(commit_id, "commit_id"),
        operation=None if operation is None else _str(operation, "operation"),
        namespaces=namespaces,
    )


def _decode_table(t: dict[str, Any], what: str) -> TableEntry:
    location = _str(t["location"], "location")
    table_uuid = str(uuid.UUID(_str(t["uuid"], "uuid")))
    m = _LOCATION.fullmatch(location)
    if m is None or m.group(1).lower() in RESERVED_NAMESPACES:
        raise CorruptMetadata(
            f"{what} has location {location!r}, which is not '<namespace>/<table>-<32 hex>' "
            "inside the warehouse root; refusing to use it"
        )
    if m.group(3) != uuid.UUID(table_uuid).hex:
        raise CorruptMetadata(f"{what}: location {location!r} does not end in its uuid")
    return TableEntry(location, table_uuid, _int(t["created_ms"], "created_ms"))
