"""SSH like ssh (issue 28, item 5): OpenSSH client config (aliases, HostName, Port, User, IdentityFile, ProxyJump),
the ssh-agent, passphrase-protected keys; and what a hostile config cannot do.

Against real SSH servers on 127.0.0.1 (tests/support/sshd.py: asyncssh, host keys verified). Every TCP connection
the code under test opens goes through `dialled`: anything but loopback is refused there and never reaches the
network (a ProxyJump to an address outside this machine is recorded, not dialled). HOME is a temp directory and
SSH_AUTH_SOCK unset unless a test starts its own ssh-agent: nothing of this machine's ~/.ssh is read.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from structlog.testing import capture_logs

from reconciler.errors import PermanentHostError, TransientHostError
from reconciler.spec.desired import Target
from reconciler.spec.load import load_documents
from reconciler.spec.render import build_desired
from reconciler.transport.ssh import SSHConnection
from reconciler.transport.ssh_config import MAX_CONFIG_FILES, MAX_HOPS, MAX_INCLUDE_DEPTH, route
from reconciler.transport.ssh_files import MAX_SSH_FILE, ParsedFiles
from tests.support.sshd import LoopbackSSH, write_key

CANARY = "config-canary"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
IMPLICIT = ("port", "user", "known_hosts")  # a Host spec that says only its address


@pytest.fixture(autouse=True)
def dialled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """(host, port) of every TCP connection opened in this test; only loopback is really dialled."""
    seen: list[tuple[Any, Any]] = []
    real = asyncio.base_events.BaseEventLoop.create_connection

    async def guarded(self: Any, factory: Any, host: Any = None, port: Any = None, *args: Any, **kw: Any) -> Any:
        seen.append((host, port))
        if kw.get("sock") is None and host not in LOOPBACK:
            raise OSError(errno.ENETUNREACH, "not dialled: test traffic stays on loopback")
        return await real(self, factory, host, port, *args, **kw)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", guarded)
    return seen


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home with ~/.ssh (0700); SSH_AUTH_SOCK unset."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def key(home: Path) -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def target(address: str, config: Path | str | None, home: Path, **kw: Any) -> Target:
    """What a Host spec saying only `address` (and `kw`) renders to."""
    kw.setdefault("implicit", tuple(f for f in IMPLICIT if f not in kw))
    kw.setdefault("known_hosts", str(home / ".ssh" / "known_hosts"))
    return Target("m1", address, ssh_config=None if config is None else str(config), **kw)


async def whoami(t: Target) -> str:
    conn = await SSHConnection.open(t, attempts=1)
    try:
        return (await conn.run(["id"], timeout=30)).stdout.decode()
    finally:
        await conn.close()


async def refused(t: Target, attempts: int = 1) -> str:
    """The one-line error connecting gives (permanent: never retried)."""
    with capture_logs() as logs, pytest.raises(PermanentHostError) as caught:
        await SSHConnection.open(t, attempts=max(attempts, 2), initial_delay=0.01)
    assert not [e for e in logs if e["event"] == "ssh connect retry"]
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ------------------------------------------------------------------------------------------ what ssh does


async def test_an_alias_gets_hostname_port_user_and_identity_file_from_the_config(
    home: Path, key: asyncssh.SSHKey, dialled: list[tuple[Any, Any]]
) -> None:
    async with LoopbackSSH([key]) as server:
        (home / ".ssh" / "known_hosts").write_text(server.known_hosts_line())
        write_key(key, home / ".ssh" / "master_key")
        config = write(
            home / "cfg",
            f"Host other\n  Port 1\n\nHost master-one\n  HostName 127.0.0.1\n  Port {server.port}\n  User alice\n"
            "  IdentityFile %d/.ssh/master_key\n\nHost *\n  User nobody\n",
        )
        assert await whoami(target("master-one", config, home)) == "user=alice"
    assert dialled == [("127.0.0.1", server.port)]


async def test_what_the_spec_says_wins_over_the_config_and_the_config_over_the_defaults(home: Path) -> None:
    config = write(home / "cfg", "Host m\n  HostName 127.0.0.9\n  Port 2200\n  User alice\n  UserKnownHostsFile /kh\n")
    (hop,) = route(target("m", config, home), ParsedFiles())
    assert (hop.host, hop.port, hop.user, hop.known_hosts) == ("127.0.0.9", 2200, "alice", ("/kh",))
    explicit = target("m", config, home, port=22, user="root", known_hosts="/spec_kh", identity_file="/spec_key")
    (hop,) = route(explicit, ParsedFiles())
    assert (hop.host, hop.port, hop.user, hop.known_hosts, hop.identity_files) == (
        "127.0.0.9",  # HostName: the address is the name ssh looks up, as `ssh m`
        22,
        "root",
        ("/spec_kh",),
        ("/spec_key",),
    )
    (hop,) = route(target("m", "none", home), ParsedFiles())  # sshConfig: none (ssh -F none)
    assert (hop.host, hop.port, hop.user) == ("m", 22, "root")


async def test_home_ssh_config_is_read_unless_the_spec_names_another_or_none(home: Path) -> None:
    write(home / ".ssh" / "config", "Host m\n  Port 2201\n")
    assert route(target("m", None, home), ParsedFiles())[-1].port == 2201
    write(home / "other", "Host m\n  Port 2202\n")
    assert route(target("m", home / "other", home), ParsedFiles())[-1].port == 2202
    assert route(target("m", "none", home), ParsedFiles())[-1].port == 22


def test_a_host_spec_names_its_ssh_config_relative_to_its_file_and_says_which_fields_it_gave(tmp_path: Path) -> None:
    spec_dir = tmp_path / "specs"
    (spec_dir / "hosts").mkdir(parents=True)
    (spec_dir / "hosts" / "inventory.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Host\nmetadata: {name: m1}\nspec: {address: m-one, sshConfig: ssh_config}\n"
        "---\napiVersion: reconciler/v1\nkind: Host\nmetadata: {name: m2}\n"
        "spec: {address: m-two, port: 22, user: admin, knownHosts: /kh, sshConfig: none}\n"
    )
    desired = build_desired(load_documents(spec_dir), spec_dir)
    m1, m2 = desired.hosts["m1"].target, desired.hosts["m2"].target
    assert m1.ssh_config == str(spec_dir / "hosts" / "ssh_config") and m1.implicit == IMPLICIT
    assert m2.ssh_config == "none" and m2.implicit == ()


@pytest.mark.host
async def test_the_agent_signs_for_a_passphrase_protected_key(
    home: Path, key: asyncssh.SSHKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: Path
) -> None:
    identity = write_key(key, home / ".ssh" / "id_ed25519")
    add = subprocess.run(
        ["ssh-add", str(identity)], env=dict(os.environ, SSH_AUTH_SOCK=str(agent)), capture_output=True
    )
    assert add.returncode == 0, add.stderr
    write_key(key, identity, passphrase="only the agent knows")  # the file on disk is locked from now on
    async with LoopbackSSH([key]) as server:
        (home / ".ssh" / "known_hosts").write_text(server.known_hosts_line())
        t = target("127.0.0.1", "none", home, port=server.port, identity_file=str(identity))
        message = await refused(t)  # no agent
        assert f"identity file {str(identity)!r} is passphrase-protected and no ssh-agent is available" in message
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))
        assert await whoami(t) == "user=root"  # the agent's key, for the locked file
        assert await whoami(target("127.0.0.1", "none", home, port=server.port)) == "user=root"  # no identity file


async def test_a_passphrase_protected_key_no_agent_holds_is_one_clear_line_and_nothing_is_dialled(
    home: Path, key: asyncssh.SSHKey, dialled: list[tuple[Any, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = write_key(key, home / ".ssh" / "id_ed25519", passphrase="secret")
    write(home / ".ssh" / "known_hosts", "")
    t = target("127.0.0.1", "none", home, port=1, identity_file=str(identity))
    message = await refused(t)
    assert message == (
        f"m1 (root@127.0.0.1:1): identity file {str(identity)!r} is passphrase-protected and no ssh-agent is "
        "available (SSH_AUTH_SOCK is not set); reconciler never asks for a passphrase: add the key to an agent "
        f"(`ssh-add {identity}`) and run reconciler with SSH_AUTH_SOCK pointing to it"
    )
    monkeypatch.setenv("SSH_AUTH_SOCK", str(home / "no-agent-here"))  # stale, as after a logout
    assert f"and the ssh-agent at {home / 'no-agent-here'} does not answer;" in await refused(t)
    # the default keys too: a locked ~/.ssh/id_ed25519 and no agent say so (ssh would ask for the passphrase)
    monkeypatch.delenv("SSH_AUTH_SOCK")
    assert "is passphrase-protected" in await refused(target("127.0.0.1", "none", home, port=1))
    assert dialled == []


@pytest.mark.host
async def test_identities_only_offers_only_the_identity_files_keys_of_the_agent(
    home: Path, key: asyncssh.SSHKey, agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_agent = write_key(key, home / "in_agent")
    add = subprocess.run(
        ["ssh-add", str(in_agent)], env=dict(os.environ, SSH_AUTH_SOCK=str(agent)), capture_output=True
    )
    assert add.returncode == 0, add.stderr
    in_agent.unlink()
    other = write_key(asyncssh.generate_private_key("ssh-ed25519"), home / ".ssh" / "other")  # not accepted
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))
    async with LoopbackSSH([key]) as server:
        write(home / ".ssh" / "known_hosts", server.known_hosts_line())
        base = f"Host m\n  HostName 127.0.0.1\n  Port {server.port}\n  IdentityFile {other}\n"
        assert await whoami(target("m", write(home / "cfg", base), home)) == "user=root"  # the agent's key too
        only = write(home / "cfg", base + "  IdentitiesOnly yes\n")
        assert "authentication refused" in await refused(target("m", only, home))


@pytest.mark.host
async def test_an_agent_that_does_not_hold_the_locked_key_is_named(
    home: Path, key: asyncssh.SSHKey, monkeypatch: pytest.MonkeyPatch, agent: Path
) -> None:
    identity = write_key(key, home / ".ssh" / "id", passphrase="secret")
    write(home / ".ssh" / "known_hosts", "")
    (identity.parent / "id.pub").write_bytes(key.export_public_key())  # so its public key is known
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))  # running, empty
    message = await refused(target("127.0.0.1", "none", home, port=1, identity_file=str(identity)))
    assert "is passphrase-protected and the ssh-agent does not hold it" in message and "ssh-add" in message


async def test_proxyjump_reaches_a_host_only_its_bastion_can_reach_and_verifies_both_host_keys(
    home: Path, key: asyncssh.SSHKey, dialled: list[tuple[Any, Any]]
) -> None:
    write_key(key, home / ".ssh" / "id_ed25519")
    async with LoopbackSSH([key]) as inner:
        async with LoopbackSSH([key], routes={"master-3.internal": inner.port}) as bastion:
            known = home / ".ssh" / "known_hosts"
            known.write_text(bastion.known_hosts_line() + inner.known_hosts_line("master-3.internal", 22))
            config = write(
                home / "cfg",
                f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n  User jump\n\n"
                "Host master-3\n  HostName master-3.internal\n  ProxyJump bastion\n",
            )
            assert await whoami(target("master-3", config, home)) == "user=root"
            assert bastion.logins == ["jump"] and bastion.requested == [("master-3.internal", 22)]
            assert ("master-3.internal", 22) not in dialled  # only through the bastion

            # a chain: bastion -> bastion again (as a second hop, through itself) -> the host
            chain = write(
                home / "chain",
                f"Host b1\n  HostName 127.0.0.1\n  Port {bastion.port}\n  ProxyJump none\n"
                f"Host b2\n  HostName b2.internal\n  ProxyJump b1\n"
                "Host master-3\n  HostName master-3.internal\n  ProxyJump b2\n",
            )
            bastion.routes = {"master-3.internal": inner.port, "b2.internal": bastion.port}
            known.write_text(known.read_text() + bastion.known_hosts_line("b2.internal", 22))
            assert [h.name for h in route(target("master-3", chain, home), ParsedFiles())] == ["b1", "b2", "master-3"]
            assert await whoami(target("master-3", chain, home)) == "user=root"

            # the bastion's host key is verified: a wrong one stops the route there
            known.write_text(
                LoopbackSSH([key]).known_hosts_line(port=bastion.port) + inner.known_hosts_line("master-3.internal", 22)
            )
            asked = len(bastion.requested)
            message = await refused(target("master-3", config, home))
            assert message.startswith(
                f"m1 (root@master-3.internal:22 via jump@127.0.0.1:{bastion.port}): bastion jump@127.0.0.1:"
            )
            assert "host key verification failed" in message and len(bastion.requested) == asked


# ------------------------------------------------------------------------------------ what a config cannot do


async def test_a_bastion_outside_this_machine_is_never_dialled_nor_the_host_directly_instead(
    home: Path, dialled: list[tuple[Any, Any]]
) -> None:
    """ProxyJump names a bastion in TEST-NET-3 (never routed): the test's guard refuses the dial as an unreachable
    network would; the host is then not reached by any other way."""
    write(home / ".ssh" / "known_hosts", "")
    config = write(home / "cfg", "Host m\n  HostName 198.18.0.13\n  ProxyJump admin@203.0.113.9:2222\n")
    with pytest.raises(TransientHostError, match=r"via admin@203.0.113.9:2222\): bastion .*cannot connect"):
        await SSHConnection.open(target("m", config, home), attempts=2, initial_delay=0.01)
    assert dialled == [("203.0.113.9", 2222)] * 2  # retried, and only the bastion


@pytest.mark.parametrize(
    "config, expected",
    [
        (f"Host m\n  ProxyCommand touch {{marker}} {CANARY}\n", "line 2: ProxyCommand is refused"),
        (f'Match host m exec "touch {{marker}} {CANARY}"\n  Port 2\n', "line 1: Match exec is refused"),
        ('Host elsewhere\nMatch !exec "touch {marker}"\n  Port 2\n', "line 2: Match exec is refused"),
        ("Include {home}/cfg\n", "line 1: Include loop"),
        ("Include {home}/b\n", "b line 1: Include loop"),  # cfg -> b -> cfg
        ("Include /*/*/*/*/*/*/*/*\n", "line 1: Include: patterns look at more than 10000 files"),
        ("Include /proc/self/fd/*\n", "line 1: Include"),  # what this process has open: each parse's own memfd too
        (f"root:$6${CANARY}:19000:0:99999:7:::\nx '{CANARY}\n", "line 2: not valid ssh config"),  # a shadow file
        (f"Host m\n  Port {CANARY}\n", "line 2: a Port value ssh would refuse"),
        (f'Host m\n  HostName "{CANARY}\n', "line 2: not valid ssh config"),
        (f"Match {CANARY} x\n", "line 1: a Match value ssh would refuse"),
        (f"Host m\n  HostName {CANARY};reboot\n", "HostName for m is not a host name or address"),
        (f"Host m\n  ProxyJump x@y@{CANARY}:99\n", "ProxyJump for m: an entry is not [user@]host[:port]"),
        (f"Host m\n  ProxyJump a {CANARY}\n", "line 2: not valid ssh config"),
        (f"Host m\n  IdentityFile ${{{CANARY}}}\n", "line 2: not valid ssh config"),
        ("Host *\n  ProxyJump jump\n", "ProxyJump loop: jump is reached through itself"),
        ("Host m\n  ProxyJump m\n", "ProxyJump loop: m is reached through itself"),
        (
            "Host m\n  ProxyJump j1\n" + "".join(f"Host j{i}\n  ProxyJump j{i + 1}\n" for i in range(1, 12)),
            f"more than {MAX_HOPS} ProxyJump bastions for m",
        ),
    ],
)
async def test_a_hostile_config_is_refused_by_file_and_line_never_quoted_nothing_run_nothing_dialled(
    home: Path, dialled: list[tuple[Any, Any]], config: str, expected: str
) -> None:
    marker = home / "ran"
    write(home / "b", f"Include {home}/cfg\n")
    cfg = write(home / "cfg", config.replace("{marker}", str(marker)).replace("{home}", str(home)))
    write(home / ".ssh" / "known_hosts", "")
    message = await refused(target("m", cfg, home))
    assert expected in message and CANARY not in message and message.startswith("m1 (root@m:22): ssh config ")
    assert not marker.exists() and dialled == []


async def test_a_proxycommand_or_match_exec_for_other_hosts_is_no_reason_to_refuse_this_one(home: Path) -> None:
    cfg = write(home / "cfg", "Host other\n  ProxyCommand nc %h %p\nHost m\n  ProxyCommand none\n  Port 2\n")
    assert route(target("m", cfg, home), ParsedFiles())[-1].port == 2
    cfg = write(home / "cfg", "Host m\n  ProxyJump none\n  ProxyCommand nc %h %p\n")  # the first of the two wins
    assert len(route(target("m", cfg, home), ParsedFiles())) == 1


@pytest.mark.parametrize("kind", ["huge", "fifo", "device", "writable by others", "include too many", "deep"])
async def test_config_files_are_bounded_and_checked_like_ssh_checks_them(home: Path, kind: str) -> None:
    cfg = home / "cfg"
    if kind == "huge":
        write(cfg, "# x\n" * (MAX_SSH_FILE // 4 + 1))
        expected = f"ssh config {cfg} cannot be used: larger than {MAX_SSH_FILE} bytes"
    elif kind == "fifo":
        os.mkfifo(cfg)  # never opened for a writer: reading it would wait forever
        expected = f"ssh config {cfg} cannot be used: not a regular file"
    elif kind == "device":
        cfg = Path("/dev/zero")
        expected = "ssh config /dev/zero cannot be used: not a regular file"
    elif kind == "writable by others":
        write(cfg, "Host m\n  Port 2\n", mode=0o666)
        expected = f"ssh config {cfg} cannot be used: bad owner or permissions"
    elif kind == "include too many":
        (home / "conf.d").mkdir()
        for i in range(MAX_CONFIG_FILES + 1):
            write(home / "conf.d" / f"{i:03}.conf", f"# {i}\n")
        write(cfg, f"Include {home}/conf.d/*.conf\n")
        expected = f"line 1: Include: more than {MAX_CONFIG_FILES} config files for one host"
    else:
        for i in range(MAX_INCLUDE_DEPTH + 2):
            write(home / f"d{i}", f"Include {home}/d{i + 1}\n")
        write(cfg, f"Include {home}/d0\n")
        expected = f"d{MAX_INCLUDE_DEPTH - 2} line 1: Include nested more than {MAX_INCLUDE_DEPTH} files deep"
    began = time.monotonic()
    assert expected in await refused(target("m", cfg, home))
    assert time.monotonic() - began < 10


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the file to another user")
async def test_a_config_owned_by_someone_else_is_refused(home: Path) -> None:
    cfg = write(home / "cfg", "Host m\n  Port 2\n", mode=0o644)
    os.chown(cfg, 65534, 65534)
    assert "bad owner or permissions (owner uid 65534" in await refused(target("m", cfg, home))


async def test_files_a_config_names_get_the_checks_files_a_spec_names_get(
    home: Path, key: asyncssh.SSHKey, tmp_path: Path
) -> None:
    secret = write(tmp_path / "shadow", f"root:$6${CANARY}:19000:0:99999:7:::\n")
    write(home / ".ssh" / "known_hosts", "")
    open_key = write_key(key, home / "open_key")
    open_key.chmod(0o644)
    os.symlink(secret, home / "linked_key")
    cases = {
        f"IdentityFile {open_key}": "permissions 0644 are too open",
        f"IdentityFile {home}/linked_key": "not a private key asyncssh can read",  # read through the link: no quote
        "UserKnownHostsFile /dev/null": "not a regular file",  # verification is not turned off by a config
        f"UserKnownHostsFile {secret}": "not in known_hosts format",
        "UserKnownHostsFile none": "known_hosts file (none: UserKnownHostsFile none) does not exist",
    }
    for line, expected in cases.items():
        cfg = write(home / "cfg", f"Host m\n  {line}\n  StrictHostKeyChecking no\n")
        message = await refused(target("m", cfg, home))
        assert expected in message and CANARY not in message, message
    # a key the config names that is not there is skipped, as ssh skips it; the spec's must exist
    cfg = write(home / "cfg", f"Host m\n  IdentityFile {home}/absent\n  Port 1\n  HostName 127.0.0.1\n")
    with pytest.raises(TransientHostError, match="cannot connect"):
        await SSHConnection.open(target("m", cfg, home), attempts=1)
    assert "does not exist" in await refused(target("m", cfg, home, identity_file=str(home / "absent")))


async def test_strict_host_key_checking_no_in_a_config_does_not_turn_verification_off(
    home: Path, key: asyncssh.SSHKey
) -> None:
    write_key(key, home / ".ssh" / "id_ed25519")
    async with LoopbackSSH([key]) as server:
        write(home / ".ssh" / "known_hosts", LoopbackSSH([key]).known_hosts_line(port=server.port))  # another key
        cfg = write(home / "cfg", f"Host m\n  HostName 127.0.0.1\n  Port {server.port}\n  StrictHostKeyChecking no\n")
        assert "host key verification failed" in await refused(target("m", cfg, home))


# --------------------------------------------------------------------------------------------- the agent


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    """A real ssh-agent of this test's own (socket in tmp_path), holding no key; stopped at the end."""
    if not shutil.which("ssh-agent") or not shutil.which("ssh-add"):
        pytest.skip("needs OpenSSH's ssh-agent and ssh-add")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)
