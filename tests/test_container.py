"""The compactor image starts: what the ``Dockerfile`` copies is enough to run its command, and
the command ``docker-compose.yml`` gives the compactor service parses.

No Docker engine is needed: the test copies exactly the paths of the Dockerfile's ``COPY``
lines into an empty directory, installs that directory into a fresh virtual environment (the
dependencies come from this environment's site-packages, so nothing is downloaded) and runs
the image's ``CMD`` and ``python -m compactor --help`` there, from an empty working directory
so that nothing of the checkout can stand in for a file the image lacks.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) per Dockerfile instruction, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def copy_like_dockerfile(dockerfile: Path, dest: Path) -> list[str]:
    """Copy what the ``COPY`` lines name (from the build context) under ``dest`` (the image's
    WORKDIR at the time); returns the copied sources."""
    copied = []
    for word, rest in dockerfile_instructions(dockerfile.read_text()):
        if word != "COPY":
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        *sources, target = parts
        for src in sources:
            path = ROOT / src
            where = dest / target if target not in (".", "./") else dest
            if path.is_dir():
                shutil.copytree(path, where if not target.endswith("/") else where / src)
            else:
                where.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, where / Path(src).name)
            copied.append(src)
    return copied


def _json_command(rest: str) -> list[str]:
    import json

    value: list[str] = json.loads(rest)
    return value


#: Install the copied tree alone: no dependency resolution, no index, no build environment.
_OFFLINE = ["--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed"]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A fresh venv with the Dockerfile's files installed (not editable), and the Dockerfile."""
    base = tmp_path_factory.mktemp("image")
    src = base / "src"
    src.mkdir()
    copied = copy_like_dockerfile(ROOT / "Dockerfile", src)
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies (pyarrow, boto3, pip, setuptools) from this environment, as a plain
    # path: its .pth files (the editable install of this checkout) are not processed.
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", *_OFFLINE, str(src)],
        capture_output=True,
        text=True,
        env=env,
        cwd=base,
        timeout=180,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    empty = base / "cwd"
    empty.mkdir()
    return {"py": py, "bin": env_dir / "bin", "env": env, "cwd": empty, "copied": copied}


def _run(image: dict[str, Any], command: list[str]) -> subprocess.CompletedProcess[str]:
    exe = command[0]
    resolved = image["py"] if exe in ("python", "python3") else image["bin"] / exe
    assert Path(resolved).exists(), f"{exe} is not installed in the image"
    return subprocess.run(
        [str(resolved), *command[1:]],
        capture_output=True,
        text=True,
        env=image["env"],
        cwd=image["cwd"],
        timeout=120,
    )


def test_dockerfile_copies_every_package_the_compactor_imports(image: dict[str, Any]) -> None:
    assert {"lsm3", "catalog", "compactor"} <= set(image["copied"]), image["copied"]


def test_the_image_command_runs(image: dict[str, Any]) -> None:
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    command = _json_command(next(rest for word, rest in instructions if word == "CMD"))
    for argv in (command, ["python", "-m", "compactor", "--help"]):
        result = _run(image, argv)
        assert result.returncode == 0, f"{argv}: {result.stderr[-2000:]}"
        assert "usage:" in result.stdout


def test_the_installed_package_is_the_copied_one(image: dict[str, Any]) -> None:
    result = _run(image, ["python", "-c", "import catalog, lsm3; print(lsm3.__file__)"])
    assert result.returncode == 0, result.stderr
    assert str(ROOT) not in result.stdout, "the checkout, not the image, was imported"


def test_compose_commands_name_what_the_image_has(image: dict[str, Any]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    built = {n: s for n, s in compose["services"].items() if "build" in s}
    assert built, "docker-compose.yml builds no service from the Dockerfile"
    for name, service in built.items():
        command = service.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        entry = service.get("entrypoint")
        argv = (shlex.split(entry) if isinstance(entry, str) else list(entry or [])) + list(
            command or []
        )
        assert argv, f"service {name} has no command"
        if argv[:3] == ["python", "-m", "compactor"] or argv[0] == "lsm3-compactor":
            args = argv[3:] if argv[0] == "python" else argv[1:]
            check = (
                "import sys; import compactor.job; from compactor.job_args import parse_args; "
                "parse_args(sys.argv[1:])"
            )
            result = _run(image, ["python", "-c", check, *args])
            assert result.returncode == 0, f"service {name}: {argv}: {result.stderr[-2000:]}"
        else:
            result = _run(image, [argv[0], "--help"])
            assert result.returncode == 0, f"service {name}: {argv[0]}: {result.stderr[-2000:]}"


def test_depends_on_names_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names = set(compose["services"])
    for name, service in compose["services"].items():
        for dep in service.get("depends_on") or {}:
            assert dep in names, f"service {name} depends on unknown service {dep}"


def test_license_uses_the_spdx_string_form() -> None:
    """setuptools deprecates the ``license = {text = ...}`` table (warning on every install)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)
    requires = project["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=") for r in requires)
    floor = next(r for r in requires if r.startswith("setuptools")).split(">=")[1].split(",")[0]
    assert tuple(int(x) for x in floor.split(".")[:1]) >= (77,), requires
