"""The filter language of ``lsm3 scan --filter``: text to a ``pyarrow.compute`` expression.

The text is parsed with :mod:`ast` and never evaluated: column names, literals (numbers,
strings, True/False/None), comparisons (``== != < <= > >=``, chained ones too), ``in`` /
``not in`` a list of literals, ``is None`` / ``is not None``, ``and`` / ``or`` / ``not`` and
parentheses are translated; everything else (calls, attributes, subscripts, arithmetic, ...)
is refused with a :class:`~lsm3.cli.args.UsageError`. See :func:`parse_filter`.
"""

from __future__ import annotations

import ast
import decimal
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.cli.args import UsageError, format_type

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_MIRROR: dict[type, type] = {
    ast.Eq: ast.Eq,
    ast.NotEq: ast.NotEq,
    ast.Lt: ast.Gt,
    ast.LtE: ast.GtE,
    ast.Gt: ast.Lt,
    ast.GtE: ast.LtE,
}
MAX_FILTER_LENGTH = 10_000

_FILTER_HINT = "see 'lsm3 scan --help' for the filter language"
FILTER_HELP = """
Filter language (parsed with Python's ast module and translated, never evaluated):
  columns and literals   id, name, 42, -1.5, 'text', True, False, None
  comparisons            == != < <= > >=, also chained: 1 < id <= 10
  membership             status in ['new', 'paid'], id not in (1, 2)
  nulls                  note is None, note is not None
  logic                  and, or, not, parentheses
  timestamps and dates   updated_at >= '2026-01-31 12:00' (UTC unless an offset is given)
A null never matches a comparison (as in SQL). Calls, attributes, subscripts and
arithmetic are refused.
"""


class _Column:
    def __init__(self, name: str, type: pa.DataType) -> None:
        self.name = name
        self.type = type
        self.expr = pc.field(name)


class _Literal:
    def __init__(self, value: Any) -> None:
        self.value = value


def _describe(node: ast.AST) -> str:
    names = {
        ast.Call: "function calls",
        ast.Attribute: "attribute access",
        ast.Subscript: "subscripts",
        ast.BinOp: "arithmetic",
        ast.Lambda: "lambdas",
        ast.NamedExpr: "assignments",
        ast.IfExp: "conditional expressions",
        ast.JoinedStr: "f-strings",
    }
    for kind, text in names.items():
        if isinstance(node, kind):
            return text
    return type(node).__name__


def _literal(node: ast.AST) -> Any:
    """A constant (or a negated number); anything else raises UsageError."""
    if isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, (bool, int, float, str))
    ):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, (int, float))
        and not isinstance(node.operand.value, bool)
    ):
        v = node.operand.value
        return -v if isinstance(node.op, ast.USub) else v
    raise UsageError(f"{_describe(node)} are not allowed in filters; {_FILTER_HINT}")


def _coerce(value: Any, column: _Column) -> pa.Scalar:
    """A literal as a scalar comparable with ``column`` (strings parsed for other types)."""
    t = column.type
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    if isinstance(value, bool):
        if pa.types.is_boolean(t):
            return pa.scalar(value)
    elif isinstance(value, (int, float)) and numeric:
        if pa.types.is_decimal(t):
            return pa.scalar(decimal.Decimal(str(value)))
        return pa.scalar(value)  # let Arrow promote (id > 5.5 on an int column is fine)
    elif isinstance(value, str):
        try:
            return pa.scalar(value).cast(t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            if pa.types.is_timestamp(t) and t.tz is not None:
                try:  # no offset in the text: read it as UTC
                    return pa.scalar(value).cast(pa.timestamp(t.unit)).cast(t)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
    raise UsageError(f"cannot compare column {column.name!r} ({format_type(t)}) with {value!r}")


def _operand(node: ast.AST, schema: pa.Schema) -> _Column | _Literal:
    if isinstance(node, ast.Name):
        if node.id not in schema.names:
            raise UsageError(f"unknown column {node.id!r} in filter; columns: {schema.names}")
        return _Column(node.id, schema.field(node.id).type)
    return _Literal(_literal(node))


def _compare(op: ast.cmpop, left: ast.AST, right: ast.AST, schema: pa.Schema) -> pc.Expression:
    kind = type(op)
    if kind in (ast.Is, ast.IsNot):
        subject = _operand(left, schema)
        if not isinstance(subject, _Column) or not (
            isinstance(right, ast.Constant) and right.value is None
        ):
            raise UsageError("'is' / 'is not' only test a column against None")
        return subject.expr.is_null() if kind is ast.Is else subject.expr.is_valid()
    if kind in (ast.In, ast.NotIn):
        subject = _operand(left, schema)
        if not isinstance(subject, _Column):
            raise UsageError("the left side of 'in' must be a column")
        if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            raise UsageError("'in' needs a list of literals, e.g. status in ['new', 'paid']")
        values = [_coerce(_literal(e), subject) for e in right.elts]
        if values:
            arr = pa.array([v.as_py() for v in values], type=values[0].type)
            if arr.type != subject.type:
                try:
                    arr = arr.cast(subject.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise UsageError(
                        f"the values of 'in' do not fit column {subject.name!r}: {exc}"
                    ) from None
        else:
            arr = pa.array([], type=subject.type)
        found = subject.expr.isin(arr)
        # SQL semantics, as for '!=': a null is neither in nor not in the list
        return found if kind is ast.In else ~found & subject.expr.is_valid()
    if kind not in _COMPARE:
        raise UsageError(f"operator {type(op).__name__} is not allowed in filters")
    a, b = _operand(left, schema), _operand(right, schema)
    if isinstance(a, _Literal) and isinstance(b, _Column):  # 5 < id  ->  id > 5
        a, b, kind = b, a, _MIRROR[kind]
    if isinstance(b, _Literal) and b.value is None:
        if kind not in (ast.Eq, ast.NotEq) or not isinstance(a, _Column):
            raise UsageError("None can only be tested with '== None' / 'is None' (or '!=')")
        return a.expr.is_null() if kind is ast.Eq else a.expr.is_valid()
    if isinstance(a, _Column) and isinstance(b, _Column):
        return _COMPARE[kind](a.expr, b.expr)
    if isinstance(a, _Column) and isinstance(b, _Literal):
        return _COMPARE[kind](a.expr, pc.scalar(_coerce(b.value, a)))
    assert isinstance(a, _Literal) and isinstance(b, _Literal)
    return _COMPARE[kind](pc.scalar(a.value), pc.scalar(b.value))


def _boolean(node: ast.AST, schema: pa.Schema) -> pc.Expression:
    if isinstance(node, ast.BoolOp):
        parts = [_boolean(v, schema) for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(node.op, ast.And) else (out | p)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_boolean(node.operand, schema)
    if isinstance(node, ast.Compare):
        terms = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            terms.append(_compare(op, left, right, schema))
            left = right
        out = terms[0]
        for t in terms[1:]:
            out = out & t
        return out
    if isinstance(node, ast.Name):
        column = _operand(node, schema)
        assert isinstance(column, _Column)
        if not pa.types.is_boolean(column.type):
            raise UsageError(
                f"column {column.name!r} ({format_type(column.type)}) is not a condition; "
                f"compare it, e.g. {column.name} > 0"
            )
        return column.expr
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return pc.scalar(node.value)
    raise UsageError(f"{_describe(node)} are not allowed in filters; {_FILTER_HINT}")


def parse_filter(text: str, schema: pa.Schema) -> pc.Expression:
    """Translate a filter expression into a ``pyarrow.compute.Expression`` without eval.

    The text is parsed by :func:`ast.parse` (which only builds a syntax tree) and a whitelist
    of node types is translated; column names are checked against ``schema`` and literals are
    converted to the column's type (so ``updated_at >= '2026-01-01'`` works).
    """
    if len(text) > MAX_FILTER_LENGTH:
        raise UsageError(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise UsageError(f"invalid filter {text!r}: {exc.msg}; {_FILTER_HINT}") from None
    except (ValueError, RecursionError, MemoryError):
        raise UsageError(f"invalid filter {text[:80]!r}") from None
    try:
        expr = _boolean(tree.body, schema)
    except RecursionError:
        raise UsageError("the filter is nested too deeply") from None
    # Type-check it now, so a mismatch is a clear usage error instead of a failed scan.
    probe = pa.table({f.name: pa.array([], f.type) for f in schema})
    try:
        probe.filter(expr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise UsageError(f"filter {text!r} does not type-check: {exc}") from None
    return expr
