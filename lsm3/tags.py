"""Tags: names for snapshots, as small immutable objects ``tag/<name>.json``.

A tag is created with put-if-absent (so two processes never both create one name) and removed
by deleting its object. Snapshot expiry keeps every tagged snapshot and its files.
"""

from __future__ import annotations

import json
import re
import time

from lsm3.errors import CorruptMetadata, InvalidInput

_TAG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_tag_name(name: str) -> None:
    if not isinstance(name, str) or not _TAG_NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"invalid tag name {name!r}: use 1-128 ASCII letters, digits, '_', '-' and '.', "
            "starting with a letter, digit or '_'"
        )


def tag_key(name: str) -> str:
    return f"tag/{name}.json"


def encode_tag(snapshot_id: int) -> bytes:
    doc = {
        "format": "lsm3-tag",
        "format_version": 1,
        "snapshot_id": snapshot_id,
        "created_ms": time.time_ns() // 1_000_000,
    }
    return json.dumps(doc).encode()


def decode_tag(raw: bytes, what: str) -> int:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CorruptMetadata(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != "lsm3-tag":
        raise CorruptMetadata(f"{what} is not an lsm3 tag")
    snapshot_id = doc.get("snapshot_id")
    if not isinstance(snapshot_id, int) or isinstance(snapshot_id, bool) or snapshot_id < 1:
        raise CorruptMetadata(f"{what} has no valid snapshot_id")
    return snapshot_id
