"""The warehouse catalog on the ``lsm3`` command line: the ``lsm3.cli`` plugin ``plugin``.

It adds the global option ``--warehouse URI`` (default: the ``LSM3_WAREHOUSE`` environment
variable), the commands ``namespaces``, ``tables``, ``drop`` and ``rename``, and a resolver
through which every table command (``create``, ``write``, ``scan``, ``alter``, ...) reads a
TABLE argument ``namespace.table`` as a name in the warehouse. An argument holding a ``/``
(``./orders``, ``s3://bucket/t``) stays a URI: no valid name contains one, so a warehouse
set in the environment never hides a table given by URI. ``--storage-option`` settings apply
to the warehouse.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

import pyarrow as pa

import lsm3
from catalog.client import Catalog, connect
from catalog.errors import (
    InvalidIdentifier,
    NamespaceNotFound,
    TableAlreadyExists,
)
from catalog.identifiers import check_namespace, parse_table
from lsm3.cli.args import PROG, CliError, UsageError, storage_options
from lsm3.cli.plugins import CliExtension

WAREHOUSE_ENV = "LSM3_WAREHOUSE"

_HELP = f"""\
warehouse (the catalog plugin):
  lsm3 --warehouse s3://bucket/wh namespaces create sales
  lsm3 --warehouse s3://bucket/wh create sales.orders --schema 'id:int64,amount:float64' \\
       --primary-key id
  lsm3 --warehouse s3://bucket/wh write sales.orders orders.csv
  lsm3 --warehouse s3://bucket/wh scan sales.orders --filter 'amount > 100'
  lsm3 --warehouse s3://bucket/wh tables sales
  lsm3 --warehouse s3://bucket/wh rename sales.orders archive.orders_2025
  lsm3 --warehouse s3://bucket/wh drop archive.orders_2025 --purge

With --warehouse (or {WAREHOUSE_ENV}) a TABLE argument without '/' is a NAMESPACE.TABLE name
in the warehouse's catalog; one with '/' (./orders, s3://b/t) is still a URI. Names are ASCII
letters, digits and '_', not starting with a digit. --storage-option applies to the warehouse.
"""


def plugin(cli: CliExtension) -> None:
    """Add ``--warehouse``, its commands and its resolver of TABLE arguments to ``lsm3``."""
    cli.add_global_option(
        "--warehouse",
        metavar="URI",
        default=os.environ.get(WAREHOUSE_ENV) or None,
        help="the warehouse whose NAMESPACE.TABLE names TABLE arguments may use: "
        f"s3://bucket/prefix, a path, ... (default: ${WAREHOUSE_ENV})",
    )
    cli.add_resolver(WarehouseTables())
    cli.add_help(_HELP)
    _add_commands(cli)


# --------------------------------------------------------------------------- resolver


class WarehouseTables:
    """Resolves ``namespace.table`` TABLE arguments in the ``--warehouse`` catalog."""

    table_help = "with --warehouse: NAMESPACE.TABLE"

    def open_table(self, args: argparse.Namespace, name: str) -> lsm3.Table | None:
        if not _names_a_table(args, name):
            return None
        ns, _ = _parse(name)
        with _cli_errors(args, ns):
            return _connect(args).load_table(name)

    def create_table(
        self,
        args: argparse.Namespace,
        name: str,
        schema: pa.Schema,
        *,
        primary_key: Sequence[str],
        partition_by: Sequence[str] | None,
        buckets: int,
        options: Mapping[str, Any] | None,
    ) -> lsm3.Table | None:
        if not _names_a_table(args, name):
            return None
        ns, _ = _parse(name)
        with _cli_errors(args, ns, name, create_hint=True):
            return _connect(args).create_table(
                name, schema, primary_key, partition_by, buckets, options
            )


def _names_a_table(args: argparse.Namespace, name: str) -> bool:
    return bool(getattr(args, "warehouse", None)) and "/" not in name and os.sep not in name


def _warehouse(args: argparse.Namespace) -> str:
    warehouse: str | None = getattr(args, "warehouse", None)
    if not warehouse:
        raise UsageError(
            f"'{PROG} {args.command}' needs a warehouse: pass --warehouse URI or set "
            f"{WAREHOUSE_ENV}"
        )
    return warehouse


def _connect(args: argparse.Namespace) -> Catalog:
    return connect(_warehouse(args), storage_options(args))


def _existing(args: argparse.Namespace) -> Catalog:
    """The catalog, for commands that only read it: a warehouse where nothing was ever
    created is far more often a mistyped URI than an empty warehouse, so it is an error."""
    catalog = _connect(args)
    if catalog.refresh().state_id == 0:
        warehouse = _warehouse(args)
        raise CliError(
            f"no warehouse catalog at {warehouse} (nothing was ever created there); check the "
            f"URI, or start one with '{PROG} --warehouse {shlex.quote(warehouse)} namespaces "
            "create NAME'"
        )
    return catalog


def _parse(name: str) -> tuple[str, str]:
    try:
        return parse_table(name)
    except InvalidIdentifier as exc:
        raise UsageError(str(exc)) from exc


@contextlib.contextmanager
def _cli_errors(
    args: argparse.Namespace,
    namespace: str | None = None,
    table: str | None = None,
    create_hint: bool = False,
) -> Iterator[None]:
    """Catalog errors in command-line terms: a bad name is a usage error, and the hints name
    ``lsm3`` commands rather than Python methods. ``namespace`` and ``table`` are the names
    that may be missing or taken."""
    warehouse = _warehouse(args)
    quoted = shlex.quote(warehouse)
    try:
        yield
    except InvalidIdentifier as exc:
        raise UsageError(str(exc)) from exc
    except NamespaceNotFound as exc:
        what = f"namespace {namespace!r}" if namespace else "the namespace"
        hint = (
            f"create it with '{PROG} --warehouse {quoted} namespaces create {namespace}'"
            if create_hint and namespace
            else f"see '{PROG} --warehouse {quoted} namespaces'"
        )
        raise CliError(f"{what} does not exist in the warehouse {warehouse}; {hint}") from exc
    except TableAlreadyExists as exc:
        name = table or "the table"
        raise CliError(
            f"table {name} already exists in the warehouse {warehouse}; choose another name "
            f"or drop it first ('{PROG} --warehouse {quoted} drop {name}')"
        ) from exc


# --------------------------------------------------------------------------- commands


def cmd_namespaces(args: argparse.Namespace, out: IO[str]) -> int:
    action, name = args.action, args.name
    if action == "list":
        if name is not None:
            raise UsageError(f"'namespaces list' takes no NAME (got {name!r})")
        with _cli_errors(args):
            names = _existing(args).list_namespaces()
        out.writelines(f"{ns}\n" for ns in names)
        return 0
    if name is None:
        raise UsageError(f"'namespaces {action}' needs the NAME of a namespace")
    cat = _connect(args)
    with _cli_errors(args, name):
        if action == "create":
            cat.create_namespace(name)
        else:
            cat.drop_namespace(name)
    done = "created" if action == "create" else "dropped"
    print(f"{done} namespace {name} in {cat.uri}", file=out)
    return 0


def cmd_tables(args: argparse.Namespace, out: IO[str]) -> int:
    with _cli_errors(args, args.namespace):
        if args.namespace is not None:
            check_namespace(args.namespace)  # a bad name is a usage error, before any read
        names = _existing(args).list_tables(args.namespace)
    out.writelines(f"{name}\n" for name in names)
    return 0


def cmd_drop(args: argparse.Namespace, out: IO[str]) -> int:
    ns, _ = _parse(args.uri)
    with _cli_errors(args, ns):
        _connect(args).drop_table(args.uri, purge=args.purge)
    tail = " and deleted its files" if args.purge else " (its files remain; --purge deletes them)"
    print(f"dropped table {args.uri}{tail}", file=out)
    return 0


def cmd_rename(args: argparse.Namespace, out: IO[str]) -> int:
    _parse(args.uri)
    new_ns, _ = _parse(args.new)
    with _cli_errors(args, new_ns, args.new, create_hint=True):
        _connect(args).rename_table(args.uri, args.new)
    print(f"renamed table {args.uri} to {args.new}", file=out)
    return 0


def _add_commands(cli: CliExtension) -> None:
    p = cli.add_command(
        "namespaces",
        "list the namespaces of the warehouse, or create or drop one",
        "  lsm3 --warehouse s3://bucket/wh namespaces                 # one name per line\n"
        "  lsm3 --warehouse s3://bucket/wh namespaces create sales\n"
        "  lsm3 --warehouse ./wh namespaces drop sales                # only when empty\n",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["list", "create", "drop"],
        default="list",
        help="default: list",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="the namespace to create or drop")
    p.set_defaults(func=cmd_namespaces)

    p = cli.add_command(
        "tables",
        "list the tables of the warehouse (or of one namespace) as NAMESPACE.TABLE",
        "  lsm3 --warehouse s3://bucket/wh tables\n"
        "  LSM3_WAREHOUSE=s3://bucket/wh lsm3 tables sales\n",
    )
    p.add_argument("namespace", nargs="?", metavar="NAMESPACE", help="only this namespace")
    p.set_defaults(func=cmd_tables)

    p = cli.add_command(
        "drop",
        "drop a table from the warehouse (its name at once; its files with --purge)",
        "  lsm3 --warehouse s3://bucket/wh drop sales.orders\n"
        "  lsm3 --warehouse s3://bucket/wh drop sales.orders --purge  # stop its writers first\n",
    )
    p.add_argument("uri", metavar="TABLE", help="NAMESPACE.TABLE")
    p.add_argument("--purge", action="store_true", help="also delete the table's files")
    p.set_defaults(func=cmd_drop)

    p = cli.add_command(
        "rename",
        "rename a table of the warehouse, possibly into another namespace (no file moves)",
        "  lsm3 --warehouse s3://bucket/wh rename sales.orders sales.orders_v1\n"
        "  lsm3 --warehouse s3://bucket/wh rename sales.orders archive.orders\n",
    )
    p.add_argument("uri", metavar="TABLE", help="NAMESPACE.TABLE")
    p.add_argument("new", metavar="NEW_NAME", help="NAMESPACE.TABLE")
    p.set_defaults(func=cmd_rename)
