"""The plan's vocabulary: actions on one host, in the order they must run, and how to print them.

Produced by `plan.diff.plan_host`, carried out by `apply.executor`, printed by the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Kind(str, Enum):
    DIRECTORY = "directory"  # create a directory (and its parents), or fix its mode and owner
    WRITE = "write"  # atomic write of content, mode and owner
    ATTRS = "attrs"  # content right, mode/owner wrong
    DAEMON_RELOAD = "daemon-reload"
    ENABLE = "enable"
    DISABLE = "disable"
    STOP = "stop"
    START = "start"
    RESTART = "restart"
    RELOAD = "reload"  # systemctl reload: the unit re-reads its files without stopping


STARTS = (Kind.START, Kind.RESTART)  # what runs a unit's program anew, on the flags its files give it

SYMBOL = {
    Kind.DIRECTORY: "+",
    Kind.WRITE: "~",
    Kind.ATTRS: "~",
    Kind.DAEMON_RELOAD: "*",
    Kind.ENABLE: "+",
    Kind.DISABLE: "-",
    Kind.STOP: "-",
    Kind.START: "+",
    Kind.RESTART: "*",
    Kind.RELOAD: "*",
}


@dataclass(frozen=True)
class Action:
    kind: Kind
    target: str  # a path for DIRECTORY/WRITE/ATTRS, a unit name otherwise, "" for daemon-reload
    reason: str
    diff: str = ""  # unified diff (redacted for sensitive files)
    rollout: bool = False  # a RESTART that must go host by host, health-gated
    keep_mtime: bool = False  # a format-only WRITE: the new file keeps the old one's mtime (no restart is due)
    no_block: bool = False  # a RESTART queued, not waited for (--break-glass: a member without quorum never starts)
    # the files whose change brings a RESTART, RELOAD, DAEMON_RELOAD or ENABLE (empty: brought by something else,
    # e.g. a unit found stopped, systemd asking for a reload): a rolled-back file held from a host brings none
    because: tuple[str, ...] = ()

    def headline(self) -> str:
        return f"{SYMBOL[self.kind]} {self.short()}: {self.reason}"

    def short(self) -> str:
        """What it does, without why: `restart kube-apiserver.service`."""
        return f"{self.kind.value} {self.target}" if self.target else self.kind.value


def without(actions: tuple[Action, ...], paths: set[str] | frozenset[str]) -> tuple[Action, ...]:
    """The actions without the writes of `paths` and what those writes alone bring (a restart, reload,
    daemon-reload or re-enable whose `because` names only them); what else brings an action still does."""

    def brought(a: Action) -> bool:
        if a.kind is Kind.WRITE:
            return a.target in paths
        brings = a.kind in (Kind.RESTART, Kind.RELOAD, Kind.DAEMON_RELOAD, Kind.ENABLE)
        return brings and bool(a.because) and set(a.because) <= paths

    return tuple(a for a in actions if not brought(a))


@dataclass(frozen=True)
class Plan:
    host: str
    actions: tuple[Action, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return not self.actions

    def now(self) -> tuple[Action, ...]:
        """Actions that run on this host alone, in parallel with other hosts."""
        return tuple(a for a in self.actions if not a.rollout)

    def rollouts(self) -> tuple[tuple[Action, ...], ...]:
        """Groups the engine runs one host at a time, behind a health gate: staged writes, then a restart (or
        reload)."""
        groups: list[tuple[Action, ...]] = []
        group: list[Action] = []
        for action in (a for a in self.actions if a.rollout):
            group.append(action)
            if action.kind in (Kind.RESTART, Kind.RELOAD):
                groups.append(tuple(group))
                group = []
        return tuple(groups)

    def render(self) -> str:
        if self.empty:
            return f"{self.host}: no changes"
        out = [f"{self.host}: {len(self.actions)} change(s)"]
        for action in self.actions:
            out.append(f"  {action.headline()}" + (" (one host at a time)" if action.rollout else ""))
            out.extend(f"      {line}" for line in action.diff.splitlines())
        return "\n".join(out)
