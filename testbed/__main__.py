"""Command line for the testbed: boot hosts and leave them running, reach them, tear them down.

    python -m testbed up [-n 3] [--kube standins|real] [--state-dir DIR]
                                                     boot (after cleaning leftovers), print hosts, exit
    python -m testbed down [--state-dir DIR]         stop every host recorded in DIR, unmount, drop bridge
    python -m testbed ssh master-1 [CMD ...]         ssh into a host with the testbed's key and known_hosts
    python -m testbed status [--state-dir DIR]       which recorded hosts are running

Pids live in DIR/run/*.pid, so `down` (or the next `up`) from another process cleans up after `up`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from testbed.cleanup import cleanup, read_pid_file
from testbed.hosts import Testbed, TestHost
from testbed.kube import KINDS
from testbed.layout import BRIDGE, DEFAULT_STATE_DIR, StateLayout
from testbed.system import is_alive


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="boot hosts and leave them running")
    up.add_argument("-n", type=int, default=3, help="number of hosts (default 3)")
    up.add_argument(
        "--kube",
        choices=KINDS,
        default=None,
        help="the Kubernetes binaries: the stand-ins, or the real v1.20.2 of scripts/build-kube "
        "(default: $RECONCILER_TESTBED_KUBE, else standins)",
    )
    sub.add_parser("down", help="tear down a testbed left running by `up`")
    sub.add_parser("status", help="show recorded hosts")
    ssh = sub.add_parser("ssh", help="ssh into a host")
    ssh.add_argument("host", help="master-N")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER)
    return parser


def _host(layout: StateLayout, name: str) -> TestHost:
    prefix, _, number = name.partition("-")
    if prefix != "master" or not number.isdigit():
        raise SystemExit(f"unknown host {name!r}: expected master-N")
    return TestHost(int(number), layout)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    layout = StateLayout(args.state_dir)
    if args.command == "up":
        testbed = Testbed(args.n, args.state_dir, kube_kind=args.kube).start()
        print(
            f"testbed up in {testbed.timings['prepare'] + testbed.timings['boot']:.1f}s "
            f"(bridge {BRIDGE}, state {args.state_dir}, kube {testbed.kube_kind})"
        )
        for host in testbed.hosts:
            print(f"  {host.name}  {host.address}  pid {host.pid}  root {host.root}")
        print(
            f"ssh: ssh -i {testbed.key_path} -o UserKnownHostsFile={testbed.known_hosts_path} "
            f"root@{testbed.hosts[0].address}   (or: python -m testbed ssh master-1)"
        )
        print("tear down: python -m testbed down")
        return 0
    if args.command == "down":
        cleanup(args.state_dir)
        if layout.hosts_dir.is_dir():
            for host_dir in layout.hosts_dir.iterdir():
                try:
                    host_dir.rmdir()
                except OSError:
                    pass
        print("testbed down")
        return 0
    if args.command == "status":
        pid_files = sorted(layout.run_dir.glob("*.pid")) if layout.run_dir.is_dir() else []
        for pid_file in pid_files:
            record = read_pid_file(pid_file)
            state = "running" if record and is_alive(*record) else "stopped"
            print(f"{pid_file.stem}  {state}  pid {record[0] if record else '?'}")
        if not pid_files:
            print("no hosts recorded")
        return 0
    host = _host(layout, args.host)
    ssh_args = host.ssh_args()
    if not args.cmd:
        ssh_args.insert(1, "-t")
    os.execvp(ssh_args[0], [*ssh_args, *args.cmd])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
