"""Leader failover on the testbed (issue 16's goals): three replicas of the daemon, one per master as the shipped
unit with --leader-election, drift on every host the whole time (token.csv's mode changed every 0.5 s, which
whoever leads repairs on its 3 s resync), and N forced failovers, alternating:

- kill: the leader's replica SIGKILLed (systemd starts it again; it rejoins, as a follower or not);
- cut: the leader's host off the network for 30 s (its replica keeps running, cut off from etcd's quorum).

Every action a replica takes is in its journal with its start and end on the kernel's monotonic clock, which
the hosts share with this process. Per failover: seconds from the fault to the first action of another
process (the next leader's first pass), and overlaps: an action of one process that began while another
process's action was under way, or one by any process but the next leader once the next leader has acted
(until the next fault: a process cut off and back may rightly lead again after a later fault).

    .venv/bin/python -m bench.leader [--failovers N]     # root; boots the testbed (scripts/install-deps)

Medians and worst cases to stdout and bench/leader-last.json; `bench.run --only leader` keeps them in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ha import reconciler, wait  # noqa: E402
from testbed import Testbed, TestHost  # noqa: E402
from tests.support.unit_file import UNIT, install_unit, uninstall_unit  # noqa: E402

DRIFT = "while :; do chmod 0640 /etc/kubernetes/token.csv; sleep 0.5; done"
CUT_SECONDS = 30


def actions(host: TestHost) -> list[tuple[float, float, str, str]]:
    """(began, ended, process, replica) of every action the replica on `host` took, from its journal (a process
    is host:pid: each host has its own pid namespace)."""
    out = []
    done = host.ssh(f"journalctl -o json --no-pager -u {UNIT}", check=False, timeout=120)
    if done.returncode != 0:  # a host cut off just now: its actions are read once it is back
        return []
    for line in done.stdout.splitlines():
        entry = json.loads(line)
        try:
            doc = json.loads(entry.get("MESSAGE", ""))
        except (TypeError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("event") == "applied":
            out.append((float(doc["began"]), float(doc["ended"]), f"{host.name}:{entry['_PID']}", host.name))
    return out


def wins(host: TestHost) -> list[tuple[float, str]]:
    """(when, process) of every time a replica on `host` became leader (its "leader" event with ours), on the
    journal's monotonic clock."""
    done = host.ssh(f"journalctl -o json --no-pager -u {UNIT} --grep '\"ours\": true'", check=False, timeout=120)
    out = []
    for line in done.stdout.splitlines() if done.returncode == 0 else ():
        entry = json.loads(line)
        out.append((int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6, f"{host.name}:{entry['_PID']}"))
    return out


def etcd_elections(bed: Testbed, since: float, until: float) -> int:
    """etcd leader elections (raft's "elected leader") on any member between two monotonic times: each one
    gives every lease a fresh TTL (etcd's lessor on promotion), the old leader's lease included."""
    count = 0
    for h in bed.hosts:
        done = h.ssh("journalctl -o json --no-pager -u etcd --grep 'elected leader'", check=False, timeout=120)
        for line in done.stdout.splitlines() if done.returncode == 0 else ():
            count += since <= int(json.loads(line)["__MONOTONIC_TIMESTAMP"]) / 1e6 <= until
    return count


def acting(bed: Testbed, since: float) -> tuple[TestHost, str]:
    """The host and pid of the process whose actions come last after `since` (the leader now)."""

    def last() -> tuple[TestHost, str] | None:
        found = [(a, h) for h in bed.hosts if h.port_open(22) for a in actions(h) if a[0] > since]
        if not found:
            return None
        (_, _, pid, _), host = max(found, key=lambda x: x[0][0])
        return host, pid

    return wait("a leader acting", last, timeout=120)  # type: ignore[no-any-return]


def overlaps(all_actions: list[tuple[float, float, str, str]], rounds: list[dict[str, Any]]) -> int:
    """Actions of two processes under way at once; and, within each failover's window (its fault to the next
    fault), an action by any process but the next leader once the next leader has acted. A process that leads
    again in a later failover (one cut off and back) is not an overlap: it acts in another window."""
    ordered = sorted(all_actions)
    bad = sum(
        any(ended > began and other != process for _, ended, other, _ in ordered[:i])
        for i, (began, _, process, _) in enumerate(ordered)
    )
    faults = [r["began"] for r in rounds] + [float("inf")]
    for i, r in enumerate(rounds):
        window = [a for a in ordered if faults[i] <= a[0] < faults[i + 1]]
        first = next((a for a in window if a[2] != r["process"]), None)
        if first is not None:
            bad += sum(a[0] > first[0] and a[2] != first[2] for a in window)
    return bad


def failover(bed: Testbed, kind: str) -> dict[str, Any]:
    old, pid = acting(bed, time.monotonic() - 10)
    began = time.monotonic()
    if kind == "kill":
        old.ssh(f"systemctl kill -s KILL {UNIT}")
    else:
        old.ssh(f"systemd-run --collect sh -c 'ip link set host0 down; sleep {CUT_SECONDS}; ip link set host0 up'")

    def next_action() -> float | None:
        found = [a[0] for h in bed.hosts if h.port_open(22) for a in actions(h) if a[0] > began and a[2] != pid]
        return min(found) if found else None

    first = wait("another process acting", next_action, timeout=90)
    by = next(a[2] for h in bed.hosts if h.port_open(22) for a in actions(h) if a[0] == first)
    won = max(
        (t for h in bed.hosts if h.port_open(22) for t, p in wins(h) if p == by and began < t <= first), default=None
    )
    if kind == "cut":
        time.sleep(max(0.0, began + CUT_SECONDS + 1 - time.monotonic()))
        wait("the cut host back", lambda: old.port_open(22), timeout=60)
    elections = etcd_elections(bed, began, first)  # every member's journal counts (a cut one's once it is back)
    return {
        "etcd_elections": elections,
        "kind": kind,
        "from": old.name,
        "process": pid,
        "seconds": round(first - began, 3),
        "won": round(won - began, 3) if won is not None else None,  # the next leader's win, from the fault
        "began": began,
    }


def run(failovers: int = 20) -> dict[str, Any]:
    with Testbed(n=3) as bed:
        result = reconciler("apply", str(REPO / "specs"))
        assert result.returncode == 0, result.stdout + result.stderr
        start = time.monotonic()
        for h in bed.hosts:
            install_unit(h, bed, f"--listen 0.0.0.0:9479 --resync 3 --leader-election --name {h.name}")
            h.ssh(f"systemctl start {UNIT}")
            h.ssh(f"systemd-run --unit drift --collect sh -c '{DRIFT}'")
        try:
            rounds = []
            for n in range(failovers):
                rounds.append(failover(bed, "kill" if n % 2 == 0 else "cut"))
                print(f"failover {n + 1}: {json.dumps(rounds[-1])}", flush=True)
            wait("every host back", lambda: all(h.port_open(22) for h in bed.hosts))
            time.sleep(5)  # the last leader's next repairs: any late action of an old one would follow them
            everything = [a for h in bed.hosts for a in actions(h) if a[0] > start]
        finally:
            for h in bed.hosts:  # the testbed goes down after this anyway: a slow host does not lose the results
                try:
                    h.ssh("systemctl stop drift", check=False)
                    uninstall_unit(h)
                except subprocess.SubprocessError as exc:
                    print(f"{h.name}: not cleaned up: {exc}", file=sys.stderr)
        seconds = [r["seconds"] for r in rounds]
        by_kind = {
            k: {"median": round(statistics.median(v), 3), "max": round(max(v), 3)}
            for k in ("kill", "cut")
            if (v := [r["seconds"] for r in rounds if r["kind"] == k])
        }
        return {
            "failovers": len(rounds),
            "seconds": {"median": round(statistics.median(seconds), 3), "max": round(max(seconds), 3)},
            "by_kind": by_kind,
            "actions": len(everything),
            "processes": len({a[2] for a in everything}),
            "overlaps": overlaps(everything, rounds),
            "rounds": rounds,
            "log": sorted(everything),  # (began, ended, process, host) of every action: the overlaps can be checked
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failovers", type=int, default=20)
    args = parser.parse_args()
    results = run(args.failovers)
    (REPO / "bench/leader-last.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "rounds"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
