"""Every benchmark, one command, results in bench/RESULTS.md (and bench/results.json).

    .venv/bin/python -m bench.run            # root, the testbed's Debian packages (scripts/install-deps)
    .venv/bin/python -m bench.run --quick    # fewer rounds and fleet sizes 10, 100: a smoke run

Runs bench.peer (ansible-playbook and pyinfra against reconciler on the 3 testbed hosts, the floor, the daemon's
no-op pass, spec-edit latency), bench.fleet (the daemon against 10, 100 and 1000 simulated hosts),
bench.hostile (`reconciler validate` over the hostile spec corpus), bench.startup (the CLI's start-up against
its libraries' floor) and bench.versus (this checkout against issue 18's starting commit, alternating), and
checks the targets of the benchmark issues. Timing goals live here, never in the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import fleet, ha, hostile, leader, peer, startup, versus  # noqa: E402


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    mem = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpu": cpu,
        "cores": str(
            len([1 for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("processor")])
        ),
        "memory": f"{mem / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "debian": Path("/etc/debian_version").read_text().strip(),
        "python": platform.python_version(),
        "asyncssh": metadata.version("asyncssh"),
        "pydantic": metadata.version("pydantic"),
        "etcd": etcd[0].split()[-1] if etcd else "?",
    }


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    peer_r, fleet_r = results["peer"], {r["hosts"]: r for r in results["fleet"]}
    floor, noop = peer_r["floor"]["median"], peer_r["daemon_noop"]["median"]
    observation = peer_r["observation"]["median"]
    compare = peer_r["compare"]
    out = [
        (
            "daemon no-op pass on 3 hosts <= 3 x the bare observation (files and units, no probes)",
            f"{noop * 1000:.1f} ms = {noop / floor:.2f} x the floor ({floor * 1000:.1f} ms)",
            noop <= 3 * floor,
        ),
        (
            "daemon no-op pass on 3 hosts within 2 x one observation with its probes",
            f"{noop * 1000:.1f} ms = {noop / observation:.2f} x ({observation * 1000:.1f} ms)",
            noop <= 2 * observation,
        ),
    ]
    for scenario, command in (("noop", "apply"), ("plan", "plan")):
        for tool, goal in (("pyinfra", 4), ("ansible", 20)):
            speedup = compare[scenario]["speedup"][tool]
            out.append(
                (
                    f"`reconciler {command}` on converged hosts >= {goal} x faster than {tool}'s no-op",
                    f"{speedup} x ({compare['noop'][tool]['wall_median']} s vs "
                    f"{compare[scenario]['reconciler']['wall_median']} s)",
                    speedup >= goal,
                )
            )
    speedup = compare["repair"]["speedup"]["ansible"]
    out.append(
        (
            "`reconciler apply` repairing a hand edit >= 10 x faster than ansible-playbook",
            f"{speedup} x ({compare['repair']['ansible']['wall_median']} s vs "
            f"{compare['repair']['reconciler']['wall_median']} s)",
            speedup >= 10,
        )
    )
    startup = results.get("startup")
    if startup:
        out.append(
            (
                "`import reconciler.cli` <= 1.2 x a bare import of asyncssh, pydantic, yaml, jinja2",
                f"{startup['cli_over_floor']} x",
                startup["cli_over_floor"] <= startup["goal_ratio"],
            )
        )
    versus = results.get("versus")
    if versus:
        r, base = versus["ratios"], versus["base_commit"]
        for key, most, what in (
            ("noop_pass", 0.5, "daemon no-op pass on 3 hosts"),
            ("latency_p50", 0.6, "spec edit -> all hosts converged, p50"),
            ("fleet_cpu_per_host", 0.6, "1000 simulated hosts: CPU per host per no-op pass"),
            ("fleet_peak_rss", 1.0, "1000 simulated hosts: daemon peak RSS"),
        ):
            out.append((f"{what} <= {most} x base {base}'s", f"{r[key]} x", r[key] <= most))
    if 1000 in fleet_r:
        big = fleet_r[1000]
        out.append(
            ("1000 simulated hosts: no-op pass within 10 s", f"{big['noop_seconds']} s", big["noop_seconds"] <= 10)
        )
        out.append(
            ("1000 simulated hosts: daemon under 500 MB RSS", f"{big['peak_rss_mb']} MB peak", big["peak_rss_mb"] < 500)
        )
        if 100 in fleet_r:
            small = fleet_r[100]
            growth = big["noop_cpu_seconds"] / small["noop_cpu_seconds"]
            out.append(
                (
                    "cost grows no faster than linearly (no-op CPU, 100 -> 1000 hosts)",
                    f"x {growth:.1f} for x 10 hosts",
                    growth <= 11,
                )
            )
    if results.get("ha"):
        out += ha_targets(results["ha"])
    if results.get("leader"):
        le = results["leader"]
        out.append(
            (
                "leader failover <= 20 s from the leader's death to the next leader's first action",
                f"median {le['seconds']['median']} s, worst {le['seconds']['max']} s over {le['failovers']} failovers",
                le["seconds"]["max"] <= 20,
            )
        )
        out.append(
            (
                f"zero overlapping actors over {le['failovers']} forced failovers",
                f"{le['overlaps']} overlaps in {le['actions']} actions by {le['processes']} processes",
                le["overlaps"] == 0 and le["failovers"] >= 20,
            )
        )
    if results.get("hostile"):
        cases = results["hostile"]["cases"]
        failed = [c["case"] for c in cases if not c["pass"]]
        out.append(
            (
                f"hostile specs: `validate` answers every case within {hostile.GOAL_SECONDS:g} s and "
                f"{hostile.GOAL_RSS_MB:g} MB",
                f"{len(cases) - len(failed)}/{len(cases)} cases" + (f"; over: {', '.join(failed)}" if failed else ""),
                not failed,
            )
        )
    return out


HA_FAULTS = (
    ("haproxy", "HAProxy stopped on the holder"),
    ("cut", "the holder's link down 6 s"),
    ("partition", "the holder partitioned 6 s (link up)"),
)


HA_FAULTS_NAMES = dict(HA_FAULTS)


def ha_targets(h: dict[str, Any]) -> list[tuple[str, str, bool]]:
    rounds = len(h["haproxy"]["rounds"])
    out = []
    for key, what in HA_FAULTS:
        if key not in h:
            continue
        worst = h[key]["seconds"]["max"]
        out.append(
            (
                f"VIP failover <= 3 s from the fault to the first successful request: {what}",
                f"median {h[key]['seconds']['median']} s, worst {worst} s over {len(h[key]['rounds'])} rounds",
                worst <= 3,
            )
        )
    for key, what in (("etcd", "an apiserver's etcd stopped"), ("reload", "an HAProxy config rollout")):
        failed = sum(r["failed"] for r in h[key]["rounds"])
        sent = sum(r["sent"] for r in h[key]["rounds"])
        out.append((f"zero failed requests through the VIP (HTTP): {what}", f"{failed} of {sent} failed", failed == 0))
    if "tls_sent" in h["reload"]["rounds"][0]:
        failed = sum(r["tls_failed"] for r in h["reload"]["rounds"])
        sent = sum(r["tls_sent"] for r in h["reload"]["rounds"])
        out.append(
            (
                "zero failed requests through the VIP (TLS): an HAProxy config rollout",
                f"{failed} of {sent} failed",
                failed == 0,
            )
        )
    if "tls_failed_after_down" in h["etcd"]["rounds"][0]:
        after = sum(r["tls_failed_after_down"] for r in h["etcd"]["rounds"])
        out.append(
            (
                "TLS passthrough: no failed request once HAProxy has marked the failing apiserver down",
                f"{after} failed after the mark",
                after == 0,
            )
        )
    two = max(r["most_holders_after"] for key, _ in HA_FAULTS if key in h for r in h[key]["rounds"])
    back = sum(r["taken_back"] for r in h["haproxy"]["rounds"])
    out.append(("never two VIP holders after recovery", f"at most {two} holder(s) seen", two <= 1))
    out.append(("a recovered host does not take the VIP back", f"taken back {back} times in {rounds}", back == 0))
    return out


def render_leader(le: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Leader election: forced failovers",
        "",
        "bench/leader.py: three replicas (the shipped unit, --leader-election, lease 15 s) on the testbed masters, "
        "drift on every host the whole time (repaired by whoever leads), failovers alternating between the "
        "leader's replica SIGKILLed and the leader's host cut off the network for 30 s. Seconds: from the fault "
        "to the first action of another process (kernel monotonic clock, shared by the hosts). Overlaps: an "
        "action begun while another process's was under way, or by any process but the next leader once it has "
        "acted (until the next fault). Elections: etcd's own leader elections during the failover.",
        "",
        _row(["fault", "failover median (s)", "worst (s)"]),
        _row(["---"] * 3),
    ]
    for kind, what in (("kill", "leader's replica SIGKILLed"), ("cut", "leader's host cut off 30 s")):
        if kind in le["by_kind"]:
            lines.append(_row([what, le["by_kind"][kind]["median"], le["by_kind"][kind]["max"]]))
    lines += [
        "",
        f"{le['failovers']} failovers, {le['actions']} actions by {le['processes']} processes: "
        f"**{le['overlaps']} overlaps**.",
    ]
    split = []
    for label, chosen in (
        ("without", [r for r in le["rounds"] if not r.get("etcd_elections")]),
        ("with", [r for r in le["rounds"] if r.get("etcd_elections")]),
    ):
        if chosen:
            values = sorted(r["seconds"] for r in chosen)
            split.append(f"{label} an etcd leader election during it: {len(values)}, {values[0]}-{values[-1]} s")
    if split:
        lines += [
            "",
            "Failovers " + "; ".join(split) + ". Each etcd election gives every lease a fresh TTL (etcd's lessor, "
            "on promotion, plus one election timeout), the dead leader's lease included: a cut of etcd's own "
            "leader, or a member that misses heartbeats on this loaded 2-core machine, adds a few seconds.",
        ]
    return lines


def render_ha(h: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## The HA front: failover through the VIP",
        "",
        "bench/ha.py: specs/ha/ on the three testbed masters, a client sending GET /healthz through the VIP "
        "every 20 ms (2 s timeout). Seconds: from the fault to the end of the outage it causes (the first request "
        "that fails or hangs begins it; the first of 5 successes in a row, completed, ends it).",
        "",
        _row(["fault", "failover median", "worst", "failed requests (median / worst)", "rounds"]),
        _row(["---"] * 5),
    ]
    for key, what in HA_FAULTS:
        if key not in h:
            continue
        r = h[key]
        lines.append(
            _row(
                [
                    what,
                    f"{r['seconds']['median']} s",
                    f"{r['seconds']['max']} s",
                    f"{r['failed']['median']} / {r['failed']['max']}",
                    len(r["rounds"]),
                ]
            )
        )
    for key, what in (("etcd", "an apiserver's etcd stopped"), ("reload", "HAProxy config edit, rolled out")):
        r = h[key]
        sent = sum(x["sent"] for x in r["rounds"])
        lines.append(_row([what, "-", "-", f"{sum(x['failed'] for x in r['rounds'])} of {sent}", len(r["rounds"])]))
    for key, what in (("cut", "its link"), ("partition", "the bridge")):
        if key in h and "rejoin_failed" in h[key]:
            r = h[key]
            lines += [
                "",
                f"{HA_FAULTS_NAMES[key]}: when it is back on {what}, etcd's own election (its member timed out and "
                "rejoins with a higher term; etcd 3.4 without pre-vote) fails every apiserver's /healthz for a moment: "
                f"an outage of median {r['rejoin_seconds']['median']} s (worst {r['rejoin_seconds']['max']} s), "
                f"{r['rejoin_failed']['median']} failed requests (worst {r['rejoin_failed']['max']}); most VIP "
                f"holders seen after: {max(x['most_holders_after'] for x in r['rounds'])}.",
            ]
    if "kill" in h:
        k = h["kill"]
        lines += [
            "",
            "HAProxy SIGKILLed on the holder (systemd starts it again, `Restart=always`): requests through the VIP "
            f"fail for median {k['seconds']['median']} s (worst {k['seconds']['max']} s), "
            f"{k['failed']['median']} failed (worst {k['failed']['max']}); the VIP moved in "
            f"{sum(r['moved'] for r in k['rounds'])} of {len(k['rounds'])} rounds.",
        ]
    if "tls_sent" in h["etcd"]["rounds"][0]:
        e, rl = h["etcd"]["rounds"], h["reload"]["rounds"]
        lines += [
            "",
            "The TLS frontend (8443, TCP passthrough to the apiservers' 6443) in the same rounds: an apiserver's etcd "
            f"stopped: {sum(x['tls_failed'] for x in e)} of {sum(x['tls_sent'] for x in e)} requests failed, all "
            f"before HAProxy's check marked it down ({sum(x['tls_failed_after_down'] for x in e)} after; marked "
            f"down {h['etcd']['marked_down_seconds']['median']} s after the stop, median): HAProxy passes TLS bytes "
            "and cannot retry a 500 as the HTTP frontend does. HAProxy config rollout: "
            f"{sum(x['tls_failed'] for x in rl)} of {sum(x['tls_sent'] for x in rl)} failed.",
        ]
    return lines


def render_hostile(h: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Hostile specs: `reconciler validate` over the corpus",
        "",
        f"bench/hostile.py on {h['date']}: each case (tests/unit/spec/test_isolate_hostile.py asserts their errors) a fresh "
        f"`python -m reconciler.cli validate` under RLIMIT_AS {h['as_limit_mb']} MB, killed after "
        f"{h['timeout_seconds']:g} s; peak RSS from wait4. Goal: within {h['goal_seconds']:g} s and "
        f"{h['goal_rss_mb']:g} MB, the right exit code, no traceback, no MemoryError. The FAIL rows are the known "
        "escapes (xfail in the tests).",
        "",
        hostile.table(h["cases"]),
    ]


def render_versus(v: dict[str, Any]) -> list[str]:
    rows = [
        ("daemon no-op pass on 3 hosts (s, median)", v["base"]["noop_median"], v["head"]["noop_median"], "noop_pass"),
        ("spec edit -> all converged (s, p50)", v["base"]["latency_p50"], v["head"]["latency_p50"], "latency_p50"),
        (
            "1000 hosts: CPU per host per no-op pass (ms)",
            v["base"]["fleet"]["cpu_per_host_ms"],
            v["head"]["fleet"]["cpu_per_host_ms"],
            "fleet_cpu_per_host",
        ),
        (
            "1000 hosts: daemon peak RSS (MB)",
            v["base"]["fleet"]["peak_rss_mb"],
            v["head"]["fleet"]["peak_rss_mb"],
            "fleet_peak_rss",
        ),
    ]
    return [
        "",
        f"## This checkout ({v['head_commit']}) against issue 18's starting commit ({v['base_commit']})",
        "",
        "bench/versus.py: the base from a git worktree (its own daemon and fleet simulator), the two alternating "
        f"block by block in one run: {len(v['base']['blocks'])} daemon block(s) each on the testbed (no-op passes "
        "and spec edits), then the 1000-host fleet. The bare observation (no probes) with this checkout: "
        f"{v['floor']['median'] * 1000:.1f} ms; the no-op pass is {v['ratios']['noop_pass_to_floor']} x that.",
        "",
        _row(["", f"base {v['base_commit']}", f"this checkout {v['head_commit']}", "ratio"]),
        _row(["---"] * 4),
        *(_row([label, a, b, f"{v['ratios'][key]} x"]) for label, a, b, key in rows),
    ]


def render(results: dict[str, Any]) -> str:
    m, p = results["machine"], results["peer"]
    phases = [k for k, v in p["latency"].items() if isinstance(v, dict)]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `.venv/bin/python -m bench.run` on {results['date']} (took {results['minutes']:.0f} min). "
        "Rerun: `bash scripts/install-deps && .venv/bin/python -m bench.run` as root on Debian 12 (it boots the "
        "testbed and installs ansible-core and pyinfra from PyPI into bench/.venv-ansible and bench/.venv-pyinfra).",
        "",
        "## Machine",
        "",
        ", ".join(f"{k}: {v}" for k, v in m.items()) + f", {p['versions']['ansible']}, {p['versions']['pyinfra']}.",
        "",
        "## Targets",
        "",
        _row(["target", "measured", "met"]),
        _row(["---"] * 3),
        *(_row([name, value, "yes" if ok else "**no**"]) for name, value, ok in targets(results)),
        "",
        "## Ansible and pyinfra against reconciler on the 3 testbed hosts",
        "",
        "Same job (bench/ansible/site.yml and bench/pyinfra/deploy.py render byte for byte what specs/ renders; "
        "after each tool's converge from bare, the other two found nothing to do), same hosts, the tools rotating "
        "within each round. Ansible: ansible-core with SSH pipelining and ControlPersist (its kept connections "
        "carry over between runs), no fact gathering. pyinfra: a new process and new SSH connections (paramiko) "
        "every run, as reconciler. reconciler: `reconciler apply` / `plan`, its bytecode compiled before the runs "
        "as `pip install` compiles an installed tool's (the peers' packages come compiled so). CPU: the tool's process tree plus "
        "ansible's ssh ControlPersist masters. Connections and sessions: what the hosts' sshd logged (DEBUG1), all "
        "3 hosts together. Speedup: the peer's median over reconciler's.",
        "",
        _row(
            [
                "scenario",
                "tool",
                "runs",
                "wall median (s)",
                "min-max (s)",
                "CPU median (s)",
                "SSH connections",
                "SSH sessions",
                "reconciler's speedup",
            ]
        ),
        _row(["---"] * 9),
    ]
    for scenario, label in (
        ("bare", "converge from bare"),
        ("noop", "no-op pass"),
        ("plan", "`reconciler plan` on converged hosts"),
        ("repair", "repair one hand edit"),
        ("check", "check mode (`--check --diff` / `--dry --diff` / `plan`)"),
    ):
        if scenario not in p["compare"]:
            continue
        c = p["compare"][scenario]
        for tool in ("ansible", "pyinfra", "reconciler"):
            if tool not in c:
                continue
            s = c[tool]
            lines.append(
                _row(
                    [
                        label if tool == next(t for t in ("ansible", "pyinfra", "reconciler") if t in c) else "",
                        tool,
                        s["runs"],
                        s["wall_median"],
                        f"{s['wall_min']}-{s['wall_max']}",
                        s["cpu_median"],
                        s["connections_median"],
                        s["sessions_median"],
                        ", ".join(f"{v} x {k}" for k, v in c["speedup"].items()) if tool == "reconciler" else "",
                    ]
                )
            )
    f, o, d = p["floor"], p["observation"], p["daemon_noop"]
    lines += [
        "",
        "## The floor and the daemon's no-op pass",
        "",
        f"The floor: one batched observation command per host without probes (reconciler's observe script: 10 "
        f"files, 4 units) over a kept SSH connection, 3 hosts in parallel: median {f['median'] * 1000:.1f} ms over "
        f"{f['repeats']} (min {f['min'] * 1000:.1f} ms). With the probes (4 health checks, 2 certificates), "
        f"as the daemon's pass observes: median {o['median'] * 1000:.1f} ms (min {o['min'] * 1000:.1f} ms).",
        f"The daemon's no-op pass (SIGHUP, first host's start to the last host's end, from its log): median "
        f"{d['median'] * 1000:.1f} ms over {d['passes']} passes (min {d['min'] * 1000:.1f} ms; one host's pass "
        f"{d['host_median'] * 1000:.1f} ms) = **{d['ratio_to_floor']} x the floor**. A converged host costs one "
        "round trip: the pass's first observation includes the health checks.",
        "",
        "## Latency: spec saved -> every host converged (/status)",
        "",
        f"{p['latency']['edits']} edits of kube-scheduler's env file in specs/kubernetes.yaml, 2.5 s apart (each: a "
        "write and a restart of kube-scheduler on the 3 hosts; closer edits run into systemd's start limit of 5 "
        "starts in 10 s, see the notes). Detection: save to the daemon's `specs loaded` event "
        "(watchfiles + the daemon's quiet-time debounce, `--debounce-ms`: 100 ms, 300 ms before 0bc034c); queue: to the slowest host's pass start; then that host's "
        "phases.",
        "",
        _row(["", *phases]),
        _row(["---"] * (len(phases) + 1)),
        _row(["p50 (s)", *(p["latency"][k]["p50"] for k in phases)]),
        _row(["p95 (s)", *(p["latency"][k]["p95"] for k in phases)]),
        "",
        "## Scale: simulated fleet",
        "",
        "The daemon (default settings: 16 workers) against N emulated masters on loopback (bench/fleetsim.py: "
        "one asyncssh server process, one port and host key entry per host, files, systemctl and health answered "
        "from memory). Specs: the bundled kubernetes.yaml and certificates.yaml over N Host documents. "
        "start = launch to /readyz (N SSH connects and a converge from bare); no-op = SIGHUP to the last host's "
        "end (median of 3); change = a spec edit (a write and a restart on every host) from the save to the last "
        "host's end. The simulator's CPU shares the 2 cores.",
        "",
        _row(
            [
                "hosts",
                "validate (s)",
                "start (s)",
                "start CPU (s)",
                "no-op (s)",
                "no-op CPU (s)",
                "CPU per host (ms)",
                "change (s)",
                "change CPU (s)",
                "reload after the edit (s)",
                "peak RSS (MB)",
                "simulator CPU (s)",
            ]
        ),
        _row(["---"] * 12),
    ]
    for r in results["fleet"]:
        lines.append(
            _row(
                [
                    r["hosts"],
                    r["validate_seconds"],
                    r["start_seconds"],
                    r["start_cpu_seconds"],
                    r["noop_seconds"],
                    r["noop_cpu_seconds"],
                    round(r["noop_cpu_seconds"] / r["hosts"] * 1000, 2),
                    r["change_seconds"],
                    r["change_cpu_seconds"],
                    r["change_detect_and_load_seconds"],
                    r["peak_rss_mb"],
                    r["sim_cpu_seconds"],
                ]
            )
        )
    if results.get("versus"):
        lines += render_versus(results["versus"])
    if results.get("startup"):
        st = results["startup"]
        lines += [
            "",
            "## Start-up: the CLI against its libraries",
            "",
            f"bench/startup.py, {st['runs']} alternating fresh processes, medians: "
            + "; ".join(f"{name} {seconds:.3f} s" for name, seconds in st["median_seconds"].items())
            + f". `import reconciler.cli` = **{st['cli_over_floor']} x** the floor.",
        ]
    if results.get("ha"):
        lines += render_ha(results["ha"])
    if results.get("leader"):
        lines += render_leader(results["leader"])
    if results.get("hostile"):
        lines += render_hostile(results["hostile"])
    lines += ["", results.get("notes", "").strip(), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 1 bare round, 20 edits, fleets of 10 and 100")
    parser.add_argument("--render", action="store_true", help="only write RESULTS.md again from bench/results.json")
    parser.add_argument(
        "--only",
        choices=("peer", "fleet", "hostile", "startup", "versus", "ha", "leader"),
        help="run one part, keep the others from bench/results.json",
    )
    args = parser.parse_args()
    if args.render:
        saved = json.loads((REPO / "bench/results.json").read_text())
        notes = REPO / "bench/NOTES.md"
        saved["notes"] = notes.read_text() if notes.exists() else ""
        (REPO / "bench/RESULTS.md").write_text(render(saved))
        return 0 if all(ok for _, _, ok in targets(saved)) else 1
    began = time.time()
    peer.compile_tree(REPO)
    kept = json.loads((REPO / "bench/results.json").read_text()) if args.only else {}
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine()}
    if args.only not in (None, "peer"):
        results["peer"] = kept["peer"]
    else:
        results["peer"] = peer.run(rounds=2, bare_rounds=1, edits=20, floor_repeats=10) if args.quick else peer.run()
    if args.only not in (None, "fleet"):
        results["fleet"] = kept["fleet"]
    else:
        results["fleet"] = []
        for n in (10, 100) if args.quick else (10, 100, 1000):
            with tempfile.TemporaryDirectory(prefix=f"reconciler-fleet-{n}-") as tmp:
                results["fleet"].append(fleet.run_fleet(n, Path(tmp)))
    if args.only not in (None, "hostile"):
        if kept.get("hostile"):
            results["hostile"] = kept["hostile"]
    else:
        results["hostile"] = hostile.run()
        (REPO / "bench/hostile-last.json").write_text(json.dumps(results["hostile"], indent=2) + "\n")
    for part, measure in (
        ("startup", lambda: startup.run(9)),
        ("versus", lambda: versus.run(blocks=1, fleet_runs=1) if args.quick else versus.run()),
        ("ha", lambda: ha.run(2 if args.quick else 5)),
        ("leader", lambda: leader.run(4 if args.quick else 20)),
    ):
        if args.only not in (None, part):
            if kept.get(part):
                results[part] = kept[part]
        else:
            results[part] = measure()
    results["minutes"] = (time.time() - began) / 60 + (kept.get("minutes", 0) if args.only else 0)
    notes = REPO / "bench/NOTES.md"
    results["notes"] = notes.read_text() if notes.exists() else ""
    (REPO / "bench/results.json").write_text(json.dumps(results, indent=2) + "\n")
    (REPO / "bench/RESULTS.md").write_text(render(results))
    print((REPO / "bench/RESULTS.md").read_text())
    return 0 if all(ok for _, _, ok in targets(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
