"""Hostile specs: `reconciler validate` over a corpus of spec directories built to stop, hang or fool it.

    .venv/bin/python -m bench.hostile                 # every case; table on stdout, bench/hostile-last.json
    .venv/bin/python -m bench.hostile --only NAME     # one case (repeatable)
    .venv/bin/python -m bench.hostile --list          # the cases and what each expects

Each case is a small spec directory (a Host document plus the hostile document or file). Each runs as
`python -m reconciler.cli validate DIR` in a child process; per case: wall time, the child's peak RSS
(os.wait4's ru_maxrss), the exit code. Goal: every case answers within GOAL_SECONDS and GOAL_RSS_MB, with
the exit code it should have (1 for a hostile spec, 0 for the few valid ones), without a traceback and
without running out of memory (a MemoryError is a limit that did not hold). PASS/FAIL per case; exit 1 if
any case fails. The child runs under RLIMIT_AS (--as-limit-mb) and a timeout (--timeout) so that an
escape costs the machine at most that much: a case that hits either FAILs.

The corpus is data in tests/support/hostile.py: tests/unit/spec/test_isolate_hostile.py asserts, per case, that
`load_desired` raises a SpecError located at the right file and line whose message names the limit or
rule. Timing goals live here, never in the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.hostile import BY_NAME, CASES, GOAL_RSS_MB, GOAL_SECONDS, REPO, Case, build, remove, run_child

__all__ = ["CASES", "GOAL_RSS_MB", "GOAL_SECONDS"]  # bench.run reads the goals from here


def _printable(text: str) -> str:
    """Control characters escaped (the terminal-escape cases must not reach this table's terminal)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def run_case(case: Case, timeout: float = 20.0, as_limit_mb: int = 2048) -> dict[str, Any]:
    """`reconciler validate` on the case, in a child process under RLIMIT_AS and a timeout."""
    tmp = Path(tempfile.mkdtemp(prefix="reconciler-hostile-"))
    try:
        spec_dir = build(case, tmp)
        child = run_child(
            [sys.executable, "-m", "reconciler.cli", "validate", str(spec_dir)],
            timeout=timeout,
            as_bytes=as_limit_mb * 1024 * 1024,
        )
    finally:
        remove(tmp)
    problems = []
    if child.exit is None:
        problems.append(f"killed after {timeout:g} s")
    elif child.seconds > GOAL_SECONDS:
        problems.append(f"> {GOAL_SECONDS:g} s")
    if child.rss_mb > GOAL_RSS_MB:
        problems.append(f"> {GOAL_RSS_MB:g} MB")
    if "Traceback" in child.stderr:
        problems.append("traceback: " + child.stderr.strip().splitlines()[-1][:120])
    if "out of memory" in child.stderr or "MemoryError" in child.stderr:
        problems.append(f"out of memory (RLIMIT_AS {as_limit_mb} MB)")
    expected_exits = {0} if case.expect is None else ({0, 1} if case.or_valid else {1})
    if child.exit is not None and child.exit not in expected_exits:
        problems.append(f"exit {child.exit}, expected {' or '.join(map(str, sorted(expected_exits)))}")
    if case.canary and case.canary in child.stderr:
        problems.append(f"{case.canary!r} (a secret, a control character) is in the output")
    lines = [
        _printable(line.strip().replace(f"{tmp}/", "")) for line in child.stderr.splitlines() if line.startswith("  ")
    ]
    return {
        "case": case.name,
        "seconds": round(child.seconds, 2),
        "peak_rss_mb": round(child.rss_mb, 1),
        "exit": child.exit,
        "pass": not problems,
        "problems": problems,
        "first_issue": lines[0][:300] if lines else _printable(child.stdout.strip().replace(f"{tmp}/", ""))[:300],
        "issues": len(lines),
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| case | s | peak RSS MB | exit | verdict | why / first issue |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        why = "; ".join(r["problems"]) if r["problems"] else r["first_issue"]
        rows.append(
            f"| {r['case']} | {r['seconds']} | {r['peak_rss_mb']} | {r['exit']} | "
            f"{'PASS' if r['pass'] else '**FAIL**'} | {why.replace('|', '/')[:160]} |"
        )
    return "\n".join(rows)


def run(
    names: list[str] | None = None, timeout: float = 20.0, as_limit_mb: int = 2048, progress: bool = True
) -> dict[str, Any]:
    cases = [BY_NAME[n] for n in names] if names else CASES
    results = []
    for case in cases:
        result = run_case(case, timeout=timeout, as_limit_mb=as_limit_mb)
        if progress:
            print(
                f"{'PASS' if result['pass'] else 'FAIL'} {case.name}: {result['seconds']} s, "
                f"{result['peak_rss_mb']} MB, exit {result['exit']}"
                + (f" ({'; '.join(result['problems'])})" if result["problems"] else ""),
                file=sys.stderr,
                flush=True,
            )
        results.append(result)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "goal_seconds": GOAL_SECONDS,
        "goal_rss_mb": GOAL_RSS_MB,
        "timeout_seconds": timeout,
        "as_limit_mb": as_limit_mb,
        "python": sys.executable,
        "cases": results,
        "failed": [r["case"] for r in results if not r["pass"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(BY_NAME), help="run this case only (repeatable)")
    parser.add_argument("--timeout", type=float, default=20.0, help="kill a case's validate after this many seconds")
    parser.add_argument("--as-limit-mb", type=int, default=2048, help="RLIMIT_AS of each validate (MB)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--json", type=Path, default=REPO / "bench/hostile-last.json", help="where to write the results"
    )
    args = parser.parse_args()
    if args.list:
        for case in CASES:
            expect = "valid" if case.expect is None else f"SpecError {case.expect!r}"
            print(f"{case.name}: {expect}")
        return 0
    results = run(args.only, timeout=args.timeout, as_limit_mb=args.as_limit_mb)
    print(table(results["cases"]))
    failed = results["failed"]
    print(
        f"\n{len(results['cases']) - len(failed)}/{len(results['cases'])} cases within {GOAL_SECONDS:g} s and "
        f"{GOAL_RSS_MB:g} MB" + (f"; FAIL: {', '.join(failed)}" if failed else "")
    )
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
