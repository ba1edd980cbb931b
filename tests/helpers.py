"""Small utilities shared by the table, model and concurrency tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

import lsm3


def key_of(row: dict[str, Any], key_columns: Sequence[str]) -> Any:
    """The primary key of a row dict: a scalar for a one-column key, else a tuple."""
    if len(key_columns) == 1:
        return row[key_columns[0]]
    return tuple(row[k] for k in key_columns)


def rows_by_key(table: pa.Table, key_columns: Sequence[str]) -> dict[Any, dict[str, Any]]:
    """``{key: row}`` for an Arrow table; fails if a key appears twice (a merge bug)."""
    out: dict[Any, dict[str, Any]] = {}
    for row in table.to_pylist():
        k = key_of(row, key_columns)
        assert k not in out, f"key {k!r} returned twice: {out[k]} and {row}"
        out[k] = row
    return out


def sorted_rows(table: pa.Table, key_columns: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of ``table`` as dicts, sorted by key."""
    return sorted(table.to_pylist(), key=lambda r: _sort_key(key_of(r, key_columns)))


def _sort_key(k: Any) -> Any:
    return k if isinstance(k, tuple) else (k,)


def model_rows(model: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a ``{key: row}`` model sorted by key."""
    return [model[k] for k in sorted(model, key=_sort_key)]


def table_state(t: lsm3.Table, snapshot_id: int | None = None) -> tuple[int, list[dict]]:
    """(snapshot id, rows sorted by key) of a table: what "committed state" means in tests."""
    snap = t.current_snapshot() if snapshot_id is None else None
    sid = snapshot_id if snapshot_id is not None else (snap.snapshot_id if snap else 0)
    rows = sorted_rows(t.to_arrow(snapshot_id=sid), t.primary_key)
    return sid, rows


def table_dir(uri: str) -> Path:
    """The directory of a local table URI (a plain path or file://)."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return Path(uri)


def data_files(uri: str) -> list[Path]:
    """Every Parquet data file under a local table root."""
    return sorted(table_dir(uri).glob("data/**/*.parquet"))


def snapshot_file(uri: str, snapshot_id: int) -> Path:
    return table_dir(uri) / "snapshot" / f"snapshot-{snapshot_id:020d}.json"


def all_objects(uri: str) -> set[str]:
    """Relative paths of every object under a local table root (to check nothing was added)."""
    root = table_dir(uri)
    return {
        str(p.relative_to(root)).replace(os.sep, "/")
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith((".tmp", ".lock"))
    }


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a file in place (size unchanged)."""
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def as_tuple_keys(keys: Iterable[Any]) -> list[Any]:
    return [k if isinstance(k, tuple) else (k,) for k in keys]


def clear_read_caches() -> None:
    """Forget cached footers and key blocks (a test that damages files in place needs this:
    lsm3 may cache them forever because real objects never change)."""
    import lsm3.read.runindex

    for value in vars(lsm3.read.runindex).values():
        if isinstance(value, lsm3.read.runindex.BlockCache):
            value.clear()
            continue
        items = getattr(value, "_items", None)
        if hasattr(items, "clear"):
            with getattr(value, "_lock", contextlib.nullcontext()):
                items.clear()
