"""An independent reader of lsm3 tables, written from docs/FORMAT.md alone.

It is a test oracle: it uses only pyarrow, json, zlib and the local filesystem, never the
lsm3 package, and favours plain per-row Python over speed. It reads a table at a local path
or ``file://`` URI: the snapshot (latest or given), its manifest list (parts included) and
manifests with their sequence bases, the live data files (verified by size and CRC-32,
projected by field id onto the snapshot's schema), and merges the versions of each key under
every merge engine (section 15). ``changelog`` reads the changes of commits (section 16):
stored changelog files, or changes computed by comparing reads.
"""

from __future__ import annotations

import base64
import json
import os
import re
import zlib
from collections.abc import Iterable
from decimal import Context, Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SNAPSHOT_VERSION = 3  # section 6
LIST_VERSION = 3  # section 4a
SCHEMA_VERSION = 2  # section 2
MANIFEST_VERSION = 1  # section 4

PATH_RE = re.compile(r"^[A-Za-z0-9._=%+-]+(/[A-Za-z0-9._=%+-]+)*$")
SEQ, KIND = "_lsm3_seq", "_lsm3_kind"
UPSERT, DELETE, RESET = 0, 1, 2

PRIMITIVES = {
    "null": pa.null(),
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "date32": pa.date32(),
    "date64": pa.date64(),
}


class SpecError(Exception):
    """Metadata or data that FORMAT.md calls invalid."""


def arrow_type(t: Any) -> pa.DataType:
    """Section 2, types T."""
    if isinstance(t, str):
        return PRIMITIVES[t]
    kind = t["type"]
    if kind == "timestamp":
        return pa.timestamp(t["unit"], t.get("tz"))
    if kind == "time32":
        return pa.time32(t["unit"])
    if kind == "time64":
        return pa.time64(t["unit"])
    if kind == "duration":
        return pa.duration(t["unit"])
    if kind.startswith("decimal"):
        make = {
            "decimal32": pa.decimal32,
            "decimal64": pa.decimal64,
            "decimal128": pa.decimal128,
            "decimal256": pa.decimal256,
        }[kind]
        return make(t["precision"], t["scale"])
    if kind == "fixed_size_binary":
        return pa.binary(t["byte_width"])
    if kind in ("list", "large_list"):
        make = pa.list_ if kind == "list" else pa.large_list
        return make(arrow_field(t["element"]))
    if kind == "struct":
        return pa.struct([arrow_field(f) for f in t["fields"]])
    if kind == "map":
        return pa.map_(arrow_field(t["key"]), arrow_field(t["value"]))
    raise SpecError(f"unknown type {t!r}")


def arrow_field(f: dict[str, Any]) -> pa.Field:
    return pa.field(f["name"], arrow_type(f["type"]), f.get("nullable", True))


class Schema:
    """A schema object (section 2)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        if doc["format_version"] > SCHEMA_VERSION:
            raise SpecError(f"schema format_version {doc['format_version']}")
        self.doc = doc
        self.schema_id: int = doc["schema_id"]
        self.fields: list[dict[str, Any]] = doc["fields"]
        self.primary_key: list[str] = doc["primary_key"]
        self.options: dict[str, Any] = doc.get("options") or {}
        self.arrow = pa.schema([pa.field(f["name"], arrow_type(f["type"])) for f in self.fields])
        self.names = [f["name"] for f in self.fields]
        self.name_of_id = {f["id"]: f["name"] for f in self.fields}

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


class SpecTable:
    def __init__(self, uri: str) -> None:
        self.root = uri[len("file://") :] if uri.startswith("file://") else uri

    # -- objects -------------------------------------------------------------------------
    def _path(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    def _json(self, rel: str) -> dict[str, Any]:
        with open(self._path(rel), "rb") as f:
            return json.loads(f.read())

    @staticmethod
    def _check_path(path: str, prefix: str) -> None:
        """Section 4, path rule: refuse, never skip."""
        segments = path.split("/")
        if (
            not PATH_RE.match(path)
            or not path.startswith(prefix)
            or len(path) > 1024
            or any(s in ("", ".", "..") or len(s) > 255 for s in segments)
        ):
            raise SpecError(f"bad path {path!r}")

    def schema(self, schema_id: int) -> Schema:
        doc = self._json(f"schema/schema-{schema_id}.json")
        if doc["schema_id"] != schema_id:
            raise SpecError("schema id mismatch")
        return Schema(doc)

    # -- snapshots (section 6, 12) -------------------------------------------------------
    def _snapshot_ids(self) -> list[int]:
        d = self._path("snapshot")
        if not os.path.isdir(d):
            return []
        ids = []
        for name in os.listdir(d):
            m = re.fullmatch(r"snapshot-(\d{20})\.json", name)
            if m:
                ids.append(int(m.group(1)))
        return sorted(ids)

    def _expired_marker(self) -> int:
        d = self._path("snapshot/expired")
        names = [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []
        return max(names, default=0)

    def history(self) -> list[int]:
        """The consecutive run of ids ending with the newest, above the largest marker."""
        ids = self._snapshot_ids()
        marker = self._expired_marker()
        out: list[int] = []
        for i in reversed(ids):
            if i <= marker or (out and i != out[-1] - 1):
                break
            out.append(i)
        return out[::-1]

    def latest_snapshot_id(self) -> int:
        hist = self.history()
        return hist[-1] if hist else 0

    def snapshot(self, snapshot_id: int | None = None) -> dict[str, Any] | None:
        if snapshot_id is None:
            snapshot_id = self.latest_snapshot_id()
        if snapshot_id == 0:
            return None
        if snapshot_id not in self.history():
            raise SpecError(f"snapshot {snapshot_id} is not in the history")
        doc = self._json(f"snapshot/snapshot-{snapshot_id:020d}.json")
        if doc.get("format") != "lsm3" or doc["snapshot_id"] != snapshot_id:
            raise SpecError("bad snapshot")
        if doc["format_version"] > SNAPSHOT_VERSION:
            raise SpecError(f"snapshot format_version {doc['format_version']}")
        return doc

    # -- manifests (sections 4, 4a, 4b) --------------------------------------------------
    def _list(self, path: str, is_part: bool) -> list[tuple[str, int]]:
        self._check_path(path, "manifest/")
        doc = self._json(path)
        if doc.get("format") != "lsm3-manifest-list" or doc["format_version"] > LIST_VERSION:
            raise SpecError(f"bad manifest list {path}")
        out: list[tuple[str, int]] = []
        parts = doc.get("parts") or []
        if parts and is_part:
            raise SpecError("a part names parts")
        for part in parts:
            out.extend(self._list(part["path"], True))
        for m in doc["manifests"]:
            out.append((m["path"], m.get("seq_base", 0) or 0))
        return out

    def manifests_of(self, snap: dict[str, Any]) -> list[tuple[str, int]]:
        """(path, sequence base) of every manifest of the snapshot, in replay order."""
        out: list[tuple[str, int]] = []
        if snap.get("manifest_list"):
            out.extend(self._list(snap["manifest_list"], False))
        tail = snap["manifests"]
        offsets = snap.get("manifest_offsets") or [0] * len(tail)
        if len(offsets) != len(tail):
            raise SpecError("manifest_offsets length")
        out.extend(zip(tail, offsets, strict=True))
        return out

    def manifest(self, path: str, base: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """(op, FILE) entries with the base added to seq_offset."""
        self._check_path(path, "manifest/")
        doc = self._json(path)
        if doc.get("format") != "lsm3-manifest" or doc["format_version"] > MANIFEST_VERSION:
            raise SpecError(f"bad manifest {path}")
        out = []
        for e in doc["entries"]:
            f = dict(e["file"])
            self._check_path(f["path"], "data/")
            f["seq_offset"] = f["seq_offset"] + base
            out.append((e["op"], f))
        return out

    def live_files(self, snap: dict[str, Any] | None) -> list[dict[str, Any]]:
        live: dict[str, dict[str, Any]] = {}
        if snap is None:
            return []
        for path, base in self.manifests_of(snap):
            for op, f in self.manifest(path, base):
                if op == "add":
                    live[f["path"]] = f
                elif op == "remove":
                    live.pop(f["path"], None)
                else:
                    raise SpecError(f"bad op {op!r}")
        return list(live.values())

    # -- data files (sections 3, 9) ------------------------------------------------------
    def read_file(
        self,
        f: dict[str, Any],
        target: Schema,
        extra: Iterable[str],
        changelog_entry: bool = False,
    ) -> pa.Table:
        """The file's rows projected by field id onto ``target``, plus ``extra`` columns
        (``changelog_entry``: a data file named by a changelog manifest)."""
        with open(self._path(f["path"]), "rb") as fh:
            raw = fh.read()
        if len(raw) != f["size"]:
            raise SpecError(f"size mismatch {f['path']}")
        if f"crc32:{zlib.crc32(raw):08x}" != f["checksum"]:
            raise SpecError(f"checksum mismatch {f['path']}")
        footer_len = int.from_bytes(raw[-8:-4], "little")
        if f"crc32:{zlib.crc32(raw[-8 - footer_len :]):08x}" != f["footer_checksum"]:
            raise SpecError(f"footer checksum mismatch {f['path']}")
        data = pq.read_table(pa.BufferReader(raw))
        written = self.schema(f["schema_id"])
        check_entry(f, data, written, changelog_entry)
        columns, names = [], []
        for field in target.fields:
            name_in_file = written.name_of_id.get(field["id"])
            typ = target.arrow.field(field["name"]).type
            if name_in_file is None or name_in_file not in data.column_names:
                col = pa.nulls(data.num_rows, typ)
            else:
                col = data.column(name_in_file).cast(typ)
            columns.append(col)
            names.append(field["name"])
        for name in extra:
            columns.append(data.column(name))
            names.append(name)
        return pa.Table.from_arrays(columns, names=names)

    # -- merged read (sections 8, 15) ----------------------------------------------------
    def versions(
        self, files: list[dict[str, Any]], schema: Schema, keys: set[tuple] | None = None
    ) -> dict[tuple, list[tuple[tuple, int, dict[str, Any]]]]:
        """Per key: (order, kind, row) of every stored row, oldest first."""
        seq_field = schema.option("sequence_field")
        out: dict[tuple, list[tuple[tuple, int, dict[str, Any]]]] = {}
        for f in files:
            t = self.read_file(f, schema, [SEQ, KIND])
            for row in t.to_pylist():
                key = tuple(row[k] for k in schema.primary_key)
                if keys is not None and key not in keys:
                    continue
                seq = row.pop(SEQ) + f["seq_offset"]
                kind = row.pop(KIND)
                if kind not in (UPSERT, DELETE, RESET):
                    raise SpecError(f"bad row kind {kind}")
                if seq_field:
                    sv = row[seq_field]
                    order: tuple = ((0,) if sv is None else (1, sv), seq)
                else:
                    order = (seq,)
                out.setdefault(key, []).append((order, kind, row))
        for vs in out.values():
            vs.sort(key=lambda v: v[0])
        return out

    def fold_key(self, schema: Schema, versions: list[tuple[tuple, int, dict[str, Any]]]):
        acc: dict[str, Any] | None = None
        for _order, kind, row in versions:
            if kind == DELETE:
                acc = None
            elif kind == RESET:
                acc = fold(schema, None, row)
            else:
                acc = fold(schema, acc, row)
        return acc

    def read(self, snapshot_id: int | None = None, keys: set[tuple] | None = None) -> pa.Table:
        """The merged rows at a snapshot, sorted by primary key."""
        snap = self.snapshot(snapshot_id)
        schema = self.schema(snap["schema_id"] if snap else 0)
        return self._read(snap, schema, keys)

    def _read(
        self, snap: dict[str, Any] | None, schema: Schema, keys: set[tuple] | None
    ) -> pa.Table:
        versions = self.versions(self.live_files(snap), schema, keys)
        rows = []
        for key in sorted(versions, key=key_order):
            row = self.fold_key(schema, versions[key])
            if row is not None:
                rows.append(row)
        return pa.Table.from_pylist(rows, schema=schema.arrow)

    # -- changelog (section 16) ----------------------------------------------------------
    def changelog(self, start: int, end: int | None = None) -> pa.Table:
        end = self.latest_snapshot_id() if end is None else end
        end_snap = self.snapshot(end)
        schema = self.schema(end_snap["schema_id"] if end_snap else 0)
        out_schema = schema.arrow.append(pa.field("_row_kind", pa.string())).append(
            pa.field("_snapshot_id", pa.int64())
        )
        rows: list[dict[str, Any]] = []
        for n in range(start + 1, end + 1):
            for row in self.changes_of(n, schema):
                row["_snapshot_id"] = n
                rows.append(row)
        return pa.Table.from_pylist(rows, schema=out_schema)

    def changes_of(self, n: int, schema: Schema) -> list[dict[str, Any]]:
        snap = self.snapshot(n)
        producer = schema.option("changelog_producer", "none")
        kind = snap["kind"]
        stored = snap.get("changelog_manifest")
        if producer == "full_compaction":
            return self._stored(stored, schema, snap) if kind == "COMPACT" and stored else []
        if kind != "APPEND":
            return []
        if producer in ("input", "lookup") and stored:
            return self._stored(stored, schema, snap)
        return self._computed(snap, schema)

    def _stored(self, manifest: str, schema: Schema, snap: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for op, f in self.manifest(manifest):
            if op != "add":
                raise SpecError("changelog manifest with a remove")
            if not is_changelog_file(f):  # names a data file the commit adds: its rows as +I
                delta = snap.get("delta_manifest")
                added = {g["path"] for o, g in self.manifest(delta) if o == "add"} if delta else ()
                if f["path"] not in added:
                    raise SpecError(f"changelog entry {f['path']} is no data file of the commit")
                data = self.read_file(f, schema, [], changelog_entry=True).to_pylist()
                rows.extend({**r, "_row_kind": "+I"} for r in data)
                continue
            rows.extend(self.read_file(f, schema, ["_row_kind"]).to_pylist())
        return rows

    def _computed(self, snap: dict[str, Any], schema: Schema) -> list[dict[str, Any]]:
        """Compare reads at N-1 and N of the keys N's delta adds, in N's schema, then
        project the changes by field id onto ``schema`` (the end snapshot's)."""
        delta = snap.get("delta_manifest")
        if not delta:
            return []
        own = self.schema(snap["schema_id"])
        keys: set[tuple] = set()
        for op, f in self.manifest(delta, snap.get("delta_offset", 0) or 0):
            if op == "add":
                t = self.read_file(f, own, [])
                keys.update(zip(*(t.column(k).to_pylist() for k in own.primary_key), strict=True))
        if not keys:
            return []
        n = snap["snapshot_id"]
        before = self._read(self.snapshot(n - 1) if n > 1 else None, own, keys).to_pylist()
        after = self._read(snap, own, keys).to_pylist()
        pk = own.primary_key
        old = {tuple(r[k] for k in pk): r for r in before}
        new = {tuple(r[k] for k in pk): r for r in after}
        rows = []
        for key in sorted(keys, key=key_order):
            o, w = old.get(key), new.get(key)
            if o is None and w is not None:
                rows.append({**w, "_row_kind": "+I"})
            elif o is not None and w is None:
                rows.append({**o, "_row_kind": "-D"})
            elif o is not None and w is not None and o != w:
                rows.append({**o, "_row_kind": "-U"})
                rows.append({**w, "_row_kind": "+U"})
        ids = {f["name"]: f["id"] for f in schema.fields}
        return [
            {
                **{name: row.get(own.name_of_id.get(ids[name])) for name in schema.names},
                "_row_kind": row["_row_kind"],
            }
            for row in rows
        ]


def is_changelog_file(f: dict[str, Any]) -> bool:
    return bool(f["path"].rsplit("/", 1)[-1].startswith("changelog-"))


def check_entry(
    f: dict[str, Any], data: pa.Table, written: Schema, changelog_entry: bool = False
) -> None:
    """The exact statistics of a manifest entry (sections 3, 4, 7 and 16) against the file
    (``changelog_entry``: a changelog manifest's entry naming a data file)."""
    changelog = is_changelog_file(f)
    if changelog_entry and (
        f["seq_offset"] != 0
        or f.get("run_id", "") != ""
        or [f["min_seq"], f["max_seq"]] != [0, 0]
        or f["deletes"] != 0
        or any(k != UPSERT for k in data.column(KIND).to_pylist())
    ):
        raise SpecError(f"changelog entry {f['path']}: not a data file of upserts only")
    hidden = ["_row_kind"] if changelog else [SEQ, KIND]
    if data.column_names != written.names + hidden:
        raise SpecError(f"columns of {f['path']}")
    pk = written.primary_key
    keys = [key_order(k) for k in zip(*(data.column(c).to_pylist() for c in pk), strict=True)]
    stored = list(zip(*(storage_values(data.column(c)) for c in pk), strict=True))
    if changelog:
        kinds = data.column("_row_kind").to_pylist()
        deletes = sum(k in ("-U", "-D") for k in kinds)
        lo = stored[min(range(len(keys)), key=keys.__getitem__)]
        hi = stored[max(range(len(keys)), key=keys.__getitem__)]
        seqs = [0, 0]
        if f["seq_offset"] != 0 or f.get("run_id", "") != "":
            raise SpecError(f"changelog entry {f['path']}")
    else:
        kinds = data.column(KIND).to_pylist()
        deletes = sum(k != UPSERT for k in kinds)
        if keys != sorted(set(keys)):
            raise SpecError(f"{f['path']} is not sorted by key, once each")
        lo, hi = stored[0], stored[-1]
        seq = data.column(SEQ).to_pylist()
        seqs = [0, 0] if changelog_entry else [min(seq), max(seq)]
    if (
        f["rows"] != data.num_rows
        or f["deletes"] != deletes
        or [f["min_seq"], f["max_seq"]] != seqs
        or f["min_key"] != list(lo)
        or f["max_key"] != list(hi)
    ):
        raise SpecError(f"the entry of {f['path']} does not match the file")
    part = [pk.index(c) for c in written.doc.get("partition_by", [])]
    if any([k[i] for i in part] != f["partition"] for k in stored):
        raise SpecError(f"a row of {f['path']} is outside its partition")


def storage_values(column: pa.ChunkedArray) -> list[Any]:
    """Section 7: keys and partition values as JSON (integers; date32 and timestamp as their
    integer storage value; strings; binary as padded base64)."""
    t = column.type
    if pa.types.is_date32(t):
        return column.cast(pa.int32()).to_pylist()
    if pa.types.is_timestamp(t):
        return column.cast(pa.int64()).to_pylist()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return [None if v is None else base64.b64encode(v).decode() for v in column.to_pylist()]
    return column.to_pylist()


def key_order(key: tuple) -> tuple:
    """Section 2: strings by UTF-8 bytes (code point order is the same), others natively."""
    return tuple(k.encode() if isinstance(k, str) else k for k in key)


# -- folds (section 15) ------------------------------------------------------------------
def fold(schema: Schema, acc: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any]:
    """Fold one stored upsert (a partial fold itself) onto the fold of the older ones."""
    engine = schema.option("merge_engine", "deduplicate")
    if (acc is None and engine != "partial_update") or engine == "deduplicate":
        out = dict(row)
    elif engine == "first_row":
        out = dict(acc)
    elif engine == "partial_update":
        out = fold_partial(schema, acc, row)
    elif engine == "aggregation":
        out = fold_aggregate(schema, acc, row)
    else:
        raise SpecError(f"unknown merge engine {engine!r}")
    seq_field = schema.option("sequence_field")
    if seq_field:  # an order column: un's under every engine
        out[seq_field] = row[seq_field]
    return out


def sequence_groups(schema: Schema) -> dict[str, list[str]]:
    groups = {}
    for name, value in schema.options.items():
        m = re.fullmatch(r"fields\.(.+)\.sequence_group", name)
        if m:
            groups[m.group(1)] = [c.strip() for c in str(value).split(",") if c.strip()]
    return groups


def fold_partial(schema: Schema, acc: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any]:
    groups = sequence_groups(schema)
    grouped = {c for g, cs in groups.items() for c in [g, *cs]}
    out: dict[str, Any] = {}
    for name in schema.names:
        if name in grouped:
            continue
        new = row[name]
        out[name] = new if new is not None or acc is None else acc[name]
    for g, cs in groups.items():
        cols = [g, *cs]
        if row[g] is not None and (acc is None or acc[g] is None or row[g] >= acc[g]):
            src = row
        elif acc is not None:
            src = acc
        else:
            src = None
        for c in cols:
            out[c] = None if src is None else src[c]
    return out


#: Decimal arithmetic without rounding (the default context keeps 28 digits; decimals have 38)
EXACT = Context(prec=200)


def in_range(typ: pa.DataType, value: Any, fn: str) -> Any:
    """Section 15, overflow: an integer sum, count or product wraps around in the column's
    width (two's complement); a decimal sum (precision 38) wraps around in the range of its
    precision, -(10^38 - 1) to 10^38 - 1, modulo 2 * 10^38 - 1 in units of the scale."""
    if pa.types.is_decimal(typ):
        unit = Decimal(1).scaleb(-typ.scale)
        units = int(EXACT.divide(value, unit))
        bound = 10**typ.precision - 1
        units = (units + bound) % (2 * bound + 1) - bound
        return EXACT.multiply(Decimal(units), unit).quantize(unit, context=EXACT)
    if not pa.types.is_integer(typ):
        return value
    bits = typ.bit_width
    value %= 2**bits
    if pa.types.is_signed_integer(typ) and value >= 2 ** (bits - 1):
        value -= 2**bits
    return value


def fold_aggregate(schema: Schema, acc: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    seq_field = schema.option("sequence_field")
    out: dict[str, Any] = {}
    for name in schema.names:
        a, b = acc[name], row[name]
        if name in schema.primary_key or name == seq_field:
            out[name] = b
            continue
        fn = schema.option(f"fields.{name}.aggregate_function", "last_non_null_value")
        if fn == "last_value":
            out[name] = b
        elif fn == "first_value":
            out[name] = a
        elif a is None or b is None:  # every other function ignores nulls
            out[name] = a if b is None else b
        elif fn in ("sum", "count", "product"):
            if isinstance(a, Decimal):
                value = EXACT.multiply(a, b) if fn == "product" else EXACT.add(a, b)
            else:
                value = a * b if fn == "product" else a + b
            out[name] = in_range(schema.arrow.field(name).type, value, fn)
        elif fn == "min":
            out[name] = min(a, b, key=lambda v: v.encode() if isinstance(v, str) else v)
        elif fn == "max":
            out[name] = max(a, b, key=lambda v: v.encode() if isinstance(v, str) else v)
        elif fn == "last_non_null_value":
            out[name] = b
        elif fn == "first_non_null_value":
            out[name] = a
        elif fn == "bool_and":
            out[name] = a and b
        elif fn == "bool_or":
            out[name] = a or b
        elif fn == "listagg":
            out[name] = a + schema.option(f"fields.{name}.listagg_delimiter", ",") + b
        elif fn == "collect":
            out[name] = list(a) + list(b)
        else:
            raise SpecError(f"unknown aggregate function {fn!r}")
    return out
