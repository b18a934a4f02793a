"""Spec directories for tests: a writable copy of the bundled specs, and the edits tests make to them.

Used by tests/unit/conftest.py (the `specs` fixture) and by tests that need a variant.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "specs"


def copy_specs(dest: Path, *, ha: bool = True) -> Path:
    """A writable copy of the bundled specs at `dest` (without specs/ha/ unless `ha`)."""
    shutil.copytree(BUNDLED, dest)
    if not ha:
        shutil.rmtree(dest / "ha", ignore_errors=True)
    return dest


def replace_once(path: Path, old: str, new: str) -> None:
    """Edit a spec file where `old` appears exactly once (a test that edits nothing would pass for nothing)."""
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name}: {old!r} appears {text.count(old)} times"
    path.write_text(text.replace(old, new))
