"""The ``lsm3`` command line: the entry point, the top-level parser and error handling.

Every table command takes a TABLE argument (``s3://bucket/path``, ``file:///path`` or a plain
path; a ``memory://`` table lives in one process only, so the CLI refuses it) and the common
options ``--storage-option KEY=VALUE`` (repeatable), ``--debug`` and ``-v``. S3 credentials
and endpoint come from ``--storage-option`` or, as with boto3, from the standard AWS environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

Plugins (:mod:`lsm3.cli.plugins`, entry-point group ``lsm3.cli``) add global options,
commands and resolvers of TABLE arguments; the warehouse catalog's plugin
(``catalog.cli:plugin``) adds ``--warehouse`` and ``namespace.table`` names that way, so this
package never imports ``catalog``.

Errors are printed as one line, ``lsm3: error: <message>``, with exit status 1 (2 for a usage
error such as a malformed ``--schema`` or ``--filter``); ``--debug`` shows the traceback.

The commands live beside this module, one module per concept, and import ``lsm3``, never the
reverse: :mod:`lsm3.cli.schema` (create, schema, alter), :mod:`lsm3.cli.rows` (write, scan,
get, changes), :mod:`lsm3.cli.snapshots` (snapshots, tag, untag, tags) and
:mod:`lsm3.cli.inspect` (inspect, drawn by :mod:`lsm3.cli.treeview`), built on
:mod:`lsm3.cli.args` (argument values), :mod:`lsm3.cli.filter` (the ``--filter`` language)
and :mod:`lsm3.cli.io` (input files, outputs, values as text).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import lsm3
from lsm3.cli import inspect as cli_inspect
from lsm3.cli import rows as cli_rows
from lsm3.cli import schema as cli_schema
from lsm3.cli import snapshots as cli_snapshots
from lsm3.cli.args import (
    COMMON_OPTIONS,
    PROG,
    CliError,
    UsageError,
    format_schema,
    parse_key,
    parse_key_values,
    parse_schema,
    parse_type,
)
from lsm3.cli.filter import parse_filter
from lsm3.cli.io import format_rows, format_table, human_bytes, to_json_line
from lsm3.cli.plugins import (
    PLUGIN_GROUP,
    CliExtension,
    Plugin,
    PluginFailed,
    discover_plugins,
    install_plugin,
    warn_plugin,
)
from lsm3.cli.progress import logging_to_stderr
from lsm3.errors import Lsm3Error

# Helpers that examples, the compactor CLI and the tests import from here.
__all__ = [
    "CliError",
    "UsageError",
    "build_parser",
    "format_rows",
    "format_schema",
    "format_table",
    "human_bytes",
    "main",
    "parse_filter",
    "parse_key",
    "parse_key_values",
    "parse_schema",
    "parse_type",
    "to_json_line",
]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other error."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        self.exit(2, f"{PROG}: error: {message}{hint}\n")


_MAIN_EPILOG = """\
examples:
  lsm3 create s3://bucket/orders --schema 'id:int64,customer:string,amount:float64' \\
       --primary-key id --buckets 4
  lsm3 write s3://bucket/orders changes.parquet more.csv
  lsm3 write s3://bucket/orders events.jsonl --cdc --op-column op
  lsm3 scan s3://bucket/orders --filter "amount > 100 and customer == 'acme'" --limit 20
  lsm3 get s3://bucket/orders 42 43
  lsm3 changes s3://bucket/orders --from 7 --format jsonl
  lsm3 snapshots s3://bucket/orders
  lsm3 tag s3://bucket/orders month-end && lsm3 scan s3://bucket/orders --tag month-end
  lsm3 alter s3://bucket/orders --add-column note:string && lsm3 schema s3://bucket/orders
  lsm3 inspect s3://bucket/orders --json

Tables: s3://bucket/path, file:///path or a local path.
No S3 at hand? 'lsm3 devserver' starts a local one and prints the environment to export.
S3 settings come from the AWS environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE) or --storage-option KEY=VALUE with the keys
endpoint_url, region, access_key_id, secret_access_key, session_token, profile.
"""
_EXIT_STATUS = "Exit status: 0 success, 1 error, 2 usage error, 3 'get' found not every key.\n"

_COMMON_HELP = "see 'lsm3 --help' for table URIs and S3 settings"


def _common(debug_default: Any) -> _Parser:
    common = _Parser(add_help=False)
    group = common.add_argument_group(COMMON_OPTIONS)
    group.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="object-store option (repeatable): endpoint_url, region, access_key_id, "
        "secret_access_key, session_token, profile",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=debug_default,
        help="show the full traceback on errors",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=debug_default,
        help="log what lsm3 does on stderr (-vv: in detail)",
    )
    return common


_TABLE_HELP = "the table: s3://bucket/path, file:///path or a local path"


def build_parser(plugins: Sequence[Plugin] | None = None) -> argparse.ArgumentParser:
    """The parser of ``lsm3``, extended by ``plugins`` (default: the installed ones)."""
    return _build(plugins)[0]


def _build(plugins: Sequence[Plugin] | None) -> tuple[argparse.ArgumentParser, CliExtension]:
    """The parser and what the plugins added; a plugin that raises is left out, with a warning
    on stderr, and the parser built again without it (it may have half-extended the first)."""
    usable = list(discover_plugins(sys.stderr) if plugins is None else plugins)
    while True:
        try:
            return _build_with(usable)
        except PluginFailed as failed:
            cause = failed.__cause__ or failed
            warn_plugin(sys.stderr, f"{failed.plugin.name} ({failed.plugin.source})", cause)
            usable.remove(failed.plugin)


def _build_with(plugins: Sequence[Plugin]) -> tuple[argparse.ArgumentParser, CliExtension]:
    parser = _Parser(
        prog=PROG,
        description="Create, load, query, evolve and inspect lsm3 tables (LSM-tree tables of "
        "sorted Parquet runs on S3-compatible storage or a local directory).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lsm3 {lsm3.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log what lsm3 does on stderr (-vv: in detail)",
    )
    common = _common(argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, epilog: str) -> argparse.ArgumentParser:
        if name in sub.choices:  # argparse before 3.11 would silently replace it
            raise ValueError(f"there is a command {name!r} already")
        return sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog="examples:\n" + epilog + "\n" + _COMMON_HELP,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    extension = CliExtension(parser, command)
    table_args: list[argparse.Action] = []

    def table_command(name: str, help: str, epilog: str) -> argparse.ArgumentParser:
        p = extension.register(command(name, help, epilog))
        table_args.append(p.add_argument("uri", metavar="TABLE", help=_TABLE_HELP))
        return p

    cli_schema.add_commands(table_command)
    cli_rows.add_commands(table_command)
    cli_snapshots.add_commands(table_command)
    cli_inspect.add_commands(table_command)
    for plugin in plugins:
        install_plugin(plugin, extension)
    for action in table_args:
        action.help = "; ".join([_TABLE_HELP, *(r.table_help for r in extension.resolvers)])
    parser.epilog = "\n".join([_MAIN_EPILOG, *extension.help_sections, _EXIT_STATUS])
    parser.set_defaults(table_resolvers=tuple(extension.resolvers))
    return parser, extension


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (``lsm3`` and ``python -m lsm3`` exit with it)."""
    parser, extension = _build(None)
    args_list = list(sys.argv[1:] if argv is None else argv)
    missing = _missing_plugin(args_list, extension)
    if missing:
        print(f"{PROG}: error: {missing}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("LSM3_DEBUG") == "1"
    try:
        with logging_to_stderr(int(getattr(args, "verbose", 0) or 0)):
            return int(args.func(args, sys.stdout))
    except UsageError as exc:
        return _fail(exc, 2, debug)
    except (Lsm3Error, CliError) as exc:
        return _fail(exc, 1, debug)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `lsm3 scan ... | head`): not an error.
        _silence_stdout()
        return 0
    except Exception as exc:  # an unexpected failure: still one line, unless --debug
        return _fail(exc, 1, debug, unexpected=True)


#: Global options of the plugins that ship with lsm3 (and the environment variable standing
#: for each), so that naming one whose plugin is not loaded says why, rather than argparse's
#: "unrecognized arguments". The core knows their names only, never their code.
_SHIPPED_PLUGIN_OPTIONS = {
    "--warehouse": ("LSM3_WAREHOUSE", "the warehouse catalog plugin (catalog.cli:plugin)"),
}


def _missing_plugin(args_list: Sequence[str], extension: CliExtension) -> str | None:
    """The error for a shipped plugin's option given while the plugin is not loaded (and a
    warning when only its environment variable is set)."""
    for flag, (env, what) in _SHIPPED_PLUGIN_OPTIONS.items():
        if extension.has_option(flag):
            continue
        if any(a == flag or a.startswith(flag + "=") for a in args_list):
            return (
                f"{flag} needs {what}, which is not loaded (no usable entry point in the group "
                f"'{PLUGIN_GROUP}'); reinstall lsm3 with its catalog package, e.g. "
                "'pip install -e .' in a checkout"
            )
        if os.environ.get(env):
            print(
                f"{PROG}: warning: {env} is set but {what} is not loaded; "
                "TABLE arguments are read as URIs",
                file=sys.stderr,
            )
    return None


def _fail(exc: BaseException, code: int, debug: bool, unexpected: bool = False) -> int:
    if debug:
        traceback.print_exc()
    message = " ".join(str(exc).split()) or type(exc).__name__
    if unexpected:
        message = f"{type(exc).__name__}: {message} (run with --debug for the traceback)"
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
