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
class HostSnapshot:
    host: str
    files: dict[str, FileFact] = field(default_factory=dict)
    units: dict[str, UnitFact] = field(default_factory=dict)
    checks: tuple[CheckResult, ...] = ()

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    def failing_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]
