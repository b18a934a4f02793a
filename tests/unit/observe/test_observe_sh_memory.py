"""The observe script on this machine (bash, stat, openssl, curl as on a host): what it reads again and what it
remembers, and that its probes run side by side.

A file or certificate is answered "unchanged" only for the stamp the caller sent, only when the stamp is old
enough to trust (ctime before the observation's clock minus RACY_SECONDS), and a host cannot make the parser
take anything it was not asked about. A test shifts the observation's clock (@@NOW) forward instead of sleeping.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.observe.facts import (
    FULL_READ_EVERY,
    RACY_SECONDS,
    ObservationError,
    observe_argv,
    observe_host,
    parse_observation,
)
from reconciler.observe.snapshot import HostSnapshot
from reconciler.spec.desired import DesiredCheck, DesiredFile, DesiredHost, Target
from reconciler.transport.base import CommandResult
from tests.support.servers import Barrier

pytestmark = pytest.mark.host


@pytest.fixture
def safe(tmp_path: Path) -> Iterator[Path]:
    """A directory only root can change, on a path only root can change (pytest's tmp_path is under /tmp, which
    anyone may write: nothing there is ever pinned)."""
    if os.geteuid() != 0:
        pytest.skip("pinning needs files only root can change")
    home = Path("/root")
    if home.stat().st_uid != 0 or home.stat().st_mode & 0o022:
        pytest.skip("/root is not root's alone here")
    d = Path(tempfile.mkdtemp(prefix=".reconciler-observe-", dir=home))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


def later(out: str, seconds: float = RACY_SECONDS + 10) -> str:
    """The same output as if the observation had run `seconds` later: its files are old enough to trust."""
    return re.sub(r"^@@NOW (\S+)", lambda m: f"@@NOW {float(m.group(1)) + seconds}", out, count=1, flags=re.M)


def observe_files(paths: list[str], known: HostSnapshot | None = None, shift: bool = True) -> tuple[str, HostSnapshot]:
    out = run(observe_argv(paths, [], [], known=known))
    out = later(out) if shift else out
    return out, parse_observation("h", out, paths=paths, known=known)


def test_an_unchanged_file_is_answered_same_and_not_read_again(safe: Path) -> None:
    path = safe / "env"
    path.write_bytes(b"A=1\n")
    _, first = observe_files([str(path)])
    assert first.files[str(path)].stamp and first.files[str(path)].content == b"A=1\n"
    out, second = observe_files([str(path)], known=first)
    assert "@@SAME" in out.splitlines()
    assert second.files[str(path)] is first.files[str(path)]


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.write_bytes(b"A=2\n"),  # same size, new content: mtime and ctime move
        lambda p: p.chmod(0o600),  # attributes only: ctime moves
        lambda p: (p.write_bytes(b"A=2\n"), os.utime(p, ns=(0, p.stat().st_mtime_ns))),  # mtime put back
        lambda p: (p.unlink(), p.write_bytes(b"A=1\n")),  # replaced: a new inode
    ],
    ids=["rewritten", "chmod", "mtime-restored", "replaced"],
)
def test_a_changed_file_is_read_again(safe: Path, change: object) -> None:
    path = safe / "env"
    path.write_bytes(b"A=1\n")
    _, first = observe_files([str(path)])
    os.utime(path, ns=(0, 1_000_000_000))  # an old mtime: only the stamp's other parts can tell the change
    _, first = observe_files([str(path)], known=first)
    assert callable(change)
    change(path)
    out, second = observe_files([str(path)], known=first)
    assert "@@SAME" not in out.splitlines()
    fact = second.files[str(path)]
    assert fact.content == path.read_bytes() and fact.mode == path.stat().st_mode & 0o777


def test_a_file_changed_just_before_the_observation_is_not_trusted(safe: Path) -> None:
    """Racy: a second write in the same clock tick would keep the stamp, so a fresh stamp is not sent back."""
    path = safe / "env"
    path.write_bytes(b"A=1\n")
    _, first = observe_files([str(path)], shift=False)  # the observation's clock: right after the write
    assert first.files[str(path)].stamp == ""
    argv = observe_argv([str(path)], [], [], known=first)
    assert argv[argv.index(str(path)) + 2] == "-"  # read again next time


def test_a_host_cannot_answer_same_for_what_it_was_not_asked(tmp_path: Path) -> None:
    with pytest.raises(ObservationError, match="not asked"):
        parse_observation("h", "@@NOW 100\n@@F /etc/a\n@@SAME\n@@END\n", paths=["/etc/a"])
    with pytest.raises(ObservationError, match="not asked"):
        parse_observation("h", "@@NOW 100\n@@C /etc/c.pem\nsame 1:2:3:4:5\n@@END\n", certificates=["/etc/c.pem"])
    with pytest.raises(ObservationError, match="twice"):
        text = "@@F /etc/a\n@@MISSING\n@@F /etc/a\n644 r r 1.0 1 1:2:1:1:1\nYQ==\n@@END\n"
        parse_observation("h", text, paths=["/etc/a"])


def test_a_check_answered_twice_fails(tmp_path: Path) -> None:
    check = DesiredCheck("etcd", 2.0, url="https://127.0.0.1:2379/health")
    snap = parse_observation("h", "@@U\n@@UEND\n@@H etcd 0 200\n@@H etcd 0 200\n@@END\n", [check])
    assert not snap.healthy and snap.checks[0].detail == "answered twice"


@pytest.fixture
def certificate(safe: Path) -> Path:
    path = safe / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        + ["-keyout", str(path.parent / "ca-key.pem"), "-out", str(path), "-days", "30", "-subj", "/CN=memory-test"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def test_an_unchanged_certificate_is_not_parsed_again(certificate: Path) -> None:
    certs = [str(certificate)]
    out = later(run(observe_argv((), (), (), certs)))
    first = parse_observation("h", out, certificates=certs)
    fact = first.certificates[str(certificate)]
    assert (
        fact.subject == "CN = memory-test" and fact.stamp and 29 < (fact.days_left(fact.not_after - 29.5 * 86400) or 0)
    )
    out = later(run(observe_argv((), (), (), certs, known=first)))
    assert "\nsame " in out
    assert parse_observation("h", out, certificates=certs, known=first).certificates[str(certificate)] is fact
    certificate.write_bytes(certificate.read_bytes())  # rewritten: parsed again
    out = later(run(observe_argv((), (), (), certs, known=first)))
    assert "\nsame " not in out and "\nstamp " in out and "BEGIN CERTIFICATE" in out


@pytest.fixture
def barrier_server() -> Iterator[int]:
    handler = type("Handler", (Barrier,), {"barrier": threading.Barrier(3)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_probes_run_side_by_side(barrier_server: int) -> None:
    """Three checks against a server that answers only when all three are waiting at once: they all pass only if
    the script runs them concurrently (one after another, each would give up waiting for the others)."""
    checks = [DesiredCheck(f"c{i}", 5.0, url=f"http://127.0.0.1:{barrier_server}/{i}") for i in range(3)]
    snap = parse_observation("h", run(observe_argv((), (), checks)), checks)
    assert [c.name for c in snap.checks] == ["c0", "c1", "c2"]  # in the specs' order, whatever order they ended in
    assert snap.healthy, snap.checks


class LocalConnection:
    """Runs the command here, as sshd would on a host."""

    def __init__(self) -> None:
        self.outputs: list[str] = []

    async def run(self, argv: list[str], **_: object) -> CommandResult:
        out = later(run(argv))
        self.outputs.append(out)
        return CommandResult(tuple(argv), 0, out.encode(), b"")


def test_observe_host_remembers_per_connection_and_shares_the_desired_bytes(safe: Path) -> None:
    import asyncio

    path = safe / "env"
    want = b"A=1\n"
    path.write_bytes(want)
    host = DesiredHost(
        Target("h", "127.0.0.1"), {str(path): DesiredFile(str(path), want, 0o644, "root", "root", False, "File/x")}
    )
    conn, other = LocalConnection(), LocalConnection()
    first = asyncio.run(observe_host(conn, host))  # type: ignore[arg-type]
    assert first.files[str(path)].content is want  # one copy: the desired bytes
    asyncio.run(observe_host(conn, host))  # type: ignore[arg-type]
    asyncio.run(observe_host(other, host))  # type: ignore[arg-type]
    assert "@@SAME" in conn.outputs[1] and "@@SAME" not in other.outputs[0]  # a new connection starts afresh
    for _ in range(FULL_READ_EVERY - 2):
        asyncio.run(observe_host(conn, host))  # type: ignore[arg-type]
    said = ["@@SAME" in out for out in conn.outputs]
    assert said == [False] + [True] * (FULL_READ_EVERY - 2) + [False]  # and every so often, read anyway


def test_only_the_base64_lines_of_a_certificate_block_leave_the_host(tmp_path: Path) -> None:
    """A 'certificate' a local user wrote: lines the parser could take for its own, and secrets, stay on the host."""
    path = tmp_path / "c.pem"
    path.write_text(
        "root:secret-canary\n-----BEGIN CERTIFICATE-----\n@@H etcd 0 200\nkey: secret-canary\nMIIB\n"
        "-----END CERTIFICATE-----\n@@F /etc/shadow\n"
    )
    out = run(observe_argv((), (), (), [str(path)]))
    assert "secret-canary" not in out and "@@H" not in out and "@@F" not in out
    assert "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" in out
    fact = parse_observation("h", out, certificates=[str(path)]).certificates[str(path)]
    assert fact.error == "not a readable PEM certificate"


@pytest.mark.parametrize("how", ["others-may-write-its-directory", "not-root-s", "group-writable", "through-a-link"])
def test_what_someone_but_root_could_change_unseen_is_never_pinned(safe: Path, tmp_path: Path, how: str) -> None:
    """An mmap write by a file's owner leaves its ctime alone; whoever may rename a directory on the path can swap
    it between the stat and the read; a link can be re-pointed: such files and certificates are read every time."""
    path = (tmp_path if how == "others-may-write-its-directory" else safe) / "env"
    path.write_bytes(b"A=1\n")
    if how == "not-root-s":
        os.chown(path, 65534, 65534)
    if how == "group-writable":
        path.chmod(0o664)
    if how == "through-a-link":
        (safe / "real").write_bytes(b"A=1\n")
        path.unlink()
        path.symlink_to(safe / "real")
    out, first = observe_files([str(path)])
    assert "@@SAME" not in out and not first.files[str(path)].stamp
    assert "\nstamp -\n" in run(observe_argv((), (), (), [str(path)]))  # as a certificate: no stamp offered
