"""Attacks on the hostile-host hardening (b861037, c08d5ce), beyond tests/unit/test_hostile_hosts.py.

The observe, write, attrs and restore scripts run here with bash on this machine (as sshd runs them on a
host), on files in temp directories; the transport's local-file handling runs against crafted files.
A plain test asserts the safe behaviour an attack failed to break. A test marked xfail(strict=True)
asserts the safe behaviour an attack DID break: it fails today, and starts passing (so strict xfail
turns it red) once the hole is closed. The letter in each reason (A..J) matches the review report.

Some attacks need a won race; those simulate the winner deterministically with a PATH shim (as
test_hostile_hosts does with a fake mktemp): the shim does what a local user with write access to the
managed file's directory could do in that window.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import grp
import hashlib
import os
import pwd
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.apply import executor
from reconciler.apply.executor import ATTRS_SCRIPT, WRITE_SCRIPT
from reconciler.errors import PermanentHostError, TransientHostError
from reconciler.observe.facts import ObservationError, observe_argv, observe_host, parse_observation
from reconciler.observe.snapshot import FileFact, HostSnapshot
from reconciler.plan.actions import Kind
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredCheck, DesiredFile, DesiredHost, Target
from reconciler.transport.base import CommandResult, command_line
from reconciler.transport.ssh import SSHConnection, _connect

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[2]
USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
CANARY = "attack-canary"
SECRET = f"root:$6${CANARY}-hash:19000:0:99999:7:::\n".encode()
NOBODY = 65534
IS_ROOT = os.getuid() == 0


# ---------------------------------------------------------------------------------------------- helpers


def observe(
    limits: dict[str, int],
    *,
    env: dict[str, str] | None = None,
    as_user: int | None = None,
    checks: tuple[DesiredCheck, ...] = (),
    certs: tuple[str, ...] = (),
) -> str:
    argv = observe_argv(limits, [], checks, certs)
    if as_user is not None:
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *argv]
    proc = subprocess.run(argv, capture_output=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode("utf-8", errors="replace")


def fact(path: str, limit: int = 1 << 20, **kw: Any) -> FileFact:
    return parse_observation("h", observe({path: limit}, **kw), paths=[path]).files[path]


def desired(paths: list[str], content: bytes = b"want\n", mode: int = 0o644) -> DesiredHost:
    return DesiredHost(
        Target("h", "127.0.0.1"),
        {p: DesiredFile(p, content, mode, USER, GROUP, False, f"File/{i}") for i, p in enumerate(paths)},
    )


def write(
    path: Path,
    content: bytes,
    *,
    mode: str = "0644",
    owner: str = USER,
    group: str = GROUP,
    bak: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[bytes]:
    digest = hashlib.sha256(content).hexdigest()
    backups = bak if bak is not None else path.parent / "bak"
    return subprocess.run(
        [
            "bash",
            "-c",
            WRITE_SCRIPT,
            "w",
            str(path),
            mode,
            owner,
            group,
            str(backups),
            "20261130T000000.1",
            "5",
            digest,
        ],
        input=content,
        capture_output=True,
        timeout=timeout,
        env=env,
    )


def attrs(path: Path, mode: str = "0644", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", ATTRS_SCRIPT, "attrs", f"{USER}:{GROUP}", mode, str(path)],
        capture_output=True,
        timeout=30,
        env=env,
    )


def run_bounded(argv: list[str], timeout: float, **kw: Any) -> tuple[int | None, bytes, bytes]:
    """Run argv in its own process group; on timeout kill that group (openssl and friends included).
    The exit status is None when it did not finish in time."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err


def mode_of(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


def shim(bindir: Path, name: str, body: str) -> dict[str, str]:
    """A fake `name` first on PATH (what a racing local user achieves); returns the environment to use."""
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text("#!/bin/sh\n" + body)
    (bindir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    d = tmp_path / "host"
    d.mkdir()
    (d / "secret").write_bytes(SECRET)
    (d / "secret").chmod(0o600)
    return d


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory others may traverse (pytest's tmp_path is 0700), for attacks run as nobody."""
    d = Path(tempfile.mkdtemp(prefix="host-attacks-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (chown, setpriv, mknod)")


# ---------------------------------------------------------------- A: a symlink ABOVE the managed path


def test_A_observe_never_reads_through_a_symlinked_parent_directory(host_dir: Path) -> None:
    elsewhere = host_dir / "root-kube"
    elsewhere.mkdir()
    (elsewhere / "config").write_bytes(SECRET)
    os.symlink(elsewhere, host_dir / "kubernetes")
    path = str(host_dir / "kubernetes" / "config")
    out = observe({path: 1 << 20})
    assert base64.b64encode(SECRET).decode()[:40] not in out
    assert SECRET not in parse_observation("h", out, paths=[path]).files[path].content


def test_A_write_never_writes_through_a_symlinked_parent_directory(host_dir: Path) -> None:
    elsewhere = host_dir / "root-kube"
    elsewhere.mkdir()
    (elsewhere / "config").write_bytes(SECRET)
    os.symlink(elsewhere, host_dir / "kubernetes")
    result = write(host_dir / "kubernetes" / "config", b"declared\n", bak=host_dir / "bak")
    assert (elsewhere / "config").read_bytes() == SECRET, result.stderr


def test_A_attrs_never_change_a_file_behind_a_symlinked_parent_directory(host_dir: Path) -> None:
    elsewhere = host_dir / "root-kube"
    elsewhere.mkdir()
    (elsewhere / "config").write_bytes(SECRET)
    (elsewhere / "config").chmod(0o600)
    os.symlink(elsewhere, host_dir / "kubernetes")
    attrs(host_dir / "kubernetes" / "config", "0644")
    assert mode_of(elsewhere / "config") == 0o600


def test_symlink_loops_at_and_above_a_managed_path(host_dir: Path) -> None:
    os.symlink("b", host_dir / "a")
    os.symlink("a", host_dir / "b")
    at, above = str(host_dir / "a"), str(host_dir / "a" / "conf")
    snap = parse_observation("h", observe({at: 1024, above: 1024}), paths=[at, above])
    assert snap.files[at].kind == "symbolic link" and snap.files[at].target == "b"
    assert not snap.files[above].exists  # ELOOP: neither read nor followed
    before = sorted(os.listdir(host_dir))
    assert write(Path(above), b"x\n").returncode != 0  # mkdir -p on the loop fails: nothing written anywhere
    assert sorted(os.listdir(host_dir)) == before
    assert write(Path(at), b"x\n").returncode == 0  # the loop link itself is replaced by the declared file
    assert (
        not (host_dir / "a").is_symlink() and (host_dir / "a").read_bytes() == b"x\n" and (host_dir / "b").is_symlink()
    )


# ------------------------------------------------------------ what the host prints: can it fake a line?


def test_a_link_target_with_newlines_and_markers_cannot_inject_lines(host_dir: Path) -> None:
    path = str(host_dir / "conf")
    target = f"x\n@@END\n@@H etcd 0 200\n@@F {path}\n644 root root 1.0 5\nd2FudAo=\n@@U\n".encode() + b"\xff"
    os.symlink(target, path.encode())
    out = observe({path: 1024})
    snap = parse_observation("h", out, paths=[path])
    assert snap.checks == () and snap.units == {}
    assert snap.files[path].kind == "symbolic link" and snap.files[path].target.startswith("x\n@@END\n@@H etcd")
    assert [a.kind for a in plan_host(desired([path]), snap).actions] == [Kind.WRITE]


def test_file_content_with_marker_lines_is_read_exactly_never_as_markers(host_dir: Path) -> None:
    path = str(host_dir / "conf")
    content = f"@@BIG\n@@END\n@@H etcd 0 200\n@@F {path}\n@@MISSING\n@@U\nId=etcd.service\n".encode()
    Path(path).write_bytes(content)
    snap = parse_observation("h", observe({path: 1024}), paths=[path])
    assert snap.files[path].complete and snap.files[path].content == content  # "@@BIG" in the content is not @@BIG
    assert snap.checks == () and snap.units == {}
    assert plan_host(desired([path], content), snap).empty


@pytest.mark.filterwarnings("ignore:Attribute's length")
def test_certificate_subject_with_newlines_cannot_fake_an_end_date_or_lines(host_dir: Path) -> None:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.x509.oid import NameOID

    from reconciler.transport.fake import self_signed

    cn = "x\nnotAfter=Dec 31 00:00:00 2099 GMT\n@@H etcd 0 200\n@@U\n@@END\n\u2028\x1b[31m"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)])
    start = datetime.datetime(2020, 1, 1)
    path = host_dir / "ca.pem"
    path.write_text(self_signed(name, start, start + datetime.timedelta(days=2)) + "\n")
    check = DesiredCheck("etcd", 2.0, tcp_host="127.0.0.1", tcp_port=1)  # refused: must stay failing
    snap = parse_observation("h", observe({}, checks=(check,), certs=(str(path),)), [check], certificates=[str(path)])
    fact_ = snap.certificates[str(path)]
    assert fact_.not_after == datetime.datetime(2020, 1, 3, tzinfo=datetime.UTC).timestamp()
    assert "\n" not in fact_.subject and "\x1b" not in fact_.subject  # openssl escapes control characters
    assert [c.ok for c in snap.checks] == [False] and not snap.healthy


def test_a_spoofed_duplicate_check_line_never_makes_a_failing_check_healthy() -> None:
    check = DesiredCheck("etcd", 2.0, url="https://127.0.0.1:2379/health")
    snap = parse_observation("h", "@@H etcd 7 000\n@@H etcd 0 200\n@@END\n", [check])
    assert not snap.healthy  # all() over every result line (but /status keeps the last one per name: see report)


def test_lines_after_a_units_block_never_make_a_failing_check_healthy() -> None:
    """What a systemctl value carrying a newline and '@@END' could append (no non-root channel found for it)."""
    check = DesiredCheck("etcd", 2.0, url="https://127.0.0.1:2379/health")
    text = (
        "@@H etcd 7 000\n@@U\nId=etcd.service\nFragmentPath=/x\n@@END\n@@H etcd 0 200\n"
        "@@F /etc/a\n644 root root 1.0 5\nd2FudAo=\n@@END\n"
    )
    snap = parse_observation("h", text, [check], paths=["/etc/b"])
    assert not snap.healthy and "/etc/a" not in snap.files


@pytest.mark.parametrize(
    "text",
    [
        "@@F /etc/a\n644 u g 1.0 5\n@@BIG\n@@END\n",  # BIG for a small file
        "@@F /etc/a\n644 u g 1.0 0\nd2FudAo=\n@@END\n",  # more content than its size
        "@@F /etc/a\n644 u g 1.0 5\nd2Fu\n@@END\n",  # less content than its size
        "@@F /etc/a\n@@OTHER file\n@@END\n",  # a type word that is not a regular file
    ],
)
def test_crafted_file_facts_never_look_like_the_declared_file(text: str) -> None:
    """(A header with size -1 does: see the report; only a host's root can print one.)"""
    snap = parse_observation("h", text, paths=["/etc/a"])
    assert [a.kind for a in plan_host(desired(["/etc/a"], b"want\n", 0o644), snap).actions] == [Kind.WRITE]


def test_an_error_after_the_stat_line_is_an_observation_error() -> None:
    """dd failing after the header was printed (an unreadable file): the host's pass fails, nothing is taken for a match."""
    with pytest.raises(ObservationError, match="cannot read /etc/a"):
        parse_observation("h", "@@F /etc/a\n644 u g 1.0 5\n@@ERR unreadable\n@@END\n", paths=["/etc/a"])


@pytest.mark.parametrize(
    "header",
    [
        "644 root wheel group 1.0 5",
        "644 root root 1.0",
        "0x1a4 root root 1.0 5",
        f"644 {CANARY} root nan 5",
        "644 root root 1.0 99999999999999999999999999",
    ],
)
def test_garbled_file_headers_are_an_observation_error_that_never_quotes_them(header: str) -> None:
    text = f"@@F /etc/a\n{header}\n{base64.b64encode(CANARY.encode()).decode()}\n@@END\n"
    try:
        snap = parse_observation("h", text, paths=["/etc/a"])
    except ObservationError as exc:
        assert CANARY not in str(exc) and header not in str(exc)
    else:  # parsed: then it must not be taken for a match of anything but exactly that content
        assert not plan_host(desired(["/etc/a"]), snap).empty


# ---------------------------------------------------------------------- sizes, special files, /proc


def test_a_huge_sparse_file_is_neither_read_nor_copied_in_full(host_dir: Path) -> None:
    path = host_dir / "conf"
    with open(path, "wb") as f:
        f.truncate(64 << 30)  # 64 GiB of holes
    began = time.monotonic()
    out = observe({str(path): 1 << 20})
    assert len(out) < 1024 and time.monotonic() - began < 10
    f_ = parse_observation("h", out, paths=[str(path)]).files[str(path)]
    assert f_.size == 64 << 30 and not f_.complete
    assert (
        "<68719476736 bytes, not read>" in plan_host(desired([str(path)]), HostSnapshot("h", {str(path): f_})).render()
    )
    result = write(path, b"new\n", bak=host_dir / "bak", timeout=60)
    assert result.returncode == 0, result.stderr
    backup = next(p for p in (host_dir / "bak").rglob("*") if p.is_file())
    assert backup.stat().st_blocks * 512 < 1 << 20  # cp kept the holes: the backup costs no disk


def test_the_size_limit_is_inclusive_and_one_byte_more_is_not_read(host_dir: Path) -> None:
    exact, over = host_dir / "exact", host_dir / "over"
    exact.write_bytes(b"e" * 4096)
    over.write_bytes(b"o" * 4097)
    snap = parse_observation("h", observe({str(exact): 4096, str(over): 4096}), paths=[str(exact), str(over)])
    assert snap.files[str(exact)].complete and snap.files[str(exact)].content == b"e" * 4096
    assert snap.files[str(over)].content == b"" and snap.files[str(over)].size == 4097


@needs_root
def test_devices_sockets_and_fifos_are_reported_by_type_and_replaced_without_reading(host_dir: Path) -> None:
    zero, sock, fifo = host_dir / "zero", host_dir / "sock", host_dir / "fifo"
    os.mknod(zero, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: reading never ends
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    os.mkfifo(fifo)
    limits = {str(p): 1024 for p in (zero, sock, fifo)} | {"/dev/zero": 1024, "/dev/stdin": 1024}
    snap = parse_observation("h", observe(limits), paths=limits)
    assert snap.files[str(zero)].kind == snap.files["/dev/zero"].kind == "character special file"
    assert snap.files[str(sock)].kind == "socket" and snap.files[str(fifo)].kind == "fifo"
    assert snap.files["/dev/stdin"].kind == "symbolic link"
    for p in (zero, sock, fifo):
        result = write(p, b"new\n", bak=host_dir / "bak", timeout=10)  # a fifo opened for a backup would block
        assert result.returncode == 0, result.stderr
        assert stat.S_ISREG(p.lstat().st_mode) and p.read_bytes() == b"new\n"
    assert not (host_dir / "bak").exists()  # only regular files are backed up
    server.close()


def test_B_a_regular_file_is_never_read_past_its_limit() -> None:
    path = "/proc/self/status"  # regular, stat size 0, about 1.4 kB to read
    assert fact(path, limit=64).content.__len__() <= 64


@needs_root
def test_an_unreadable_file_is_never_taken_for_a_match(public_dir: Path) -> None:
    path = public_dir / "conf"
    path.write_bytes(SECRET)
    path.chmod(0o600)  # the SSH user (nobody here) cannot read it
    out = observe({str(path): 1024}, as_user=NOBODY)
    assert CANARY not in out
    try:
        snap = parse_observation("h", out, paths=[str(path)])
    except ObservationError as exc:  # what the script means to say ("cannot read"): fine too
        assert "cannot read" in str(exc) and CANARY not in str(exc)
        return
    plan = plan_host(desired([str(path)], SECRET), snap)  # even when the declared content is that very content
    assert [a.kind for a in plan.actions] == [Kind.WRITE] and CANARY not in plan.render()


@needs_root
def test_C_an_unreadable_file_is_an_observation_error(public_dir: Path) -> None:
    path = public_dir / "conf"
    path.write_bytes(b"")
    path.chmod(0o600)
    with pytest.raises(ObservationError, match="cannot read"):
        parse_observation("h", observe({str(path): 1024}, as_user=NOBODY), paths=[str(path)])


def test_a_hard_link_to_a_secret_at_a_managed_path_is_replaced_never_changed(host_dir: Path) -> None:
    """Within the promise: a hard link is a regular file, read (and diffed) as any; creating one to a file of
    another user needs root or its owner (fs.protected_hardlinks=1). What must hold: apply never changes it."""
    path = host_dir / "conf"
    os.link(host_dir / "secret", path)
    snap = parse_observation("h", observe({str(path): 1024}), paths=[str(path)])
    plan = plan_host(desired([str(path)]), snap)
    assert [a.kind for a in plan.actions] == [Kind.WRITE]  # content differs: a write, never an in-place chmod
    result = write(path, b"new\n", mode="0644", bak=host_dir / "bak")
    assert result.returncode == 0, result.stderr
    assert (host_dir / "secret").read_bytes() == SECRET and mode_of(host_dir / "secret") == 0o600
    assert (host_dir / "secret").stat().st_nlink == 1 and path.read_bytes() == b"new\n"
    backup = next(p for p in (host_dir / "bak").rglob("*") if p.is_file())
    assert mode_of(backup) == 0o600 and mode_of(host_dir / "bak") == 0o700


# --------------------------------------------------------------------------------- D: certificates


def test_D_a_huge_file_at_a_certificate_path_does_not_stall_the_observation(host_dir: Path) -> None:
    big = host_dir / "ca.pem"
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    status, _, _ = run_bounded(observe_argv((), (), (), [str(big)]), timeout=5)
    assert status is not None


def test_D_a_fifo_at_a_check_ca_file_does_not_stall_the_observation(host_dir: Path) -> None:
    fifo = host_dir / "ca.pem"
    os.mkfifo(fifo)
    listener = _Answers200()  # something must accept the TCP connection: curl loads the CA for the handshake
    try:
        check = DesiredCheck("etcd", 2.0, url=f"https://127.0.0.1:{listener.port}/health", ca_file=str(fifo))
        status, out, _ = run_bounded(observe_argv((), (), (check,)), timeout=5)
    finally:
        listener.close()
    assert status is not None


def test_certificate_paths_that_are_fifos_or_links_to_secrets_leak_nothing_and_never_block(host_dir: Path) -> None:
    fifo, link = host_dir / "fifo.pem", host_dir / "link.pem"
    os.mkfifo(fifo)
    os.symlink(host_dir / "secret", link)
    status, out, _ = run_bounded(observe_argv((), (), (), [str(fifo), str(link)]), timeout=20)
    assert status == 0 and CANARY.encode() not in out
    certs = parse_observation("h", out.decode(), certificates=[str(fifo), str(link)]).certificates
    assert certs[str(fifo)].error == "not a regular file" and certs[str(link)].error == "not a readable PEM certificate"


# ------------------------------------------------------------------------------ E, F: health checks


class _Answers200:
    """A local HTTP server that says 200 to anything (a proxy, or whatever a local user runs)."""

    def __init__(self) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_check_on_a_closed_port_fails(tmp_path: Path) -> None:
    check = DesiredCheck("kube-scheduler", 2.0, url=f"http://127.0.0.1:{closed_port()}/healthz")
    snap = parse_observation("h", observe({}, checks=(check,), env={**os.environ, "HOME": str(tmp_path)}), [check])
    assert not snap.healthy


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("curlrc-proxy"),
        pytest.param("curlrc-connect-to"),
        pytest.param("env-http_proxy"),
    ],
)
def test_E_a_failing_http_check_stays_failing_whatever_curl_finds_on_the_host(tmp_path: Path, how: str) -> None:
    fake = _Answers200()
    try:
        env = {**os.environ, "HOME": str(tmp_path)}
        env.pop("http_proxy", None)
        if how == "curlrc-proxy":
            (tmp_path / ".curlrc").write_text(f'proxy = "http://127.0.0.1:{fake.port}"\n')
        elif how == "curlrc-connect-to":
            (tmp_path / ".curlrc").write_text(f'connect-to = "::127.0.0.1:{fake.port}"\n')
        else:
            env["http_proxy"] = f"http://127.0.0.1:{fake.port}"
        check = DesiredCheck("kube-scheduler", 2.0, url=f"http://127.0.0.1:{closed_port()}/healthz")
        snap = parse_observation("h", observe({}, checks=(check,), env=env), [check])
        assert not snap.healthy, snap.checks
    finally:
        fake.close()


@needs_root
@pytest.mark.xfail(
    strict=True,
    reason="F (design): a plain-http (or tcp) check trusts whoever listens on the port; the "
    "seed's 8080/10251/10252 are unprivileged ports, so any local user who binds one "
    "while the service is down (or restarting) makes its check pass",
)
def test_F_a_listener_of_another_user_does_not_make_a_check_pass() -> None:
    port = closed_port()
    code = (
        "import http.server,sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self): self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    squatter = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            code,
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        check = DesiredCheck("kube-scheduler", 2.0, url=f"http://127.0.0.1:{port}/healthz")
        snap = parse_observation("h", observe({}, checks=(check,)), [check])
        assert not snap.healthy  # the unit is not running at all here
    finally:
        squatter.kill()
        squatter.wait()


def test_spec_values_reach_the_host_shell_quoted(tmp_path: Path) -> None:
    """sshd hands command_line(argv) to the login shell: run it through bash and dash as sshd would."""
    marker = tmp_path / "pwned"
    values = [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"a;touch {marker}",
        f"a' ; touch {marker} '",
        "a\nb",
        "-n",
        "$IFS",
        "!!",
        "*",
        f"http://127.0.0.1:1/$(touch${{IFS}}{marker})&x=1;y",
    ]
    for shell in ("bash", "sh"):
        out = subprocess.run([shell, "-c", command_line(["printf", "%s\\0", *values])], capture_output=True, timeout=10)
        assert out.stdout.split(b"\0")[:-1] == [v.encode() for v in values]
    check = DesiredCheck("c", 1.0, url=values[-1])
    subprocess.run(["bash", "-c", command_line(observe_argv((), (), (check,)))], capture_output=True, timeout=30)
    assert not marker.exists()


# --------------------------------------------------------------------------- G: operator's terminal


def test_G_a_plan_never_carries_terminal_control_sequences_from_the_host() -> None:
    path = "/etc/kubernetes/config"
    evil = b"KUBE_LOGTOSTDERR=1\n\x1b]52;c;cm0gLXJmIH4K\x07\x1b[1A\x1b[2K\n"
    snap = HostSnapshot("h", {path: FileFact(path, True, 0o644, USER, GROUP, 1.0, evil, len(evil))})
    assert "\x1b" not in plan_host(desired([path]), snap).render()


async def test_G_a_failed_observation_error_never_quotes_the_host() -> None:
    class Garbage:
        async def run(
            self, argv: Any, *, input: bytes | None = None, timeout: float | None = None, max_output: int = 0
        ) -> CommandResult:
            return CommandResult(
                tuple(argv), 0, b"@@F /etc/a\n@@LINK !!!\n@@END\n", f"\x1b]0;{CANARY}\x07{SECRET.decode()}".encode()
            )

        async def close(self) -> None:
            pass

    with pytest.raises(TransientHostError) as err:
        await observe_host(Garbage(), desired(["/etc/a"]), with_checks=False)
    assert "\x1b" not in str(err.value) and CANARY not in str(err.value)


# ------------------------------------------------------------------------- write / attrs / restore


def test_write_replaces_a_symlink_to_a_directory_and_leaves_the_directory_alone(host_dir: Path) -> None:
    (host_dir / "d").mkdir()
    (host_dir / "d" / "keep").write_bytes(SECRET)
    path = host_dir / "conf"
    os.symlink(host_dir / "d", path)
    result = write(path, b"new\n", bak=host_dir / "bak")
    assert result.returncode == 0, result.stderr
    assert not path.is_symlink() and path.read_bytes() == b"new\n"
    assert sorted(os.listdir(host_dir / "d")) == ["keep"] and (host_dir / "d" / "keep").read_bytes() == SECRET
    assert not (host_dir / "bak").exists()


def test_write_replaces_a_dangling_symlink_without_creating_its_target(host_dir: Path) -> None:
    path = host_dir / "conf"
    os.symlink(host_dir / "nowhere" / "x", path)
    assert write(path, b"new\n").returncode == 0
    assert path.read_bytes() == b"new\n" and not (host_dir / "nowhere").exists()


def test_write_with_an_unknown_owner_installs_nothing_and_leaves_no_temp_file(host_dir: Path) -> None:
    path = host_dir / "conf"
    path.write_bytes(b"old\n")
    result = write(path, b"new\n", owner="no-such-user-xyz")
    assert result.returncode != 0
    assert path.read_bytes() == b"old\n" and sorted(os.listdir(host_dir)) == ["conf", "secret"]


@needs_root
def test_write_sets_special_bits_after_the_owner_so_chown_cannot_clear_them(host_dir: Path) -> None:
    path = host_dir / "tool"
    result = write(path, b"#!/bin/sh\n", mode="4755", owner="root", group="root")
    assert result.returncode == 0, result.stderr
    assert mode_of(path) == 0o4755 and path.stat().st_uid == 0


def test_write_under_a_regular_file_fails_cleanly(host_dir: Path) -> None:
    (host_dir / "file").write_bytes(b"x")
    assert write(host_dir / "file" / "conf", b"new\n").returncode != 0
    assert (host_dir / "file").read_bytes() == b"x"


def test_write_creates_missing_parent_directories_traversable(host_dir: Path) -> None:
    path = host_dir / "etcd" / "sub" / "etcd.conf"
    assert write(path, b"new\n").returncode == 0
    assert mode_of(host_dir / "etcd") & 0o055 == 0o055 and mode_of(host_dir / "etcd" / "sub") & 0o055 == 0o055


def test_H_write_mode_change_never_follows_a_link_swapped_in_for_the_temp_file(host_dir: Path, tmp_path: Path) -> None:
    content = b"new\n"
    env = shim(
        tmp_path / "bin",
        "sha256sum",  # the racing user's move, then the real digest line
        f'rm -f -- "$2"; ln -s {host_dir / "secret"} "$2"; echo "{hashlib.sha256(content).hexdigest()}  $2"\n',
    )
    write(host_dir / "conf", content, mode="0644", env=env)
    assert mode_of(host_dir / "secret") == 0o600


def test_H_attrs_never_follow_a_link_swapped_in_after_the_check(host_dir: Path, tmp_path: Path) -> None:
    path = host_dir / "conf"
    path.write_bytes(b"want\n")
    real_chown = shutil.which("chown")
    env = shim(tmp_path / "bin", "chown", f'rm -f -- "$4"; ln -s {host_dir / "secret"} "$4"; exec {real_chown} "$@"\n')
    attrs(path, "0644", env=env)
    assert mode_of(host_dir / "secret") == 0o600


def test_attrs_refuse_directories_fifos_and_symlinks(host_dir: Path) -> None:
    (host_dir / "d").mkdir()
    os.mkfifo(host_dir / "f")
    os.symlink(host_dir / "secret", host_dir / "l")
    for name in ("d", "f", "l"):
        result = attrs(host_dir / name, "0644")
        assert result.returncode == 4 and b"not a regular file" in result.stderr
    assert mode_of(host_dir / "secret") == 0o600


def test_restore_never_reads_a_linked_backup_nor_writes_through_a_link(host_dir: Path) -> None:
    script = getattr(executor, "RESTORE_SCRIPT", None)
    if script is None:
        pytest.skip("no RESTORE_SCRIPT in this tree")
    path, backup = host_dir / "conf", host_dir / "backup"
    os.symlink(host_dir / "secret", backup)
    result = subprocess.run(["bash", "-c", script, "r", str(path), str(backup)], capture_output=True, timeout=30)
    assert result.returncode == 4 and not path.exists()
    backup.unlink()
    backup.write_bytes(b"old\n")
    os.symlink(host_dir / "secret", path)
    result = subprocess.run(["bash", "-c", script, "r", str(path), str(backup)], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert not path.is_symlink() and path.read_bytes() == b"old\n" and (host_dir / "secret").read_bytes() == SECRET


# --------------------------------------------------------------- the transport: bounded answers


class LoopbackHost:
    """A real SSH server on 127.0.0.1 (asyncssh, host key verified as with any host) whose commands are
    answered by `handler`: the transport's channel handling is tested against real SSH packets."""

    def __init__(self, tmp: Path, handler: Any):
        import asyncssh

        self.tmp, self.handler, self.asyncssh = tmp, handler, asyncssh

    async def __aenter__(self) -> Target:
        asyncssh = self.asyncssh
        host_key, client_key = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(2))
        self.server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()),
            encoding=None,
            process_factory=self.handler,
        )
        port = self.server.sockets[0].getsockname()[1]
        client_key.write_private_key(str(self.tmp / "id"))
        (self.tmp / "id").chmod(0o600)
        (self.tmp / "known").write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
        return Target(
            "loop", "127.0.0.1", port=port, identity_file=str(self.tmp / "id"), known_hosts=str(self.tmp / "known")
        )

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_a_host_answering_forever_is_cut_at_max_output(tmp_path: Path) -> None:
    async def endless(process: Any) -> None:  # never exits, never closes: only the limit ends it
        try:
            while True:
                process.stdout.write(b"A" * 65536)
                await process.stdout.drain()
        except (BrokenPipeError, ConnectionError):
            pass  # the client closed the channel

    async with LoopbackHost(tmp_path, endless) as target:
        conn = await SSHConnection.open(target, attempts=1)
        try:
            # Cut at the limit (not when the command's 30 s are up: that error would say "timed out").
            with pytest.raises(TransientHostError, match="answered more than 1000000 bytes"):
                await conn.run(["bash"], timeout=30, max_output=1_000_000)
            # The connection is still good for the next command (the channel was closed, not the connection).
            with pytest.raises(TransientHostError, match="answered more than 10 bytes"):
                await conn.run(["bash"], timeout=30, max_output=10)
        finally:
            await conn.close()


async def test_a_command_gets_its_input_and_answers_output_stderr_tail_and_status(tmp_path: Path) -> None:
    async def echo(process: Any) -> None:
        data = await process.stdin.read()
        process.stdout.write(b"got " + data)
        process.stderr.write(b"E" * 100_000 + b"the end")
        process.exit(3 if process.command.startswith("fail") else 0)

    async def killed(process: Any) -> None:
        process.exit_with_signal("KILL")

    async with LoopbackHost(tmp_path, echo) as target:
        conn = await SSHConnection.open(target, attempts=1)
        try:
            big = os.urandom(3 * 1024 * 1024)  # more than the channel's window: sent as the host reads it
            ok = await conn.run(["cat"], input=big, timeout=30)
            assert (ok.exit_status, ok.stdout) == (0, b"got " + big)
            assert ok.stderr.endswith(b"the end") and len(ok.stderr) == 64 * 1024  # only the tail is kept
            failed = await conn.run(["fail"], timeout=30)
            assert (failed.exit_status, failed.stdout) == (3, b"got ")
        finally:
            await conn.close()
    async with LoopbackHost(tmp_path, killed) as target:
        conn = await SSHConnection.open(target, attempts=1)
        try:
            assert (await conn.run(["x"], timeout=30)).exit_status == 255  # no exit status: ended by a signal
        finally:
            await conn.close()


# --------------------------------------------------- I, J: local known_hosts and identity files


def connect_error(**kw: Any) -> BaseException:
    try:
        asyncio.run(_connect(Target("h", "127.0.0.1", port=1, **kw)))
    except BaseException as exc:  # noqa: BLE001 - what escapes is the point
        return exc
    raise AssertionError("connected to port 1?")


@pytest.mark.parametrize(
    "content", [f"{CANARY}\n", f"host ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n{CANARY}\n", "\x00\xff" * 10 + CANARY]
)
def test_known_hosts_errors_never_quote_the_file(tmp_path: Path, content: str) -> None:
    known = tmp_path / "known_hosts"
    known.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    exc = connect_error(known_hosts=str(known))
    assert isinstance(exc, PermanentHostError) and CANARY not in str(exc)


def test_an_identity_file_linked_to_a_secret_is_refused_without_quoting_it(host_dir: Path, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "id"
    os.symlink(host_dir / "secret", key)  # 0600 and ours: passes the mode check, then fails to parse
    exc = connect_error(identity_file=str(key), known_hosts=str(known))
    assert isinstance(exc, PermanentHostError) and CANARY not in str(exc) and "root:" not in str(exc)


def test_I_an_identity_file_with_a_crafted_pem_header_is_a_clean_error(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "id"
    key.write_text(f"-----BEGIN (?P<{CANARY}!>x) PRIVATE KEY-----\nAAAA\n")
    key.chmod(0o600)
    exc = connect_error(identity_file=str(key), known_hosts=str(known))
    assert CANARY not in str(exc)
    assert isinstance(exc, PermanentHostError)


def _connect_in_subprocess(
    tmp_path: Path, timeout: float, rlimit_as: int | None = None, **target: str
) -> tuple[int | None, str]:
    code = (
        "import asyncio, sys\n"
        "from reconciler.spec.desired import Target\n"
        "from reconciler.transport.ssh import _connect\n"
        "from reconciler.errors import PermanentHostError\n"
        f"t = Target('h', '127.0.0.1', port=1, **{target!r})\n"
        "try:\n"
        "    asyncio.run(_connect(t))\n"
        "except PermanentHostError as exc:\n"
        "    print('PERMANENT', exc); sys.exit(0)\n"
    )

    def limit() -> None:
        if rlimit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))

    status, out, err = run_bounded([sys.executable, "-c", code], timeout=timeout, cwd=str(REPO), preexec_fn=limit)
    return status, (out + err).decode(errors="replace")


def test_I_an_identity_file_cannot_stall_the_connect(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "id"
    key.write_bytes(b"-----BEGIN (a|aa)+$ PRIVATE KEY-----\n-----END " + b"a" * 60 + b"!\n")
    key.chmod(0o600)
    status, out = _connect_in_subprocess(tmp_path, 5, identity_file=str(key), known_hosts=str(known))
    assert status == 0 and "PERMANENT" in out, out


def test_J_a_fifo_as_known_hosts_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "known_hosts"
    os.mkfifo(fifo)
    status, out = _connect_in_subprocess(tmp_path, 5, known_hosts=str(fifo))
    assert status == 0 and "PERMANENT" in out, out


def test_J_an_endless_known_hosts_is_refused_not_read(tmp_path: Path) -> None:
    status, out = _connect_in_subprocess(tmp_path, 30, rlimit_as=1 << 30, known_hosts="/dev/zero")
    assert status == 0 and "PERMANENT" in out, out


async def test_become_sudo_runs_every_command_through_sudo_and_refuses_a_sudo_that_asks(tmp_path: Path) -> None:
    """`become: sudo`: each command line is `sudo -n -- argv` (argv quoted, never asking for a password); a host
    whose sudo would ask is refused at once, permanently, with what sudo said."""
    import dataclasses

    seen: list[str] = []
    asks = [True]  # sudo asks for a password until the test says otherwise

    async def sudo(process: Any) -> None:
        seen.append(process.command)
        if asks[0]:
            process.stderr.write(b"sudo: a password is required\n")
            process.exit(1)
            return
        process.stdout.write(b"ok")
        process.exit(0)

    async with LoopbackHost(tmp_path, sudo) as target:
        become = dataclasses.replace(target, become="sudo")
        with pytest.raises(PermanentHostError, match=r"become: sudo, but `sudo -n true` as root failed.*password"):
            await SSHConnection.open(become, attempts=1)
        assert seen == ["sudo -n -- true"]
        asks[0] = False
        seen.clear()
        conn = await SSHConnection.open(become, attempts=1)
        try:
            result = await conn.run(["cat", "/etc/a b;rm -rf /"], timeout=30)
            assert result.ok and result.stdout == b"ok"
        finally:
            await conn.close()
        assert seen == ["sudo -n -- true", "sudo -n -- cat '/etc/a b;rm -rf /'"]
        seen.clear()
        plain = await SSHConnection.open(target, attempts=1)  # without become: the argv alone
        try:
            await plain.run(["cat", "/etc/x"], timeout=30)
        finally:
            await plain.close()
        assert seen == ["cat /etc/x"]
