"""Attacks on the hostile-host hardening (b861037, c08d5ce) that the observe script meets, beyond
test_observe_sh_hostile.py.

reconciler/observe/observe.sh runs here with bash on this machine (as sshd runs it on a host), on files in temp
directories, and what it prints is parsed and planned as the engine does: symlinks above and at a managed path, link
targets, contents and certificate subjects carrying `@@` markers, sizes, devices and /proc, unreadable files and hard
links, certificates and CA files that could stall it, health checks curl's own configuration or a squatter could fool.

A plain test asserts the safe behaviour an attack failed to break. A test marked xfail(strict=True)
asserts the safe behaviour an attack DID break: it fails today, and starts passing (so strict xfail
turns it red) once the hole is closed. The letter in each reason (A..J) matches the review report.

The same review's attacks on the other modules are beside their tests: observe/test_facts_attacks.py (the parser),
apply/test_executor_attacks.py (write, attrs and restore), plan/test_diff_attacks.py, transport/test_base_attacks.py
(command quoting), transport/test_ssh_attacks.py (the SSH channel, known_hosts and identity files).
"""

from __future__ import annotations

import base64
import datetime
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.observe.facts import ObservationError, observe_argv, parse_observation
from reconciler.observe.snapshot import FileFact, HostSnapshot
from reconciler.plan.actions import Kind
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredCheck
from tests.support.hostile_files import (
    CANARY,
    SECRET,
    desired,
    mode_of,
    needs_root,
    run_bounded,
    with_secret,
    write,
)

pytestmark = pytest.mark.host

NOBODY = 65534


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


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    return with_secret(tmp_path / "host")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory others may traverse (pytest's tmp_path is 0700), for attacks run as nobody."""
    d = Path(tempfile.mkdtemp(prefix="host-attacks-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


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
