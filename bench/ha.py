"""The HA front's failover on the testbed (issue 17's goals): specs/ha/ enabled on the three masters, a client
sending a request through the VIP every 20 ms (2 s timeout) the whole time, and per round (the specs opt in to the
insecure port on the VIP, `lb_insecure_bind: "*"`, which that client uses; by default it is on loopback only):

- haproxy: `systemctl stop haproxy` on the VIP holder: seconds from the fault to the first successful request
  of the run that ends the outage, failed requests; then HAProxy is started again (it must not take the VIP back);
- cut: the holder's link down for 6 s: the same two numbers (the outage: from the fault to 5 successes in a row
  after the first request that failed or hung), then the same for what the host's return disturbs (etcd's own
  election: a member that timed out rejoins with a higher term), and the hosts holding the VIP, sampled for 5 s
  (never two);
- partition: the holder taken off the bridge for 6 s with its own link up (it keeps the VIP, unheard): as cut;
- kill: the holder's HAProxy SIGKILLed (systemd starts it again, Restart=always; its ExecStopPost has told
  keepalived by then): the same two numbers, and whether the VIP moved;
- etcd: a non-holder's etcd stopped until HAProxy marks its secure apiserver down: failed requests on the HTTP
  frontend (goal: none; it retries a 500 on another apiserver) and on the TLS one (TCP passthrough: a request
  may fail until the check marks the apiserver down, none after);
- reload: an edit of HAProxy's config applied to all three (reload, one host at a time): failed requests on
  both frontends (none).

    .venv/bin/python -m bench.ha [--rounds N] [--kube real]   # root; boots the testbed (scripts/install-deps)

`--kube real` runs the same rounds on the real Kubernetes v1.20.2 (scripts/build-kube), which serves no insecure
port: every client then goes through the VIP's TLS frontend (the HTTP frontend's numbers are absent), and the
apiserver's own /readyz (not a stand-in's) is what HAProxy checks.

Medians and worst cases go to stdout and bench/ha-last.json (bench/ha-real-last.json with --kube real);
`bench.run --only ha` keeps them in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed import Testbed  # noqa: E402
from testbed.ha import VIP_TLS_URL, VIP_URL, Traffic, enable_ha, holders, partitioned  # noqa: E402

URL = VIP_URL  # what the failover clients ask: the HTTP frontend, or (real binaries: no insecure port) the TLS one


def reconciler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def wait(what: str, condition: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def one_holder(bed: Testbed) -> str:
    def one() -> str:
        found = holders(bed)
        return found[0] if len(found) == 1 else ""

    return str(wait("exactly one VIP holder", one))


def healthy(specs: Path) -> None:
    try:
        wait("every check healthy", lambda: reconciler("check", str(specs)).returncode == 0)
    except RuntimeError:
        print(reconciler("check", str(specs)).stdout, file=sys.stderr)
        raise


def outage(traffic: Traffic, since: float) -> float:
    """The first outage after `since`, once it has ended (testbed.ha.Traffic.outage_after)."""
    found: list[float] = wait(
        "the outage to end", lambda: [] if (o := traffic.outage_after(since)) is None else [o], 60
    )
    return round(found[0], 3)


def fault_round(bed: Testbed, specs: Path, kind: str) -> dict[str, Any]:
    """One fault on the VIP's holder. The failover: from the fault to the end of the first outage (the first
    request that fails or hangs begins it, 5 successes in a row end it) and the requests failed in it. For a
    host cut off and back: the same for what its return disturbs (etcd's own election when a member that
    timed out rejoins), counted apart."""
    old = bed.host(one_holder(bed))
    out: dict[str, Any] = {}
    with Traffic(url=URL) as traffic:
        wait("traffic", lambda: traffic.sent() > 5)
        began = time.monotonic()
        if kind == "partition":
            with partitioned(old):
                wait("the VIP on a reachable host", lambda: [h for h in holders(bed) if h != old.name], timeout=60)
                seconds = outage(traffic, began)
                time.sleep(max(0.0, began + 6 - time.monotonic()))
            back = time.monotonic()
        else:
            if kind == "haproxy":
                old.ssh("systemctl stop haproxy")
            else:
                old.ssh("nohup sh -c 'ip link set host0 down; sleep 6; ip link set host0 up' >/dev/null 2>&1 &")
            wait("the VIP on another host", lambda: [h for h in holders(bed) if h != old.name], timeout=60)
            seconds = outage(traffic, began)
            back = began + 6  # the cut host's link comes back up
        out.update(seconds=seconds, failed=len([r for r in traffic.failed(began) if r[0] <= began + seconds]))
        if kind in ("cut", "partition"):
            time.sleep(max(0.0, back - time.monotonic()))
            wait("the host back", lambda: old.port_open(22), timeout=60)
            wait("exactly one holder", lambda: len(holders(bed)) == 1, timeout=60)
            time.sleep(max(0.0, back + 5 - time.monotonic()))  # what the return disturbs begins within seconds
            out.update(rejoin_seconds=outage(traffic, back), rejoin_failed=len(traffic.failed(back)))
    if kind == "haproxy":
        old.ssh("systemctl start haproxy")
    two = 0
    end = time.monotonic() + 5
    while time.monotonic() < end:  # after recovery: never two holders
        two = max(two, len(holders(bed)))
        time.sleep(0.5)
    healthy(specs)
    out.update(most_holders_after=two, taken_back=kind == "haproxy" and holders(bed) == [old.name])
    return out


def kill_round(bed: Testbed, specs: Path) -> dict[str, Any]:
    old = bed.host(one_holder(bed))
    with Traffic(url=URL) as traffic:
        wait("traffic", lambda: traffic.sent() > 5)
        began = time.monotonic()
        old.ssh("systemctl kill --signal=SIGKILL haproxy")
        time.sleep(max(0.0, began + 4 - time.monotonic()))  # past systemd's restart and keepalived's checks
        seconds = outage(traffic, began)
        failed = len(traffic.failed(began))
    healthy(specs)
    return {"seconds": seconds, "failed": failed, "moved": holders(bed) != [old.name]}


def etcd_round(bed: Testbed, specs: Path) -> dict[str, Any]:
    at = bed.host(one_holder(bed))
    victim = next(h for h in bed.hosts if h.name != at.name)
    log = "journalctl -u haproxy -o cat --no-pager --since=-30s"
    with Traffic(url=URL) as traffic, Traffic(url=VIP_TLS_URL) as tls:
        wait("traffic", lambda: traffic.sent() > 5 and tls.sent() > 5)
        began = time.monotonic()
        victim.ssh("systemctl stop etcd")
        wait(
            "the apiserver marked down",
            lambda: f"kube-apiserver/{victim.name} is DOWN" in at.ssh(log, check=False).stdout,
        )
        down = time.monotonic()
        time.sleep(1)
        out = {
            "failed": len(traffic.failed(began)),
            "sent": traffic.sent(began),
            "tls_failed": len(tls.failed(began)),
            "tls_failed_after_down": len(tls.failed(down)),
            "tls_sent": tls.sent(began),
            "marked_down_seconds": round(down - began, 3),
        }
    victim.ssh("systemctl start etcd")
    healthy(specs)
    return out


def reload_round(specs: Path, n: int) -> dict[str, Any]:
    cfg = specs / "ha" / "haproxy.yaml"  # the edit stays: the specs and the hosts agree after the round
    cfg.write_text(re.sub(r"timeout client \d+s", f"timeout client {61 + n}s", cfg.read_text()))
    with Traffic(url=URL) as traffic, Traffic(url=VIP_TLS_URL) as tls:
        wait("traffic", lambda: traffic.sent() > 5 and tls.sent() > 5)
        began = time.monotonic()
        result = reconciler("apply", str(specs))
        time.sleep(1)
    assert result.returncode == 0, result.stdout + result.stderr
    return {
        "failed": len(traffic.failed(began)),
        "sent": traffic.sent(began),
        "tls_failed": len(tls.failed(began)),
        "tls_sent": tls.sent(began),
        "reloads": result.stdout.count("reload haproxy"),
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": rounds}
    for key in ("seconds", "failed", "rejoin_seconds", "rejoin_failed", "marked_down_seconds"):
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            out[key] = {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}
    return out


def run(rounds: int = 5, kube: str = "standins") -> dict[str, Any]:
    global URL
    URL = VIP_TLS_URL if kube == "real" else VIP_URL
    with Testbed(n=3, kube_kind=kube) as bed, tempfile.TemporaryDirectory(prefix="reconciler-ha-") as tmp:
        specs = Path(tmp) / "specs"
        shutil.copytree(REPO / "specs", specs)
        enable_ha(specs, insecure_on_vip=kube != "real")
        result = reconciler("apply", str(specs))
        assert result.returncode == 0, result.stdout + result.stderr
        healthy(specs)
        parts: dict[str, list[dict[str, Any]]] = {
            "haproxy": [],
            "cut": [],
            "partition": [],
            "kill": [],
            "etcd": [],
            "reload": [],
        }
        for n in range(rounds):
            parts["haproxy"].append(fault_round(bed, specs, "haproxy"))
            parts["cut"].append(fault_round(bed, specs, "cut"))
            parts["partition"].append(fault_round(bed, specs, "partition"))
            parts["kill"].append(kill_round(bed, specs))
            parts["etcd"].append(etcd_round(bed, specs))
            parts["reload"].append(reload_round(specs, n))
            print(f"round {n + 1}: " + json.dumps({k: v[-1] for k, v in parts.items()}), flush=True)
        return {k: summary(v) for k, v in parts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kube", choices=("standins", "real"), default="standins")
    args = parser.parse_args()
    results = run(args.rounds, args.kube)
    last = "bench/ha-real-last.json" if args.kube == "real" else "bench/ha-last.json"
    (REPO / last).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: {m: v for m, v in r.items() if m != "rounds"} for k, r in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
