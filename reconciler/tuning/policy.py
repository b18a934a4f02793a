"""The etcd tuning policy, pure: warnings and the current values in, a decision out.

Rules (etcd's tuning guide; docs/daemon.md "etcd tuning when etcd is overloaded"): act when at least `warnings` heartbeat warnings fall within `window` on
one member, ignoring those around etcd restarts (ours or anyone's: no feedback loop); the new
heartbeat covers the worst heartbeat gap seen, with a margin, rounded up; the election timeout is
`election_multiplier` x heartbeat (never below 5 x, never above 50000 ms); values only ever go up,
never above the operator's ceiling, and not again before the cooldown has passed; a burst of warnings is
judged once it pauses (or has gone on for BURST_LONGEST_S), so its worst gap is in the one raise. Called
by the tuner.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.components.etcd import MAX_ELECTION_MS as ETCD_MAX_ELECTION_MS
from reconciler.components.etcd import MIN_ELECTION_FACTOR as ETCD_MIN_ELECTION_FACTOR
from reconciler.spec.desired import TuningPolicy
from reconciler.tuning.etcdlog import HeartbeatWarning

__all__ = ["Decision", "TuningPolicy", "decide", "suspected_cause"]
SLOW_DISK_FSYNC_P99_MS = 10.0
# A burst of warnings is judged whole: a raise waits until no counted warning came for BURST_QUIET_S (the
# worst gap of a burst may come last), or the warnings have gone on for BURST_LONGEST_S (overload that never
# pauses). Deciding on the first few warnings of a burst and again on its worst one restarts every member twice.
BURST_QUIET_S = 2.0
BURST_LONGEST_S = 10.0


Outcome = Literal["raised", "quiet", "covered", "cooldown", "ceiling"]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    heartbeat_ms: int | None = None  # the new values when raised
    election_ms: int | None = None
    cause: str = ""
    counted: Mapping[str, int] = field(default_factory=dict)  # warnings that count, per member
    ignored: int = 0  # warnings inside a restart's grace window


def suspected_cause(fsync_p99_ms: Mapping[str, float | None]) -> str:
    slow = {m: v for m, v in fsync_p99_ms.items() if v is not None and v > SLOW_DISK_FSYNC_P99_MS}
    if slow:
        worst = max(slow, key=lambda m: slow[m])
        return f"slow disk (WAL fsync p99 {slow[worst]:.1f} ms on {worst} > {SLOW_DISK_FSYNC_P99_MS:g} ms)"
    if any(v is not None for v in fsync_p99_ms.values()):
        return "CPU starvation or network (WAL fsync p99 under 10 ms)"
    return "CPU starvation or network (WAL fsync latency not available)"


def in_restart_window(at: float, restarts: Iterable[tuple[float, float | None]], grace: float) -> bool:
    """Whether `at` falls between a restart's stop (minus grace) and its start (plus grace); open ones count."""
    return any(stop - grace <= at and (start is None or at <= start + grace) for stop, start in restarts)


def election_for(heartbeat_ms: int, policy: TuningPolicy, current_election_ms: int) -> int:
    wanted = min(math.ceil(heartbeat_ms * policy.election_multiplier), policy.max_election_ms, ETCD_MAX_ELECTION_MS)
    return max(current_election_ms, wanted)  # never lowered


def decide(
    policy: TuningPolicy,
    now: float,
    warnings: Mapping[str, Sequence[HeartbeatWarning]],
    restarts: Sequence[tuple[float, float | None]],
    current: tuple[int, int],
    last_change: float | None,
    fsync_p99_ms: Mapping[str, float | None] | None = None,
) -> Decision:
    """current = (heartbeat_ms, election_ms) in force; warnings by member; restarts as (stop, start|None)."""
    heartbeat, election = current
    counted: dict[str, list[HeartbeatWarning]] = {}
    ignored = 0
    for member, seen in warnings.items():
        for w in seen:
            if now - w.at > policy.window_seconds:
                continue
            if in_restart_window(w.at, restarts, policy.restart_grace_seconds):
                ignored += 1
                continue
            counted.setdefault(member, []).append(w)
    counts = {m: len(ws) for m, ws in counted.items()}
    busiest = max(counts.values(), default=0)
    if busiest < policy.warnings:
        return Decision(
            "quiet",
            f"{busiest} warning(s) on the busiest member within {policy.window_seconds:g}s "
            f"(acting at {policy.warnings})",
            counted=counts,
            ignored=ignored,
        )
    worst = max((w for ws in counted.values() for w in ws), key=lambda w: w.gap_ms)
    step = max(1, policy.round_to_ms)
    wanted = math.ceil(worst.gap_ms * policy.margin / 2 / step) * step  # 2 x heartbeat is etcd's warning threshold
    cause = suspected_cause(fsync_p99_ms or {})
    base: dict[str, Any] = dict(counted=counts, ignored=ignored, cause=cause)
    if wanted <= heartbeat:
        return Decision("covered", f"worst gap {worst.gap_ms:.0f} ms is covered by heartbeat {heartbeat} ms", **base)
    if last_change is not None and now - last_change < policy.cooldown_seconds:
        left = policy.cooldown_seconds - (now - last_change)
        return Decision("cooldown", f"would raise heartbeat to {wanted} ms; cooldown has {left:.0f}s left", **base)
    ceiling = min(policy.max_heartbeat_ms, policy.max_election_ms // ETCD_MIN_ELECTION_FACTOR)
    new_heartbeat = min(wanted, ceiling)
    if new_heartbeat <= heartbeat:
        return Decision(
            "ceiling",
            f"worst gap {worst.gap_ms:.0f} ms wants heartbeat {wanted} ms, but the ceiling is "
            f"{ceiling} ms and it is already {heartbeat} ms",
            **base,
        )
    stamps = [w.at for ws in counted.values() for w in ws]
    if now - max(stamps) < BURST_QUIET_S and now - min(stamps) < BURST_LONGEST_S:
        return Decision(
            "quiet",
            f"would raise heartbeat to {new_heartbeat} ms; waiting for the burst of warnings to pause "
            f"(the last {now - max(stamps):.1f}s ago)",
            **base,
        )
    new_election = election_for(new_heartbeat, policy, election)
    capped = " (capped at the ceiling)" if new_heartbeat < wanted else ""
    return Decision(
        "raised",
        f"{busiest} warnings within {policy.window_seconds:g}s, worst heartbeat gap "
        f"{worst.gap_ms:.0f} ms: heartbeat {heartbeat} -> {new_heartbeat} ms{capped}, "
        f"election {election} -> {new_election} ms",
        new_heartbeat,
        new_election,
        **base,
    )
