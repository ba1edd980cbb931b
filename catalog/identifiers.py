"""Namespace and table names: one strict ASCII rule, checked before any name reaches a path.

A name becomes part of an object key (``<namespace>/<table>-<uuid>/...``), so the rule is a
security boundary: only ASCII letters, digits and ``_``, not starting with a digit, 1 to 128
characters. That excludes path separators, ``.``/``..``, whitespace, NUL, ``-`` (which
separates the table name from its UUID in a location) and every non-ASCII character, so a
Unicode look-alike (Cyrillic U+0430 for Latin ``a``) can never shadow another name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias

from catalog.errors import InvalidIdentifier

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
_NAME = re.compile(NAME_PATTERN)
MAX_NAME_LENGTH = 128
#: Namespaces that would collide with the catalog's own objects under the warehouse root
#: (compared case-insensitively, for case-insensitive file systems).
RESERVED_NAMESPACES = frozenset({"catalog"})

#: ``"namespace.table"`` or ``("namespace", "table")``.
Identifier: TypeAlias = str | Sequence[str]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_name(name: object, what: str) -> str:
    """``name`` if it follows the rule, else InvalidIdentifier naming the rule."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidIdentifier(
            f"{what} name {_shown(name)} is invalid: use 1 to {MAX_NAME_LENGTH} ASCII letters, "
            "digits or '_', not starting with a digit (pattern " + NAME_PATTERN + ")"
        )
    return name


def check_namespace(name: object) -> str:
    """A valid, non-reserved namespace name."""
    checked = check_name(name, "namespace")
    if checked.lower() in RESERVED_NAMESPACES:
        raise InvalidIdentifier(
            f"namespace name {checked!r} is reserved (the warehouse keeps its catalog state "
            "under catalog/); choose another name"
        )
    return checked


def parse_table(identifier: object) -> tuple[str, str]:
    """``(namespace, table)`` from ``"ns.table"`` or a 2-sequence, both parts checked."""
    if isinstance(identifier, str):
        parts: list[object] = list(identifier.split("."))
    elif isinstance(identifier, (tuple, list)):
        parts = list(identifier)
    else:
        raise InvalidIdentifier(
            f"a table identifier is 'namespace.table' or ('namespace', 'table'), "
            f"got {_shown(identifier)}"
        )
    if len(parts) != 2:
        raise InvalidIdentifier(
            f"table identifier {_shown(identifier)} must have exactly two parts, 'namespace.table'"
        )
    return check_namespace(parts[0]), check_name(parts[1], "table")


def format_table(namespace: str, table: str) -> str:
    return f"{namespace}.{table}"
