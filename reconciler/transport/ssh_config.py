"""OpenSSH client config, read as ssh reads it but bounded: the route to a host, its bastions first.

Owns which address, port, user, identity files, known_hosts files and ssh-agent reach a host, through which
ProxyJump bastions, with the precedence docs/ssh.md documents: what a Host spec says explicitly wins
over the config (ssh: the command line beats the config), the config wins over reconciler's defaults. Parsing is
asyncssh's (SSHClientConfig: Host and Match blocks, first value wins, %-tokens); reading is ours (transport.
ssh_files: regular files of bounded size, ours or root's, never quoted in an error), and so are Include (depth,
loops, how much it may match or read) and the refusal of what would run a local command (`Match exec`,
`ProxyCommand`). Called by transport.ssh before it dials anything.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from asyncssh.config import SSHClientConfig, SSHConfig

from reconciler.spec.desired import Target
from reconciler.transport.ssh_files import MAX_SSH_FILE, ParsedFiles, UnusableFile, read_config, why

DEFAULT_CONFIG = "~/.ssh/config"
NO_CONFIG = "none"  # sshConfig: none reads no config (ssh -F none)
DEFAULT_KEYS = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")  # ssh's, those asyncssh can use
MAX_CONFIG_FILES = 64  # files one lookup reads, Include'd ones counted
MAX_CONFIG_BYTES = MAX_SSH_FILE  # bytes one lookup reads, Include'd files counted (1 MiB parses in ~1 s)
MAX_INCLUDE_DEPTH = 16  # OpenSSH's READCONF_MAX_DEPTH
MAX_INCLUDE_SCAN = 10_000  # directory entries the Include patterns of one lookup may look at
MAX_HOPS = 8  # bastions on one route

_HOST = re.compile(r"[A-Za-z0-9._%:-]{1,253}")  # a name or an address (IPv6, with a %scope)
_USER = re.compile(r"[^\s\x00-\x1f\x7f@/:]{1,64}")
_JUMP = re.compile(
    r"(?:ssh://)?(?:(?P<user>[^@\s/]{1,64})@)?(?P<host>\[[0-9A-Fa-f:.%a-z]{1,253}\]|[^@\s/:\[\]]{1,253})(?::(?P<port>[0-9]{1,5}))?/?"
)


class ConfigError(ValueError):
    """An ssh config that cannot be used; the message names the file and line, never what the line says."""


class _Refused(Exception):
    """Raised by a handler; located (file, line) by the parse it happened in."""


@dataclass(frozen=True)
class Hop:
    """One SSH connection of a route: a bastion, or the host itself (the last hop)."""

    name: str  # as the route names it: the Host's address, or a ProxyJump entry's host
    host: str  # what is dialled (HostName, else the name)
    port: int
    user: str
    identity_files: tuple[str, ...]  # tried in order (with the agent's keys first)
    identities_required: bool  # the spec named it: missing is an error (config and default keys may be missing)
    identities_only: bool  # IdentitiesOnly: of the agent's keys only those of the identity files
    known_hosts: tuple[str, ...]  # the ones that exist are used; none existing is an error
    agent: str | None  # the ssh-agent socket (IdentityAgent, else SSH_AUTH_SOCK)
    verify_host_key: bool = True

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def route(target: Target, files: ParsedFiles) -> tuple[Hop, ...]:
    """The hops that reach `target`, bastions first, the host last. Raises ConfigError."""
    config = config_path(target)
    port = None if "port" in target.implicit else target.port
    user = None if "user" in target.implicit else target.user
    options = _lookup(config, target.address, user, port, files)
    keys: tuple[str, ...] = (target.identity_file,) if target.identity_file else _identity_files(options)
    required = bool(target.identity_file)
    known: tuple[str, ...]
    if "known_hosts" not in target.implicit or "UserKnownHostsFile" not in options:
        known = (target.known_hosts,) if target.known_hosts else ()
    else:
        known = _paths(options["UserKnownHostsFile"])
    host = _hop(
        target.address,
        options,
        config,
        port=target.port,
        user=target.user,
        keys=keys,
        required=required,
        known=known,
        verify=not target.unsafe_skip_host_key_verification,
    )
    jumps = _jumps(options.get("ProxyJump"), config, target, files, [target.address])
    if len(jumps) > MAX_HOPS:
        raise ConfigError(f"ssh config {config}: more than {MAX_HOPS} ProxyJump bastions for {target.address}")
    return (*jumps, host)


def config_path(target: Target) -> str | None:
    """The config file to read for `target`: its sshConfig, else ~/.ssh/config when there is one; None: none."""
    if target.ssh_config == NO_CONFIG:
        return None
    if target.ssh_config:
        return target.ssh_config
    default = os.path.expanduser(DEFAULT_CONFIG)
    return default if os.path.lexists(default) else None


def _jumps(value: object, config: str | None, target: Target, files: ParsedFiles, path: list[str]) -> list[Hop]:
    """The bastions a ProxyJump value names, in order; the first one's own ProxyJump (its bastions) first."""
    if not isinstance(value, str) or value.lower() == NO_CONFIG:
        return []
    entries = value.split(",")
    if len(path) - 1 + len(entries) > MAX_HOPS:
        raise ConfigError(f"ssh config {config}: more than {MAX_HOPS} ProxyJump bastions for {path[0]}")
    hops: list[Hop] = []
    for i, entry in enumerate(entries):
        found = _JUMP.fullmatch(entry.strip())
        if not found:
            raise ConfigError(f"ssh config {config}: ProxyJump for {path[-1]}: an entry is not [user@]host[:port]")
        name = found["host"].strip("[]")
        user, port = found["user"], int(found["port"]) if found["port"] else None
        if not _HOST.fullmatch(name) or (user is not None and not _USER.fullmatch(user)):
            raise ConfigError(f"ssh config {config}: ProxyJump for {path[-1]}: an entry is not [user@]host[:port]")
        if port is not None and not 1 <= port <= 65535:
            raise ConfigError(f"ssh config {config}: ProxyJump for {path[-1]}: port out of range")
        if name in path:
            raise ConfigError(
                f"ssh config {config}: ProxyJump loop: {name} is reached through itself (give its Host block "
                "`ProxyJump none`)"
            )
        options = _lookup(config, name, user, port, files)
        if i == 0:  # as ssh: the first bastion is reached the way ssh would reach it, its own bastions included
            hops += _jumps(options.get("ProxyJump"), config, target, files, [*path, name])
        keys: tuple[str, ...] = _identity_files(options)
        required = "IdentityFile" not in options and bool(target.identity_file)
        if required:
            keys = (target.identity_file or "",)
        known = (
            _paths(options["UserKnownHostsFile"]) if "UserKnownHostsFile" in options else (target.known_hosts or "",)
        )
        hops.append(_hop(name, options, config, port=22, user=_local_user(), keys=keys, required=required, known=known))
    return hops


def _hop(
    name: str,
    options: dict[str, Any],
    config: str | None,
    *,
    port: int,
    user: str,
    keys: tuple[str, ...],
    required: bool,
    known: tuple[str, ...],
    verify: bool = True,
) -> Hop:
    host = options.get("Hostname") or name
    user = options.get("User") or user
    port = options.get("Port") or port
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise ConfigError(f"ssh config {config}: HostName for {name} is not a host name or address")
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise ConfigError(f"ssh config {config}: User for {name} is not a user name")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"ssh config {config}: Port for {name} is out of range")
    return Hop(
        name=name,
        host=host,
        port=port,
        user=user,
        identity_files=keys,
        identities_required=required,
        identities_only=bool(options.get("IdentitiesOnly")),
        known_hosts=tuple(k for k in known if k),
        agent=_agent(options.get("IdentityAgent", "SSH_AUTH_SOCK")),
        verify_host_key=verify,
    )


def _identity_files(options: dict[str, Any]) -> tuple[str, ...]:
    return _paths(options["IdentityFile"]) if "IdentityFile" in options else _paths(DEFAULT_KEYS)


def _paths(values: object) -> tuple[str, ...]:
    return (
        tuple(os.path.expanduser(v) for v in values if isinstance(v, str)) if isinstance(values, list | tuple) else ()
    )


def _agent(value: object) -> str | None:
    """ssh's IdentityAgent: `none`, `SSH_AUTH_SOCK` or `$VAR` (from the environment), else a socket path."""
    if not isinstance(value, str) or value.lower() == NO_CONFIG:
        return None
    if value == "SSH_AUTH_SOCK" or value.startswith("$"):
        value = os.environ.get(value.lstrip("$").strip("{}"), "")
        return value or None
    return os.path.expanduser(value)


def _local_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "root" if os.getuid() == 0 else str(os.getuid())


def _lookup(config: str | None, host: str, user: str | None, port: int | None, files: ParsedFiles) -> dict[str, Any]:
    """The options `config` gives `host` (asyncssh's option names: Hostname, Port, User, IdentityFile, ...).
    An explicit user and port are given first: in ssh's first-value-wins order, the config cannot change them."""
    if config is None:
        return {}
    try:
        data, ident = files.get("ssh_config", config, read_config)
    except (UnusableFile, OSError) as exc:
        raise ConfigError(f"ssh config {config} cannot be used: {why(exc, 'unreadable')}") from None
    user_arg: object = () if user is None else user
    port_arg: object = () if port is None else port
    parsed = cast(_Config, _Config.load(None, None, False, False, True, _local_user(), user_arg, host, port_arg))
    parsed.reader = _Reader(files, len(data))
    parsed.parse_text(config, ident, data)
    return dict(parsed.get_options(False))


class _Reader:
    """What one lookup may read: files, bytes, directory entries looked at; and the Include stack."""

    def __init__(self, files: ParsedFiles, first: int):
        self.files, self.count, self.bytes, self.scanned = files, 1, first, 0
        self.stack: list[tuple[int, int]] = []

    def read(self, path: str) -> tuple[bytes, tuple[int, int]]:
        self.count += 1
        if self.count > MAX_CONFIG_FILES:
            raise _Refused(f"Include: more than {MAX_CONFIG_FILES} config files for one host")
        try:
            data, ident = self.files.get("ssh_config", path, read_config)
        except (UnusableFile, OSError) as exc:
            raise _Refused(f"Include: a file it names cannot be used: {why(exc, 'unreadable')}") from None
        self.bytes += len(data)
        if self.bytes > MAX_CONFIG_BYTES:
            raise _Refused(f"Include: more than {MAX_CONFIG_BYTES} bytes of config for one host")
        if ident in self.stack:
            raise _Refused("Include loop: a file includes itself")
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            raise _Refused(f"Include nested more than {MAX_INCLUDE_DEPTH} files deep")
        return data, ident

    def glob(self, pattern: str) -> list[str]:
        """The files a pattern names, as glob(3) finds them (`**` is `*`, a leading dot is matched only by a
        dot), sorted; at most MAX_INCLUDE_SCAN directory entries looked at."""
        path = os.path.expanduser(pattern)
        if not os.path.isabs(path):  # as ssh for a user config: relative to ~/.ssh
            path = os.path.join(os.path.expanduser("~/.ssh"), path)
        found = ["/"]
        for part in path.split("/"):
            if not part or not any(c in part for c in "*?["):
                found = [os.path.join(base, part) for base in found] if part else found
                continue
            matched = []
            for base in found:
                try:
                    with os.scandir(base) as entries:
                        for entry in entries:
                            self.scanned += 1
                            if self.scanned > MAX_INCLUDE_SCAN:
                                raise _Refused(f"Include: patterns look at more than {MAX_INCLUDE_SCAN} files")
                            if entry.name.startswith(".") and not part.startswith("."):
                                continue
                            if fnmatch.fnmatchcase(entry.name, part):
                                matched.append(os.path.join(base, entry.name))
                except OSError:
                    continue  # not a directory, or not ours to list: matches nothing (as glob)
            found = matched
        return sorted(p for p in found if os.path.isfile(p))


class _Config(SSHClientConfig):
    """asyncssh's client config parser, fed files we read (bounded, checked) and with three handlers of ours."""

    reader: _Reader

    def parse_text(self, name: str, ident: tuple[int, int], data: bytes) -> None:
        """Parse one file's bytes as asyncssh parses a file (it opens a path: a memfd holding exactly what was
        read and checked, so the file cannot change between the two)."""
        self.reader.stack.append(ident)
        try:
            fd = os.memfd_create("ssh_config", os.MFD_CLOEXEC)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                super().parse(Path(f"/proc/self/fd/{fd}"))
            finally:
                os.close(fd)
        except ConfigError:
            raise
        except _Refused as exc:
            raise ConfigError(f"ssh config {name} line {self._line_no}: {exc}") from None
        except Exception as exc:  # asyncssh's errors quote the line: named by kind only
            raise ConfigError(f"ssh config {name} line {self._line_no}: {self._kind(exc)}") from None
        finally:
            self.reader.stack.pop()

    def _kind(self, exc: Exception) -> str:
        if isinstance(exc, UnicodeDecodeError):
            return "not UTF-8 text"
        option = re.match(r".*? line \d+: (?:Invalid|Missing) (\w+) ", str(exc))
        if option and option[1].lower() in self._handlers:
            return f"a {self._handlers[option[1].lower()][0]} value ssh would refuse"
        return "not valid ssh config (an option, value or quoting ssh would refuse)"

    def _include_files(self, option: str, args: list[str]) -> None:
        old_path, old_line = self._path, self._line_no
        for pattern in args:
            for path in self.reader.glob(pattern):
                data, ident = self.reader.read(path)
                self.parse_text(path, ident, data)
                self._path, self._line_no = old_path, old_line  # an error of the next one is this line's
        self._matching = True
        args.clear()

    def _match_no_exec(self, option: str, args: list[str]) -> None:
        i = 0
        while i < len(args):
            criterion = args[i].lower().lstrip("!")
            if criterion == "exec":
                raise _Refused("Match exec is refused: reconciler runs no local command from an ssh config")
            i += 1 if criterion in ("all", "canonical", "final") else 2
        SSHConfig._match(self, option, args)

    def _proxy_command(self, option: str, args: list[str]) -> None:
        value = args.pop(0)
        if value.lower() == NO_CONFIG or "ProxyJump" in self._options or option in self._options:
            self._options.setdefault(option, None)  # none, or ssh ignores it: the first of the two wins
            return
        raise _Refused(
            "ProxyCommand is refused: reconciler runs no local command from an ssh config (use ProxyJump); "
            "the host is not dialled directly instead"
        )

    _handlers = {
        **SSHClientConfig._handlers,
        "include": ("Include", _include_files),
        "match": ("Match", _match_no_exec),
        "proxycommand": ("ProxyCommand", _proxy_command),
    }
