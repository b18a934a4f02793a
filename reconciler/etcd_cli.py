"""`reconciler etcd snapshot|snapshots|restore|replace-member`: a person takes a snapshot now, lists what is kept,
restores every member from one, or replaces a dead member.

Owns the commands' arguments, output and exit codes (0 done, 1 not: nothing kept, no snapshot, a refused or
stopped restore or replacement, the specs' error), and the specs' loading for them and `certs_cli`; the work is
`backup.take`, `backup.store`, `engine.restore` and `engine.replace`'s. Registered by `reconciler.cli`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.backup import store
from reconciler.errors import SpecError

if TYPE_CHECKING:
    from reconciler.spec.desired import DesiredState

DEFAULT_SUBDIR = "etcd-snapshots"


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    help_text = (
        "etcd's data: take a checked snapshot now, list the kept ones, restore every member from one, replace a "
        "dead member"
    )
    p = sub.add_parser("etcd", help=help_text, description=help_text, parents=parents)
    actions = p.add_subparsers(dest="action", required=True)
    for name, text in (
        ("snapshot", "take an etcd snapshot now (checked, kept on this machine)"),
        ("snapshots", "list the kept snapshots, newest first"),
        ("restore", "rebuild every etcd member from one snapshot (a person's act: docs/etcd.md, Restore)"),
        ("replace-member", "replace a dead master's etcd member: a learner first, promoted once in sync"),
    ):
        a = actions.add_parser(name, help=text, description=text, parents=parents)
        if name == "restore":
            a.add_argument("snapshot", type=Path, help="the snapshot file (etcd-...-r<revision>.db, or .db.age)")
            a.add_argument("--force", action="store_true", help="restore even though etcd answers")
            a.add_argument(
                "--plan",
                action="store_true",
                help="check everything a restore checks and say each step it would take; change nothing",
            )
            a.add_argument(
                "--any-cluster",
                action="store_true",
                help="restore a snapshot whose record names another cluster's members",
            )
            a.add_argument(
                "--identity",
                type=Path,
                default=None,
                help="the age identity file (private key) of a snapshot encrypted at rest (.db.age)",
            )
        if name == "replace-member":
            a.add_argument("host", help="the Host (in the specs) whose etcd member is replaced")
            a.add_argument("--force", action="store_true", help="replace it even though its member answers")
            a.add_argument(
                "--start-timeout",
                type=seconds,
                default=120.0,
                help="seconds the new member has to start as a learner before it is removed again (default 120)",
            )
            a.add_argument(
                "--sync-timeout",
                type=seconds,
                default=600.0,
                help="seconds the learner has to catch up before the command stops (it stays a learner; default 600)",
            )
        if name != "snapshots":
            a.add_argument("spec_dir", type=Path, nargs="?", default=Path("specs"), help="spec directory")
            a.add_argument("--connect-attempts", type=int, default=4, help="SSH connection attempts per host")
        if name in ("snapshot", "snapshots"):
            a.add_argument(
                "--dir",
                type=Path,
                default=None,
                help=f"where snapshots are kept (default: the state directory's {DEFAULT_SUBDIR}/: "
                "$RECONCILER_STATE_DIR or /var/lib/reconciler)",
            )
            a.add_argument("--json", action="store_true", help="print the result as JSON")


def seconds(text: str) -> float:
    """A time given on the command line: a positive, finite number of seconds, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0, at most 86400")
    return value


def directory(args: argparse.Namespace) -> Path:
    from reconciler.tuning.overlay import default_state_dir

    given = getattr(args, "dir", None)
    return Path(given) if given is not None else default_state_dir() / DEFAULT_SUBDIR


def run(args: argparse.Namespace) -> int:
    where = directory(args)
    if args.action == "snapshots":
        kept = store.listed(where)
        if args.json:
            print(json.dumps([asdict(k) for k in kept], indent=2))
        else:
            for k in kept:
                print(_line(k))
            if not kept:
                print(f"no snapshot kept in {where}", file=sys.stderr)
        return 0 if kept else 1
    if args.action == "restore":
        return asyncio.run(_restore(args))
    if args.action == "replace-member":
        return asyncio.run(_replace(args))
    return asyncio.run(_snapshot(args, where))


def load_or_say(spec_dir: Path) -> DesiredState | None:
    """The specs, or None once their errors are said."""
    from reconciler.spec.isolate import load_desired

    try:
        return load_desired(spec_dir)
    except SpecError as exc:
        print(f"{len(exc.issues)} error(s) in {spec_dir}:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None


async def _restore(args: argparse.Namespace) -> int:
    from reconciler.engine.restore import RestoreRefused, restore
    from reconciler.errors import HostError
    from reconciler.transport.session import Session, ssh_connector

    desired = load_or_say(args.spec_dir)
    if desired is None:
        return 1
    session = Session(ssh_connector(attempts=args.connect_attempts))
    began = time.monotonic()
    try:
        await restore(
            session,
            desired,
            args.snapshot,
            force=args.force,
            any_cluster=args.any_cluster,
            identity=args.identity,
            say=lambda line: print(line, flush=True),
            plan_only=args.plan,
        )
    except RestoreRefused as exc:
        print(f"refusing to restore: {exc}", file=sys.stderr)
        return 1
    except HostError as exc:
        print(
            f"restore stopped: {exc}\n(run the same command again: the steps done are not done twice)", file=sys.stderr
        )
        return 1
    finally:
        await session.close()
    print("planned: nothing was changed" if args.plan else f"restore done in {time.monotonic() - began:.1f} s")
    return 0


async def _replace(args: argparse.Namespace) -> int:
    import os
    import socket

    from reconciler.engine.replace import ReplaceRefused, replace
    from reconciler.errors import HostError
    from reconciler.transport.session import Session, ssh_connector

    desired = load_or_say(args.spec_dir)
    if desired is None:
        return 1
    session = Session(ssh_connector(attempts=args.connect_attempts))
    user = os.environ.get("USER") or f"uid {os.getuid()}"
    actor = f"reconciler etcd replace-member ({user}@{socket.gethostname()}, pid {os.getpid()})"
    try:
        done = await replace(
            session,
            desired,
            args.host,
            force=args.force,
            actor=actor,
            start_timeout=args.start_timeout,
            sync_timeout=args.sync_timeout,
            say=lambda line: print(line, flush=True),
        )
    except ReplaceRefused as exc:
        print(f"refusing to replace: {exc}", file=sys.stderr)
        return 1
    except HostError as exc:
        print(
            f"replacement stopped: {exc}\n(run the same command again: it goes on from where etcd is)", file=sys.stderr
        )
        return 1
    finally:
        await session.close()
    print(
        f"replaced: {args.host} is member {done.member}, started {done.started_s:.1f} s and promoted "
        f"{done.promoted_s:.1f} s after its start"
    )
    return 0


async def _snapshot(args: argparse.Namespace, where: Path) -> int:
    from reconciler.backup.take import SnapshotFailed, take
    from reconciler.transport.session import Session, ssh_connector

    desired = load_or_say(args.spec_dir)
    if desired is None:
        return 1
    if desired.backup is None:
        print(
            "note: no EtcdBackup in the specs says how snapshots are kept: this one is kept unencrypted (it holds "
            "every Secret of the cluster; docs/etcd.md, Encrypted at rest)",
            file=sys.stderr,
        )
    session = Session(ssh_connector(attempts=args.connect_attempts))
    try:
        kept = await take(session, desired, where)
    except SnapshotFailed as exc:
        print(f"no snapshot kept: {exc}", file=sys.stderr)
        return 1
    finally:
        await session.close()
    print(json.dumps(asdict(kept), indent=2) if args.json else _line(kept))
    return 0


def _line(k: store.Kept) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k.taken_at))
    return (
        f"{k.path}: revision {k.revision}, {k.keys} keys, {k.size / 1e6:.1f} MB, from {k.member} at {when} "
        f"({k.seconds:.1f} s), sha256 {k.sha256[:16]}" + (", encrypted (age)" if k.encrypted else "")
    )
