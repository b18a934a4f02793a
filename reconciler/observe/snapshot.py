"""HostSnapshot: what one observation found on a host. Produced by `observe.facts`, read by `plan`.

Plain frozen dataclasses, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileFact:
    path: str
    exists: bool
    mode: int = 0
    owner: str = ""
    group: str = ""
    mtime: float = 0.0
    content: bytes = b""


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
        return self.unit_file_state in ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated")


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

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    def failing_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]
