"""``lsm3 devserver``: a local S3 in one command. It prints the environment to export, and a
table created with that environment works; SIGTERM stops it and its server cleanly."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import lsm3
from lsm3.cli import main


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LSM3_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_devserver_prints_the_environment_and_serves_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsm3", "devserver", "--engine", "moto", "--bucket", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        lines = []
        while not any(line.startswith("export ") for line in lines):
            line = proc.stdout.readline()
            assert line, f"devserver ended early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line)
        export = next(line for line in lines if line.startswith("export "))
        pairs = dict(word.split("=", 1) for word in shlex.split(export)[1:])
        assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(pairs)
        for key, value in pairs.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("LSM3_WAREHOUSE", raising=False)
        uri = "s3://demo/orders"
        assert main(["create", uri, "--schema", "id:int64,name:string", "--primary-key", "id"]) == 0
        assert lsm3.open_table(uri).current_snapshot() is None
        capsys.readouterr()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    assert proc.stdout is not None and "stopped" in proc.stdout.read()


def test_python_m_lsm3_testing_devserver_says_what_it_is() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lsm3.testing.devserver", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert result.returncode == 0 and "lsm3 devserver" in result.stdout


def test_devserver_refuses_data_dir_for_moto(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["devserver", "--engine", "moto", "--data-dir", "x"])
    assert code == 1 and "--data-dir" in capsys.readouterr().err
