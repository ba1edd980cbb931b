"""Schema versions: loading them, reading old files through the current schema, and changes.

Data is never rewritten when a schema changes. Each data file records the schema id it was
written with; a reader maps every column it wants to the file's column with the same field
id (so renames are free), reads missing columns as nulls (added columns) and widens types
(int32 to int64, float32 to float64, string to large_string). Changes are validated here and
committed as a new schema object plus a SCHEMA snapshot by ``Table.update_schema``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import InvalidInput, ObjectNotFound, TableNotFound
from lsm3.format.engines import columns_with_settings, is_field_option
from lsm3.format.schema import (
    DEFAULT_OPTIONS,
    KIND_COLUMN,
    RESERVED_PREFIX,
    SEQ_COLUMN,
    TableSchema,
    validate_schema,
)
from lsm3.io.store import ObjectStore


def schema_key(schema_id: int) -> str:
    return f"schema/schema-{schema_id}.json"


class SchemaCache:
    """Schema objects by (store URL, id); immutable, so cached for the process."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, int], TableSchema] = {}
        self._lock = threading.Lock()

    def get(self, store: ObjectStore, schema_id: int) -> TableSchema:
        k = (store.url, schema_id)
        with self._lock:
            found = self._items.get(k)
        if found is not None:
            return found
        try:
            raw = store.get(schema_key(schema_id))
        except ObjectNotFound:
            raise TableNotFound(f"schema {schema_id} of {store.url} is missing") from None
        schema = TableSchema.decode(raw, f"schema {schema_id} of {store.url}")
        with self._lock:
            self._items[k] = schema
        return schema

    def put(self, store: ObjectStore, schema: TableSchema) -> None:
        with self._lock:
            self._items[(store.url, schema.schema_id)] = schema


SCHEMAS = SchemaCache()

# --------------------------------------------------------------------------- reading old files

_HIDDEN = (SEQ_COLUMN, KIND_COLUMN)


@dataclass(frozen=True)
class Projection:
    """How to read ``columns`` of the reader's schema from a file of another schema version."""

    sources: tuple[str, ...]  # file columns to read
    outputs: tuple[tuple[str, str | None, pa.DataType], ...]  # (name, file column or None, type)
    identity: bool

    def apply(self, table: pa.Table) -> pa.Table:
        if self.identity:
            return table
        n = table.num_rows
        arrays = []
        fields = []
        for name, source, target in self.outputs:
            if source is None:
                arrays.append(pa.nulls(n, target))
                fields.append(pa.field(name, target))
                continue
            col = table.column(source)
            arrays.append(col if col.type == target else pc.cast(col, target))
            # Same nullability as an unprojected read: user columns nullable, hidden ones not.
            fields.append(pa.field(name, target, nullable=table.schema.field(source).nullable))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def projection(
    file_schema: TableSchema, read_schema: TableSchema, columns: list[str]
) -> Projection:
    """Map reader columns to the file's columns by field id."""
    if file_schema.schema_id == read_schema.schema_id:
        return Projection(tuple(columns), (), True)
    by_id = dict(zip(file_schema.field_ids, file_schema.arrow, strict=True))
    read_ids = dict(zip(read_schema.arrow.names, read_schema.field_ids, strict=True))
    sources: list[str] = []
    outputs: list[tuple[str, str | None, pa.DataType]] = []
    for name in columns:
        if name in _HIDDEN:
            sources.append(name)
            outputs.append((name, name, pa.int64() if name == SEQ_COLUMN else pa.int8()))
            continue
        target = read_schema.arrow.field(name).type
        found = by_id.get(read_ids[name])
        if found is None:
            outputs.append((name, None, target))
        else:
            sources.append(found.name)
            outputs.append((name, found.name, target))
    identity = all(src == name for name, src, _ in outputs) and all(
        name in _HIDDEN or by_id[read_ids[name]].type == t for name, _, t in outputs
    )
    return Projection(tuple(sources), tuple(outputs), identity and len(sources) == len(columns))


# --------------------------------------------------------------------------- changes

_WIDENINGS: dict[pa.DataType, tuple[pa.DataType, ...]] = {
    pa.int8(): (pa.int16(), pa.int32(), pa.int64()),
    pa.int16(): (pa.int32(), pa.int64()),
    pa.int32(): (pa.int64(),),
    pa.uint8(): (pa.uint16(), pa.uint32(), pa.uint64(), pa.int16(), pa.int32(), pa.int64()),
    pa.uint16(): (pa.uint32(), pa.uint64(), pa.int32(), pa.int64()),
    pa.uint32(): (pa.uint64(), pa.int64()),
    pa.float16(): (pa.float32(), pa.float64()),
    pa.float32(): (pa.float64(),),
    pa.string(): (pa.large_string(),),
    pa.binary(): (pa.large_binary(),),
}

# Options whose change would alter what existing data means (also every ``fields.*`` option:
# a stored partial fold means what its column's function made it).
_FROZEN_OPTIONS = ("sequence_field", "merge_engine", "changelog_producer")


class SchemaUpdate:
    """A batch of schema changes, validated as they are added and committed together."""

    def __init__(self, base: TableSchema) -> None:
        self.base = base
        self._fields: list[pa.Field] = list(base.arrow)
        self._ids: list[int] = list(base.field_ids)
        self._next_id = base.last_field_id + 1  # never reuse the id of a dropped column
        self._options: dict[str, Any] = dict(base.options)

    def _index(self, name: str) -> int:
        for i, f in enumerate(self._fields):
            if f.name == name:
                return i
        raise InvalidInput(f"no column {name!r}; columns are {[f.name for f in self._fields]}")

    def _protect(self, name: str, action: str) -> None:
        if name in self.base.primary_key or name in self.base.partition_by:
            raise InvalidInput(
                f"cannot {action} {name!r}: primary-key and partition columns are fixed "
                "(create a new table to change the key or the partitioning)"
            )
        if name == self.base.sequence_field:
            raise InvalidInput(f"cannot {action} {name!r}: it is the table's sequence_field")
        if name in columns_with_settings(self.base.options):
            raise InvalidInput(
                f"cannot {action} {name!r}: the table's merge engine options "
                "(fields.<column>.*) name it, and they are fixed at create time"
            )

    def add_column(self, name: str, type: pa.DataType, *, nullable: bool = True) -> SchemaUpdate:
        if not nullable:
            raise InvalidInput(
                f"new column {name!r} must be nullable: existing rows have no value for it"
            )
        if not isinstance(name, str) or not name or name.startswith(RESERVED_PREFIX):
            raise InvalidInput(f"invalid column name {name!r}")
        if any(f.name == name for f in self._fields):
            raise InvalidInput(f"column {name!r} already exists")
        self._fields.append(pa.field(name, type, nullable=True))
        self._ids.append(self._next_id)
        self._next_id += 1
        return self

    def drop_column(self, name: str) -> SchemaUpdate:
        self._protect(name, "drop")
        i = self._index(name)
        del self._fields[i]
        del self._ids[i]
        return self

    def rename_column(self, name: str, new_name: str) -> SchemaUpdate:
        self._protect(name, "rename")
        i = self._index(name)
        if any(f.name == new_name for f in self._fields):
            raise InvalidInput(f"column {new_name!r} already exists")
        if not isinstance(new_name, str) or not new_name or new_name.startswith(RESERVED_PREFIX):
            raise InvalidInput(f"invalid column name {new_name!r}")
        self._fields[i] = self._fields[i].with_name(new_name)
        return self

    def widen_column(self, name: str, type: pa.DataType) -> SchemaUpdate:
        self._protect(name, "change the type of")
        i = self._index(name)
        current = self._fields[i].type
        if type == current:
            return self
        if type not in _WIDENINGS.get(current, ()):
            allowed = [str(t) for t in _WIDENINGS.get(current, ())] or "none"
            raise InvalidInput(
                f"cannot change column {name!r} from {current} to {type}: only widening is "
                f"allowed (from {current}: {allowed})"
            )
        self._fields[i] = self._fields[i].with_type(type)
        return self

    def set_options(self, options: Mapping[str, Any]) -> SchemaUpdate:
        for k, v in options.items():
            frozen = k in _FROZEN_OPTIONS or is_field_option(k)
            if frozen and v != self.base.options.get(k, DEFAULT_OPTIONS.get(k)):
                raise InvalidInput(
                    f"option {k} cannot change once a table exists (it decides what stored "
                    "rows mean); create a new table and copy the data"
                )
            if is_field_option(k):
                continue
            if k not in DEFAULT_OPTIONS:
                raise InvalidInput(f"unknown table option {k!r}; known: {sorted(DEFAULT_OPTIONS)}")
            self._options[k] = v
        return self

    def result(self, schema_id: int) -> TableSchema:
        """The new schema version, validated as a whole."""
        schema = replace(
            self.base,
            schema_id=schema_id,
            arrow=pa.schema(self._fields),
            field_ids=tuple(self._ids),
            options=dict(self._options),
            last_field_id=self._next_id - 1,
        )
        validate_schema(schema)
        return schema

    @property
    def changed(self) -> bool:
        return (
            list(self._fields) != list(self.base.arrow)
            or self._ids != list(self.base.field_ids)
            or self._options != self.base.options
        )

    def replay_onto(self, base: TableSchema) -> SchemaUpdate:
        """The same changes re-derived on a newer base (after a concurrent schema commit)."""
        if base.schema_id == self.base.schema_id:
            return self
        raise InvalidInput(
            "the table's schema changed while this schema update was being committed; "
            "reload the table and apply the change again"
        )
