"""Table schemas: the Arrow schema, primary key, partitioning, buckets and options.

A schema object is immutable and numbered (``schema/schema-N.json``). This module owns its JSON
codec (column types through the exact grammar of ``lsm3/format/types.py``) and the rules
incoming data must follow: :func:`conform` casts user data to the table schema or raises
:class:`SchemaMismatch` naming the column and the fix.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import CorruptMetadata, InvalidInput, SchemaMismatch, UnsupportedFormatVersion
from lsm3.format.engines import (
    ENGINES,
    EngineSpec,
    engine_spec,
    is_field_option,
    refuse_at_create,
)
from lsm3.format.types import field_from_json, field_to_json, is_key_type

FORMAT_VERSION = 1
#: Schemas of tables with a merge engine other than deduplicate are written as version 2, so a
#: reader that knows only version 1 (and would read partial folds as whole rows) refuses them.
ENGINE_SCHEMA_VERSION = 2
SEQ_COLUMN = "_lsm3_seq"
KIND_COLUMN = "_lsm3_kind"
RESERVED_PREFIX = "_lsm3_"
KIND_UPSERT = 0
KIND_DELETE = 1
#: A version that replaces everything older of its key (a delete followed by upserts, folded):
#: written only by merge engines other than deduplicate (docs/FORMAT.md, section 15).
KIND_RESET = 2

# Every option a table understands, with its default. Unknown options are refused, so a typo
# never silently falls back to a default.
DEFAULT_OPTIONS: dict[str, Any] = {
    "sequence_field": None,  # a column whose value orders versions of a key (e.g. source LSN)
    "merge_engine": "deduplicate",  # what a key's value is: see lsm3.format.engines
    # What the changelog is made from (docs/FORMAT.md, section 16): none | input | lookup |
    # full_compaction. Fixed at create time.
    "changelog_producer": "none",
    "memtable_bytes": 128 * 1024 * 1024,  # a writer flushes when buffered Arrow data exceeds this
    "row_group_rows": 4096,  # rows per Parquet row group: a point lookup decodes one
    # rows per row group of compaction output that is the oldest data of its key range (the
    # bottom: full compaction output), read by scans far more often than rewritten; None:
    # four times row_group_rows
    "bottom_row_group_rows": None,
    # Parquet compression of writer flushes (level 0: soon rewritten, decoded by every merged
    # read until then) and of compaction output
    "level0_compression": "lz4",
    "compression": "zstd",
    "target_file_bytes": 128 * 1024 * 1024,  # compaction output size
    "commit_retries": 32,  # conditional-put conflicts a commit survives before giving up
    "manifest_merge_threshold": 32,  # tail manifests per snapshot before a commit folds them
    "manifest_target_entries": 2048,  # file entries of a large manifest (never merged again)
    "manifest_merge_min_count": 256,  # small manifests that a fold merges even if not large
    "manifest_list_part_size": 256,  # manifests per part of a manifest list (docs/FORMAT.md 4a)
    "latest_hint_interval": 16,  # write snapshot/LATEST every N snapshots (advisory only)
    "upload_concurrency": 8,  # parallel run uploads per flush
    # Compaction (read by the compactor; the stop trigger also by writers, for write stalls).
    "compaction_policy": "universal",  # universal | leveled | full
    "num_sorted_run_trigger": 5,  # universal: compact when a bucket has this many sorted runs
    "num_sorted_run_stop_trigger": 8,  # writers stall (see write_stall) at this many runs
    "max_size_amplification_percent": 200,  # universal: full merge past this space overhead
    "size_ratio_percent": 1,  # universal: merge neighbours within this size ratio
    "num_levels": 6,  # levels 0..num_levels-1
    "l0_file_trigger": 4,  # leveled: merge level 0 into level 1 at this many files
    "level_size_ratio": 10,  # leveled: each level may hold this many times the previous
    "level_base_bytes": 256 * 1024 * 1024,  # leveled: size budget of level 1
    "write_stall": "warn",  # warn | wait | error, when a bucket reaches the stop trigger
    "write_stall_timeout_seconds": 60,  # how long "wait" waits before raising
    "compactor_lease_seconds": 600,  # how long a compactor's lease lasts between renewals
    "consumer_expiration": None,  # seconds a changelog consumer may idle before expiry drops it
    # Set when the table was created on a store without an atomic create-only put (opened
    # with storage_options unsafe_single_writer): only one process may ever write it.
    "unsafe_single_writer": False,
}

#: Where ``Table.changelog`` gets its changes (docs/FORMAT.md, section 16).
CHANGELOG_PRODUCERS = ("none", "input", "lookup", "full_compaction")
COMPRESSIONS = ("zstd", "lz4", "snappy", "gzip", "brotli", "none")

CHOICE_OPTIONS: dict[str, tuple[str, ...]] = {
    "level0_compression": COMPRESSIONS,
    "compression": COMPRESSIONS,
    "merge_engine": ENGINES,
    "changelog_producer": CHANGELOG_PRODUCERS,
    "compaction_policy": ("universal", "leveled", "full"),
    "write_stall": ("warn", "wait", "error"),
}


def _json_int(v: Any) -> int:
    """Schema integers are JSON integers: no floats, strings or booleans."""
    if not isinstance(v, int) or isinstance(v, bool) or abs(v) >= 2**63:
        raise CorruptMetadata(f"expected an integer in the schema, got {v!r}")
    return v


def _json_str(v: Any) -> str:
    if not isinstance(v, str):
        raise CorruptMetadata(f"expected a string in the schema, got {v!r}")
    return v


@dataclass(frozen=True)
class TableSchema:
    """One version of a table's schema; ``arrow`` holds the user columns only."""

    schema_id: int
    arrow: pa.Schema
    primary_key: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    buckets: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    field_ids: tuple[int, ...] = ()
    last_field_id: int = 0  # the largest field id ever assigned: ids are never reused

    def option(self, name: str) -> Any:
        return self.options.get(name, DEFAULT_OPTIONS[name])

    @property
    def bottom_row_group_rows(self) -> int:
        """Row-group size of compaction output that is the bottom of its key range."""
        value = self.option("bottom_row_group_rows")
        return int(value) if value is not None else 4 * int(self.option("row_group_rows"))

    @property
    def sequence_field(self) -> str | None:
        value = self.option("sequence_field")
        return str(value) if value else None

    @cached_property
    def engine(self) -> EngineSpec:
        """The merge engine and its per-column settings (validated with the schema)."""
        return engine_spec(self.arrow, self.primary_key, self.options, self.sequence_field)

    @property
    def value_columns(self) -> list[str]:
        return [n for n in self.arrow.names if n not in self.primary_key]

    def file_schema(self) -> pa.Schema:
        """The schema of data files: user columns (all nullable) plus sequence and row kind.
        Built once per schema version (every lookup probe asks for it)."""
        cached = self.__dict__.get("_file_schema")
        if cached is None:
            cached = _file_schema(self.arrow)
            object.__setattr__(self, "_file_schema", cached)
        return cached

    def to_json(self) -> dict[str, Any]:
        # Older readers must refuse what they would misread: merge engines, stored changelogs.
        engines = (
            self.option("merge_engine") != "deduplicate"
            or self.option("changelog_producer") != "none"
        )
        return {
            "format_version": ENGINE_SCHEMA_VERSION if engines else FORMAT_VERSION,
            "schema_id": self.schema_id,
            "fields": [
                {"id": fid, **field_to_json(f)}
                for fid, f in zip(self.field_ids, self.arrow, strict=True)
            ],
            "primary_key": list(self.primary_key),
            "partition_by": list(self.partition_by),
            "buckets": self.buckets,
            "options": dict(self.options),
            "last_field_id": self.last_field_id,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, sort_keys=True).encode()

    @staticmethod
    def decode(raw: bytes, what: str = "schema") -> TableSchema:
        try:
            j = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CorruptMetadata(f"{what} is not valid JSON: {exc}") from None
        if not isinstance(j, dict):
            raise CorruptMetadata(f"{what} is not a JSON object")
        version = j.get("format_version")
        if not isinstance(version, int):
            raise CorruptMetadata(f"{what} has no integer format_version; is this an lsm3 table?")
        if version > ENGINE_SCHEMA_VERSION:
            raise UnsupportedFormatVersion(
                f"{what} uses format version {version}; this lsm3 reads up to "
                f"{ENGINE_SCHEMA_VERSION}: upgrade lsm3"
            )
        try:
            fields = j["fields"]
            ids = tuple(_json_int(f["id"]) for f in fields)
            arrow = pa.schema([field_from_json(f) for f in fields])
            schema = TableSchema(
                schema_id=_json_int(j["schema_id"]),
                arrow=arrow,
                primary_key=tuple(_json_str(k) for k in j["primary_key"]),
                partition_by=tuple(_json_str(k) for k in j.get("partition_by", [])),
                buckets=_json_int(j.get("buckets", 1)),
                options=dict(j.get("options", {})),
                field_ids=ids,
                last_field_id=_json_int(j["last_field_id"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptMetadata(f"{what} is malformed: {exc!r}") from None
        try:
            validate_schema(schema)
        except InvalidInput as exc:
            raise CorruptMetadata(f"{what} is invalid: {exc}") from None
        return schema


def new_schema(
    arrow: pa.Schema,
    primary_key: Sequence[str],
    partition_by: Sequence[str] | None = None,
    buckets: int = 1,
    options: Mapping[str, Any] | None = None,
) -> TableSchema:
    """Validate a user's table definition and number its fields."""
    if not isinstance(arrow, pa.Schema):
        raise InvalidInput(f"schema must be a pyarrow.Schema, got {type(arrow).__name__}")
    if isinstance(primary_key, str):
        primary_key = [primary_key]
    if isinstance(partition_by, str):
        partition_by = [partition_by]
    key = tuple(primary_key)
    # Key columns are never null: mark them so in the table schema.
    fields = [f.with_nullable(False) if f.name in key else f for f in arrow]
    schema = TableSchema(
        schema_id=0,
        arrow=pa.schema(fields),
        primary_key=key,
        partition_by=tuple(partition_by or ()),
        buckets=buckets,
        options=dict(options or {}),
        field_ids=tuple(range(1, len(fields) + 1)),
        last_field_id=len(fields),
    )
    validate_schema(schema)
    refuse_at_create(schema.engine, schema.arrow, schema.sequence_field)
    return schema


def validate_schema(s: TableSchema) -> None:
    """Raise InvalidInput if the definition breaks a rule of the format."""
    names = s.arrow.names
    if len(set(names)) != len(names):
        raise InvalidInput(f"duplicate column names in schema: {names}")
    if len(s.field_ids) != len(names) or len(set(s.field_ids)) != len(s.field_ids):
        raise InvalidInput("every column needs its own field id")
    if any(i < 1 or i > s.last_field_id for i in s.field_ids):
        raise InvalidInput(f"field ids must lie in 1..last_field_id ({s.last_field_id})")
    for name in names:
        if name.startswith(RESERVED_PREFIX):
            raise InvalidInput(
                f"column {name!r}: names starting with {RESERVED_PREFIX!r} are reserved"
            )
    if not s.primary_key:
        raise InvalidInput("primary_key must name at least one column")
    if len(set(s.primary_key)) != len(s.primary_key):
        raise InvalidInput(f"primary_key repeats a column: {list(s.primary_key)}")
    for k in s.primary_key:
        if k not in names:
            raise InvalidInput(f"primary key column {k!r} is not in the schema {names}")
        if not is_key_type(s.arrow.field(k).type):
            raise InvalidInput(
                f"primary key column {k!r} has type {s.arrow.field(k).type}; keys must be "
                "integers, strings, binary, date32 or timestamps"
            )
    for p in s.partition_by:
        if p not in s.primary_key:
            raise InvalidInput(
                f"partition column {p!r} must be part of the primary key {list(s.primary_key)} "
                "(a key's partition must follow from the key)"
            )
    if not isinstance(s.buckets, int) or not 1 <= s.buckets <= 65536:
        raise InvalidInput(f"buckets must be an integer from 1 to 65536, got {s.buckets!r}")
    unknown = {k for k in s.options if k not in DEFAULT_OPTIONS and not is_field_option(k)}
    if unknown:
        raise InvalidInput(
            f"unknown table options {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}"
        )
    seq_field = s.sequence_field
    if seq_field is not None:
        if seq_field not in names:
            raise InvalidInput(f"sequence_field {seq_field!r} is not a column of the schema")
        if seq_field in s.primary_key:
            raise InvalidInput(f"sequence_field {seq_field!r} cannot be a primary key column")
        t = s.arrow.field(seq_field).type
        if not (pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)):
            raise InvalidInput(f"sequence_field {seq_field!r} must be an integer or timestamp")
    for name in (
        "memtable_bytes",
        "row_group_rows",
        "target_file_bytes",
        "commit_retries",
        "manifest_merge_threshold",
        "manifest_target_entries",
        "manifest_merge_min_count",
        "manifest_list_part_size",
        "latest_hint_interval",
        "upload_concurrency",
        "num_sorted_run_trigger",
        "num_sorted_run_stop_trigger",
        "max_size_amplification_percent",
        "num_levels",
        "l0_file_trigger",
        "level_size_ratio",
        "level_base_bytes",
        "write_stall_timeout_seconds",
        "compactor_lease_seconds",
    ):
        value = s.option(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInput(f"option {name} must be a positive integer, got {value!r}")
    bottom = s.options.get("bottom_row_group_rows")
    if bottom is not None and (
        not isinstance(bottom, int) or isinstance(bottom, bool) or bottom < 1
    ):
        raise InvalidInput(
            f"option bottom_row_group_rows must be a positive integer or null, got {bottom!r}"
        )
    if not isinstance(s.option("unsafe_single_writer"), bool):
        raise InvalidInput(
            f"option unsafe_single_writer must be true or false, got "
            f"{s.option('unsafe_single_writer')!r}"
        )
    ratio = s.option("size_ratio_percent")
    if not isinstance(ratio, int) or isinstance(ratio, bool) or ratio < 0:
        raise InvalidInput(f"option size_ratio_percent must be an integer >= 0, got {ratio!r}")
    for name, choices in CHOICE_OPTIONS.items():
        if s.option(name) not in choices:
            raise InvalidInput(
                f"option {name} must be one of {list(choices)}, got {s.option(name)!r}"
            )
    expiration = s.option("consumer_expiration")
    if expiration is not None and (
        not isinstance(expiration, int) or isinstance(expiration, bool) or expiration < 1
    ):
        raise InvalidInput(
            f"option consumer_expiration must be a number of seconds >= 1 or null (never), "
            f"got {expiration!r}"
        )
    if s.option("num_levels") < 2:
        raise InvalidInput("option num_levels must be at least 2")
    if s.option("changelog_producer") == "full_compaction" and s.option("num_levels") < 3:
        raise InvalidInput(
            "changelog_producer 'full_compaction' needs num_levels >= 3: the last level holds "
            "only full compactions' results and the others need at least two levels"
        )
    engine_spec(s.arrow, s.primary_key, s.options, seq_field)


# --------------------------------------------------------------------------- incoming data


def to_arrow_table(data: Any, what: str = "data") -> pa.Table:
    """Accept a pa.Table, RecordBatch, RecordBatchReader, list of dicts or dict of lists."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if isinstance(data, Mapping):
        try:
            return pa.table(dict(data))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise SchemaMismatch(f"{what}: cannot build columns from the dict: {exc}") from None
    if isinstance(data, list):
        if not data:
            return pa.table({})
        if not all(isinstance(r, Mapping) for r in data):
            raise InvalidInput(f"{what}: a list must hold dicts (one per row)")
        try:
            return pa.Table.from_pylist(data)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise SchemaMismatch(f"{what}: rows have inconsistent types: {exc}") from None
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise InvalidInput(
        f"{what} must be a pyarrow Table or RecordBatch, a list of dicts or a dict of lists, "
        f"got {type(data).__name__}"
    )


def conform(
    table: pa.Table,
    schema: TableSchema,
    columns: Sequence[str],
    what: str,
    check_nulls: bool = True,
) -> pa.Table:
    """Cast ``table`` to the table types of ``columns`` (in that order), checking nulls.

    Extra input columns are an error (a typo must not vanish silently); so is a missing column.
    Casts must be safe: an int64 that overflows int32 or a string that is not a number fails.
    """
    extra = [n for n in table.column_names if n not in columns]
    if extra:
        raise SchemaMismatch(
            f"{what} has columns {extra} that the table does not have (columns: {list(columns)})"
        )
    out = []
    for name in columns:
        if name not in table.column_names:
            raise SchemaMismatch(
                f"{what} is missing column {name!r}; every row must carry all columns "
                f"{list(columns)} (nulls are allowed where the column is nullable)"
            )
        target = schema.arrow.field(name)
        col = table.column(name)
        if col.type != target.type:
            try:
                col = pc.cast(col, target.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SchemaMismatch(
                    f"{what}: column {name!r} has type {col.type} which cannot be cast safely to "
                    f"the table type {target.type} ({exc})"
                ) from None
        if check_nulls and col.null_count and (not target.nullable or name in schema.primary_key):
            role = "primary key column" if name in schema.primary_key else "non-nullable column"
            raise SchemaMismatch(
                f"{what}: {role} {name!r} has {col.null_count} null value(s); "
                "give every row a value"
            )
        out.append(col)
    return pa.Table.from_arrays(out, names=list(columns))


@functools.lru_cache(maxsize=256)
def _file_schema(arrow: pa.Schema) -> pa.Schema:
    """``TableSchema.file_schema``, memoised by the (immutable, hashable) Arrow schema: every
    flush, run read and lookup asks for it."""
    fields = [pa.field(f.name, f.type, nullable=True) for f in arrow]
    return pa.schema(
        [*fields, pa.field(SEQ_COLUMN, pa.int64(), False), pa.field(KIND_COLUMN, pa.int8(), False)]
    )
