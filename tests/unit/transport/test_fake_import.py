"""The import contract: `reconciler import`'s read-only scripts (adopt.discover), run here with sh on real files, and
the in-memory host (transport/fake_import.py) answer the same for the same files, as discover's parsers read them:
the read within its budget (regular files, empty, over the largest file import copies, a directory, a missing
path, a symlink, a path through a linked directory), the unit files' canonical paths, the certificate probe and the
certificates listed beside the units. The unit list itself needs systemd: the testbed proves it
(tests/integration/test_import.py).
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from reconciler.adopt import discover as disc
from reconciler.transport.fake import SimFile, SimHost

CERT = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN RSA PRIVATE KEY-----\nTOPSECRET\n-----END RSA PRIVATE KEY-----\n"


def hosts(tmp_path: Path) -> tuple[Path, SimHost]:
    """The same host twice: files under a real directory, and a SimHost holding them at the same paths."""
    root = tmp_path.resolve()
    owner, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    files = {
        "etc/a.env": (b"A=1\n", 0o644),
        "etc/secret": (b"token,user,1\n", 0o600),
        "etc/empty": (b"", 0o640),
        "etc/binary": (bytes(range(256)), 0o644),
        "etc/large": (b"x" * (disc.MAX_FILE + 1), 0o644),
        "ssl/ca.pem": (CERT, 0o644),
        "ssl/other.crt": (CERT, 0o644),
        "ssl/ca-key.pem": (KEY, 0o600),
        "ssl/notes.txt": (CERT, 0o644),
        "real/unit.service": (b"[Service]\nExecStart=/bin/true\n", 0o644),
    }
    sim = SimHost("h")
    for name, (content, mode) in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        p.chmod(mode)
        sim.files[str(p)] = SimFile(content, mode, owner, group)
    (root / "etc/dir").mkdir()
    (root / "etc/dir").chmod(0o750)
    sim.dirs[str(root / "etc/dir")] = (0o750, owner, group)
    (root / "ssl/link.pem").symlink_to(root / "ssl/ca.pem")  # a link to a certificate: never read
    sim.links.add(str(root / "ssl/link.pem"))
    sim.files[str(root / "ssl/link.pem")] = SimFile(CERT, 0o644, owner, group)
    (root / "lib").symlink_to(root / "real")  # a linked directory
    sim.dir_links[str(root / "lib")] = str(root / "real")
    return root, sim


def answers(script: str, args: list[str], sim: SimHost) -> tuple[str, str]:
    """What sh answers on the real files, and what the fake answers."""
    real = subprocess.run(["sh", "-c", script, "reconciler-import", *args], capture_output=True, timeout=60)
    code, fake, _ = sim.execute(["sh", "-c", script, "reconciler-import", *args])
    assert code == 0
    return real.stdout.decode(), fake.decode()


@pytest.mark.host
@pytest.mark.parametrize("budget", [disc.MAX_HOST_BYTES, 4 + 13])  # everything; a.env and secret, then no more
def test_the_read_script_and_the_fake_answer_the_same(tmp_path: Path, budget: int) -> None:
    root, sim = hosts(tmp_path)
    names = ["etc/a.env", "etc/secret", "etc/empty", "etc/dir", "etc/none", "ssl/link.pem", "lib/unit.service"]
    paths = [str(root / n) for n in names + ["etc/large", "etc/binary"]]
    real, fake = answers(disc._READ_SCRIPT, [str(budget), *paths], sim)
    assert disc.parse_reads(real, paths) == disc.parse_reads(fake, paths)
    states = {p.removeprefix(f"{root}/"): f.state for p, f in disc.parse_reads(fake, paths).items()}
    expected = ["file", "file", "file", "dir", "missing", "link", "dirlink", "large", "file"]
    if budget < disc.MAX_HOST_BYTES:  # large is past MAX_FILE: not counted; binary's 256 bytes are over
        expected = ["file", "file", "file", "dir", "missing", "link", "dirlink", "large", "budget"]
    assert states == dict(zip(names + ["etc/large", "etc/binary"], expected, strict=True))
    assert sim.read == paths


@pytest.mark.host
def test_the_path_and_certificate_scripts_and_the_fake_answer_the_same(tmp_path: Path) -> None:
    root, sim = hosts(tmp_path)
    units = [str(root / "lib/unit.service"), str(root / "etc/a.env")]
    real, fake = answers(disc._CANONICAL_SCRIPT, units, sim)
    assert real == fake == f"{root}/real/unit.service\0{root}/etc/a.env\0"
    probed = [str(root / n) for n in ("ssl/ca.pem", "ssl/ca-key.pem", "ssl/link.pem", "etc/a.env", "etc/none")]
    real, fake = answers(disc._CERT_SCRIPT, probed, sim)
    assert real == fake == f"{root}/ssl/ca.pem\n"
    assert sim.probed == probed
    real, fake = answers(disc._LIST_SCRIPT, ["Id,LoadState", str(root / "ssl"), "none.service"], sim)
    assert (
        real.partition("@@CERTS\n")[2] == fake.partition("@@CERTS\n")[2] == f"{root}/ssl/ca.pem\n{root}/ssl/other.crt\n"
    )


def test_the_fake_knows_each_of_imports_scripts_and_no_other() -> None:
    sim = SimHost("h")
    for script in (disc._LIST_SCRIPT, disc._CANONICAL_SCRIPT, disc._READ_SCRIPT, disc._CERT_SCRIPT):
        args = ["Id", "/etc/kubernetes/ssl"] if script is disc._LIST_SCRIPT else ["0"]
        assert sim.execute(["sh", "-c", script, "reconciler-import", *args])[0] == 0
    assert sim.execute(["sh", "-c", "rm -rf /", "reconciler-import"])[0] == 127
