"""Which etcd version a member may be started on, given the version its cluster runs at: etcd's upgrade rules.

A cluster runs at one version (`GET /version`'s "etcdcluster": the lowest minor version among its members, which
only ever goes up). A member may run that minor version or the next one: a rolling upgrade takes a cluster one
minor version up, member by member (3.4 -> 3.5), and until the last member runs the new one the cluster stays at
the old version, so a member can still go back. Once every member runs 3.5 the cluster version becomes 3.5 and
a 3.4 member is refused by the cluster (it would not join): going back takes a restore from a snapshot. Pure:
the binary's `--version` text arrives from `observe.programs`, the cluster's version from a member
(`leader.on_host`); called by `engine.startable` before a start or restart.
"""

from __future__ import annotations

import re

_BINARY = re.compile(r"etcd Version: (\d{1,4})\.(\d{1,4})\.(\d{1,6})")
_CLUSTER = re.compile(r"(\d{1,4})\.(\d{1,4})(?:\.\d{1,6})?")

Minor = tuple[int, int]


def binary_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from what `etcd --version` printed first ("etcd Version: 3.5.16"); None otherwise."""
    found = _BINARY.search(text)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def cluster_minor(text: str | None) -> Minor | None:
    """(major, minor) of a cluster version ("3.4.0"); None when unknown."""
    found = _CLUSTER.fullmatch(text or "")
    return (int(found[1]), int(found[2])) if found else None


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def refused(unit: str, path: str, host: str, binary_text: str, cluster: str | None) -> str | None:
    """Why `unit` on `host` may not be started on the etcd binary at `path` (whose `--version` said `binary_text`)
    in a cluster at version `cluster`; None when it may, or when either version is unknown (a binary that does
    not say its version, a cluster that does not answer: a cluster being built, one without quorum)."""
    binary, at = binary_version(binary_text), cluster_minor(cluster)
    if binary is None or at is None:
        return None
    minor = binary[:2]
    running = f"{unit} on {host} would run {path} (etcd {_dotted(binary)})"
    if minor < at:
        return (
            f"{running}, older than the cluster, which runs at version {_dotted(at)} since every member runs it: "
            f"the cluster would refuse the member. Going back to {_dotted(minor)} takes a restore from a snapshot "
            "taken before the upgrade"
        )
    if minor > (at[0], at[1] + 1):
        return (
            f"{running}, in a cluster at version {_dotted(at)}: etcd upgrades one minor version at a time "
            f"(every member on {_dotted((at[0], at[1] + 1))} first)"
        )
    return None
