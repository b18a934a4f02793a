"""Soak: the daemon against the testbed at a short resync for a long time; RSS and open fds must stay flat.

    .venv/bin/python bench/soak.py --minutes 10        # boots the testbed, prints a table and a verdict

Every `--sample` seconds it records the daemon's RSS (VmRSS) and open file descriptors; every 30 s it
edits a spec (a restart of kube-scheduler on every host) and hand-edits a file on one host, so the
daemon does real work, not just no-op passes. Reported: first/median/last/max of both, the medians of
the first and the last fifth, and the RSS slope fitted (least squares) to the samples after the first
fifth; the verdict is FLAT when that slope is at most 0.5 MB an hour and the fds did not grow. The
daemon runs under bench/memprobe.py (glibc's and Python's own accounting) and /proc/PID/smaps is
diffed per mapping between the end of the first fifth and the end, so growth says where it is. The
daemon runs with MALLOC_ARENA_MAX=2, as the shipped systemd unit sets it (override it in the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed import Testbed  # noqa: E402
from tests.support.daemon import RunningDaemon  # noqa: E402

FLAT_MB_PER_HOUR = 0.5  # the fitted RSS slope after the first fifth (warm-up) that still counts as flat


def proc_stats(pid: int) -> tuple[float, int]:
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def smaps(pid: int) -> dict[str, tuple[int, int]]:
    """Each mapping of the process by start address -> (size kB, RSS kB), with its name when it has one."""
    maps: dict[str, tuple[int, int]] = {}
    key, size = "", 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            key = head[0].split("-")[0] + (" " + head[5] if len(head) > 5 else "")  # by start: a heap grows at its end
        elif head[0] == "Size:":
            size = int(head[1])
        elif head[0] == "Rss:":
            maps[key] = (size, int(head[1]))
    return maps


def grown(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[dict[str, object]]:
    """The 15 mappings whose RSS changed most between two smaps readings (new and gone ones included)."""
    changes = [(after.get(k, (0, 0))[1] - before.get(k, (0, 0))[1], k) for k in set(before) | set(after)]
    return [
        {
            "mapping": k,
            "size_kb": after.get(k, before.get(k, (0, 0)))[0],
            "rss_kb_before": before.get(k, (0, 0))[1],
            "rss_kb_after": after.get(k, (0, 0))[1],
        }
        for delta, k in sorted(changes, key=lambda c: -abs(c[0]))[:15]
        if delta
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--resync", type=float, default=1)
    parser.add_argument("--sample", type=float, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconciler-soak-"))
    specs = work / "specs"
    shutil.copytree(REPO / "specs", specs)
    port = 19479
    with Testbed(n=3) as bed:
        subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "apply", str(specs)],
            cwd=REPO,
            check=True,
            capture_output=True,
            env={**os.environ, "RECONCILER_STATE_DIR": str(work / "state")},
        )
        probe = work / "memprobe.jsonl"
        daemon = RunningDaemon(
            specs,
            work / "daemon.log",
            "--resync",
            str(args.resync),
            "--state-dir",
            str(work / "state"),
            listen=f"127.0.0.1:{port}",
            log_level=None,
            command=(sys.executable, "-m", "bench.memprobe", str(probe), "--"),
            env={"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")},
        )
        samples: list[tuple[float, float, int, float]] = []
        edit = 0
        early_maps: dict[str, tuple[int, int]] = {}
        try:
            daemon.wait_ready(timeout=60, interval=0.2)
            start = time.time()
            next_edit = start + 30
            while (now := time.time()) - start < args.minutes * 60:
                if now >= next_edit:
                    edit += 1
                    kube = specs / "kubernetes.yaml"
                    text = (REPO / "specs/kubernetes.yaml").read_text()
                    kube.write_text(text.replace('--address=127.0.0.1"', f'--address=127.0.0.1 --v={edit % 5}"'))
                    bed.hosts[edit % 3].ssh("echo '# hand edit' >> /etc/kubernetes/controller-manager")
                    next_edit += 30
                rss, fds = proc_stats(daemon.pid)
                passes = daemon.sample("reconciler_reconciles", "_total")
                samples.append((now - start, rss, fds, passes))
                if not early_maps and now - start >= args.minutes * 60 / 5:
                    early_maps = smaps(daemon.pid)
                time.sleep(args.sample)
            late_maps = smaps(daemon.pid)
            early_maps = early_maps or late_maps  # a run too short to reach the first fifth's end
        finally:
            code = daemon.stop(timeout=180)
    fifth = max(1, len(samples) // 5)
    rss_series = [s[1] for s in samples]
    fds_series = [s[2] for s in samples]
    early_rss, late_rss = statistics.median(rss_series[:fifth]), statistics.median(rss_series[-fifth:])
    early_fds, late_fds = statistics.median(fds_series[:fifth]), statistics.median(fds_series[-fifth:])
    settled = samples[fifth:] if len(samples) > 2 * fifth else samples
    if len(settled) < 2:
        raise SystemExit(f"only {len(samples)} sample(s): run longer or sample more often for a slope")
    slope = statistics.linear_regression([t / 3600 for t, *_ in settled], [r for _, r, *_ in settled]).slope
    result = {
        "minutes": args.minutes,
        "resync_s": args.resync,
        "samples": len(samples),
        "edits": edit,
        "passes": samples[-1][3] if samples else 0,
        "exit_code": code,
        "rss_mb": {
            "first": rss_series[0],
            "median": statistics.median(rss_series),
            "last": rss_series[-1],
            "max": max(rss_series),
            "early_median": early_rss,
            "late_median": late_rss,
        },
        "rss_slope_mb_per_hour": round(slope, 2),
        "fds": {
            "first": fds_series[0],
            "median": statistics.median(fds_series),
            "last": fds_series[-1],
            "max": max(fds_series),
            "early_median": early_fds,
            "late_median": late_fds,
        },
        "smaps_grown": grown(early_maps, late_maps),
        "memprobe": [json.loads(line) for line in probe.read_text().splitlines()],
        "series": [{"t": round(t, 1), "rss_mb": round(r, 2), "fds": f, "passes": p} for t, r, f, p in samples],
    }
    (REPO / "bench/soak-last.json").write_text(json.dumps(result, indent=1) + "\n")
    result.pop("series")
    result.pop("memprobe")
    probed = [json.loads(line) for line in probe.read_text().splitlines()]
    result["memprobe_early_late"] = [probed[len(probed) // 5], probed[-1]] if probed else []
    print(json.dumps(result, indent=2))
    flat = slope <= FLAT_MB_PER_HOUR and late_fds <= early_fds
    print("verdict:", "FLAT" if flat else "GROWING")
    return 0 if flat and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
