"""Today against a base commit, side by side in one run: the daemon's no-op pass and spec-edit latency on the 3
testbed hosts, and the 1000-host fleet's CPU per host and peak RSS. The two versions alternate block by block.

    .venv/bin/python -m bench.versus                    # base: issue 18's starting commit
    .venv/bin/python -m bench.versus --base 78c86a6 --blocks 3 --fleet-runs 2

The base runs from a git worktree of that commit (its own reconciler and its own fleet simulator, which speaks
its own observe protocol), under this checkout's venv and with the same specs. Absolute times differ a lot
between machines; the ratios (this checkout / base) are what the goals are stated in. Writes
bench/versus-last.json; bench/run.py puts it in RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import fleet, peer  # noqa: E402
from testbed import Testbed  # noqa: E402

BASE = "78c86a6"  # issue 18's starting commit: the code before any of its work


def worktree(commit: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="reconciler-base-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True)
    peer.compile_tree(path)
    return path


def daemon_block(repo: Path, specs: Path, hosts: int, passes: int, edits: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="reconciler-versus-") as tmp:
        daemon = peer.start_daemon(specs, Path(tmp), repo)
        try:
            daemon.wait_ready(timeout=120)
            noop = peer.daemon_noop(daemon, hosts, passes)
            latency = peer.latency(daemon, specs, edits)
        finally:
            daemon.stop(timeout=150)
    return {"noop": noop, "latency": latency}


def run(base: str = BASE, blocks: int = 3, passes: int = 10, edits: int = 6, fleet_runs: int = 2) -> dict[str, Any]:
    old = worktree(base)
    work = Path(tempfile.mkdtemp(prefix="reconciler-versus-"))
    specs = work / "specs"
    # specs/ha/ is off unless hosts are labelled for it, and uses kinds the base cannot read: left out for both
    shutil.copytree(REPO / "specs", specs, ignore=shutil.ignore_patterns("ha"))
    out: dict[str, Any] = {"base_commit": base, "head_commit": _head()}
    try:
        with Testbed(n=3) as bed:
            peer.Tools(specs, work / "state", peer.SSHD(bed)).reconciler("apply")
            runs: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
            for i in range(blocks):
                for name in ("base", "head") if i % 2 == 0 else ("head", "base"):
                    repo = old if name == "base" else REPO
                    runs[name].append(daemon_block(repo, specs, len(bed.hosts), passes, edits))
            out["floor"] = asyncio.run(peer.floor(specs, passes * blocks, probes=False))
        for name, blocks_run in runs.items():
            out[name] = {
                "noop_median": round(statistics.median(b["noop"]["median"] for b in blocks_run), 4),
                "latency_p50": round(statistics.median(b["latency"]["total"]["p50"] for b in blocks_run), 3),
                "blocks": blocks_run,
            }
        fleets: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
        for i in range(fleet_runs):
            for name in ("base", "head") if i % 2 == 0 else ("head", "base"):
                with tempfile.TemporaryDirectory(prefix="reconciler-fleet-") as tmp:
                    fleets[name].append(fleet.run_fleet(1000, Path(tmp), repo=old if name == "base" else REPO))
        for name, results in fleets.items():
            out[name]["fleet"] = {
                "cpu_per_host_ms": round(
                    statistics.median(r["noop_cpu_seconds"] / r["hosts"] * 1000 for r in results), 3
                ),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                "runs": results,
            }
        out["ratios"] = {
            "noop_pass": round(out["head"]["noop_median"] / out["base"]["noop_median"], 2),
            "noop_pass_to_floor": round(out["head"]["noop_median"] / out["floor"]["median"], 2),
            "latency_p50": round(out["head"]["latency_p50"] / out["base"]["latency_p50"], 2),
            "fleet_cpu_per_host": round(
                out["head"]["fleet"]["cpu_per_host_ms"] / out["base"]["fleet"]["cpu_per_host_ms"], 2
            ),
            "fleet_peak_rss": round(out["head"]["fleet"]["peak_rss_mb"] / out["base"]["fleet"]["peak_rss_mb"], 2),
        }
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return out


def _head() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE)
    parser.add_argument("--blocks", type=int, default=3, help="daemon blocks per version, alternating")
    parser.add_argument("--passes", type=int, default=10, help="no-op passes per block")
    parser.add_argument("--edits", type=int, default=6, help="spec edits per block")
    parser.add_argument("--fleet-runs", type=int, default=2, help="1000-host fleet runs per version, alternating")
    args = parser.parse_args()
    result = run(args.base, args.blocks, args.passes, args.edits, args.fleet_runs)
    (REPO / "bench/versus-last.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("base_commit", "head_commit", "floor", "ratios")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
