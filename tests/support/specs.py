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


def inventory(n: int, base_port: int, keys: Path) -> str:
    """Host documents for `n` emulated masters on 127.0.0.1 (bench/fleetsim.py serves them from `base_port` on)."""
    return "".join(
        f"""---
apiVersion: reconciler/v1
kind: Host
metadata:
  name: sim-{i:04d}
  labels: {{role: master}}
spec:
  address: 127.0.0.1
  port: {base_port + i}
  identityFile: {keys / "id_ed25519"}
  knownHosts: {keys / "known_hosts"}
"""
        for i in range(n)
    )
