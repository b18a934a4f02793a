"""What a pass over a host produced: HostOutcome per host, RunResult per run.

Values: built by `engine` (converge, rollout), read by `status` (records, metrics), the CLI and the tests.
Kept apart from the engine so that reading results never imports the machinery that makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reconciler.apply.executor import ApplyLog
from reconciler.observe.snapshot import HostSnapshot
from reconciler.plan.actions import Action, Plan

Status = Literal["converged", "pending", "unconverged", "failed", "rolled-back"]


@dataclass(frozen=True)
class Step:
    """What one stage of a pass (apply, rollout) produced. `status` None: nothing stopped it, the pass goes on."""

    status: Status | None = None
    error: str = ""
    ssh_error: bool = False
    applied: tuple[Action, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> time: apply, restart
    rollbacks: tuple[str, ...] = ()  # units rolled back

    @staticmethod
    def last_stop(steps: list[Step]) -> Step:
        """The last stage that stopped the pass (a later stage's status overrides an earlier one's), or none."""
        return next((s for s in reversed(steps) if s.status is not None), Step())

    @staticmethod
    def of(
        applied: ApplyLog,
        status: Status | None = None,
        error: str = "",
        ssh_error: bool = False,
        rollbacks: tuple[str, ...] = (),
    ) -> Step:
        return Step(status, error, ssh_error, tuple(applied.done), dict(applied.seconds), rollbacks)


@dataclass(frozen=True)
class Looked:
    """What observing a host again (verify) found."""

    status: Status
    error: str = ""
    ssh_error: bool = False
    snapshot: HostSnapshot | None = None
    remaining: Plan | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class HostOutcome:
    host: str
    status: Status
    plan: Plan | None = None  # the plan found before applying
    applied: tuple[Action, ...] = ()
    snapshot: HostSnapshot | None = None  # the last observation
    remaining: Plan | None = None  # what still differs after applying
    error: str = ""
    ssh_error: bool = False  # the failure was the SSH connection itself
    rollbacks: tuple[str, ...] = ()  # units rolled back in this pass
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> time: observe, apply, restart, verify

    @staticmethod
    def of(first: HostOutcome, steps: list[Step], looked: Looked | None) -> HostOutcome:
        """A pass, built once from its stages: the first look (and plan), apply and rollout, the look after.

        The status is the last stage's that stopped the pass, else what the look after found; a rollback
        stays the status after a look that did not fail (waiting would not make the host converge).
        """
        seconds = dict(first.seconds)
        for step in steps:
            for phase, spent in step.seconds.items():
                seconds[phase] = seconds.get(phase, 0.0) + spent
        stopped = Step.last_stop(steps)
        status, error, ssh_error = stopped.status, stopped.error, stopped.ssh_error
        snapshot, remaining = first.snapshot, None
        if looked is not None:
            seconds["verify"] = looked.seconds
            snapshot, remaining = looked.snapshot or snapshot, looked.remaining
            if status not in ("rolled-back", "pending") or looked.status in ("failed", "converged"):
                status, error, ssh_error = looked.status, looked.error, looked.ssh_error
        return HostOutcome(
            first.host,
            status or first.status,
            plan=first.plan,
            applied=tuple(a for s in steps for a in s.applied),
            snapshot=snapshot,
            remaining=remaining,
            error=error,
            ssh_error=ssh_error,
            rollbacks=tuple(u for s in steps for u in s.rollbacks),
            seconds=seconds,
        )

    def summary(self) -> str:
        if self.status == "failed":
            return f"{self.host}: FAILED: {self._said()}"
        if self.status == "unconverged":
            return f"{self.host}: NOT CONVERGED: {self._said()}"
        if self.status == "rolled-back":
            return f"{self.host}: ROLLED BACK: {self._said()}"
        if self.status == "pending":
            pending = f"{self.host}: {len(self.plan.actions) if self.plan else 0} change(s) pending"
            return f"{pending}: {self._said()}" if self.error else pending
        return f"{self.host}: converged ({len(self.applied)} change(s) applied)"

    def _said(self) -> str:
        """The error without the host's name in front: the summary line names it already (`master-1: FAILED:
        root@10.0.0.1:22: cannot connect`, not `master-1: FAILED: master-1 (root@10.0.0.1:22): cannot connect`)."""
        error = self.error
        if error.startswith(f"{self.host}: "):
            return error[len(self.host) + 2 :]
        if error.startswith(f"{self.host} ("):
            where, sep, rest = error[len(self.host) + 2 :].partition("): ")
            if sep:
                return f"{where}: {rest}"
        return error


@dataclass
class RunResult:
    outcomes: dict[str, HostOutcome]

    @property
    def failed(self) -> list[HostOutcome]:
        return [o for o in self.outcomes.values() if o.status in ("failed", "unconverged", "rolled-back")]

    @property
    def pending(self) -> bool:
        return any(o.status == "pending" for o in self.outcomes.values())
