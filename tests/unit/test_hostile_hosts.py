"""A host is as untrusted as a spec: links, fifos and directories at managed paths, huge files, garbage answers.

The observe, write and attrs scripts run here with bash on this machine, on files in a temp directory,
exactly as sshd runs them on a host; what they print is parsed and planned as the engine does.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.apply.executor import ATTRS_SCRIPT
from reconciler.errors import PermanentHostError
from reconciler.observe.facts import observe_argv, parse_observation
from reconciler.observe.snapshot import CertFact, FileFact, HostSnapshot
from reconciler.plan.actions import Kind
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredFile, DesiredHost, Target
from reconciler.transport.ssh import _connect
from tests.support.scripts import write

pytestmark = pytest.mark.host

USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
SECRET = b"root:$6$s3cret-canary-hash:19000:0:99999:7:::\n"


def observe(limits: dict[str, int]) -> str:
    argv = observe_argv(limits, [], [])
    proc = subprocess.run(argv, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


def desired(paths: list[str], content: bytes = b"want\n") -> DesiredHost:
    return DesiredHost(
        Target("h", "127.0.0.1"),
        {p: DesiredFile(p, content, 0o644, USER, GROUP, False, f"File/{i}") for i, p in enumerate(paths)},
    )


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "secret").chmod(0o600)
    return tmp_path


def test_links_fifos_directories_and_huge_files_are_reported_not_read(host_dir: Path) -> None:
    link, fifo, directory, big, dangling = (str(host_dir / n) for n in ("link", "fifo", "dir", "big", "dangling"))
    os.symlink(host_dir / "secret", link)
    os.symlink(host_dir / "nowhere", dangling)
    os.mkfifo(fifo)  # reading it would block the observation forever
    os.mkdir(directory)
    Path(big).write_bytes(b"x" * 300_000)
    limits = {link: 1024, fifo: 1024, directory: 1024, big: 1024, dangling: 1024}
    out = observe(limits)
    assert "s3cret" not in out and SECRET.decode() not in out
    snap = parse_observation("h", out, paths=limits)
    facts = snap.files
    assert facts[link].kind == "symbolic link" and facts[link].target == str(host_dir / "secret")
    assert facts[link].content == b"" and not facts[link].regular
    assert facts[dangling].kind == "symbolic link"
    assert facts[fifo].kind == "fifo" and facts[directory].kind == "directory"
    assert facts[big].regular and facts[big].size == 300_000 and facts[big].content == b"" and not facts[big].complete
    assert len(out) < 4096  # the 300 kB file was not sent
    plan = plan_host(desired(list(limits)), snap)
    reasons = {a.target: a.reason for a in plan.actions}
    assert all(a.kind is Kind.WRITE for a in plan.actions) and set(reasons) == set(limits)
    assert "is a symlink to" in reasons[link] and "not followed" in reasons[link] and "replace" in reasons[link]
    assert "is a fifo" in reasons[fifo] and "is a directory" in reasons[directory]
    assert "s3cret" not in plan.render()
    assert "<300000 bytes, not read>" in plan.render()


def test_a_file_within_its_limit_is_read_whole(host_dir: Path) -> None:
    path = str(host_dir / "conf")
    Path(path).write_bytes(b"want\n")
    snap = parse_observation("h", observe({path: 1024}), paths=[path])
    assert snap.files[path].complete and snap.files[path].content == b"want\n"
    assert Kind.WRITE not in [a.kind for a in plan_host(desired([path]), snap).actions]  # mode may differ, content not


def test_write_replaces_a_symlink_and_never_touches_or_backs_up_its_target(host_dir: Path) -> None:
    path = host_dir / "scheduler"
    os.symlink(host_dir / "secret", path)
    result = write(path, b"new\n")
    assert result.returncode == 0, result.stderr
    assert not path.is_symlink() and path.read_bytes() == b"new\n"
    assert (host_dir / "secret").read_bytes() == SECRET and oct((host_dir / "secret").stat().st_mode & 0o777) == "0o600"
    backups = list((host_dir / "bak").rglob("*")) if (host_dir / "bak").exists() else []
    assert not any(b.is_file() and SECRET in b.read_bytes() for b in backups)


def test_write_refuses_to_replace_a_directory(host_dir: Path) -> None:
    path = host_dir / "conf"
    path.mkdir()
    (path / "keep").write_text("data")
    result = write(path, b"new\n")
    assert result.returncode == 4 and b"is a directory" in result.stderr
    assert (path / "keep").read_text() == "data"
    assert sorted(p.name for p in host_dir.iterdir()) == ["conf", "secret"]  # no temp file left


def test_write_never_writes_through_a_name_planted_at_its_temp_file(
    host_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The temp name is random; a host that could guess it finds the file created exclusively (O_EXCL)."""
    path = host_dir / "conf"
    planted = host_dir / ".conf.reconciler.planted"
    os.symlink(host_dir / "secret", planted)
    fake = tmp_path_factory.mktemp("fakebin")
    (fake / "mktemp").write_text(f"#!/bin/sh\necho {planted}\n")  # "guesses" the name mktemp would choose
    (fake / "mktemp").chmod(0o755)
    result = write(path, b"new\n", env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert result.returncode != 0
    assert (host_dir / "secret").read_bytes() == SECRET and not path.exists()


def test_attrs_never_follow_a_symlink(host_dir: Path) -> None:
    path = host_dir / "conf"
    os.symlink(host_dir / "secret", path)
    result = subprocess.run(
        ["sh", "-c", ATTRS_SCRIPT, "attrs", f"{USER}:{GROUP}", "0644", str(path)], capture_output=True, timeout=30
    )
    assert result.returncode == 4 and b"not a regular file" in result.stderr
    assert oct((host_dir / "secret").stat().st_mode & 0o777) == "0o600"


GARBAGE = [
    "",
    "@@END",
    "@@F /etc/a\n@@END",
    "@@F /etc/a\nnot a header\n@@END",
    "@@F /etc/a\n644 root root x 5\n@@END",
    "@@F /etc/a\n644 root root 1.0 5\n!!!notbase64\n@@END",
    "@@F /etc/a\n@@LINK %%%\n@@END",
    "@@H\n@@END",
    "@@H c x y\n@@END",
    "@@U\nId=a\nMainPID=nope\n@@END",
    "@@U\nId=a\nActiveEnterTimestamp=yesterday\n@@END",
    "@@C /etc/c\nnotAfter=garbage\n@@END",
    "\x00\xff" * 100 + "\n@@END",
]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_observations_are_a_clear_error_or_a_snapshot(text: str) -> None:
    try:
        snap = parse_observation("h", text, paths=["/etc/a"])
    except ValueError as exc:
        assert "truncated" in str(exc) or "garbled" in str(exc) or "cannot" in str(exc) or str(exc)
    else:
        assert set(snap.files) <= {"/etc/a"}


KNOWN = HostSnapshot(
    "h",
    {"/etc/a": FileFact("/etc/a", True, content=b"abc", size=3, stamp="1:2:3:1.5:1.5")},
    certificates={"/etc/c": CertFact("/etc/c", True, 1.0, stamp="1:2:3:1.5:1.5")},
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "@@F /etc/a",
                "@@F /etc/b",
                "@@MISSING",
                "@@LINK L2V0Yy9zaGFkb3c=",
                "@@OTHER fifo",
                "@@BIG",
                "644 root root 1.5 3",
                "644 root root 1.5 3 1:2:3:1.5:1.5",
                "@@SAME",
                "@@NOW 1000.5",
                "YWJj",
                "@@H c 0 200",
                "@@C /etc/c",
                "same 1:2:3:1.5:1.5",
                "stamp 1:2:3:1.5:1.5",
                "-----BEGIN CERTIFICATE-----",
                "MIIB",
                "missing",
                "error unreadable",
                "@@U",
                "@@UEND",
                "Id=x.service",
                "MainPID=1",
                "@@ERR unreadable",
                "@@END",
                "",
            ]
        )
        | st.text(max_size=40),
        max_size=30,
    )
)
def test_any_observation_output_parses_or_is_a_value_error(lines: list[str]) -> None:
    try:
        snap = parse_observation("h", "\n".join(lines), paths=["/etc/a"], certificates=["/etc/c"], known=KNOWN)
    except ValueError:
        return
    assert set(snap.files) <= {"/etc/a"}


def test_known_hosts_pointing_at_any_file_never_quotes_it(host_dir: Path) -> None:
    target = Target("h", "127.0.0.1", port=1, known_hosts=str(host_dir / "secret"))
    with pytest.raises(PermanentHostError) as err:
        asyncio.run(_connect(target))
    assert "s3cret" not in str(err.value) and "root:" not in str(err.value)
    assert "known_hosts file" in str(err.value) and "cannot be used" in str(err.value)


@pytest.mark.parametrize("mode, refused", [(0o666, True), (0o644, True), (0o640, True), (0o600, False), (0o400, False)])
def test_private_keys_others_can_read_are_refused_like_ssh_refuses_them(
    tmp_path: Path, mode: int, refused: bool
) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    key.chmod(mode)
    known = tmp_path / "known_hosts"
    known.write_text("")
    target = Target("h", "127.0.0.1", port=1, identity_file=str(key), known_hosts=str(known))
    with pytest.raises(Exception) as err:
        asyncio.run(_connect(target))  # port 1: an accepted key fails later, on connecting
    if refused:
        assert isinstance(err.value, PermanentHostError) and "too open" in str(err.value), err.value
        assert "PRIVATE KEY" not in str(err.value)
    else:
        assert "too open" not in str(err.value)
