"""The code is linted and formatted: ruff (settings in pyproject.toml) finds nothing, formatting changes nothing,
shellcheck finds nothing in the shell scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_ruff_format_changes_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, "`ruff format` would change:\n" + proc.stdout[-5000:] + proc.stderr[-2000:]


def test_shellcheck_finds_nothing_in_the_shell_scripts() -> None:
    """The observe script (shipped in the package) and the repository's scripts; what shellcheck flags on purpose
    is said so in place (`# shellcheck disable=...` with the reason)."""
    scripts = [
        *sorted((REPO / "reconciler").rglob("*.sh")),
        *sorted(
            p
            for p in (REPO / "scripts").rglob("*")
            if p.is_file() and (p.suffix == ".sh" or p.read_bytes().startswith(b"#!"))
        ),
        REPO / ".ci/run",
    ]
    proc = subprocess.run(
        ["shellcheck", "-x", "-s", "bash", *map(str, scripts)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
