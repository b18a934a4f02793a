"""The observation contract: the real observe script (reconciler/observe/observe.sh, run here with bash on real
files) and the in-memory host (transport/fake.py) answer the same for the same host state, as the parser reads
them. What the fake leaves out (symlinks, devices, systemd, certificates) is proven against real hosts elsewhere
(test_observe_sh_hostile.py and test_observe_sh_attacks.py beside this file, the testbed); here: regular files of
every size around the read limit, missing files, directories, modes, an unchanged file answered as unchanged, and
the framing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.observe.facts import observe_argv, parse_observation
from reconciler.observe.snapshot import FileFact, HostSnapshot
from reconciler.transport.fake import SimFile, SimHost

pytestmark = pytest.mark.host

LIMIT = 64


def states(root: Path) -> dict[str, tuple[bytes, int] | None]:
    """path -> (content, mode), or None for a directory; a path not listed is missing."""
    return {
        f"{root}/small": (b"KEY=value\n", 0o644),
        f"{root}/secret": (b"token,user,1\n", 0o600),
        f"{root}/empty": (b"", 0o644),
        f"{root}/at-limit": (b"x" * LIMIT, 0o644),
        f"{root}/over-limit": (b"y" * (LIMIT + 1), 0o640),
        f"{root}/binary": (bytes(range(256)), 0o644),
        f"{root}/dir": None,
    }


def real(root: Path, paths: dict[str, int], known: HostSnapshot | None = None) -> HostSnapshot:
    for path, state in states(root).items():
        p = Path(path)
        if state is None:
            p.mkdir(exist_ok=True)
            p.chmod(0o755)
        elif not p.exists():
            p.write_bytes(state[0])
            p.chmod(state[1])
    out = subprocess.run(observe_argv(paths, [], [], known=known), capture_output=True, timeout=60, check=True)
    return parse_observation("h", out.stdout.decode(), paths=list(paths), known=known)


def fake(root: Path, paths: dict[str, int], known: HostSnapshot | None = None, host: SimHost | None = None):  # type: ignore[no-untyped-def]
    host = host or SimHost("h")
    owner = _name(os.getuid(), "pwd")
    group = _name(os.getgid(), "grp")
    for path, state in states(root).items():
        if state is None:
            host.dirs[path] = (0o755, owner, group)
        elif path not in host.files:
            host.files[path] = SimFile(state[0], state[1], owner, group)
    code, out, _ = host.execute(observe_argv(paths, [], [], known=known))
    assert code == 0
    return parse_observation("h", out.decode(), paths=list(paths), known=known), host


def _name(id_: int, db: str) -> str:
    import grp
    import pwd

    return pwd.getpwuid(id_).pw_name if db == "pwd" else grp.getgrgid(id_).gr_name


def facts(snapshot: HostSnapshot) -> dict[str, tuple[object, ...]]:
    """What the engine reads of a file fact (not its times or stamp: those are the host's own)."""

    def of(f: FileFact) -> tuple[object, ...]:
        return (
            f.exists,
            f.kind,
            f.mode,
            f.owner,
            f.group,
            f.regular,
            f.complete,
            f.size if f.regular else None,
            f.content if f.complete else None,
        )

    return {path: of(f) for path, f in sorted(snapshot.files.items())}


def test_the_script_and_the_fake_answer_the_same(tmp_path: Path) -> None:
    paths = {p: LIMIT for p in states(tmp_path)} | {f"{tmp_path}/missing": LIMIT}
    assert facts(real(tmp_path, paths)) == facts(fake(tmp_path, paths)[0])


def test_an_unchanged_file_is_the_same_fact_on_both(tmp_path: Path) -> None:
    """The second look with the first as `known`: what each says is unchanged comes back the same as the first."""
    paths = {p: LIMIT for p in states(tmp_path)}
    first_real = real(tmp_path, paths)
    first_fake, host = fake(tmp_path, paths)
    again_real = real(tmp_path, paths, known=first_real)
    again_fake = fake(tmp_path, paths, known=first_fake, host=host)[0]
    assert facts(again_real) == facts(again_fake) == facts(first_real)
