"""`reconciler certs check|renew|rotate-ca`: every certificate the specs name, where, until when, managed or not; a
person's renewal of the managed ones now; the masters moved to a new CA, phase by phase.

Owns the commands' arguments, output and exit codes (check: 0 when none is missing, unreadable or within its
warnDays, 1 otherwise; renew: 0 renewed, 1 not: what stopped it is said, the hosts before it are renewed, the one
it names keeps a valid pair; rotate-ca: 0 the phase done or looked at, 1 refused or stopped). The work is
`engine.cert_renewal`'s and `engine.ca_rotation`'s. Registered by `reconciler.cli`.
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
    text = "move the masters to a new CA in three phases: trust (both CAs), reissue, drop (docs/certificates.md)"
    a = actions.add_parser("rotate-ca", help=text, description=text, parents=parents)
    a.add_argument("phase", choices=("status", "trust", "reissue", "drop"), help="the phase to run (status: look only)")
    a.add_argument("spec_dir", type=Path, nargs="?", default=Path("specs"), help="spec directory")
    a.add_argument("--new-ca", type=Path, required=True, help="the new CA's certificate (on this machine)")
    a.add_argument(
        "--new-ca-key",
        type=Path,
        default=None,
        help="the new CA's key (mode 0600), which the reissue phase signs with; without it, each managed certificate's renew.signCommand signs (the operator's signer, pointed at the new CA)",
    )
    a.add_argument("--old-ca", type=Path, default=None, help="the CA rotated out (default: the specs' renew.caFile)")
    a.add_argument("--force", action="store_true", help="go on past an unreadable file, or drop with leaves left")
    a.add_argument("--connect-attempts", type=int, default=4, help="SSH connection attempts per host")


def run(args: argparse.Namespace) -> int:
    if args.action == "rotate-ca":
        return asyncio.run(_rotate(args))
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


def _actor(command: str) -> str:
    user = os.environ.get("USER") or f"uid {os.getuid()}"
    return f"reconciler {command} ({user}@{socket.gethostname()}, pid {os.getpid()})"


async def _rotate(args: argparse.Namespace) -> int:
    from cryptography import x509

    from reconciler.certs.authority import Authority, CertError, load
    from reconciler.engine.ca_rotation import RotationRefused, rotate
    from reconciler.errors import HostError
    from reconciler.etcd_cli import load_or_say
    from reconciler.transport.session import Session, ssh_connector

    desired = load_or_say(args.spec_dir)
    if desired is None:
        return 1
    try:
        new = x509.load_pem_x509_certificate(args.new_ca.read_bytes()[:65536])
        signer: Authority | None = load(args.new_ca, args.new_ca_key) if args.new_ca_key else None
        old_file = args.old_ca or _spec_ca(desired)
        old = x509.load_pem_x509_certificate(Path(old_file).read_bytes()[:65536])
    except (OSError, ValueError, CertError) as exc:
        print(f"rotate-ca: {exc}", file=sys.stderr)
        return 1
    session = Session(ssh_connector(attempts=args.connect_attempts))
    began = time.monotonic()
    try:
        await rotate(
            session,
            desired,
            args.phase,
            old=old,
            new=new,
            signer=signer,
            actor=_actor("certs rotate-ca"),
            say=lambda line: print(line, flush=True),
            force=args.force,
        )
    except RotationRefused as exc:
        print(f"refusing the {args.phase} phase: {exc}", file=sys.stderr)
        return 1
    except HostError as exc:
        print(f"the {args.phase} phase stopped: {exc} (run it again once fixed: it goes on)", file=sys.stderr)
        return 1
    finally:
        await session.close()
    if args.phase != "status":
        print(f"the {args.phase} phase is done ({time.monotonic() - began:.1f} s)" + _next(args.phase))
    return 0


def _next(phase: str) -> str:
    return {
        "trust": ": every master trusts both CAs; give clients outside (kubeconfigs, etcdctl, kubelets) the bundle, "
        "then run the reissue phase",
        "reissue": ": every managed certificate is the new CA's; point the specs' renew.caFile/caKeyFile at the new "
        "CA, replace what the specs do not manage, then run the drop phase",
        "drop": ": the old CA is trusted nowhere on the masters",
    }.get(phase, "")


def _spec_ca(desired: Any) -> str:
    """The CA the specs renew from, when they name one: the rotation's old CA by default."""
    files = {c.renew.ca_file for h in desired.hosts.values() for c in h.certificates if c.renew is not None}
    if len(files) != 1:
        raise ValueError("the specs renew from " + (f"{len(files)} CAs" if files else "no CA") + ": give --old-ca")
    return files.pop()


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
    actor = _actor("certs renew")
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
