"""Primary keys: the bucket hash, key comparison values, and their JSON encoding.

The bucket of a key is part of the format: every implementation must put the same key in the
same bucket, so the hash is specified bit for bit in docs/FORMAT.md and computed here with
vectorised numpy over whole columns (no per-row Python).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import CorruptMetadata, InvalidInput

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_S33 = np.uint64(33)
_K31 = np.uint64(31)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, wrapping modulo 2**64."""
    h = h ^ (h >> _S33)
    h = h * _M1
    h = h ^ (h >> _S33)
    h = h * _M2
    return h ^ (h >> _S33)


def _as_int64(arr: pa.Array) -> pa.Array:
    """Integers and temporal values as their int64 storage value (what the hash and JSON use)."""
    t = arr.type
    if pa.types.is_date32(t):
        arr = arr.view(pa.int32())
    elif pa.types.is_timestamp(t):
        arr = arr.view(pa.int64())
    if arr.type != pa.int64():
        arr = pc.cast(arr, pa.int64(), safe=False)  # uint64 wraps to its two's complement
    return arr


def _fnv1a(arr: pa.Array) -> np.ndarray:
    """FNV-1a 64 over each value's bytes, vectorised over rows (loops over byte positions)."""
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        offsets_type: Any = np.int64
    else:
        offsets_type = np.int32
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offsets_type)[arr.offset : arr.offset + len(arr) + 1]
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    starts = offsets[:-1].astype(np.int64)
    lengths = (offsets[1:] - offsets[:-1]).astype(np.int64)
    h = np.full(len(arr), _FNV_OFFSET, dtype=np.uint64)
    if len(arr) == 0:
        return h
    # Process rows from the longest down so each step touches only rows still active.
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    sorted_starts = starts[order]
    hs = h[order]
    for j in range(int(sorted_lengths[0]) if len(sorted_lengths) else 0):
        n_active = int(np.searchsorted(-sorted_lengths, -j, side="left"))
        # rows [0, n_active) have length > j
        b = data[sorted_starts[:n_active] + j].astype(np.uint64)
        hs[:n_active] = (hs[:n_active] ^ b) * _FNV_PRIME
    h[order] = hs
    return h


def column_hash(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The 64-bit hash of each value of one key column (see FORMAT.md, "Buckets")."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or (pa.types.is_large_binary(t))
    ):
        return fmix64(_fnv1a(arr))
    values = _as_int64(arr).to_numpy(zero_copy_only=False).view(np.uint64)
    return fmix64(values)


def bucket_of(key_columns: Sequence[pa.Array | pa.ChunkedArray], buckets: int) -> np.ndarray:
    """Bucket number per row: ``h = 0; for each key column: h = fmix64(h*31 + hash(col))``."""
    n = len(key_columns[0])
    if buckets == 1:
        return np.zeros(n, dtype=np.int32)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in key_columns:
            h = fmix64(h * _K31 + column_hash(col))
    return (h % np.uint64(buckets)).astype(np.int32)


# --------------------------------------------------------------------------- key values


def key_to_json(values: Sequence[Any], types: Sequence[pa.DataType]) -> list[Any]:
    """A key (one storage value per column) as JSON: ints, strings, or base64 for binary."""
    out: list[Any] = []
    for v, t in zip(values, types, strict=True):
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            out.append(base64.b64encode(v).decode("ascii"))
        else:
            out.append(v)
    return out


def key_from_json(j: Any, types: Sequence[pa.DataType]) -> tuple[Any, ...]:
    if not isinstance(j, list) or len(j) != len(types):
        raise CorruptMetadata(f"malformed key {j!r} in manifest")
    out: list[Any] = []
    for v, t in zip(j, types, strict=True):
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            if not isinstance(v, str):
                raise CorruptMetadata(f"malformed binary key value {v!r} in manifest")
            try:
                out.append(base64.b64decode(v, validate=True))
            except (binascii.Error, ValueError):
                raise CorruptMetadata(f"malformed binary key value {v!r} in manifest") from None
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            if not isinstance(v, str):
                raise CorruptMetadata(f"malformed string key value {v!r} in manifest")
            out.append(v)
        else:
            if not isinstance(v, int) or isinstance(v, bool):
                raise CorruptMetadata(f"malformed integer key value {v!r} in manifest")
            out.append(v)
    return tuple(out)


def storage_values(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The column in its comparison form: temporal types as int64, others unchanged."""
    t = arr.type
    if pa.types.is_date32(t) or pa.types.is_timestamp(t):
        if isinstance(arr, pa.ChunkedArray):
            return pa.chunked_array([_as_int64(c) for c in arr.chunks], type=pa.int64())
        return _as_int64(arr)
    return arr


def python_key(key: Any, types: Sequence[pa.DataType], names: Sequence[str]) -> tuple[Any, ...]:
    """A user's key (a scalar, or a tuple for a composite key) in storage form, validated."""
    values = key if isinstance(key, tuple) else (key,)
    if len(values) != len(types):
        raise InvalidInput(
            f"key {key!r} has {len(values)} value(s); the primary key is {list(names)}: "
            "pass a tuple with one value per key column"
        )
    out: list[Any] = []
    for v, t, name in zip(values, types, names, strict=True):
        if v is None:
            raise InvalidInput(f"key column {name!r} cannot be None")
        try:
            arr = pa.array([v], type=t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise InvalidInput(
                f"key value {v!r} does not fit column {name!r} ({t}): {exc}"
            ) from None
        out.append(storage_values(arr)[0].as_py())
    return tuple(out)
