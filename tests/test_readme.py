"""The README runs as printed.

Every ```python block runs in a fresh interpreter in an empty directory (the S3 example against
a moto server, whose endpoint it reads from ``AWS_ENDPOINT_URL``), and prints what its comments
say it prints. ```sh blocks need a shell session, servers or input files (orders.csv, a Kafka
consumer), so they are not run; instead every ``lsm3`` and ``lsm3-compactor`` command in them
must parse with the real parsers (commands, flags and their values), which catches renamed or
removed options. Every local link of the README and docs points at a file of the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lsm3.testing.devserver import LocalS3

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[tuple[int, str]]:
    """(line number, text) of each fenced block of ``language``."""
    out = []
    for m in re.finditer(r"^```" + language + r"\n(.*?)^```", README, re.M | re.S):
        out.append((README[: m.start()].count("\n") + 1, m.group(1)))
    return out


PYTHON_BLOCKS = blocks("python")


def test_the_readme_has_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 3 and len(blocks("sh")) >= 4


@pytest.mark.parametrize("line,code", PYTHON_BLOCKS, ids=[f"line{n}" for n, _ in PYTHON_BLOCKS])
def test_python_block_runs_as_printed(
    line: int, code: str, tmp_path: Path, moto_server: LocalS3
) -> None:
    if "az://my-container" in code or "gs://my-bucket" in code:
        # Configuration for a real Azure or GCS account: checked to compile, not run (the
        # tables opened this way on Azurite and the GCS emulator: tests/test_fsspec.py).
        compile(code, f"README.md:{line}", "exec")
        return
    moto_server.create_bucket("lsm3")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LSM3_"))}
    env.update(
        AWS_ENDPOINT_URL=moto_server.endpoint_url,
        AWS_ACCESS_KEY_ID=moto_server.access_key_id,
        AWS_SECRET_ACCESS_KEY=moto_server.secret_access_key,
        AWS_REGION=moto_server.region,
        AWS_EC2_METADATA_DISABLED="true",
    )
    code = code.replace("s3://lsm3/readme/", f"s3://lsm3/readme-{tmp_path.name}/")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, f"README line {line}:\n{result.stderr[-3000:]}"
    expected = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s+#\s*(.*)$", code, re.M)]
    printed = result.stdout.splitlines()
    assert len(printed) == len(expected), (printed, expected)
    for got, want in zip(printed, expected, strict=True):
        want = re.sub(r"\s*\(.*\)$", "", want)  # a trailing "(time travel)" is a remark
        assert got.startswith(want), f"README line {line}: printed {got!r}, says {want!r}"


def _commands(text: str) -> list[str]:
    joined = text.replace("\\\n", " ")
    out = []
    for raw in joined.splitlines():
        for part in re.split(r"&&|\|", raw):
            words = shlex.split(part, comments=True)
            if words and words[0] in ("lsm3", "lsm3-compactor"):
                out.append(part.strip())
    return out


SH_COMMANDS = [c for _, text in blocks("sh") for c in _commands(text)]


@pytest.mark.parametrize("command", SH_COMMANDS)
def test_sh_block_commands_parse(command: str) -> None:
    words = shlex.split(command, comments=True)
    if words[0] == "lsm3":
        from lsm3.cli import build_parser

        build_parser().parse_args(words[1:])
    else:
        from compactor.job_args import parse_args

        parse_args(words[1:])


def test_local_links_resolve() -> None:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    # git's list (a checkout), plus the Markdown files on disk (an unpacked copy without .git)
    tracked = {Path(p).name for p in listed}
    tracked |= {p.name for p in ROOT.glob("*.md")} | {p.name for p in ROOT.glob("*/*.md")}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
        for name in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", text):
            assert name in tracked, f"{doc.name} names {name}, which is not in the repository"
