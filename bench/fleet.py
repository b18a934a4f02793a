"""Scale: the daemon against a simulated fleet of N masters (bench.fleetsim) on loopback.

    .venv/bin/python -m bench.fleet --hosts 10 100 1000      # prints JSON; bench/run.py puts it in RESULTS.md

For each N: the specs are the bundled kubernetes.yaml, certificates.yaml and vars.yaml over N generated Host
documents; the daemon (`reconciler run`, default settings but a resync long enough not to interfere)
starts against bare hosts, and is measured through its own JSON log and /proc:
- start: from launch to /readyz (SSH connects, converge from bare of every host);
- no-op pass: SIGHUP (reload + a pass over every host), to the last host's "reconciled" event, 5 times
  (wall: the median; CPU: the mean);
- change pass: a spec edit changing kube-scheduler's env file on every host (write + restart each), from
  the file's save to the last host's "reconciled" event (the spec reload included);
- daemon CPU seconds (utime + stime) for each, peak RSS (VmHWM), and the simulator's CPU for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.daemon import RunningDaemon, stamp
from tests.support.specs import inventory

REPO = Path(__file__).resolve().parents[1]
SCHEDULER_ENV = 'KUBE_SCHEDULER_ARGS="--leader-elect=true --address=127.0.0.1"'


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_fleet(n: int, work: Path, base_port: int = 23000, noop_passes: int = 5, repo: Path = REPO) -> dict[str, Any]:
    """The fleet of `n` against the daemon (and simulator) of `repo`: this checkout, or another commit's worktree."""
    keys, specs = work / "keys", work / "specs"
    specs.mkdir(parents=True)
    sim = subprocess.Popen(
        [sys.executable, "-m", "bench.fleetsim", "--hosts", str(n), "--base-port", str(base_port), "--dir", str(keys)],
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None and sim.stdin is not None
        if sim.stdout.readline().strip() != "ready":
            raise RuntimeError("the fleet simulator did not start")
        (specs / "inventory.yaml").write_text(inventory(n, base_port, keys))
        kubernetes = (REPO / "specs/kubernetes.yaml").read_text()
        (specs / "kubernetes.yaml").write_text(kubernetes)
        (specs / "certificates.yaml").write_text((REPO / "specs/certificates.yaml").read_text())
        (specs / "vars.yaml").write_text((REPO / "specs/vars.yaml").read_text())  # the cluster's bootstrap token
        result: dict[str, Any] = {"hosts": n}
        began = time.perf_counter()
        load = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "validate", str(specs)],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
        result["validate_seconds"] = round(time.perf_counter() - began, 3)
        assert f"valid ({n} host(s))" in load.stdout, load.stdout
        port = base_port - 1
        began = time.perf_counter()
        daemon = RunningDaemon(
            specs,
            work / "daemon.log",
            "--resync",
            "3600",
            "--state-dir",
            str(work / "state"),
            listen=f"127.0.0.1:{port}",
            log_level=None,
            cwd=repo,
        )
        try:
            daemon.wait_events("reconciled", n, timeout=600)
            daemon.wait_ready(timeout=30)
            result["start_seconds"] = round(time.perf_counter() - began, 3)
            result["start_cpu_seconds"] = round(cpu_seconds(daemon.pid), 3)
            bad = [e for e in daemon.events() if e.get("event") == "reconciled" and e["status"] != "converged"]
            if bad:
                raise RuntimeError(f"{len(bad)} host(s) did not converge from bare: {bad[0]}")

            noop: list[float] = []
            noop_cpu: list[float] = []
            for _ in range(noop_passes):
                since, cpu0, t0 = len(daemon.events()), cpu_seconds(daemon.pid), time.time()
                daemon.proc.send_signal(signal.SIGHUP)
                done = daemon.wait_events("reconciled", n, since, timeout=600)
                noop.append(max(stamp(e) for e in done) - t0)
                noop_cpu.append(cpu_seconds(daemon.pid) - cpu0)
                if any(e["applied"] for e in done):
                    raise RuntimeError("a no-op pass applied something")
            result["noop_seconds"] = round(statistics.median(noop), 3)
            # the mean over the passes: /proc counts CPU in 10 ms ticks, too coarse for one pass of 10 hosts
            result["noop_cpu_seconds"] = round(statistics.fmean(noop_cpu), 3)

            since, cpu0, t0 = len(daemon.events()), cpu_seconds(daemon.pid), time.time()
            (specs / "kubernetes.yaml").write_text(kubernetes.replace(SCHEDULER_ENV, SCHEDULER_ENV[:-1] + ' --v=2"'))
            done = daemon.wait_events("reconciled", n, since, timeout=600)
            if not all(e["applied"] == 2 and e["status"] == "converged" for e in done):  # the write and the restart
                raise RuntimeError(f"the change pass did not write and restart once per host: {done[0]}")
            result["change_seconds"] = round(max(stamp(e) for e in done) - t0, 3)
            result["change_cpu_seconds"] = round(cpu_seconds(daemon.pid) - cpu0, 3)
            loaded = [e for e in daemon.events(since) if e.get("event") == "specs loaded"]
            result["change_detect_and_load_seconds"] = round(stamp(loaded[0]) - t0, 3) if loaded else None
            result["peak_rss_mb"] = round(peak_rss_mb(daemon.pid), 1)
        finally:
            daemon.stop(timeout=120)
        sim.stdin.write('{"cmd": "stats"}\n')
        sim.stdin.flush()
        stats = json.loads(sim.stdout.readline())
        result["sim_cpu_seconds"] = round(stats["cpu_seconds"], 3)
        result["sim_commands"] = sum(stats["commands"].values())
        return result
    finally:
        sim.kill()
        sim.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    results = []
    for n in args.hosts:
        with tempfile.TemporaryDirectory(prefix=f"reconciler-fleet-{n}-") as tmp:
            results.append(run_fleet(n, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
