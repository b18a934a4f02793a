"""The CLI's own surface: --version, and --help naming every default an operator would otherwise guess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "reconciler 0.1.0"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("run", ["--resync RESYNC", "(default: 30.0)", "(default: 127.0.0.1:9479)", "(default: 16)"]),
        ("apply", ["(default: 120.0)", "(default: 4)", "(default: specs)"]),
        ("status", ["(default: http://127.0.0.1:9479)"]),
    ],
)
def test_help_shows_the_defaults(command: str, shown: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    assert all(s in out for s in shown), out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_validate_does_not_import_ssh_or_the_engine() -> None:
    """Each command imports what it runs: `validate` starts without asyncssh and the engine."""
    code = (
        "import sys; from reconciler.cli import main; main(['validate', 'specs']); "
        "print(sorted(m for m in sys.modules if m.startswith(('asyncssh', 'reconciler.engine'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip().endswith("[]"), out


def test_plan_leaves_the_spec_libraries_to_its_load_child() -> None:
    """`plan` and `apply` import SSH and the engine while their spec-load child imports pydantic, YAML and
    Jinja and reads the specs: the parent imports none of those (nor httpx, the daemon's etcd client)."""
    code = (
        "import sys; from reconciler.cli import _load; from pathlib import Path; _load(Path('specs'), Path('/nonexistent')); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'yaml', 'jinja2', 'httpx')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip().endswith("[]"), out
