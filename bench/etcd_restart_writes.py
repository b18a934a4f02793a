"""Which etcd client writes fail while one member restarts, and whether moving etcd's leadership away first helps
(issue 31's goal: 0 failed writes across a renewal's etcd restarts).

Three writers, each an `etcdctl put` loop pinned to one member's endpoint (so a failure says which member it
reached), while one member is restarted `--rounds` times (`systemctl restart etcd`, its health waited for, 1.5 s
between rounds). Modes: `leader` restarts the leader each round; `move` moves the leadership to another member first
(`etcdctl move-leader`, what reconciler could do before a leader's restart), then restarts the old leader; `follower`
restarts a follower. Each failure is printed with the writer's member, etcd's error and its time from the round's
restart. Results go to stdout and bench/etcd-restart-writes-last.json.

    .venv/bin/python -m bench.etcd_restart_writes [--rounds 40] [--modes leader,move,follower]   # root; boots the testbed
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed import Testbed  # noqa: E402
from testbed.host import TestHost  # noqa: E402
from tests.support.cli import reconciler  # noqa: E402
from tests.support.tuning import etcdctl  # noqa: E402


def members(bed: Testbed) -> dict[str, tuple[int, int]]:
    """Each host's (member ID, the leader's ID), as its member says."""
    said = json.loads(etcdctl(bed, "endpoint", "status", "-w", "json").stdout)
    by_address = {h.address: h.name for h in bed.hosts}
    out = {}
    for row in said:
        address = row["Endpoint"].split("//")[1].split(":")[0]
        out[by_address[address]] = (row["Status"]["header"]["member_id"], row["Status"]["leader"])
    return out


def one_mode(bed: Testbed, mode: str, rounds: int) -> dict[str, Any]:
    stop = threading.Event()
    puts: collections.Counter[str] = collections.Counter()
    failures: list[tuple[float, str, str]] = []  # (when, the writer's member, etcd's error)

    def writer(h: TestHost) -> None:
        i = 0
        while not stop.is_set():
            put = etcdctl(bed, "put", f"/bench-restart/{mode}/{h.name}/{i}", "x", endpoints=[h])
            puts[h.name] += 1
            if put.returncode != 0:
                failures.append((time.time(), h.name, put.stderr.strip().splitlines()[-1][-160:]))
            i += 1

    threads = [threading.Thread(target=writer, args=(h,), daemon=True) for h in bed.hosts]
    for t in threads:
        t.start()
    restarts: list[tuple[float, float, str]] = []
    try:
        for _ in range(rounds):
            ids = members(bed)
            leader = next(name for name, (me, lead) in ids.items() if me == lead)
            target = leader if mode in ("leader", "move") else next(n for n in sorted(ids) if n != leader)
            host = next(h for h in bed.hosts if h.name == target)
            began = time.time()
            if mode == "move":
                other = next(me for name, (me, _) in sorted(ids.items()) if name != leader)
                etcdctl(bed, "move-leader", format(other, "x"), endpoints=[host])
            host.ssh("systemctl restart etcd")
            while etcdctl(bed, "endpoint", "health", endpoints=[host]).returncode != 0:
                time.sleep(0.1)
            restarts.append((began, time.time(), target))
            time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    rows = []
    for when, member, error in failures:
        round_ = min(restarts, key=lambda r: abs(when - r[0]))
        rows.append({"writer": member, "restarted": round_[2], "seconds": round(when - round_[0], 2), "error": error})
    at_restarted = sum(1 for r in rows if r["writer"] == r["restarted"])
    return {
        "mode": mode,
        "rounds": rounds,
        "puts": sum(puts.values()),
        "failed": len(rows),
        "failed_at_the_restarted_member": at_restarted,
        "failures": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--modes", default="leader,move,follower")
    args = parser.parse_args()
    bed = Testbed(n=3)
    bed.start()
    results = []
    try:
        applied = reconciler("apply", str(REPO / "specs"))
        if applied.code != 0:
            raise SystemExit(applied.out + applied.err)
        for mode in args.modes.split(","):
            result = one_mode(bed, mode, args.rounds)
            results.append(result)
            print(
                f"{mode}: {result['rounds']} restarts, {result['puts']} puts, {result['failed']} failed "
                f"({result['failed_at_the_restarted_member']} sent to the member restarting)",
                flush=True,
            )
            for row in result["failures"]:
                print(f"   writer {row['writer']}, {row['seconds']:+.2f} s from {row['restarted']}'s restart: {row['error']}")  # fmt: skip
    finally:
        bed.stop()
    (REPO / "bench/etcd-restart-writes-last.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
