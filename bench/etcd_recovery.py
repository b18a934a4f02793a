"""etcd recovery at size on the testbed: a snapshot's time (the RPO is the schedule's interval plus it), and the
time from every member's data lost to every component healthy and a client write accepted (RTO), by
`reconciler etcd restore` and by the etcd documentation's runbook done by hand (scripted as plainly as an
operator types it), side by side, with the commands a person types for each.

    .venv/bin/python -m bench.etcd_recovery [--sizes 10,100] [--rounds 3]   # root; boots the testbed

For each size (MB of values put into etcd through etcdctl, in 512 kB values), each round: a snapshot by
`reconciler etcd snapshot` (timed), then etcd stopped and every data dir deleted, then (a) `reconciler etcd restore`
or (b) the runbook: per master, the snapshot copied over SSH, the kube components and etcd stopped, `etcdutl
snapshot restore` with the member's name, peer URLs, initial cluster, a new token and the revision bump, the dir
owned by etcd; then etcd started on all, waited for, the kube components started. Each ends when
`reconciler check` passes and `etcdctl put` is accepted. Then, once per size, a member replaced
(`reconciler etcd replace-member` after its data is deleted): the time from its learner's start to its promotion,
against the snapshot's time (a copy of the same data over the same network). Medians and ratios go to stdout and
bench/etcd-recovery-last.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed import Testbed  # noqa: E402

SPECS = REPO / "specs"
ETCDUTL = "/var/cache/reconciler/etcd/v3.5/bin/etcdutl"  # scripts/fetch-etcd; the hosts see this machine's /
DATA = "/var/lib/etcd/default.etcd"
KUBE = ("kube-scheduler", "kube-controller-manager", "kube-apiserver")
VALUE = 512 * 1024


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise SystemExit(f"reconciler {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


def etcdctl(bed: Testbed, *args: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
    pki = bed.pki_dir
    eps = ",".join(f"https://{h.address}:2379" for h in bed.hosts)
    return subprocess.run(
        ["etcdctl", f"--endpoints={eps}", f"--cacert={pki}/ca.pem", f"--cert={pki}/kubernetes.pem",
         f"--key={pki}/kubernetes-key.pem", "--command-timeout=20s", *args],
        input=data, capture_output=True, text=True, timeout=60, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def fill(bed: Testbed, megabytes: int, start: int) -> int:
    """Put values until `megabytes` MB have been put in all; the next key's number."""
    n = start
    while n * VALUE < megabytes * 1024 * 1024:
        put = etcdctl(bed, "put", f"/bench-recovery/{n:05d}", data="x" * VALUE)
        assert put.returncode == 0, put.stderr
        n += 1
    return n


def healthy_and_writable(bed: Testbed) -> None:
    """Until `reconciler check` passes and a client write is accepted (at most 5 minutes)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        checked = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "check", str(SPECS)], cwd=REPO, capture_output=True, timeout=120
        )
        if checked.returncode == 0 and etcdctl(bed, "put", "/bench-recovery/written", "yes").returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit("not healthy within 5 minutes")


def disaster(bed: Testbed) -> None:
    for h in bed.hosts:
        h.ssh(f"systemctl stop etcd && rm -rf {DATA} {DATA}.before-restore-* {DATA}.reconciler-restored")


def by_reconciler(bed: Testbed, snapshot: str) -> tuple[float, int]:
    began = time.monotonic()
    cli("etcd", "restore", snapshot, str(SPECS))
    healthy_and_writable(bed)
    return time.monotonic() - began, 1


def by_hand(bed: Testbed, snapshot: str, token: str) -> tuple[float, int]:
    """The etcd documentation's restore, as an operator types it: one command line per step, per master."""
    typed = 0
    cluster = ",".join(f"{h.name}=https://{h.address}:2380" for h in bed.hosts)
    began = time.monotonic()
    for h in bed.hosts:
        with open(snapshot, "rb") as f:  # scp snapshot.db master:/tmp/
            subprocess.run([*h.ssh_args(), "cat > /tmp/snapshot.db"], stdin=f, check=True, timeout=600)
        typed += 1
        h.ssh(f"systemctl stop {' '.join(KUBE)} etcd")
        typed += 1
        h.ssh(
            f"{ETCDUTL} snapshot restore /tmp/snapshot.db --name {h.name} --data-dir {DATA} "
            f"--initial-cluster {shlex.quote(cluster)} --initial-advertise-peer-urls https://{h.address}:2380 "
            f"--initial-cluster-token {token} --bump-revision 1000000000 --mark-compacted",
            timeout=600,
        )
        typed += 1
        h.ssh(f"chown -R etcd:etcd {DATA} && chmod 700 {DATA}")
        typed += 1
    for h in bed.hosts:
        h.ssh("systemctl start --no-block etcd")
        typed += 1
    for h in bed.hosts:  # etcdctl endpoint health, until it says healthy
        h.ssh(
            "until curl -sf --cacert /etc/kubernetes/ssl/ca.pem --cert /etc/kubernetes/ssl/kubernetes.pem "
            f"--key /etc/kubernetes/ssl/kubernetes-key.pem https://{h.address}:2379/health >/dev/null; do sleep 0.1; done",
            timeout=300,
        )
        typed += 1
    for h in bed.hosts:
        h.ssh(f"systemctl start {' '.join(reversed(KUBE))}")
        typed += 1
    healthy_and_writable(bed)
    return time.monotonic() - began, typed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100", help="MB of data, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bed = Testbed(n=3)
    bed.start()
    results: dict[str, dict[str, float | int]] = {}
    try:
        cli("apply", str(SPECS))
        for h in bed.hosts:
            h.ssh(f"install -m 0755 {ETCDUTL} /usr/local/bin/etcdutl")
        n = 0
        work = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
        for size in (int(s) for s in args.sizes.split(",")):
            n = fill(bed, size, n)
            snaps: list[float] = []
            ours: list[float] = []
            hand: list[float] = []
            typed = 0
            db = 0
            for r in range(args.rounds):
                began = time.monotonic()
                kept = json.loads(cli("etcd", "snapshot", str(SPECS), "--dir", str(work / f"{size}"), "--json").stdout)
                snaps.append(time.monotonic() - began)
                db = kept["size"]
                disaster(bed)
                seconds, _ = by_reconciler(bed, kept["path"])
                ours.append(seconds)
                disaster(bed)
                seconds, typed = by_hand(bed, kept["path"], f"by-hand-{size}-{r}")
                hand.append(seconds)
                print(f"{size} MB round {r + 1}: snapshot {snaps[-1]:.1f} s, reconciler {ours[-1]:.1f} s, "
                      f"by hand {hand[-1]:.1f} s", flush=True)  # fmt: skip
            m3 = bed.hosts[2]  # a dead master replaced at this size: its learner's catch-up against the copy time
            m3.ssh(f"systemctl stop etcd && rm -rf {DATA}")
            replaced = cli("etcd", "replace-member", m3.name, str(SPECS)).stdout
            promoted = float(replaced.rsplit("promoted ", 1)[1].split(" s")[0])
            healthy_and_writable(bed)
            results[f"{size}MB"] = {
                "replace_promoted_after_start_s": promoted,
                "replace_promoted_over_snapshot_copy": round(promoted / statistics.median(snaps), 2),
                "db_bytes": db,
                "snapshot_s": round(statistics.median(snaps), 2),
                "restore_reconciler_s": round(statistics.median(ours), 2),
                "restore_by_hand_s": round(statistics.median(hand), 2),
                "time_ratio_hand_over_reconciler": round(statistics.median(hand) / statistics.median(ours), 2),
                "commands_typed_reconciler": 1,
                "commands_typed_by_hand": typed,
                "rounds": args.rounds,
            }
            print(json.dumps({f"{size}MB": results[f"{size}MB"]}), flush=True)
        cli("apply", str(SPECS))
    finally:
        bed.stop()
    (REPO / "bench" / "etcd-recovery-last.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
