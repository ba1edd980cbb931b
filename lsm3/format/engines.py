"""Merge engines: what the value of a key is, given its versions (docs/FORMAT.md, section 15).

Every engine folds a key's upserts after its last delete, in sequence order; they differ in
the fold. ``deduplicate`` keeps the newest upsert (the default, and all lsm3 did before
engines), ``first_row`` the oldest, ``partial_update`` the newest non-null value of each
column (or, for a sequence group, the values of the row with the highest group sequence),
``aggregation`` applies a function per column. Each fold is decomposable: a run may store a
partial fold of a window of versions, and folding partial folds gives the fold of the whole,
which is what lets compaction merge any window of runs.

This module parses and validates the engine options of a schema (pure, no data); the fold
itself is :mod:`lsm3.read.fold`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lsm3.errors import InvalidInput

ENGINES = ("deduplicate", "first_row", "partial_update", "aggregation")
FIELD_OPTION_PREFIX = "fields."
FIELD_OPTIONS = ("aggregate_function", "listagg_delimiter", "sequence_group")

#: Aggregate functions, each with the test a column type must pass and what it says.
AGGREGATES: dict[str, str] = {
    "sum": "numeric",
    "product": "numeric",
    "min": "comparable",
    "max": "comparable",
    "count": "integer",
    "last_value": "any",
    "last_non_null_value": "any",
    "first_value": "any",
    "first_non_null_value": "any",
    "bool_and": "bool",
    "bool_or": "bool",
    "listagg": "string",
    "collect": "list",
}
DEFAULT_AGGREGATE = "last_non_null_value"
#: the precision a decimal column summed by the aggregation engine must have
DECIMAL_SUM_PRECISION = 38

_TYPE_TESTS = {
    "numeric": lambda t: (
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    ),
    "comparable": lambda t: (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_temporal(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ),
    "integer": pa.types.is_integer,
    "any": lambda t: True,
    "bool": pa.types.is_boolean,
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "list": lambda t: pa.types.is_list(t) or pa.types.is_large_list(t),
}
_TYPE_WORDS = {
    "numeric": "a numeric column (integer, float or decimal)",
    "comparable": "a numeric, temporal, string or binary column",
    "integer": "an integer column (it holds the count)",
    "any": "any column",
    "bool": "a bool column",
    "string": "a string column",
    "list": "a list column (lists are concatenated)",
}


@dataclass(frozen=True)
class EngineSpec:
    """A table's merge engine and its per-column settings."""

    name: str = "deduplicate"
    #: aggregation: column -> function (every value column has one; default last_non_null_value)
    functions: dict[str, str] = field(default_factory=dict)
    #: aggregation, listagg columns: column -> delimiter
    delimiters: dict[str, str] = field(default_factory=dict)
    #: partial_update: sequence column -> the columns it orders (the column itself included)
    sequence_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_deduplicate(self) -> bool:
        return self.name == "deduplicate"


def is_field_option(key: str) -> bool:
    return key.startswith(FIELD_OPTION_PREFIX)


def split_field_option(key: str) -> tuple[str, str]:
    """``fields.<column>.<setting>`` -> (column, setting); InvalidInput if malformed."""
    rest = key[len(FIELD_OPTION_PREFIX) :]
    column, _, setting = rest.rpartition(".")
    if not column or setting not in FIELD_OPTIONS:
        raise InvalidInput(
            f"unknown table option {key!r}: per-column options are "
            f"'fields.<column>.<setting>' with setting one of {list(FIELD_OPTIONS)}"
        )
    return column, setting


def engine_spec(
    arrow: pa.Schema,
    primary_key: Sequence[str],
    options: Mapping[str, Any],
    sequence_field: str | None = None,
) -> EngineSpec:
    """Parse and validate the engine options; InvalidInput names the problem and the fix."""
    name = options.get("merge_engine", "deduplicate")
    if name not in ENGINES:
        raise InvalidInput(f"option merge_engine must be one of {list(ENGINES)}, got {name!r}")
    settings: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        if not is_field_option(key):
            continue
        column, setting = split_field_option(key)
        settings.setdefault(setting, {})[column] = value
    names = arrow.names
    keys = set(primary_key)

    def check_column(column: str, key: str) -> None:
        if column not in names:
            raise InvalidInput(f"option {key!r} names no column of the table (columns: {names})")
        if column in keys:
            raise InvalidInput(f"option {key!r}: primary-key columns are never merged")

    functions: dict[str, str] = {}
    delimiters: dict[str, str] = {}
    groups: dict[str, tuple[str, ...]] = {}
    given_functions = settings.get("aggregate_function", {})
    if given_functions and name != "aggregation":
        raise InvalidInput(
            "fields.<column>.aggregate_function needs option merge_engine='aggregation' "
            f"(this table's merge_engine is {name!r})"
        )
    if name == "aggregation":
        for column in names:
            if column in keys or column == sequence_field:
                continue
            functions[column] = DEFAULT_AGGREGATE
        for column, function in given_functions.items():
            key = f"fields.{column}.aggregate_function"
            check_column(column, key)
            if column == sequence_field:
                raise InvalidInput(f"option {key!r}: the sequence_field orders rows, not merged")
            if function not in AGGREGATES:
                raise InvalidInput(
                    f"option {key!r}: unknown aggregate function {function!r}; choose one of "
                    f"{sorted(AGGREGATES)}"
                )
            kind = AGGREGATES[function]
            t = arrow.field(column).type
            if not _TYPE_TESTS[kind](t):
                raise InvalidInput(
                    f"option {key!r}: {function} needs {_TYPE_WORDS[kind]}, but column "
                    f"{column!r} has type {t}"
                )
            functions[column] = function
    for column, delimiter in settings.get("listagg_delimiter", {}).items():
        key = f"fields.{column}.listagg_delimiter"
        check_column(column, key)
        if functions.get(column) != "listagg":
            raise InvalidInput(f"option {key!r} needs fields.{column}.aggregate_function=listagg")
        if not isinstance(delimiter, str):
            raise InvalidInput(f"option {key!r} must be a string, got {delimiter!r}")
        delimiters[column] = delimiter
    for column, function in functions.items():
        if function == "listagg":
            delimiters.setdefault(column, ",")
    given_groups = settings.get("sequence_group", {})
    if given_groups and name != "partial_update":
        raise InvalidInput(
            "fields.<column>.sequence_group needs option merge_engine='partial_update' "
            f"(this table's merge_engine is {name!r})"
        )
    claimed: dict[str, str] = {}
    for seq_column, members in given_groups.items():
        key = f"fields.{seq_column}.sequence_group"
        check_column(seq_column, key)
        t = arrow.field(seq_column).type
        if not (pa.types.is_integer(t) or pa.types.is_temporal(t)):
            raise InvalidInput(
                f"option {key!r}: a sequence group's column must be an integer or temporal "
                f"column, but {seq_column!r} has type {t}"
            )
        if not isinstance(members, str) or not members.strip():
            raise InvalidInput(f"option {key!r} must list columns, e.g. 'c1,c2'")
        group = [m.strip() for m in members.split(",")]
        for member in [seq_column, *group]:
            check_column(member, key)
            if member == sequence_field:
                raise InvalidInput(f"option {key!r}: {member!r} is the table's sequence_field")
            if member in claimed and claimed[member] != seq_column:
                raise InvalidInput(
                    f"option {key!r}: column {member!r} already belongs to the sequence group "
                    f"of {claimed[member]!r}"
                )
            claimed[member] = seq_column
        groups[seq_column] = tuple(dict.fromkeys([seq_column, *group]))
    return EngineSpec(name, functions, delimiters, groups)


def refuse_at_create(spec: EngineSpec, arrow: pa.Schema, sequence_field: str | None) -> None:
    """Rules for a new table's engine settings under which a key's value could depend on how
    its versions were batched into commits and compacted, or could not be stored. Checked
    only at create time: a table created before a rule existed still opens (docs/FORMAT.md
    section 15 says what its reads give)."""
    if sequence_field is not None and not spec.is_deduplicate:
        hint = (
            "; partial_update can order columns by their own sequence column with "
            "fields.<column>.sequence_group"
            if spec.name == "partial_update"
            else ""
        )
        raise InvalidInput(
            f"option sequence_field cannot be combined with merge_engine={spec.name!r}: a "
            "record that arrives late (a smaller sequence_field than records already folded "
            "together in storage) cannot be folded back into their order, so the value would "
            "depend on how writes were batched and compacted. Use merge_engine='deduplicate' "
            f"with sequence_field, or leave sequence_field unset to fold in write order{hint}"
        )
    for column, function in spec.functions.items():
        t = arrow.field(column).type
        if not pa.types.is_decimal(t):
            continue
        key = f"fields.{column}.aggregate_function"
        if function == "product":
            raise InvalidInput(
                f"option {key!r}: product on decimal column {column!r} ({t}) is refused: each "
                "step rounds to the column's scale, so the product would depend on how versions "
                "were batched; store the factors as float64"
            )
        if function == "sum" and t.precision != DECIMAL_SUM_PRECISION:
            raise InvalidInput(
                f"option {key!r}: sum on a decimal column needs precision "
                f"{DECIMAL_SUM_PRECISION} so that totals have room (a sum beyond the precision "
                f"wraps around); declare {column!r} as decimal128({DECIMAL_SUM_PRECISION}, "
                f"{t.scale}) instead of {t}"
            )


def columns_with_settings(options: Mapping[str, Any]) -> set[str]:
    """Columns that per-column engine options name (schema changes must keep them)."""
    out: set[str] = set()
    for key, value in options.items():
        if is_field_option(key):
            column, setting = split_field_option(key)
            out.add(column)
            if setting == "sequence_group" and isinstance(value, str):
                out.update(m.strip() for m in value.split(","))
    return out
