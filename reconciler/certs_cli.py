"""`reconciler certs check|renew`: every certificate the specs name, where, until when, managed or not; and a
person's renewal of the managed ones now.

Owns the commands' arguments, output and exit codes (check: 0 when none is missing, unreadable or within its
warnDays, 1 otherwise; renew: 0 renewed, 1 not: what stopped it is said, the hosts before it are renewed, the one
it names keeps a valid pair). The work is `engine.cert_renewal`'s. Registered by `reconciler.cli`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    help_text = "certificates: every one the specs name and when it expires; renew the managed ones from their CA"
    p = sub.add_parser("certs", help=help_text, description=help_text, parents=parents)
    actions = p.add_subparsers(dest="action", required=True)
    for name, text in (
        ("check", "every certificate the specs name on every host: expiry, time left, managed or not, due when"),
        ("renew", "renew the managed certificates now, one host at a time (docs/certificates.md)"),
    ):
        a = actions.add_parser(name, help=text, description=text, parents=parents)
        a.add_argument("spec_dir", type=Path, nargs="?", default=Path("specs"), help="spec directory")
        a.add_argument("--host", default=None, help="only this Host")
        a.add_argument("--connect-attempts", type=int, default=4, help="SSH connection attempts per host")
        if name == "renew":
            a.add_argument("names", nargs="*", help="only these Certificate documents (metadata.name)")
        else:
            a.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_renew(args) if args.action == "renew" else _check(args))


async def _check(args: argparse.Namespace) -> int:
    from reconciler.engine.cert_renewal import current, due_at
    from reconciler.errors import HostError
    from reconciler.etcd_cli import load_or_say
    from reconciler.transport.session import Session, ssh_connector

    desired = load_or_say(args.spec_dir)
    if desired is None:
        return 1
    session = Session(ssh_connector(attempts=args.connect_attempts))
    rows: list[dict[str, Any]] = []
    now = time.time()
    try:
        for name, host in sorted(desired.hosts.items()):
            if args.host is not None and name != args.host:
                continue
            for cert in sorted(host.certificates, key=lambda c: c.path):
                row: dict[str, Any] = {"host": name, "path": cert.path, "managed": cert.renew is not None}
                try:
                    c = await current(session, host, cert.path)
                except HostError as exc:
                    row |= {"state": "unreadable", "error": str(exc)[:300]}
                    rows.append(row)
                    continue
                left = (c.not_valid_after_utc.timestamp() - now) / 86400
                row |= {
                    "subject": c.subject.rfc4514_string()[:200],
                    "issuer": c.issuer.rfc4514_string()[:200],
                    "serial": f"{c.serial_number:X}",
                    "not_after": c.not_valid_after_utc.timestamp(),
                    "days_left": round(left, 1),
                    "state": "expired" if left <= 0 else "expiring" if left <= cert.warn_days else "ok",
                }
                if cert.renew is not None:
                    row["renew_due"] = due_at(c, cert.renew)
                rows.append(row)
    finally:
        await session.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(_line(row, now))
    return 0 if all(r["state"] == "ok" for r in rows) else 1


def _line(row: dict[str, Any], now: float) -> str:
    where = f"{row['host']}: {row['path']}"
    if row["state"] == "unreadable":
        return f"{where}: unreadable ({row['error']})"
    until = time.strftime("%Y-%m-%d", time.gmtime(row["not_after"]))
    managed = "not managed"
    if row["managed"]:
        due = row["renew_due"]
        managed = "managed, renewal due " + ("now" if due <= now else time.strftime("%Y-%m-%d", time.gmtime(due)))
    return (
        f"{where}: {row['state']}, until {until} ({row['days_left']:g} days), {row['subject']}, issued by "
        f"{row['issuer']}, serial {row['serial']}; {managed}"
    )


async def _renew(args: argparse.Namespace) -> int:
    from reconciler.engine.cert_renewal import managed, renew
    from reconciler.errors import HostError
    from reconciler.etcd_cli import load_or_say
    from reconciler.transport.session import Session, ssh_connector

    desired = load_or_say(args.spec_dir)
    if desired is None:
        return 1
    if not managed(desired, args.host, set(args.names) or None):
        print("no managed certificate (a Certificate with `renew`) is selected", file=sys.stderr)
        return 1
    user = os.environ.get("USER") or f"uid {os.getuid()}"
    actor = f"reconciler certs renew ({user}@{socket.gethostname()}, pid {os.getpid()})"
    session = Session(ssh_connector(attempts=args.connect_attempts))
    began = time.monotonic()
    try:
        done = await renew(
            session,
            desired,
            actor=actor,
            say=lambda line: print(line, flush=True),
            only_host=args.host,
            names=set(args.names) or None,
        )
    except HostError as exc:
        print(f"renewal stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        await session.close()
    print(f"renewed {len(done)} certificate(s) in {time.monotonic() - began:.1f} s")
    return 0
