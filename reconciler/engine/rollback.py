"""Putting a host back on its previous config when a restart onto the new one fails.

Owns the rollback of one unit on one host: read why it failed (the unit's own journal), restore the files
written for it from the backups the write just took, daemon-reload when its unit file was among them,
restart it, and wait until it is healthy again. What was rolled back is remembered by `engine.held`.
Called by `engine.rollouts`, for members of a rollout unit (health-gated) and other units alike.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog

from reconciler.apply.executor import ApplyLog, Fence, restore
from reconciler.components.systemd import unit_directives
from reconciler.errors import HostError, NotLeader
from reconciler.observe.snapshot import CheckResult
from reconciler.plan.actions import Action, Kind
from reconciler.secrets import known_words, scrub
from reconciler.spec.desired import DesiredHost, DesiredUnit
from reconciler.terminal import printable
from reconciler.transport.base import Connection

log = structlog.get_logger(__name__)

# A line that says why a process would not start (etcd: "... should be at least as 5 times as ...",
# "cannot access data directory: ..."; Go flag errors: "invalid value ..."; Python: "error: argument ...").
_WHY = re.compile(
    r"error|fatal|panic|cannot|can't|could not|invalid|refus|should be|must|not allowed|denied|"
    r"no such|unknown|failed",
    re.IGNORECASE,
)
LOG_LINE_CHARS = 300


class RolledBack(HostError):
    """A restart on new config failed; the previous config was put back (and the unit restarted on it)."""

    def __init__(self, message: str, *, healthy: bool):
        super().__init__(message)
        self.healthy = healthy


def explain(lines: Iterable[str], known: frozenset[str] = frozenset()) -> str:
    """Pure: the unit's own line that best says why it failed: the last one that sounds like a reason, else its
    last line; secrets taken out (`reconciler.secrets.scrub`: secret-looking values, URL passwords, the `known`
    words of the sensitive files the unit reads), before it is cut to length (a secret is never half shown)."""
    kept = [printable(line).strip() for line in lines if line.strip()]
    reasons = [line for line in kept if _WHY.search(line)]
    chosen = reasons[-1] if reasons else (kept[-1] if kept else "")
    return scrub(chosen[: 8 * LOG_LINE_CHARS], known)[:LOG_LINE_CHARS]


def withheld(host: DesiredHost, unit: DesiredUnit) -> bool:
    """Whether a unit's journal is kept out of messages altogether: its unit file, a drop-in or an env file it is
    started with is sensitive, so what it echoes of its own configuration (flags, connection strings) is secret."""
    started_with = {*unit.unit_files, *_environment_files(host, unit)}
    return any(host.files[p].sensitive for p in started_with if p in host.files)


def _environment_files(host: DesiredHost, unit: DesiredUnit) -> list[str]:
    text = b"\n".join(host.files[p].content for p in unit.unit_files if p in host.files).decode(errors="replace")
    return [d.value.lstrip("-") for d in unit_directives(text) if d.key == "EnvironmentFile"]


def secret_words(host: DesiredHost, unit: DesiredUnit) -> frozenset[str]:
    """The words of the sensitive files the unit reads: taken out of whatever it wrote to its journal."""
    return known_words(
        host.files[p].content
        for p in (*unit.restart_on, *unit.reload_on)
        if p in host.files and host.files[p].sensitive
    )


def changed_values(actions: Iterable[Action], host: DesiredHost) -> str:
    """Pure: the new lines the failed writes brought (a sensitive file by its path only; secret-looking values
    taken out of the others), for the error."""
    out: list[str] = []
    for action in actions:
        if action.kind is not Kind.WRITE:
            continue
        f = host.files.get(action.target)
        if f is not None and f.sensitive:
            out.append(f"{action.target} (sensitive)")
            continue
        added = [
            line[1:].strip() for line in action.diff.splitlines() if line.startswith("+") and not line.startswith("+++")
        ]
        out.extend(f"{action.target}: {scrub(line[:4096])[:120]}" for line in added[:3] if not line.startswith("#"))
    return "; ".join(out[:6]) or "no content change"


async def unit_log(conn: Connection, unit: str, seconds: float) -> list[str]:
    """The unit's own journal lines (its processes, not systemd's words about it) of the last `seconds`."""
    result = await conn.run(
        [
            "journalctl",
            f"_SYSTEMD_UNIT={unit}",
            f"--since=-{int(seconds) + 5}s",
            "-o",
            "cat",
            "--no-pager",
            "-n",
            "200",
        ],
        timeout=30,
        max_output=1024 * 1024,
    )
    return result.stdout.decode("utf-8", errors="replace").splitlines()


async def roll_back(
    conn: Connection,
    host: DesiredHost,
    unit: DesiredUnit,
    tried: tuple[Action, ...],
    applied: ApplyLog,
    failure: str,
    began: float,
    healthy: Callable[[], Awaitable[CheckResult]],
    deposed: Fence | None = None,
) -> RolledBack:
    """Put back what `applied` wrote for `unit`, restart it on that, wait for `healthy`; the error to report.

    Each step that changes the host (every restore, the daemon-reload, the restart) and the health wait first
    ask whether this actor is `deposed` (etcd, answering, shows its leadership or its restart lock another's): a
    rollback whose actor lost them stops there and raises NotLeader saying what was left (which files are back,
    whether the unit was restarted). etcd not answering is no proof of that, and does not stop it: the member
    being rolled back may be why etcd does not answer (a single member, two of two), and putting back a member
    that failed to start takes nothing from a quorum."""
    written = [p for p in applied.backups if p in unit.restart_on]
    log.warning("rolling back", host=host.name, unit=unit.name, failure=failure, files=written)
    restored: list[str] = []

    async def fenced(before: str) -> None:
        if deposed is None or not await deposed():
            return
        left = [p for p in written if p not in restored]
        message = (
            f"{host.name}: rollback of {unit.name} not done: lock lost (this actor no longer leads or holds the "
            f"restart lock) before {before}. Left: {unit.name} failed on the new config ({failure}); "
            f"restored: {', '.join(restored) or 'nothing'}; still new: {', '.join(left) or 'nothing'}; "
            f"{unit.name} not restarted by this rollback. The actor that holds the lock now decides."
        )
        log.error("rollback not done: lock lost", host=host.name, unit=unit.name, restored=restored, left=left)
        raise NotLeader(message)

    if withheld(host, unit):
        why = f"(not shown: it is started with sensitive files; see journalctl -u {unit.name} on {host.name})"
    else:  # read before the restart adds lines
        why = explain(await unit_log(conn, unit.name, time.monotonic() - began), secret_words(host, unit))
    for path in reversed(written):
        await fenced(f"restoring {path}")
        await restore(conn, host.name, path, applied.backups[path])
        restored.append(path)
    # reset-failed: the failed start (and systemd's own Restart= attempts) must not leave the unit past its
    # StartLimitBurst, or systemd would refuse the very restart that puts the old config back.
    steps = ([["systemctl", "daemon-reload"]] if set(unit.unit_files) & set(written) else []) + [
        ["systemctl", "reset-failed", "--", unit.name],
        ["systemctl", "restart", "--", unit.name],
    ]
    restarted = True
    for argv in steps:
        await fenced(" ".join(argv))
        result = await conn.run(argv, timeout=300)
        restarted = restarted and (result.ok or argv[1] == "reset-failed")
    if restarted:
        await fenced(f"waiting for {unit.name} to be healthy")
    check = await healthy() if restarted else CheckResult(unit.name, False, "restart on the previous config failed")
    state = "healthy again" if check.ok else f"still unhealthy ({check.detail})"
    message = (
        f"{host.name}: {unit.name} failed on the new config ({failure}); rolled back to the previous config, "
        f"{state}. New values: {changed_values(tried, host)}. {unit.name} said: {why or '(nothing in its journal)'}"
    )
    log.error("rolled back", host=host.name, unit=unit.name, healthy=check.ok, unit_said=why)
    return RolledBack(message, healthy=check.ok)
