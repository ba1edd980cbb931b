"""The warehouse on the ``lsm3`` command line: the catalog's plugin (``catalog.cli:plugin``)
adds ``--warehouse``, ``namespaces``, ``tables``, ``drop`` and ``rename``, and makes every table
command read ``namespace.table``; the plugin hook of :mod:`lsm3.cli.plugins` survives broken
plugins and says so when ``--warehouse`` is used without its plugin."""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import catalog
import catalog.cli
import lsm3
from lsm3.cli import main
from lsm3.cli.plugins import CliExtension

Location = tuple[str, dict[str, str] | None]
SCHEMA = "id:int64,name:string,amount:float64"
WAREHOUSE_COMMANDS = ["namespaces", "tables", "drop", "rename"]


@pytest.fixture(autouse=True)
def _no_warehouse_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LSM3_WAREHOUSE", raising=False)


@pytest.fixture
def warehouse(table_location: Location) -> Location:
    """``(uri, storage_options)`` of an empty warehouse, in a local directory and on moto."""
    return table_location


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def wh(location: Location, *argv: str) -> list[str]:
    """``--warehouse URI argv... --storage-option ...``."""
    uri, options = location
    so = [f"--storage-option={k}={v}" for k, v in (options or {}).items()]
    return ["--warehouse", uri, *argv, *so]


def assert_one_line_error(err: str, contains: str = "") -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lsm3: error: ") and "Traceback" not in err, err
    assert contains in lines[0], err


def objects(location: Location) -> list[str]:
    """Every object key under the warehouse root."""
    return [info.key for info in catalog.connect(*location).store.list("")]


# --------------------------------------------------------------------------- help


def test_help_documents_the_warehouse(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "--warehouse URI" in out and "LSM3_WAREHOUSE" in out
    assert "warehouse (the catalog plugin):" in out
    for command in WAREHOUSE_COMMANDS:
        assert re.search(rf"^\s+{command}\s", out, re.M), command
    code, out, _ = run(capsys, "scan", "--help")
    assert code == 0 and "with --warehouse: NAMESPACE.TABLE" in " ".join(out.split())


@pytest.mark.parametrize("command", WAREHOUSE_COMMANDS)
def test_warehouse_command_help_has_examples(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "examples:" in out and f"{command}" in out.split("examples:")[1]
    assert "--storage-option" in out and "--warehouse" in out


# --------------------------------------------------------------------------- commands


def test_namespaces(capsys: pytest.CaptureFixture[str], warehouse: Location) -> None:
    code, out, err = run(capsys, *wh(warehouse, "namespaces"))
    assert (code, out) == (1, ""), err  # nothing created there yet: a mistyped URI?
    assert_one_line_error(err, "no warehouse catalog")
    for ns in ("sales", "billing"):
        code, out, err = run(capsys, *wh(warehouse, "namespaces", "create", ns))
        assert code == 0 and f"created namespace {ns}" in out, err
    code, out, _ = run(capsys, *wh(warehouse, "namespaces"))
    assert out.splitlines() == ["billing", "sales"]
    assert run(capsys, *wh(warehouse, "namespaces", "list"))[1] == out

    code, _, err = run(capsys, *wh(warehouse, "namespaces", "create", "sales"))
    assert code == 1
    assert_one_line_error(err, "already exists")
    code, out, err = run(capsys, *wh(warehouse, "namespaces", "drop", "billing"))
    assert code == 0 and "dropped namespace billing" in out, err
    code, _, err = run(capsys, *wh(warehouse, "namespaces", "drop", "billing"))
    assert code == 1
    assert_one_line_error(err, "namespace 'billing' does not exist in the warehouse")
    assert run(capsys, *wh(warehouse, "namespaces"))[1].splitlines() == ["sales"]

    run(capsys, *wh(warehouse, "create", "sales.orders", "--schema", SCHEMA, "--primary-key", "id"))
    code, _, err = run(capsys, *wh(warehouse, "namespaces", "drop", "sales"))
    assert code == 1
    assert_one_line_error(err, "still holds 1 table(s) (orders)")


def test_tables_create_rename_drop(capsys: pytest.CaptureFixture[str], warehouse: Location) -> None:
    for ns in ("sales", "archive"):
        assert run(capsys, *wh(warehouse, "namespaces", "create", ns))[0] == 0
    for name in ("sales.orders", "sales.refunds", "archive.old"):
        code, out, err = run(
            capsys,
            *wh(warehouse, "create", name, "--schema", SCHEMA, "--primary-key", "id"),
            *("--buckets", "2", "--option", "row_group_rows=8192"),
        )
        assert code == 0, err
        assert out.startswith(f"created table {name} at ") and "2 bucket(s)" in out
    cat = catalog.connect(*warehouse)
    orders = cat.load_table("sales.orders")
    assert orders.table_schema.buckets == 2 and list(orders.primary_key) == ["id"]
    assert orders.table_schema.options["row_group_rows"] == 8192

    code, out, _ = run(capsys, *wh(warehouse, "tables"))
    assert out.splitlines() == ["archive.old", "sales.orders", "sales.refunds"]
    code, out, _ = run(capsys, *wh(warehouse, "tables", "sales"))
    assert out.splitlines() == ["sales.orders", "sales.refunds"]

    code, out, err = run(capsys, *wh(warehouse, "rename", "sales.refunds", "archive.refunds"))
    assert code == 0 and out == "renamed table sales.refunds to archive.refunds\n", err
    assert cat.list_tables("archive") == ["archive.old", "archive.refunds"]

    location = cat.describe_table("archive.old").location
    code, out, err = run(capsys, *wh(warehouse, "drop", "archive.old"))
    assert code == 0 and "dropped table archive.old (its files remain" in out, err
    assert cat.store.child(location).list("")  # still there: no --purge

    location = cat.describe_table("archive.refunds").location
    code, out, err = run(capsys, *wh(warehouse, "drop", "archive.refunds", "--purge"))
    assert code == 0 and out == "dropped table archive.refunds and deleted its files\n", err
    assert cat.store.child(location).list("") == []
    assert run(capsys, *wh(warehouse, "tables"))[1].splitlines() == ["sales.orders"]


def test_table_commands_take_namespace_table(
    capsys: pytest.CaptureFixture[str],
    warehouse: Location,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run(capsys, *wh(warehouse, "namespaces", "create", "sales"))[0] == 0
    code, _, err = run(
        capsys, *wh(warehouse, "create", "sales.orders", "--schema", SCHEMA, "--primary-key", "id")
    )
    assert code == 0, err
    (tmp_path / "orders.csv").write_text("id,name,amount\n1,ann,10.0\n2,bob,75.5\n3,cy,99.0\n")
    (tmp_path / "gone.csv").write_text("id\n3\n")

    code, out, err = run(
        capsys, *wh(warehouse, "write", "sales.orders", str(tmp_path / "orders.csv"))
    )
    assert code == 0 and "committed snapshot 1" in out, err
    code, out, err = run(capsys, *wh(warehouse, "tag", "sales.orders", "first"))
    assert code == 0, err
    code, _, err = run(
        capsys, *wh(warehouse, "write", "sales.orders", str(tmp_path / "gone.csv"), "--delete")
    )
    assert code == 0, err

    def jsonl(*argv: str) -> list[Any]:
        code, out, err = run(capsys, *wh(warehouse, *argv))
        assert code == 0, (argv, err)
        return [json.loads(line) for line in out.splitlines()]

    assert [r["id"] for r in jsonl("scan", "sales.orders", "--format", "jsonl")] == [1, 2]
    scan = jsonl(
        "scan", "sales.orders", "--tag", "first", "--filter", "amount > 50", "--format", "jsonl"
    )
    assert [r["id"] for r in scan] == [2, 3]
    assert jsonl("get", "sales.orders", "2") == [{"id": 2, "name": "bob", "amount": 75.5}]
    changes = jsonl("changes", "sales.orders", "--from", "1", "--format", "jsonl")
    assert [(r["_row_kind"], r["id"]) for r in changes] == [("-D", 3)]
    assert [s["snapshot_id"] for s in jsonl("snapshots", "sales.orders", "--format", "jsonl")] == [
        1,
        2,
    ]
    code, out, _ = run(capsys, *wh(warehouse, "tags", "sales.orders"))
    assert code == 0 and "first" in out
    code, out, err = run(
        capsys, *wh(warehouse, "alter", "sales.orders", "--add-column", "note:string")
    )
    assert code == 0 and "committed schema 1" in out, err
    code, out, _ = run(capsys, *wh(warehouse, "schema", "sales.orders", "--json"))
    assert [f["name"] for f in json.loads(out)["fields"]] == ["id", "name", "amount", "note"]
    code, out, _ = run(capsys, *wh(warehouse, "inspect", "sales.orders", "--json", "--exact"))
    assert code == 0 and json.loads(out)["rows_live"] == 2

    # The same table through the catalog's API, and with the warehouse from the environment.
    assert catalog.connect(*warehouse).load_table("sales.orders").schema.names[-1] == "note"
    monkeypatch.setenv("LSM3_WAREHOUSE", warehouse[0])
    so = [f"--storage-option={k}={v}" for k, v in (warehouse[1] or {}).items()]
    code, out, err = run(capsys, "get", "sales.orders", "1", *so)
    assert code == 0 and json.loads(out)["name"] == "ann", err
    code, out, _ = run(capsys, "tables", *so)
    assert out == "sales.orders\n"


def test_a_uri_is_still_a_uri_with_a_warehouse(
    capsys: pytest.CaptureFixture[str],
    local_uri: Location,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LSM3_WAREHOUSE", str(tmp_path / "wh"))
    code, out, err = run(capsys, "create", local_uri[0], "--schema", SCHEMA, "--primary-key", "id")
    assert code == 0 and f"created table file://{local_uri[0]} (" in out, err
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "scan", "./t")
    assert code == 0 and "(0 rows)" in out, err
    assert not (tmp_path / "wh").exists()  # the warehouse was never touched


def test_options_given_after_the_command(
    capsys: pytest.CaptureFixture[str], warehouse: Location
) -> None:
    uri, options = warehouse
    so = [f"--storage-option={k}={v}" for k, v in (options or {}).items()]
    assert run(capsys, "namespaces", "create", "sales", "--warehouse", uri, *so)[0] == 0
    create = ["create", "sales.t", "--schema", SCHEMA, "--primary-key", "id"]
    assert run(capsys, *create, "--warehouse", uri, *so)[0] == 0
    # The option after the command wins over the one before it.
    code, out, err = run(capsys, "--warehouse", "/elsewhere", "tables", f"--warehouse={uri}", *so)
    assert (code, out) == (0, "sales.t\n"), err


# --------------------------------------------------------------------------- errors


def test_unknown_tables_and_namespaces_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], warehouse: Location
) -> None:
    assert run(capsys, *wh(warehouse, "namespaces", "create", "sales"))[0] == 0
    for argv in (
        ["scan", "sales.nope"],
        ["get", "sales.nope", "1"],
        ["inspect", "sales.nope"],
        ["alter", "sales.nope", "--drop-column", "name"],
        ["drop", "sales.nope"],
        ["rename", "sales.nope", "sales.other"],
    ):
        code, out, err = run(capsys, *wh(warehouse, *argv))
        assert (code, out) == (1, ""), argv
        assert_one_line_error(err, "table sales.nope does not exist")
    code, _, err = run(capsys, *wh(warehouse, "scan", "nowhere.t"))
    assert code == 1
    assert_one_line_error(err, "namespace 'nowhere' does not exist either")
    code, _, err = run(
        capsys, *wh(warehouse, "create", "nowhere.t", "--schema", SCHEMA, "--primary-key", "id")
    )
    assert code == 1
    assert_one_line_error(err, "namespaces create nowhere'")
    code, _, err = run(capsys, *wh(warehouse, "tables", "nowhere"))
    assert code == 1
    assert_one_line_error(err, "namespace 'nowhere' does not exist in the warehouse")

    for name in ("sales.a", "sales.b"):
        main(wh(warehouse, "create", name, "--schema", SCHEMA, "--primary-key", "id"))
    capsys.readouterr()
    code, _, err = run(
        capsys, *wh(warehouse, "create", "sales.a", "--schema", SCHEMA, "--primary-key", "id")
    )
    assert code == 1
    assert_one_line_error(err, "table sales.a already exists in the warehouse")
    code, _, err = run(capsys, *wh(warehouse, "rename", "sales.a", "sales.b"))
    assert code == 1
    assert_one_line_error(err, "table sales.b already exists")
    code, _, err = run(capsys, *wh(warehouse, "rename", "sales.a", "nowhere.a"))
    assert code == 1
    assert_one_line_error(err, "namespace 'nowhere' does not exist")


HOSTILE = [
    "orders",  # no namespace
    "a.b.c",
    "sales.",
    ".orders",
    "catalog.t",  # the catalog's own prefix
    "sales..orders",
    "sales.ord ers",
    "sales.t-1",
    "sales.t;rm",
    "sales.\u0430rders",  # Cyrillic a
    "1sales.t",
    "sales.t\x00",
    "sales." + "x" * 129,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_usage_errors_that_write_nothing(
    capsys: pytest.CaptureFixture[str], local_uri: Location, name: str
) -> None:
    warehouse = local_uri
    assert run(capsys, *wh(warehouse, "namespaces", "create", "sales"))[0] == 0
    assert (
        run(
            capsys, *wh(warehouse, "create", "sales.ok", "--schema", SCHEMA, "--primary-key", "id")
        )[0]
        == 0
    )
    capsys.readouterr()
    before = objects(warehouse)
    for argv in (
        ["create", name, "--schema", SCHEMA, "--primary-key", "id"],
        ["scan", name],
        ["write", name, "rows.csv"],
        ["drop", name, "--purge"],
        ["rename", "sales.ok", name],
        ["rename", name, "sales.other"],
    ):
        code, out, err = run(capsys, *wh(warehouse, *argv))
        assert (code, out) == (2, ""), (argv, err)
        assert "invalid" in err or "reserved" in err or "two parts" in err, err
        assert_one_line_error(err)
    assert objects(warehouse) == before
    assert catalog.connect(*warehouse).list_tables() == ["sales.ok"]


@pytest.mark.parametrize("namespace", ["catalog", "sal-es", "..", "a/b", "", "é"])
def test_hostile_namespaces_are_usage_errors(
    capsys: pytest.CaptureFixture[str], local_uri: Location, namespace: str
) -> None:
    for argv in (["namespaces", "create", namespace], ["tables", namespace]):
        code, _, err = run(capsys, *wh(local_uri, *argv))
        assert code == 2, (argv, err)
        assert_one_line_error(err)
    assert not Path(local_uri[0]).exists()


def test_usage_errors(capsys: pytest.CaptureFixture[str], local_uri: Location) -> None:
    for argv, message in (
        (["tables"], "needs a warehouse: pass --warehouse URI or set LSM3_WAREHOUSE"),
        (["namespaces"], "needs a warehouse"),
        (["drop", "sales.t"], "needs a warehouse"),
        (["rename", "sales.a", "sales.b"], "needs a warehouse"),
        ([*wh(local_uri, "namespaces", "create")], "needs the NAME"),
        ([*wh(local_uri, "namespaces", "list", "extra")], "takes no NAME"),
        ([*wh(local_uri, "namespaces", "rename", "x")], "invalid choice"),
        ([*wh(local_uri, "rename", "sales.a")], "required"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert_one_line_error(err, message)
    assert not Path(local_uri[0]).exists()


def test_a_warehouse_without_a_catalog_and_a_missing_bucket_are_errors(
    capsys: pytest.CaptureFixture[str], s3_bucket_uri: Location
) -> None:
    code, out, err = run(capsys, *wh(s3_bucket_uri, "tables"))
    assert (code, out) == (1, ""), err  # listing a warehouse never created: a mistyped URI
    assert_one_line_error(err, "no warehouse catalog")
    missing = ("s3://no-such-bucket-lsm3-wh/wh", s3_bucket_uri[1])
    code, _, err = run(capsys, *wh(missing, "namespaces", "create", "sales"))
    assert code == 1
    assert_one_line_error(err)


# --------------------------------------------------------------------------- the plugin hook


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: Any

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


def use_plugins(monkeypatch: pytest.MonkeyPatch, *entry_points: FakeEntryPoint) -> None:
    monkeypatch.setattr("lsm3.cli.plugins.entry_points", lambda group: list(entry_points))


REAL = FakeEntryPoint("catalog", "catalog.cli:plugin", catalog.cli.plugin)


def test_warehouse_without_its_plugin_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, local_uri: Location
) -> None:
    use_plugins(monkeypatch)
    for argv in (
        ["--warehouse", local_uri[0], "tables"],
        [f"--warehouse={local_uri[0]}", "namespaces", "create", "sales"],
        ["scan", "sales.orders", "--warehouse", local_uri[0]],
    ):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, ""), argv
        assert_one_line_error(err, "--warehouse needs the warehouse catalog plugin")
        assert "catalog.cli:plugin" in err and "lsm3.cli" in err
    code, _, err = run(capsys, "tables")
    assert code == 2 and "invalid choice: 'tables'" in err
    # Only the environment variable: a warning, and TABLE arguments stay URIs.
    monkeypatch.setenv("LSM3_WAREHOUSE", local_uri[0])
    code, _, err = run(capsys, "scan", "sales.orders")
    assert code == 1
    warning, error = err.splitlines()
    assert warning.startswith("lsm3: warning: LSM3_WAREHOUSE is set but the warehouse catalog")
    assert error.startswith("lsm3: error: no lsm3 table")


def test_a_broken_plugin_is_skipped_with_a_warning(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    local_uri: Location,
) -> None:
    def half_done(cli: CliExtension) -> None:
        cli.add_global_option("--half", action="store_true", help="never seen")
        cli.add_command("half", "a command that never appears", "  lsm3 half\n")
        raise RuntimeError("half-way through")

    def clashes(cli: CliExtension) -> None:
        cli.add_command("scan", "a second scan", "  lsm3 scan\n")

    class NoHelp:
        def open_table(self, args: argparse.Namespace, name: str) -> None:
            return None

    use_plugins(
        monkeypatch,
        FakeEntryPoint("a_missing", "nowhere:plugin", ModuleNotFoundError("No module 'nowhere'")),
        FakeEntryPoint("b_not_callable", "x:NOT_CALLABLE", 42),
        FakeEntryPoint("c_half", "x:half_done", half_done),
        FakeEntryPoint("d_clash", "x:clashes", clashes),
        FakeEntryPoint("e_bad_resolver", "x:bad", lambda cli: cli.add_resolver(NoHelp())),
        REAL,
    )
    code, out, err = run(capsys, "--help")
    assert code == 0 and "--warehouse" in out and "--half" not in out and " half " not in out
    warnings = err.splitlines()
    assert len(warnings) == 5 and all(
        w.startswith("lsm3: warning: skipping the plugin ") for w in warnings
    )
    for text in (
        "a_missing (nowhere:plugin)",
        "not callable",
        "half-way through",
        "d_clash",
        "no table_help, create_table",
    ):
        assert text in err, text
    # The rest of the command line works, the warehouse included.
    code, out, err = run(capsys, *wh(local_uri, "namespaces", "create", "sales"))
    assert code == 0 and "created namespace sales" in out
    assert run(capsys, "--half", "tables")[0] == 2


def test_a_plugin_can_resolve_table_arguments(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, local_uri: Location
) -> None:
    """The hook is generic: a resolver of @alias names, with its own global option."""
    uri = local_uri[0]
    lsm3.create_table(uri, pa.schema([("id", pa.int64())]), primary_key="id")

    class Aliases:
        table_help = "@ALIAS with --alias"

        def open_table(self, args: argparse.Namespace, name: str) -> lsm3.Table | None:
            if not name.startswith("@"):
                return None
            assert name == "@" + args.alias
            return lsm3.open_table(uri)

        def create_table(self, *args: Any, **kwargs: Any) -> lsm3.Table | None:
            return None

    def aliases(cli: CliExtension) -> None:
        cli.add_global_option("--alias", default="orders", help="the alias")
        cli.add_resolver(Aliases())

    use_plugins(monkeypatch, FakeEntryPoint("aliases", "x:aliases", aliases))
    code, out, err = run(capsys, "inspect", "@orders", "--json")
    assert code == 0 and json.loads(out)["uri"] == f"file://{uri}", err
    assert run(capsys, "--alias", "other", "inspect", "@orders")[0] == 1  # AssertionError: 1 line
    code, out, _ = run(capsys, "get", "--help")
    assert "@ALIAS with --alias" in " ".join(out.split()) and "--warehouse" not in out


# --------------------------------------------------------------------------- README


def test_readme_warehouse_block_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's warehouse block succeeds, in order, with its LSM3_WAREHOUSE export."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "--warehouse" in b]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    (tmp_path / "orders.csv").write_text("id,customer,amount\n1,ann,10.0\n2,bob,75.5\n")
    ran = 0
    for line in blocks[0].replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] == "export":
            key, _, value = argv[1].partition("=")
            monkeypatch.setenv(key, value)
            continue
        assert argv[0] == "lsm3", argv
        code, _, err = run(capsys, *argv[1:])
        assert code == 0, (argv, err)
        ran += 1
    assert ran >= 8


# --------------------------------------------------------------------------- import direction


def test_lsm3_never_imports_catalog_or_compactor() -> None:
    """Imports point one way: the warehouse reaches the lsm3 CLI only as a plugin."""
    root = Path(lsm3.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("catalog", "compactor")
            ]
    assert offenders == []
