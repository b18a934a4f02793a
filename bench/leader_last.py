"""The host of etcd's leader renewed last, against host name order, on the testbed: kubernetes.pem renewed on the
three masters by `reconciler certs renew` (the leader's host last) and by `certs renew --host` for each master in name
order (what the command did before), alternately, while a client puts keys through every etcd endpoint: the leader
changes each pass makes (etcd's raft term, before and after the pass) and the writes that failed.

    .venv/bin/python -m bench.leader_last [--rounds 5]   # root; boots the testbed

Medians go to stdout and bench/leader-last-last.json. Each pass ends with the testbed's own pair put back on every
master, one at a time (not measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.cert_renewal import cli  # noqa: E402
from testbed import Testbed  # noqa: E402
from tests.support.certs import managed_specs, put_back  # noqa: E402
from tests.support.tuning import Writer, etcdctl, leader  # noqa: E402

SPECS = REPO / "specs"


def term(bed: Testbed) -> int:
    """The cluster's raft term: the highest any member says (each election raises it by one)."""
    out = etcdctl(bed, "endpoint", "status", "-w", "json", endpoints=bed.hosts).stdout
    return max(int(s["Status"]["header"]["raft_term"]) for s in json.loads(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bed = Testbed(n=3)
    bed.start()
    work = Path(tempfile.mkdtemp(prefix="bench-leader-last-"))
    specs = work / "specs"
    shutil.copytree(SPECS, specs)
    managed_specs(specs, bed.pki_dir)
    changes: dict[str, list[int]] = {"leader_last": [], "name_order": []}
    seconds: dict[str, list[float]] = {"leader_last": [], "name_order": []}
    failed = {"leader_last": 0, "name_order": 0}
    leader_first = 0  # passes in name order that began at the leader's host
    try:
        cli("apply", str(SPECS))
        for r in range(args.rounds):
            for way in ("leader_last", "name_order"):
                before, began = term(bed), time.monotonic()
                leader_first += way == "name_order" and leader(bed, bed.hosts).name == "master-1"
                writer = Writer(bed)
                writer.start()
                try:
                    if way == "leader_last":
                        cli("certs", "renew", str(specs))
                    else:
                        for h in bed.hosts:
                            cli("certs", "renew", "--host", h.name, str(specs))
                finally:
                    writer.stop()
                seconds[way].append(time.monotonic() - began)
                changes[way].append(term(bed) - before)
                failed[way] += writer.failed
                put_back(bed, specs)
            print(f"round {r + 1}: leader changes {changes['leader_last'][-1]} (leader last) vs {changes['name_order'][-1]} (name order)", flush=True)  # fmt: skip
    finally:
        bed.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "leader_changes_per_pass_leader_last": changes["leader_last"],
        "leader_changes_per_pass_name_order": changes["name_order"],
        "median_leader_changes_leader_last": statistics.median(changes["leader_last"]),
        "median_leader_changes_name_order": statistics.median(changes["name_order"]),
        "mean_leader_changes_leader_last": round(statistics.mean(changes["leader_last"]), 2),
        "mean_leader_changes_name_order": round(statistics.mean(changes["name_order"]), 2),
        "name_order_passes_begun_at_the_leader": leader_first,
        "failed_writes_leader_last": failed["leader_last"],
        "failed_writes_name_order": failed["name_order"],
        "median_pass_s_leader_last": round(statistics.median(seconds["leader_last"]), 1),
        "median_pass_s_name_order": round(statistics.median(seconds["name_order"]), 1),
        "rounds": args.rounds,
    }
    print(json.dumps(results, indent=2))
    (REPO / "bench" / "leader-last-last.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
