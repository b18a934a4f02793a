"""CLI start-up against its floor: `import reconciler.cli` vs a bare Python importing the libraries it stands on.

    .venv/bin/python -m bench.startup [--runs 15]      # table on stdout, bench/startup-last.json

Alternating runs of fresh processes, wall time of each, medians and the ratio (goal: <= 1.2 x the floor,
issue 18), plus `reconciler validate specs` end to end and what `python -X importtime` names as the slowest
imports of the CLI (cumulative microseconds).
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
GOAL_RATIO = 1.2
COMMANDS = {
    "floor: import asyncssh, pydantic, yaml, jinja2": [sys.executable, "-c", "import asyncssh, pydantic, yaml, jinja2"],
    "import reconciler.cli": [sys.executable, "-c", "import reconciler.cli"],
    "reconciler validate specs": [sys.executable, "-m", "reconciler.cli", "validate", "specs"],
}


def once(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - began


def slowest_imports(top: int = 8) -> list[tuple[str, int]]:
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import reconciler.cli"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []
    for line in err.splitlines()[1:]:
        parts = line.split("|")
        if len(parts) == 3:
            rows.append((parts[2].strip(), int(parts[1])))
    return sorted(rows, key=lambda r: -r[1])[:top]


def run(runs: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):  # alternating: the machine's state drifts equally over every command
        for name, argv in COMMANDS.items():
            times[name].append(once(argv))
    medians = {name: statistics.median(t) for name, t in times.items()}
    floor, cli = medians["floor: import asyncssh, pydantic, yaml, jinja2"], medians["import reconciler.cli"]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": runs,
        "median_seconds": medians,
        "cli_over_floor": round(cli / floor, 3),
        "goal_ratio": GOAL_RATIO,
        "met": cli / floor <= GOAL_RATIO,
        "slowest_imports_us": slowest_imports(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path, default=REPO / "bench/startup-last.json")
    args = parser.parse_args()
    result = run(args.runs)
    for name, seconds in result["median_seconds"].items():
        print(f"{name:<50} {seconds:.3f} s")
    print(
        f"import reconciler.cli / floor: {result['cli_over_floor']} (goal <= {GOAL_RATIO}: "
        f"{'met' if result['met'] else 'NOT met'})"
    )
    for module, us in result["slowest_imports_us"]:
        print(f"  {us / 1000:8.1f} ms  {module}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
