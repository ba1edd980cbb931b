"""The table-definition commands of ``lsm3``: ``create`` a table, show its ``schema``, ``alter`` it.

``schema`` shows the current version (field ids, names, types, nullability, the key,
partitioning, buckets and options) or, with ``--history``, every version and what changed from
the one before. ``alter`` commits all its changes together as one new schema version, in the
order they were given; no data is rewritten.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO, Any

import pyarrow as pa

from lsm3.cli.args import (
    SCHEMA_HELP,
    AddCommand,
    UsageError,
    create_table,
    format_schema,
    format_type,
    open_table,
    parse_column,
    parse_key_values,
    parse_names,
    parse_schema,
    parse_type,
)
from lsm3.cli.inputs import InputFile, input_format, parse_null_values
from lsm3.cli.io import format_rows
from lsm3.format.evolution import SchemaUpdate
from lsm3.format.schema import TableSchema


def schema_like(path: str, fmt: str | None) -> pa.Schema:
    """The columns of a sample file (``create --like``): Parquet's own schema, the types Arrow
    infers from the first block of a CSV or JSON lines file (all-empty columns as strings)."""
    source = InputFile(path, input_format(path, fmt), parse_null_values(None))
    sample = source.sample_schema()
    return pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in sample])


def cmd_create(args: argparse.Namespace, out: IO[str]) -> int:
    if (args.schema is None) == (args.like is None):
        raise UsageError(
            "pass the columns with --schema 'id:int64,name:string' or take them from a sample "
            "file with --like FILE (one of the two)"
        )
    schema = parse_schema(args.schema) if args.schema else schema_like(args.like, args.format)
    table, name = create_table(
        args,
        schema,
        primary_key=parse_names(args.primary_key, "--primary-key"),
        partition_by=parse_names(args.partition_by, "--partition-by")
        if args.partition_by
        else None,
        buckets=args.buckets,
        options=parse_key_values(args.option, "--option", typed=True) or None,
    )
    key = ",".join(table.primary_key)
    print(f"created table {name} (primary key {key}, {args.buckets} bucket(s))", file=out)
    if args.like:
        print(f"columns from {args.like}: {format_schema(table.schema)}", file=out)
    return 0


# --------------------------------------------------------------------------- schema


def _role(schema: TableSchema, name: str) -> str:
    roles = []
    if name in schema.primary_key:
        roles.append("primary key")
    if name in schema.partition_by:
        roles.append("partition")
    if name == schema.sequence_field:
        roles.append("sequence field")
    return ", ".join(roles)


def _option_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def format_table_schema(schema: TableSchema, changes: str | None = None) -> str:
    """One schema version as text: its settings (and ``changes``), then one line per field."""
    options = ", ".join(f"{k}={_option_text(v)}" for k, v in sorted(schema.options.items()))
    lines = [f"schema        {schema.schema_id}"]
    if changes is not None:
        lines.append(f"changes       {changes}")
    lines += [
        f"primary key   {','.join(schema.primary_key)}",
        f"partition by  {','.join(schema.partition_by) or '-'}",
        f"buckets       {schema.buckets}",
        f"options       {options or 'none set (defaults)'}",
        "",
    ]
    rows = [
        [fid, f.name, format_type(f.type), "yes" if f.nullable else "no", _role(schema, f.name)]
        for fid, f in zip(schema.field_ids, schema.arrow, strict=True)
    ]
    header = ["field", "name", "type", "nullable", "role"]
    lines.append(format_rows(header, rows, [True, False, False, False, False]))
    return "\n".join(lines)


def schema_changes(old: TableSchema, new: TableSchema) -> list[str]:
    """What changed from ``old`` to ``new``, matching columns by field id."""
    before = dict(zip(old.field_ids, old.arrow, strict=True))
    after = dict(zip(new.field_ids, new.arrow, strict=True))
    out = []
    for fid, f in before.items():
        g = after.get(fid)
        if g is None:
            out.append(f"dropped {f.name}")
            continue
        if g.name != f.name:
            out.append(f"renamed {f.name} -> {g.name}")
        if g.type != f.type:
            out.append(f"widened {g.name} {format_type(f.type)} -> {format_type(g.type)}")
    out += [
        f"added {g.name}:{format_type(g.type)}" for fid, g in after.items() if fid not in before
    ]
    for k in sorted(set(old.options) | set(new.options)):
        if k not in new.options:
            out.append(f"unset {k}")
        elif old.options.get(k, object()) != new.options[k]:
            out.append(f"set {k}={_option_text(new.options[k])}")
    return out


def cmd_schema(args: argparse.Namespace, out: IO[str]) -> int:
    table = open_table(args)
    versions = table.schemas() if args.history else [table.table_schema]
    if args.json:
        docs = [v.to_json() for v in versions]
        out.write(json.dumps(docs if args.history else docs[0], indent=2) + "\n")
        return 0
    if not args.history:
        print(format_table_schema(versions[0]), file=out)
        return 0
    blocks = []
    previous: TableSchema | None = None
    for version in versions:
        changes = "; ".join(schema_changes(previous, version)) if previous else "created"
        blocks.append(format_table_schema(version, changes or "none"))
        previous = version
    print("\n\n".join(blocks), file=out)
    return 0


# --------------------------------------------------------------------------- alter

Change = tuple[str, Callable[[SchemaUpdate], object]]  # what it does, as text; how to apply it


def _tag(kind: str) -> Callable[[str], tuple[str, str]]:
    """An argparse ``type`` that keeps which option a value came from, in command-line order."""
    return lambda text: (kind, text)


def _column_name(text: str, option: str) -> str:
    name = text.strip()
    if not name:
        raise UsageError(f"{option} needs a column name")
    return name


def parse_change(kind: str, text: str) -> Change:
    """One ``alter`` option value, checked before the table is touched."""
    if kind == "add":
        f = parse_column(text)
        apply = partial(SchemaUpdate.add_column, name=f.name, type=f.type, nullable=f.nullable)
        return f"added {f.name}:{format_type(f.type)}", apply
    if kind == "drop":
        name = _column_name(text, "--drop-column")
        return f"dropped {name}", partial(SchemaUpdate.drop_column, name=name)
    if kind == "rename":
        old, sep, new = (part.strip() for part in text.partition(":"))
        if not sep or not old or not new:
            raise UsageError(f"--rename-column {text!r} is not OLD:NEW")
        apply = partial(SchemaUpdate.rename_column, name=old, new_name=new)
        return f"renamed {old} -> {new}", apply
    if kind == "widen":
        name, sep, type_text = text.partition(":")
        if not sep:
            raise UsageError(f"--widen-column {text!r} is not NAME:TYPE (e.g. qty:int64)")
        name, new_type = _column_name(name, "--widen-column"), parse_type(type_text)
        apply = partial(SchemaUpdate.widen_column, name=name, type=new_type)
        return f"widened {name} to {format_type(new_type)}", apply
    options = parse_key_values([text], "--set-option", typed=True)
    key, value = next(iter(options.items()))
    return f"set {key}={_option_text(value)}", partial(SchemaUpdate.set_options, options=options)


def cmd_alter(args: argparse.Namespace, out: IO[str]) -> int:
    given: Sequence[tuple[str, str]] = args.changes or []
    if not given:
        raise UsageError(
            "nothing to alter: pass --add-column, --drop-column, --rename-column, "
            "--widen-column or --set-option"
        )
    changes = [parse_change(kind, text) for kind, text in given]
    table = open_table(args)
    with table.update_schema() as update:
        for _, apply in changes:
            apply(update)
    if not update.changed:
        print("nothing to commit: the schema already has these columns and options", file=out)
        return 0
    snap = table.current_snapshot()
    where = f" (snapshot {snap.snapshot_id})" if snap else ""
    print(
        f"committed schema {table.table_schema.schema_id}{where} to {table.uri}: "
        + "; ".join(text for text, _ in changes),
        file=out,
    )
    return 0


# --------------------------------------------------------------------------- arguments

_OPTIONS_HELP = (
    "table option (repeatable), e.g. sequence_field=lsn, memtable_bytes=67108864, "
    "row_group_rows=16384, target_file_bytes=134217728"
)
_ALTER_HELP = (
    "The changes are applied in the order given and committed together as one new schema\n"
    "version (a SCHEMA snapshot); data files are not rewritten. New columns are nullable and\n"
    "read as null in existing rows; renames keep the data (columns are matched by field id);\n"
    "widening allows int8 -> int16 -> int32 -> int64, uint to wider (u)int, float16 -> float32\n"
    "-> float64, string -> large_string, binary -> large_binary. Key, partition and\n"
    "sequence-field columns cannot change.\n"
)


def add_commands(add: AddCommand) -> None:
    """Declare ``create``, ``schema`` and ``alter``."""
    p = add(
        "create",
        "create an empty table",
        "  lsm3 create ./orders --schema 'id:int64,name:string,amount:float64' --primary-key id\n"
        "  lsm3 create ./flights --like flights.csv --primary-key year,month,day,flight\n"
        "  lsm3 create s3://b/events --schema 'tenant:string,id:int64,ts:timestamp[us,UTC]' \\\n"
        "       --primary-key tenant,id --partition-by tenant --buckets 8 \\\n"
        "       --option sequence_field=ts\n",
    )
    p.add_argument(
        "--schema",
        metavar="COLUMNS",
        help="comma-separated NAME:TYPE list, e.g. 'id:int64,name:string'; " + SCHEMA_HELP,
    )
    p.add_argument(
        "--like",
        metavar="FILE",
        help="take the columns from a sample file instead (.parquet, .csv, .jsonl: the types "
        "Arrow infers from its first rows)",
    )
    p.add_argument(
        "--format",
        choices=["parquet", "csv", "jsonl"],
        help="the --like file's format (default: from its extension)",
    )
    p.add_argument(
        "--primary-key", required=True, metavar="COLS", help="key column(s), comma-separated"
    )
    p.add_argument(
        "--partition-by", metavar="COLS", help="partition column(s), a subset of the key"
    )
    p.add_argument("--buckets", type=int, default=1, help="hash buckets (default 1)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help=_OPTIONS_HELP)
    p.set_defaults(func=cmd_create)

    p = add(
        "schema",
        "show the schema of a table: field ids, types, key, partitioning and options",
        "  lsm3 schema ./orders\n"
        "  lsm3 schema ./orders --history         # every version and what changed\n"
        "  lsm3 schema s3://b/orders --json\n",
    )
    p.add_argument("--history", action="store_true", help="show every schema version, oldest first")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the schema document as JSON (with --history: a list of them)",
    )
    p.set_defaults(func=cmd_schema)

    p = add(
        "alter",
        "change the schema: add, drop, rename and widen columns, set options",
        "  lsm3 alter ./orders --add-column note:string --add-column qty:int32\n"
        "  lsm3 alter ./orders --rename-column amount:total --widen-column qty:int64\n"
        "  lsm3 alter ./orders --drop-column note --set-option row_group_rows=8192\n"
        "\n" + _ALTER_HELP,
    )
    for option, kind, metavar, text in (
        ("--add-column", "add", "NAME:TYPE", "add a nullable column (types: see 'create')"),
        ("--drop-column", "drop", "NAME", "drop a column"),
        ("--rename-column", "rename", "OLD:NEW", "rename a column"),
        ("--widen-column", "widen", "NAME:TYPE", "change a column to a wider type"),
        ("--set-option", "set", "KEY=VALUE", "set a table option, e.g. row_group_rows=8192"),
    ):
        p.add_argument(
            option,
            dest="changes",
            action="append",
            type=_tag(kind),
            metavar=metavar,
            help=text + " (repeatable)",
        )
    p.set_defaults(func=cmd_alter)
