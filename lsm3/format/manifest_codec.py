"""The manifest codec (docs/FORMAT.md, section 4): entries to JSON and back.

Decoding is strict (a wrong type, a missing field or a path outside the table root raises
CorruptMetadata, never a half-read entry) and lean: the per-column checks of keys are chosen
once per manifest rather than per value, because a cold open of a large table spends its time
here (issue 21: about 2x less CPU per entry than the field-by-field codec it replaces).
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from lsm3.errors import CorruptMetadata
from lsm3.format.keys import key_from_json
from lsm3.format.metadata import (
    SAFE_PATH,
    DataFile,
    ManifestEntry,
    check_header,
    check_relative_path,
    load_json,
)
from lsm3.format.schema import FORMAT_VERSION


def encode_manifest(
    entries: Sequence[ManifestEntry],
    key_types: Sequence[pa.DataType],
    part_types: Sequence[pa.DataType],
) -> bytes:
    doc = {
        "format": "lsm3-manifest",
        "format_version": FORMAT_VERSION,
        "entries": [{"op": e.op, "file": e.file.to_json(key_types, part_types)} for e in entries],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding. A cold open builds hundreds of
    thousands of small objects that are all kept, and each collection would walk them again
    (measured: 18.8 against 10.7 us of CPU per entry over 51,000 kept entries). Decoded JSON
    holds no reference cycles, so nothing waits for the collector meanwhile. Nested and
    concurrent decodes (the parallel fetch) share one pause; the collector is enabled again,
    if it was, when the last one ends."""
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()


def decode_manifest(
    raw: bytes,
    key_types: Sequence[pa.DataType],
    part_types: Sequence[pa.DataType],
    what: str,
    seq_base: int = 0,
) -> list[ManifestEntry]:
    """The entries of a manifest, with ``seq_base`` (its sequence base as its referrer gives
    it, docs/FORMAT.md section 4b) added to each ``seq_offset``."""
    with gc_paused():
        return _decode(raw, key_types, part_types, what, seq_base)


def _decode(
    raw: bytes,
    key_types: Sequence[pa.DataType],
    part_types: Sequence[pa.DataType],
    what: str,
    seq_base: int,
) -> list[ManifestEntry]:
    doc = load_json(raw, what)
    check_header(doc, "lsm3-manifest", what, FORMAT_VERSION)
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise CorruptMetadata(f"{what} has no entries list")
    decoder = FileDecoder(key_types, part_types, seq_base)
    out = []
    for e in entries:
        if type(e) is not dict or e.get("op") not in ("add", "remove"):
            raise CorruptMetadata(f"{what} has a malformed entry {str(e)[:200]}")
        try:
            file = decoder.decode(e.get("file"))
        except CorruptMetadata as exc:
            raise CorruptMetadata(f"{what}: {exc}") from None
        out.append(ManifestEntry(e["op"], file))
    return out


_INT_FIELDS = (
    "level",
    "bucket",
    "min_seq",
    "max_seq",
    "seq_offset",
    "rows",
    "deletes",
    "size",
    "schema_id",
    "created_ms",
)
_STR_FIELDS = ("checksum", "footer_checksum")
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")


class FileDecoder:
    """Decodes the ``file`` objects of one manifest's entries, strictly (a wrong type, a
    missing field or a path outside the table root raises CorruptMetadata) but with the
    per-column checks chosen once per manifest rather than per value: cold opens of large
    tables spend their time here."""

    def __init__(
        self,
        key_types: Sequence[pa.DataType],
        part_types: Sequence[pa.DataType],
        seq_base: int = 0,
    ):
        self.seq_base = seq_base
        self.key_types = list(key_types)
        self.part_types = list(part_types)
        self.key_kinds = tuple(_value_kind(t) for t in key_types)
        self.part_kinds = tuple(_value_kind(t) for t in part_types)

    def decode(self, j: Any) -> DataFile:
        if type(j) is not dict:
            raise CorruptMetadata(f"manifest entry file is not an object: {j!r}")
        try:
            path = j["path"]
            if type(path) is not str or not _plain_path(path):
                check_relative_path(path, "data/", "manifest entry")  # raises with the reason
            values = {k: j[k] for k in _INT_FIELDS}
            for v in values.values():
                if type(v) is not int or not -_I64 < v < _I64:
                    raise CorruptMetadata(f"expected a 64-bit integer in metadata, got {v!r}")
            for k in _STR_FIELDS:
                values[k] = _string(j[k])
            run_id = _string(j.get("run_id", ""))
            partition = self._key(j["partition"], self.part_kinds, self.part_types)
            min_key = self._key(j["min_key"], self.key_kinds, self.key_types)
            max_key = self._key(j["max_key"], self.key_kinds, self.key_types)
        except KeyError as exc:
            raise CorruptMetadata(f"manifest entry is missing field {exc}") from None
        if (
            values["level"] < 0
            or values["bucket"] < 0
            or values["rows"] < 0
            or values["size"] < 0
            or values["deletes"] > values["rows"]
        ):
            raise CorruptMetadata(f"manifest entry for {path} has impossible counts")
        values["seq_offset"] += self.seq_base
        f = object.__new__(DataFile)  # frozen: fill the fields without __setattr__
        f.__dict__.update(
            values, path=path, partition=partition, min_key=min_key, max_key=max_key, run_id=run_id
        )
        return f

    @staticmethod
    def _key(j: Any, kinds: tuple[str, ...], types: list[pa.DataType]) -> tuple[Any, ...]:
        if type(j) is not list or len(j) != len(kinds):
            raise CorruptMetadata(f"malformed key {j!r} in manifest")
        for v, kind in zip(j, kinds, strict=True):
            if kind == "int":
                if type(v) is not int:
                    raise CorruptMetadata(f"malformed integer key value {v!r} in manifest")
            elif kind == "str":
                if type(v) is not str:
                    raise CorruptMetadata(f"malformed string key value {v!r} in manifest")
            else:
                return key_from_json(j, types)  # binary: base64, decoded by the general codec
        return tuple(j)


_I64 = 2**63


def _value_kind(t: pa.DataType) -> str:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    return "int"


def _plain_path(path: str) -> bool:
    """The common case of the path rule (section 4) without splitting: a ``data/`` path of
    safe characters, no ``.`` or ``..`` segment, short enough that no segment can be long."""
    return (
        path.startswith("data/")
        and len(path) <= 255
        and SAFE_PATH.match(path) is not None
        and _DOT_SEGMENT.search(path) is None
    )


def _string(v: Any) -> str:
    if type(v) is not str:
        raise CorruptMetadata(f"expected a string in metadata, got {v!r}")
    return v
