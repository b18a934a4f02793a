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


@dataclass
class HostOutcome:
    host: str
    status: Status
    plan: Plan | None = None  # the plan found before applying
    applied: list[Action] = field(default_factory=list)
    snapshot: HostSnapshot | None = None  # the last observation
    remaining: Plan | None = None  # what still differs after applying
    error: str = ""
    ssh_error: bool = False  # the failure was the SSH connection itself
    rollbacks: list[str] = field(default_factory=list)  # units rolled back in this pass
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> time: observe, apply, restart, verify

    def timed(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def took(self, applied: ApplyLog) -> None:
        """Take over what an apply did and how long each phase of it took."""
        self.applied.extend(applied.done)
        for phase, seconds in applied.seconds.items():
            self.timed(phase, seconds)

    def summary(self) -> str:
        if self.status == "failed":
            return f"{self.host}: FAILED: {self.error}"
        if self.status == "unconverged":
            return f"{self.host}: NOT CONVERGED: {self.error}"
        if self.status == "rolled-back":
            return f"{self.host}: ROLLED BACK: {self.error}"
        if self.status == "pending":
            return f"{self.host}: {len(self.plan.actions) if self.plan else 0} change(s) pending"
        return f"{self.host}: converged ({len(self.applied)} change(s) applied)"


@dataclass
class RunResult:
    outcomes: dict[str, HostOutcome]

    @property
    def failed(self) -> list[HostOutcome]:
        return [o for o in self.outcomes.values() if o.status in ("failed", "unconverged", "rolled-back")]

    @property
    def pending(self) -> bool:
        return any(o.status == "pending" for o in self.outcomes.values())
