"""An in-process host: files, systemd units and health answers in memory, behind the Connection protocol.

For the unit tests of the engine (converge, rollout, queue, daemon) and the fleet benchmark's 1000 emulated masters
(bench.fleetsim serves it over SSH): what the real hosts of the testbed prove end to end, this lets the logic around
them be tested in milliseconds.

It answers the commands reconciler sends, by what they mean rather than by running them: the observe script (files,
units, checks, certificates), the atomic write script (sha256 verified as on a real host), chown/chmod, the restore
of a backup, `systemctl daemon-reload|enable|disable|start|stop|restart|reset-failed|is-active`, a unit's journal
(empty), etcd's GET /version and maintenance status through curl (`SimHost.etcd_version`, `etcd_status`), an etcd
snapshot (`etcd_snapshot`) and a restore from one (`etcd_restored`), and `reconciler import`'s read-only scripts
(transport.fake_import): a host built by hand in memory is imported and then converged as one object. A unit's
health check (a check named like the unit) passes while the unit is active; `SimHost.fails` makes a unit's start
fail while its host's files are such (a config it cannot run on). Anything else exits 127, so a command the emulator
does not know fails loudly instead of being silently "emulated".

Pure: `SimHost.execute(argv, stdin)` -> (exit status, stdout, stderr). `FakeConnection` runs commands on one as an
SSH server would (the argv joined into one quoted line and split again, an answer longer than asked for cut off),
`fake_connector` connects a Session to a dict of them; a host in `down` refuses the connection like a stopped
machine.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import itertools
import json
import posixpath
import re
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import TransientHostError
from reconciler.spec.desired import Target
from reconciler.transport.base import MAX_OUTPUT, CommandResult, Connection
from reconciler.transport.fake_import import answer_import
from reconciler.transport.fake_programs import SimProgram, answer_programs

UNIT_DIR = "/etc/systemd/system"
# where systemd finds unit files, first first (a file in /etc masks one of the same name in /usr/lib)
UNIT_DIRS = (
    UNIT_DIR,
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
_OBSERVED = (  # what the observe script asks systemctl show, in its order
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "ActiveEnterTimestamp",
    "MainPID",
    "NeedDaemonReload",
    "FragmentPath",
)


_INODES = itertools.count(1000)


@dataclass
class SimFile:
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    mtime: float = field(default_factory=time.time)
    inode: int = field(default_factory=lambda: next(_INODES))  # a new file (every write is a rename) is a new inode
    ctime: float = field(default_factory=time.time)  # its last change, attributes included

    @property
    def stamp(self) -> str:
        """What the observe script's stat says of it: device:inode:size:mtime:ctime."""
        return f"0:{self.inode}:{len(self.content)}:{self.mtime:.9f}:{self.ctime:.9f}"


@dataclass
class SimUnit:
    active: bool = False
    enabled: bool = False
    active_enter: float | None = None
    loaded_mtime: float | None = None  # mtime of the unit file at the last daemon-reload
    pid: int = 0
    path: str = ""  # its file as systemd names it (FragmentPath; maybe through a linked directory); "": UNIT_DIR/<name>
    drop_ins: tuple[str, ...] = ()  # DropInPaths


def _stamp(t: float | None) -> str:
    if t is None:
        return ""
    return time.strftime("%a %Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1e6) % 1_000_000:06d} UTC"


def self_signed(name: Any, not_before: datetime.datetime, not_after: datetime.datetime) -> str:
    """A self-signed certificate (PEM) for the x509.Name `name`: what the emulated hosts have, and tests' input."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
    builder = builder.serial_number(1).not_valid_before(not_before).not_valid_after(not_after)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode().strip()


@functools.cache
def _certificate() -> str:
    """What every emulated host has at every certificate path: valid until 2036-11-20."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emulated")])
    utc = datetime.UTC
    return self_signed(name, datetime.datetime(2026, 1, 1, tzinfo=utc), datetime.datetime(2036, 11, 20, tzinfo=utc))


def _b64(content: bytes) -> str:
    """GNU base64's layout: lines of 76 characters."""
    text = base64.b64encode(content).decode()
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))


_JOINED = re.compile(r"""(?:'[^']*'|"'"|[\w@%+=:,./-]+)+""")
_PIECE = re.compile(r"""'([^']*)'|"(')"|([\w@%+=:,./-]+)""")


def split_command(command: str) -> list[str]:
    """A command line's argv, as a host's shell would split it. What shlex.join wrote (reconciler's own command
    lines) is read back with two regular expressions, not by shlex character by character (5.5 KB of script per
    observation: most of an emulated fleet's CPU otherwise); anything else goes to shlex."""
    words: list[str] = []
    pos = 0
    while True:
        word = _JOINED.match(command, pos)
        if word is None:
            return shlex.split(command)
        words.append("".join(a or b or c for a, b, c in _PIECE.findall(word.group())))
        pos = word.end()
        if pos == len(command):
            return words
        if command[pos] != " ":
            return shlex.split(command)
        pos += 1


class SimHost:
    def __init__(self, name: str):
        self.name = name
        self.files: dict[str, SimFile] = {}
        self.dirs: dict[str, tuple[int, str, str]] = {}  # path -> (mode, owner, group); parents are implied
        self.addresses: set[str] = set()  # the virtual IPs this host holds
        self.units: dict[str, SimUnit] = {}
        self.commands = 0  # commands answered (one per SSH exec session)
        self.restarted: list[tuple[float, str]] = []  # (monotonic time, unit) of every `systemctl restart`
        self.reloaded: list[tuple[float, str]] = []  # (monotonic time, unit) of every reload from reconciler
        self.fails: dict[str, Callable[[SimHost], bool]] = {}  # unit -> whether it fails to start on these files
        self.journal: dict[str, list[str]] = {}  # unit -> what its processes wrote to the journal
        self.unhealthy: set[str] = set()  # units running but failing their check (another config), until restarted
        self.backups: dict[str, SimFile] = {}  # backup path -> the replaced file, as the write script keeps it
        self.changes = 0  # commands that changed the host: writes, restores, attrs, systemctl verbs but reset-failed
        self._pids = 1000
        self.aliases: dict[str, str] = {}  # another name systemd answers to -> the unit's own name (its Id)
        self.dir_links: dict[str, str] = {}  # a directory that is a symlink -> where it leads (units' files, import)
        # what import's scripts meet and leave (transport.fake_import); the observe script does not see these
        self.links: set[str] = set()  # paths that are symlinks: import reads none
        self.canonical_answer: str | None = None  # what the host prints for import's canonical-path script
        self.ignore_budget = False  # a hostile shell: sends every file whole, whatever budget import gives it
        self.read: list[str] = []  # every path import's read script was asked for
        self.probed: list[str] = []  # every path whose first line import's certificate probe read
        # the components' binaries by path (transport.fake_programs): none given is a stand-in, None is missing
        self.programs: dict[str, SimProgram | None] = {}
        self.asked: list[tuple[str, tuple[str, ...]]] = []  # (binary, what it was asked) for each question
        # what etcd's GET /version answers through curl on this host ({"etcdserver": ..., "etcdcluster": ...});
        # None: curl is not emulated (no member answers)
        self.etcd_version: dict[str, str] | None = None
        # what its member answers POST /v3/maintenance/status ({"header": {"member_id"}, "leader", "isLearner"}), and
        # the snapshot it gives (backup/etcd_snapshot.sh: the bytes, and `snapshot status`); None: no answer
        self.etcd_status: dict[str, Any] | None = None
        self.etcd_snapshot: tuple[bytes, dict[str, int]] | None = None
        self.etcd_restored: tuple[str, str] | None = None  # the restore's marker: (snapshot sha256, cluster token)
        self.etcd_rebuilds: list[str] = []  # the sha256 of each snapshot its etcd data was rebuilt from

    # -- commands -------------------------------------------------------------------------
    def execute(self, argv: list[str], stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        self.commands += 1
        if argv[:2] == ["bash", "-c"] and len(argv) >= 4 and argv[3] == "reconciler-observe":
            return 0, self._observe(argv[4:]).encode(), b""
        if argv[:2] == ["bash", "-c"] and len(argv) >= 13 and argv[3] == "reconciler-write":
            return self._write(argv[4:13], stdin)
        if argv[:2] == ["sh", "-c"] and len(argv) == 7 and argv[3] == "reconciler-attrs":
            self.changes += 1
            return self._attrs(argv[4], argv[5], argv[6])
        if argv[:2] == ["bash", "-c"] and len(argv) == 6 and argv[3] == "reconciler-restore":
            return self._restore(argv[4], argv[5])
        if argv[:1] == ["journalctl"]:  # the unit's own lines (_SYSTEMD_UNIT=...), as journalctl -o cat prints them
            name = next((a.split("=", 1)[1] for a in argv if a.startswith("_SYSTEMD_UNIT=")), "")
            return 0, "".join(f"{line}\n" for line in self.journal.get(name, [])).encode(), b""
        if argv[:2] == ["sh", "-c"] and len(argv) == 6 and argv[3] == "reconciler-reload":
            unit = self.units.get(argv[4])
            if unit is None or not unit.active:
                return 1, b"", f"Job for {argv[4]} failed: not active\n".encode()
            self.reloaded.append((time.monotonic(), argv[4]))
            self.files[argv[5]] = SimFile(b"", 0o644)
            return 0, b"", b""
        if argv[:2] == ["sh", "-c"] and len(argv) == 7 and argv[3] == "reconciler-dir":
            path, mode, owner_group = argv[4:7]
            if path in self.files:
                return 4, b"", f"{path} is not a directory; reconciler does not replace it\n".encode()
            owner, group = owner_group.split(":", 1)
            self.dirs[path] = (int(mode, 8), owner, group)
            return 0, b"", b""
        if argv[:1] == ["systemctl"]:
            self.changes += argv[1:2] not in (["reset-failed"], ["is-active"])
            return self._systemctl(argv[1:])
        if argv[:2] == ["bash", "-c"] and len(argv) >= 4 and argv[3] == "reconciler-programs":
            return answer_programs(self, argv[4:])
        if argv[:2] == ["sh", "-c"] and len(argv) >= 4 and argv[3] == "reconciler-import":
            return answer_import(self, argv[2], argv[4:])
        if argv[:1] == ["curl"] and argv[-1].endswith("/version") and self.etcd_version is not None:
            return 0, (json.dumps(self.etcd_version) + "\n200\n").encode(), b""  # the body, then curl's -w status
        if argv[:1] == ["curl"] and argv[-1].endswith("/v3/maintenance/status") and self.etcd_status is not None:
            return 0, (json.dumps(self.etcd_status) + "\n200\n").encode(), b""
        if argv[:2] == ["bash", "-c"] and len(argv) == 9 and argv[3] == "reconciler-etcd-snapshot":
            if self.etcd_snapshot is None:
                return 4, b"", b"@@ERR etcdctl snapshot save failed: connection refused\n"
            data, status = self.etcd_snapshot
            return 0, data, f"@@STATUS {json.dumps(status)}\n".encode()
        if argv[:2] == ["bash", "-c"] and argv[3:5] == ["reconciler-cert-renew", "read"] and len(argv) == 6:
            held = self.files.get(argv[5])  # certs/cert_renew.sh's `read`; its other modes are the testbed's
            return 0, held.content[:65536] if held else f"@@ERR {argv[5]} is not a regular file\n".encode(), b""
        if argv[:2] == ["bash", "-c"] and len(argv) >= 5 and argv[3] == "reconciler-etcd-restore":
            return self._etcd_restore(argv[4], argv[5:], stdin)
        return 127, b"", f"fake host: not emulated: {argv[:1]}\n".encode()

    def _etcd_restore(self, mode: str, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        """backup/etcd_restore.sh: `check` (this host has etcdctl only), `rebuild` (the marker kept in
        `etcd_restored`, every rebuild in `etcd_rebuilds`), `done` (the marker gone)."""
        if mode == "check":
            return 0, b"@@OK etcdctl\n", b""
        if mode == "done":
            self.etcd_restored = None
            return 0, b"@@DONE\n", b""
        if mode != "rebuild" or len(args) != 7:
            return 2, b"", b"@@ERR unknown mode\n"
        sha, token = args[0], args[5]
        if hashlib.sha256(stdin).hexdigest() != sha:
            return 4, b"", b"@@ERR the snapshot arrived changed\n"
        if self.etcd_restored == (sha, token):
            return 0, b"@@ALREADY\n", b""
        self.changes += 1
        self.etcd_restored = (sha, token)
        self.etcd_rebuilds.append(sha)
        return 0, b"@@RESTORED\n@@NOBUMP\n", b""

    def _observe(self, args: list[str]) -> str:
        out: list[str] = [f"@@NOW {time.time():.6f}"]
        units: list[str] = []
        late: list[str] = []  # what the script's concurrent jobs print after the units
        certs: list[str] = []
        i = 0
        while i < len(args):
            tag = args[i]
            if tag == "F":
                path, limit, known = args[i + 1], int(args[i + 2]), args[i + 3]
                out.append(f"@@F {path}")
                f = self.files.get(path)
                if path in self.dirs:
                    mode, owner, group = self.dirs[path]
                    out.append(f"@@DIR {mode:o} {owner} {group}")
                elif f is None:
                    out.append("@@MISSING")
                elif f.stamp == known:
                    out.append("@@SAME")
                else:
                    out.append(f"{f.mode:o} {f.owner} {f.group} {f.mtime:.9f} {len(f.content)} {f.stamp}")
                    if len(f.content) > limit:
                        out.append("@@BIG")
                    elif f.content:
                        out.append(_b64(f.content))
                i += 4
            elif tag == "U":
                units.append(args[i + 1])
                i += 2
            elif tag == "A":
                late.append(f"@@A {args[i + 1]} {1 if args[i + 2] in self.addresses else 0}")
                i += 3
            elif tag == "C":  # every certificate is the same unchanging file, valid until 2036
                stamp = "0:1:1000:1000000000.000000000:1000000000.000000000"
                said = f"same {stamp}" if args[i + 2] == stamp else f"stamp {stamp}\n{_certificate()}"
                certs.append(f"@@C {args[i + 1]}\n{said}")
                i += 3
            elif tag == "H":
                ok = self._healthy(args[i + 1])
                late.append(f"@@H {args[i + 1]} {0 if ok else 7} {200 if ok else '000'}")
                i += 7
            elif tag == "T":
                late.append(f"@@H {args[i + 1]} {0 if self._healthy(args[i + 1]) else 1} -")
                i += 5
            elif tag == "S":  # settle: health here changes only between commands, so nothing to wait for
                i += 2
            elif tag == "E":
                i += 3
            else:
                out.append(f"@@ERR bad argument {tag}")
                return "\n".join(out) + "\n"
        out += certs
        if units:
            out.append("@@U")
            out.append("\n\n".join(self._show(u) for u in units))
            out.append("@@UEND")
        out += late
        out.append("@@END")
        return "\n".join(out) + "\n"

    def _healthy(self, check: str) -> bool:
        unit = self.units.get(f"{check}.service")
        # checks not named after a unit always pass
        return unit is None or (unit.active and f"{check}.service" not in self.unhealthy)

    def _show(self, name: str) -> str:
        props = self.unit_properties(name)
        return "\n".join(f"{key}={props[key]}" for key in _OBSERVED)

    def unit_properties(self, name: str) -> dict[str, str]:
        """What `systemctl show` says of a unit, asked by any of its names: loaded once its file is there and a
        daemon-reload has seen it."""
        own = self.aliases.get(name, name)
        unit = self.units.get(own, SimUnit())
        path, fragment = self._fragment(own)
        loaded = fragment is not None and unit.loaded_mtime is not None
        stale = loaded and fragment is not None and fragment.mtime != unit.loaded_mtime
        return {
            "Id": own,
            "LoadState": "loaded" if loaded else "not-found",
            "ActiveState": "active" if unit.active else "inactive",
            "SubState": "running" if unit.active else "dead",
            "UnitFileState": ("enabled" if unit.enabled else "disabled") if loaded else "",
            "ActiveEnterTimestamp": _stamp(unit.active_enter),
            "MainPID": str(unit.pid if unit.active else 0),
            "NeedDaemonReload": "yes" if stale else "no",
            "FragmentPath": path if loaded else "",
            "DropInPaths": " ".join(unit.drop_ins) if loaded else "",
        }

    def _fragment(self, name: str) -> tuple[str, SimFile | None]:
        """A unit's file as systemd names it, and what is there."""
        unit = self.units.get(name)
        if unit is not None and unit.path:
            path = unit.path
        else:
            found = (f"{d}/{name}" for d in UNIT_DIRS if self.real(f"{d}/{name}") in self.files)
            path = next(found, f"{UNIT_DIR}/{name}")
        return path, self.files.get(self.real(path))

    def real(self, path: str) -> str:
        """`path` with its directory resolved as the kernel would (`dir_links`)."""
        d = posixpath.dirname(path)
        return f"{self.dir_links[d]}/{posixpath.basename(path)}" if d in self.dir_links else path

    def _write(self, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        path, mode, owner, group, backups, stamp, _kept, sha, keep = args
        self.changes += 1
        if hashlib.sha256(stdin).hexdigest() != sha:
            return 3, b"", b"content arrived incomplete; nothing installed\n"
        old = self.files.get(path)
        mtime = old.mtime if keep == "keep-mtime" and old is not None else time.time()
        self.files[path] = SimFile(stdin, int(mode, 8), owner, group, mtime)
        if old is None:
            return 0, b"", b""
        backup = f"{backups}{path}/{stamp}"
        self.backups[backup] = old
        return 0, f"backup {backup}\n".encode(), b""

    def _restore(self, path: str, backup: str) -> tuple[int, bytes, bytes]:
        self.changes += 1
        if backup == "-":
            self.files.pop(path, None)
            return 0, b"", b""
        old = self.backups.get(backup)
        if old is None:
            return 4, b"", f"backup {backup} is not there; {path} not restored\n".encode()
        self.files[path] = SimFile(old.content, old.mode, old.owner, old.group)
        return 0, b"", b""

    def _attrs(self, owner_group: str, mode: str, path: str) -> tuple[int, bytes, bytes]:
        f = self.files.get(path)
        if f is None:
            return 1, b"", f"chown: cannot access '{path}': No such file or directory\n".encode()
        f.owner, f.group = owner_group.split(":", 1)
        f.mode, f.ctime = int(mode, 8), time.time()
        return 0, b"", b""

    def _systemctl(self, args: list[str]) -> tuple[int, bytes, bytes]:
        if args == ["daemon-reload"]:
            for name in set(self.units) | self._unit_files():
                _, fragment = self._fragment(name)
                if fragment is not None:
                    self.units.setdefault(name, SimUnit()).loaded_mtime = fragment.mtime
            return 0, b"", b""
        if args[1:2] == ["--no-block"]:  # queued: the fake's jobs are done at once either way
            args = [args[0], *args[2:]]
        if len(args) == 3 and args[1] == "--":
            verb, name = args[0], args[2]
            unit = self.units.get(name)
            if unit is None or unit.loaded_mtime is None:
                return 5, b"", f"Failed to {verb} {name}: Unit {name} not found.\n".encode()
            if verb in ("enable", "disable"):
                unit.enabled = verb == "enable"
            elif verb == "reset-failed":
                pass
            elif verb == "is-active":
                return (0, b"active\n", b"") if unit.active else (3, b"failed\n", b"")
            elif verb in ("start", "restart") and (verb == "restart" or not unit.active):
                if verb == "restart":
                    self.restarted.append((time.monotonic(), name))
                fails = self.fails.get(name)
                if fails is not None and fails(self):
                    unit.active = False
                    return (
                        1,
                        b"",
                        f"Job for {name} failed because the control process exited with error code.\n".encode(),
                    )
                self._pids += 1
                unit.active, unit.active_enter, unit.pid = True, time.time(), self._pids
                self.unhealthy.discard(name)
            elif verb == "stop":
                unit.active = False
            elif verb != "start":
                return 1, b"", f"fake host: systemctl {verb} not emulated\n".encode()
            return 0, b"", b""
        return 1, b"", f"fake host: systemctl {args[:1]} not emulated\n".encode()

    def _unit_files(self) -> set[str]:
        return {name for d, _, name in (p.rpartition("/") for p in self.files) if d in UNIT_DIRS}

    # -- drift, as an operator's hand edit would make it -------------------------------------
    def hand_edit(self, path: str, content: bytes) -> None:
        old = self.files.get(path)
        self.files[path] = SimFile(
            content, old.mode if old else 0o644, old.owner if old else "root", old.group if old else "root", time.time()
        )


class FakeConnection:
    """The Connection protocol over a SimHost."""

    def __init__(self, host: SimHost):
        self.host = host

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        # what the SSH server hands the emulator: the one quoted command line, split again
        status, out, err = self.host.execute(split_command(shlex.join(argv)), input or b"")
        if len(out) > max_output:  # as transport.ssh: not read further
            raise TransientHostError(
                f"{self.host.name}: {argv[0]} answered more than {max_output} bytes; not read further", ssh=True
            )
        return CommandResult(tuple(argv), status, out, err)

    async def copy_out(
        self, argv: Sequence[str], sink: Callable[[bytes], None], *, timeout: float, max_bytes: int
    ) -> CommandResult:
        """The command's output handed to `sink` in chunks of 64 KiB, as transport.ssh hands it on."""
        result = await self.run(argv, max_output=max_bytes)
        for i in range(0, len(result.stdout), 65536):
            sink(result.stdout[i : i + 65536])
        return CommandResult(result.argv, result.exit_status, b"", result.stderr)

    async def lines(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        """The command's output, line by line (the emulator has no long-lived commands: it ends there)."""
        result = await self.run(argv)
        for line in result.stdout.splitlines(keepends=True):
            yield line

    async def close(self) -> None:
        pass


def fake_connector(
    hosts: dict[str, SimHost], down: set[str] | None = None
) -> Callable[[Target], Awaitable[Connection]]:
    """A Session's connector to these hosts; the names in `down` (changed at will) refuse connections, as does a
    name that is not one of `hosts` (a machine that is not there)."""
    down = down if down is not None else set()

    async def connect(target: Target) -> Connection:
        if target.name in down or target.name not in hosts:
            raise TransientHostError(f"{target.name}: connection refused (a fake host that is down)", ssh=True)
        return FakeConnection(hosts[target.name])

    return connect
