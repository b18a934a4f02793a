"""HostSnapshot: what one observation found on a host. Produced by `observe.facts`, read by `plan`.

Plain frozen dataclasses, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileFact:
    """What is at a managed path. Never read through a symlink: a link is reported with its target."""

    path: str
    exists: bool  # something is at the path (a regular file, a symlink, a directory, ...)
    mode: int = 0
    owner: str = ""
    group: str = ""
    mtime: float = 0.0
    content: bytes = b""  # a regular file's content, when it was not larger than the observation reads
    size: int = -1  # a regular file's size in bytes (-1: not known)
    kind: str = "file"  # "file", "symbolic link", or stat's name of another type ("directory", "fifo", ...)
    target: str = ""  # a symbolic link's target, as the link says it (never followed)
    stamp: str = ""  # device:inode:size:mtime:ctime when it was read, if that is old enough to trust (observe.facts)

    @property
    def regular(self) -> bool:
        return self.exists and self.kind == "file"

    @property
    def complete(self) -> bool:
        """The whole content was read (a larger file is known only by its size)."""
        return self.regular and (self.size < 0 or self.size == len(self.content))

    def describe(self) -> str:
        """What is there instead of a regular file, for a plan's reason."""
        if self.kind == "symbolic link":
            return f"is a symlink to {self.target[:200]!r} (not followed)"  # repr: control characters escaped
        return f"is a {self.kind!r}" if not self.kind.replace(" ", "").isalpha() else f"is a {self.kind}"


@dataclass(frozen=True)
class UnitFact:
    name: str
    load_state: str  # loaded | not-found | ...
    active_state: str  # active | inactive | failed | activating | ...
    sub_state: str
    unit_file_state: str  # enabled | disabled | static | ...
    active_enter: float | None  # unix time the unit last became active
    main_pid: int = 0
    need_daemon_reload: bool = False
    fragment_path: str = ""

    @property
    def active(self) -> bool:
        return self.active_state in ("active", "activating", "reloading")

    @property
    def enabled(self) -> bool:
        """Started at boot by itself. `indirect` (another name, e.g. Debian's etcd2.service alias, carries the
        [Install] links), `alias` and `enabled-runtime` (gone after a reboot) are not: `systemctl enable` is due."""
        return self.unit_file_state in ("enabled", "static", "generated")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class CertFact:
    path: str
    exists: bool
    not_after: float | None = None  # unix time the certificate expires
    subject: str = ""
    error: str = ""  # unreadable, not a certificate, no openssl on the host
    stamp: str = ""  # the file's stamp when it was parsed, if old enough to trust (observe.facts)
    not_before: float | None = None  # unix time it starts
    serial: int | None = None

    def days_left(self, now: float) -> float | None:
        return None if self.not_after is None else (self.not_after - now) / 86400

    def state(self, now: float, warn_days: float) -> str:
        """The one definition of a certificate's state; every view gets it through `status.report.certificate_entry`."""
        if not self.exists:
            return "missing"
        left = self.days_left(now)
        if left is None:
            return "unreadable"
        return "expired" if left <= 0 else ("expiring" if left < warn_days else "ok")


@dataclass(frozen=True)
class HostSnapshot:
    host: str
    files: dict[str, FileFact] = field(default_factory=dict)
    units: dict[str, UnitFact] = field(default_factory=dict)
    checks: tuple[CheckResult, ...] = ()
    certificates: dict[str, CertFact] = field(default_factory=dict)
    addresses: dict[str, bool] = field(default_factory=dict)  # VirtualIP name -> whether this host holds it

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    def failing_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]
