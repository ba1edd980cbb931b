"""Virtualenvs for the generator and the peers, created on demand and reused.

Each peer gets its own venv because their pins conflict (pypaimon needs
pyarrow<20, deltalake needs >=21). A venv is reused while the sha256 of its
requirements file matches the stamp written after a successful install, so editing
a pin rebuilds it and an interrupted install is retried.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from bench.workloads import BENCH_DIR, REPO_DIR

VENVS_DIR = BENCH_DIR / ".venvs"
REQUIREMENTS_DIR = BENCH_DIR / "requirements"
MAIN_ENV = "main"
STAMP = ".bench-requirements.sha256"


class EnvError(RuntimeError):
    """A venv could not be created or its requirements not installed."""


def main_python() -> Path:
    """The project's own venv (lsm3 + pyarrow 26); falls back to the runner's interpreter."""
    candidate = REPO_DIR / ".venv" / "bin" / "python"
    return candidate if candidate.exists() else Path(sys.executable)


def requirements_file(env: str) -> Path:
    return REQUIREMENTS_DIR / f"{env}.txt"


def env_python(env: str) -> Path:
    return main_python() if env == MAIN_ENV else VENVS_DIR / env / "bin" / "python"


def _requirements_hash(env: str) -> str:
    return hashlib.sha256(requirements_file(env).read_bytes()).hexdigest()


def env_is_current(env: str) -> bool:
    if env == MAIN_ENV:
        return True
    stamp = VENVS_DIR / env / STAMP
    return (
        env_python(env).exists()
        and stamp.exists()
        and stamp.read_text().strip() == _requirements_hash(env)
    )


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise EnvError(f"{' '.join(cmd[:4])}... failed (exit {done.returncode}); see {log}")


def ensure_env(env: str, quiet: bool = False) -> Path:
    """Create/refresh venv `env` from bench/requirements/<env>.txt; return its python."""
    if env_is_current(env):
        return env_python(env)
    venv = VENVS_DIR / env
    log = VENVS_DIR / f"{env}.log"
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"[env] preparing {venv} from {requirements_file(env).name} (log: {log})")
    if not env_python(env).exists():
        _run([sys.executable, "-m", "venv", str(venv)], log)
    pip = [str(env_python(env)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "-r", str(requirements_file(env))], log)
    (venv / STAMP).write_text(_requirements_hash(env) + "\n")
    return env_python(env)
