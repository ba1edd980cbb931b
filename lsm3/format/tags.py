"""Tags: names for snapshots, as small immutable objects ``tag/<name>.json``.

A tag is created with put-if-absent (so two processes never both create one name) and removed
by deleting its object. It embeds the whole snapshot document, so a tagged snapshot stays
readable after ``snapshot/`` objects are expired (the snapshot log stays contiguous, which
discovery of the latest snapshot relies on); expiry and orphan removal keep every manifest
and data file a tagged snapshot needs.
"""

from __future__ import annotations

import json
import re
import time

from lsm3.errors import CorruptMetadata, InvalidInput
from lsm3.format.metadata import Snapshot

_TAG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_tag_name(name: str) -> None:
    if not isinstance(name, str) or not _TAG_NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"invalid tag name {name!r}: use 1-128 ASCII letters, digits, '_', '-' and '.', "
            "starting with a letter, digit or '_'"
        )


def tag_key(name: str) -> str:
    return f"tag/{name}.json"


def encode_tag(snapshot: Snapshot) -> bytes:
    doc = {
        "format": "lsm3-tag",
        "format_version": 1,
        "snapshot_id": snapshot.snapshot_id,
        "created_ms": time.time_ns() // 1_000_000,
        "snapshot": snapshot.to_json(),
    }
    return json.dumps(doc).encode()


def decode_tag(raw: bytes, what: str) -> Snapshot:
    """The tagged snapshot, as embedded in the tag object."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CorruptMetadata(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != "lsm3-tag":
        raise CorruptMetadata(f"{what} is not an lsm3 tag")
    snapshot_id = doc.get("snapshot_id")
    if not isinstance(snapshot_id, int) or isinstance(snapshot_id, bool) or snapshot_id < 1:
        raise CorruptMetadata(f"{what} has no valid snapshot_id")
    snapshot = Snapshot.decode(json.dumps(doc.get("snapshot")).encode(), what)
    if snapshot.snapshot_id != snapshot_id:
        raise CorruptMetadata(f"{what} embeds snapshot {snapshot.snapshot_id}, not {snapshot_id}")
    return snapshot
