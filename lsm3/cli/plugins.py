"""Plugins of the ``lsm3`` command: packages that add options, commands and table names.

A plugin is a callable registered in the entry-point group ``lsm3.cli``::

    [project.entry-points."lsm3.cli"]
    catalog = "catalog.cli:plugin"

While it builds its parser, ``lsm3`` calls each plugin with a :class:`CliExtension`, through
which the plugin adds global options (accepted before or after the command), commands,
sections of ``lsm3 --help`` and :class:`TableResolver` objects. Every table command asks the
resolvers, in order, to open (or ``create``) the table its TABLE argument names, and treats
the argument as a URI when none does. That is how ``lsm3`` learns of warehouses without
importing ``catalog``: imports point one way.

A plugin that fails to load, or raises while it extends the parser, is skipped with a warning
on stderr and the parser is built again without it: a broken plugin never breaks the command.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import IO, Any, Protocol

import pyarrow as pa

import lsm3
from lsm3.cli.args import COMMON_OPTIONS, PROG, AddCommand

PLUGIN_GROUP = "lsm3.cli"


class TableResolver(Protocol):
    """Turns a TABLE argument into a table; returning None hands the argument on (in the end,
    to :func:`lsm3.open_table` as a URI)."""

    #: How the TABLE argument's help describes what this resolver accepts.
    table_help: str

    def open_table(self, args: argparse.Namespace, name: str) -> lsm3.Table | None: ...

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
    ) -> lsm3.Table | None: ...


class CliExtension:
    """What a plugin may add to the ``lsm3`` command line.

    A command's function is ``func(args, out) -> exit status``, set with
    ``parser.set_defaults(func=...)``; it reports failures by raising ``lsm3.cli.UsageError``
    (exit status 2), ``lsm3.cli.CliError`` or an ``lsm3.Lsm3Error`` (exit status 1).
    """

    def __init__(self, parser: argparse.ArgumentParser, add_command: AddCommand) -> None:
        self.parser = parser
        self._add_command = add_command
        self.commands: list[argparse.ArgumentParser] = []
        self.resolvers: list[TableResolver] = []
        self.help_sections: list[str] = []
        self._global_options: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def add_global_option(self, *flags: str, **kwargs: Any) -> None:
        """An option of every command, given before the command (like ``--debug``) or after
        it; ``kwargs`` as for ``add_argument``, whose ``default`` applies when it is absent."""
        self.parser.add_argument(*flags, **kwargs)
        self._global_options.append((flags, kwargs))
        for command in self.commands:
            _add_global(command, flags, kwargs)

    def add_command(self, name: str, help: str, examples: str) -> argparse.ArgumentParser:
        """A command with the common options (``--storage-option``, ``--debug``); ``examples``
        are lines such as ``"  lsm3 tables\\n"``."""
        return self.register(self._add_command(name, help, examples))

    def register(self, command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Give a command every global option (the core commands are registered this way)."""
        for flags, kwargs in self._global_options:
            _add_global(command, flags, kwargs)
        self.commands.append(command)
        return command

    def add_resolver(self, resolver: TableResolver) -> None:
        """Ask ``resolver`` first about every TABLE argument."""
        missing = [
            name
            for name in ("table_help", "open_table", "create_table")
            if not hasattr(resolver, name)
        ]
        if missing:
            raise TypeError(f"{resolver!r} is not a TableResolver: no {', '.join(missing)}")
        self.resolvers.append(resolver)

    def add_help(self, text: str) -> None:
        """A section appended to ``lsm3 --help`` (plain text, kept as written)."""
        self.help_sections.append(text)

    def has_option(self, flag: str) -> bool:
        return any(flag in flags for flags, _ in self._global_options)


def _add_global(command: argparse.ArgumentParser, flags: tuple[str, ...], kwargs: Any) -> None:
    # Listed with --storage-option and --debug when the command has that group.
    groups = getattr(command, "_action_groups", [])
    group = next((g for g in groups if g.title == COMMON_OPTIONS), command)
    # SUPPRESS: a command that was not given the option keeps the value parsed before it.
    group.add_argument(*flags, **{**kwargs, "default": argparse.SUPPRESS})


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Plugin:
    """One loaded entry point of the ``lsm3.cli`` group."""

    name: str  # the entry point's name, e.g. "catalog"
    source: str  # where it points, e.g. "catalog.cli:plugin"
    install: Callable[[CliExtension], object]


class PluginFailed(Exception):
    """A plugin raised while extending the parser."""

    def __init__(self, plugin: Plugin, cause: BaseException) -> None:
        super().__init__(f"{plugin.name} ({plugin.source}): {cause}")
        self.plugin = plugin


def discover_plugins(err: IO[str]) -> list[Plugin]:
    """The loadable plugins of the ``lsm3.cli`` group, by name; warns about the others."""
    found: dict[tuple[str, str], Plugin] = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            install = ep.load()
            if not callable(install):
                raise TypeError(f"{type(install).__name__} is not callable")
        except Exception as exc:
            warn_plugin(err, f"{ep.name} ({ep.value})", exc)
            continue
        # The same distribution can be seen twice (an egg-info beside an installed copy).
        found.setdefault((ep.name, ep.value), Plugin(ep.name, ep.value, install))
    return [found[k] for k in sorted(found)]


def install_plugin(plugin: Plugin, extension: CliExtension) -> None:
    try:
        plugin.install(extension)
    except Exception as exc:
        raise PluginFailed(plugin, exc) from exc


def warn_plugin(err: IO[str], what: str, exc: BaseException) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    err.write(f"{PROG}: warning: skipping the plugin {what}: {type(exc).__name__}: {message}\n")
    err.flush()
