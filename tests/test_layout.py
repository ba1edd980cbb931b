"""The package layout of lsm3 holds: layers import downwards only, and ``import lsm3`` stays
light (no CLI, no test support, no Ray, no boto3, fsspec, adlfs or gcsfs until such a table is
opened, no ``fcntl``, which Windows lacks).

Layers, lowest first: ``lsm3.errors``; ``lsm3.io`` (object stores); ``lsm3.format`` (what
docs/FORMAT.md specifies); ``lsm3.read`` and ``lsm3.write``; the table facade; ``lsm3.cli``.
``lsm3.testing`` sits beside them and the library never imports it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lsm3"

#: What each layer must never import (type-only imports under TYPE_CHECKING included, unless
#: listed in TYPE_ONLY_ALLOWED).
FORBIDDEN = {
    "io": ("lsm3.format", "lsm3.write", "lsm3.read", "lsm3.table", "lsm3.cli", "lsm3.testing"),
    "format": ("lsm3.write", "lsm3.read", "lsm3.table", "lsm3.cli", "lsm3.testing"),
    "read": ("lsm3.write", "lsm3.table", "lsm3.cli", "lsm3.testing"),
    "write": ("lsm3.table", "lsm3.cli", "lsm3.testing"),
}
#: write and read may name the Table type in annotations, never import it at run time.
TYPE_ONLY_ALLOWED = {"read": ("lsm3.table",), "write": ("lsm3.table",)}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> list[tuple[str, list[str], bool]]:
    """(module, imported names, type-only) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                type_only.update(id(n) for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], id(node) in type_only))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [a.name for a in node.names]
            # ``from lsm3 import x`` imports the module lsm3.x when x is one.
            modules = [f"{node.module}.{n}" for n in names] if node.module == "lsm3" else []
            found.append((node.module, names, id(node) in type_only))
            found.extend((m, [], id(node) in type_only) for m in modules)
    return found


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_downwards_only(layer: str) -> None:
    assert _modules(layer), f"lsm3/{layer} has no modules"
    allowed_for_types = TYPE_ONLY_ALLOWED.get(layer, ())
    bad = []
    for path in _modules(layer):
        for module, _names, type_only in imports_of(path):
            for prefix in FORBIDDEN[layer]:
                if _within(module, prefix) and not (type_only and prefix in allowed_for_types):
                    bad.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not bad, "\n".join(bad)


def test_only_testing_imports_testing_and_only_cli_imports_cli() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        for module, _names, _type_only in imports_of(path):
            if _within(module, "lsm3.testing") and rel.parts[0] != "testing":
                bad.append(f"lsm3/{rel} imports {module}")
            if _within(module, "lsm3.cli") and rel.parts[0] not in ("cli", "__main__.py"):
                bad.append(f"lsm3/{rel} imports {module}")
    assert not bad, "\n".join(bad)


def test_no_module_imports_private_names_of_another() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, names, _type_only in imports_of(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if _within(module, "lsm3") and private:
                bad.append(f"{path.relative_to(PACKAGE.parent)}: from {module} import {private}")
    assert not bad, "\n".join(bad)


def test_every_package_says_what_it_holds() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"{init.relative_to(PACKAGE.parent)} needs a docstring"


def test_only_the_ray_package_imports_ray() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "ray" in path.parents:
            continue
        for module, _names, _type_only in imports_of(path):
            if _within(module, "ray") or _within(module, "lsm3.ray"):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not bad, "\n".join(bad)


#: Modules ``import lsm3`` must not load: the CLI, test support, Ray and every cloud library
#: (loaded only when a table on that store is opened).
HEAVY = (
    "boto3", "botocore", "fsspec", "s3fs", "adlfs", "azure", "gcsfs", "google", "lsm3.cli",
    "lsm3.testing", "lsm3.io.fsspec", "lsm3.io.s3", "lsm3.ray", "ray.",
)  # fmt: skip
# (fcntl is not listed: pyarrow imports pandas where it is installed, and pandas imports
# subprocess, which imports fcntl on POSIX. That lsm3 itself works without fcntl, as on
# Windows, is checked below by running it where importing fcntl fails.)


def test_import_lsm3_loads_no_cli_testing_ray_or_cloud_library() -> None:
    check = (
        "import sys, lsm3; "
        f"print([m for m in sys.modules if m.startswith({HEAVY!r}) or m == 'ray'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_import_compactor_loads_no_ray() -> None:
    check = (
        "import sys, lsm3, compactor; print([m for m in sys.modules "
        "if m == 'ray' or m.startswith(('ray.', 'lsm3.ray', 'compactor.ray'))])"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_opening_a_local_table_loads_no_boto3(tmp_path: Path) -> None:
    script = (
        "import sys, lsm3, pyarrow as pa\n"
        f"t = lsm3.create_table({str(tmp_path / 't')!r}, pa.schema([('id', pa.int64())]), 'id')\n"
        "w = t.writer(); w.upsert(pa.table({'id': [1]})); w.commit()\n"
        "assert t.to_arrow().num_rows == 1\n"
        "print([m for m in sys.modules if m.startswith(('boto3', 'botocore'))])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


#: Run before ``import lsm3`` in a subprocess: ``import fcntl`` (and msvcrt) fail, as on a
#: platform that lacks them.
_WITHOUT_FCNTL = """
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name in ("fcntl", "msvcrt"):
            raise ImportError(f"No module named {name!r} (simulated)")
        return None
sys.meta_path.insert(0, _Refuse())
sys.modules.pop("fcntl", None)
"""


def test_lsm3_works_without_fcntl(tmp_path: Path) -> None:
    """``import lsm3`` and local tables work where ``fcntl`` does not exist (Windows); the
    local store's put_if_match, the one user of a file lock, refuses clearly there."""
    script = _WITHOUT_FCNTL + (
        "import lsm3, pyarrow as pa\n"
        "from lsm3.errors import StorageError\n"
        "from lsm3.io.local import LocalStore\n"
        f"t = lsm3.create_table({str(tmp_path / 't')!r}, pa.schema([('id', pa.int64())]), 'id')\n"
        "w = t.writer(); w.upsert(pa.table({'id': [1, 2]})); w.commit()\n"
        "assert t.to_arrow().num_rows == 2\n"
        f"store = LocalStore({str(tmp_path / 's')!r})\n"
        "store.put('k', b'v1')\n"
        "try:\n"
        "    store.put_if_match('k', b'v2', store.get_with_etag('k')[1])\n"
        "except StorageError as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "neither fcntl nor msvcrt" in out.stdout and "put_if_absent" in out.stdout
