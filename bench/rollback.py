"""Rollback speed on the testbed: from the failed restart to the member healthy again on its old config,
against the unit's own start time (issue goal: at most 2 x).

    .venv/bin/python -m bench.rollback [--rounds N]     # root; boots the testbed (scripts/install-deps)

Each round, alternating on one member: (a) the unit's own start time, measured on the host itself:
`systemctl restart etcd` until etcd's /health answers; (b) a rollback: `reconciler apply --host` of specs
whose ETCD_DATA_DIR etcd cannot use; the time from its failed restart (the "rolling back" log event, minus
the journal read that precedes it) to its "rolled back" event (restored, restarted, healthy). Medians and
the ratio go to stdout and bench/rollback-last.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed import Testbed  # noqa: E402

HEALTH = (
    "curl -sf --cacert /etc/kubernetes/ssl/ca.pem --cert /etc/kubernetes/ssl/kubernetes.pem "
    "--key /etc/kubernetes/ssl/kubernetes-key.pem https://{addr}:2379/health >/dev/null"
)


def own_start(host_ssh: list[str], address: str) -> float:
    script = (
        f"a=$(date +%s.%N); systemctl restart etcd; until {HEALTH.format(addr=address)}; do sleep 0.02; done; "
        'b=$(date +%s.%N); echo "$a $b"'
    )
    out = subprocess.run([*host_ssh, script], capture_output=True, text=True, check=True, timeout=120).stdout.split()
    return float(out[1]) - float(out[0])


def stamp(event: dict[str, str]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def rollback(specs: Path, host: str) -> float:
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--log-format", "json", "apply", "--host", host, str(specs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    began = next(e for e in events if e.get("event") == "rolling back")
    ended = next(e for e in events if e.get("event") == "rolled back")
    assert ended["healthy"] is True, ended
    return stamp(ended) - stamp(began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bed = Testbed(n=3)
    bed.start()
    work = Path(tempfile.mkdtemp(prefix="bench-rollback-"))
    try:
        specs = work / "specs"
        shutil.copytree(REPO / "specs", specs)
        subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "apply", str(specs)],
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=600,
        )
        etcd = specs / "etcd.yaml"
        etcd.write_text(
            etcd.read_text().replace(
                "ETCD_DATA_DIR: /var/lib/etcd/default.etcd", "ETCD_DATA_DIR: /etc/hostname/default.etcd"
            )
        )
        member = bed.hosts[0]
        starts, rollbacks = [], []
        for _ in range(args.rounds):
            starts.append(own_start(member.ssh_args(), member.address))
            rollbacks.append(rollback(specs, member.name))
        result = {
            "rounds": args.rounds,
            "start_seconds": starts,
            "rollback_seconds": rollbacks,
            "start_median": round(statistics.median(starts), 3),
            "rollback_median": round(statistics.median(rollbacks), 3),
        }
        result["ratio"] = round(result["rollback_median"] / result["start_median"], 2)
        result["goal_met"] = result["ratio"] <= 2.0
        (REPO / "bench" / "rollback-last.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0 if result["goal_met"] else 1
    finally:
        bed.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
