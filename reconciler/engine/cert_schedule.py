"""The daemon renews the managed certificates on its own, each once `renewAt` of its lifetime is gone.

Owns when (a look every LOOK_S at most, and at the next one due; each certificate's moment moved later by a jitter
of its own, up to 5% of its lifetime and at most JITTER_CAP_S, so that three masters whose certificates were made
together are not renewed in the same minute; after a failure, again with backoff), who (with leader election,
only the replica that leads), and what is said of it: `reconciler_certificate_renewals_total{result}`, its
/status entry (each managed certificate: its serial, expiry, when due, the last error), logs. The work is
`engine.cert_renewal`'s. Wired by `engine.daemon`.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from reconciler.engine.cert_renewal import current, managed, renew_one
from reconciler.errors import HostError
from reconciler.observe.snapshot import CertFact
from reconciler.spec.desired import DesiredCert, DesiredHost, DesiredRenewal, DesiredState
from reconciler.status.metrics import Metrics
from reconciler.transport.session import Connector, Session
from reconciler.waits import backoff, pause

log = structlog.get_logger(__name__)

LOOK_S = 600.0
JITTER_CAP_S = 6 * 3600.0
RETRY_BASE_S, RETRY_CAP_S = 60.0, 3600.0
MIN_GAP_S = 3600.0  # a certificate this daemon renewed is not renewed again within this time, whatever it says


def jitter(host: str, path: str, serial: int, lifetime_s: float) -> float:
    """Pure: this certificate's own delay (seconds), the same at every look: up to 5% of its lifetime, at most
    JITTER_CAP_S."""
    digest = hashlib.sha256(f"{host}\0{path}\0{serial}".encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64
    return share * min(0.05 * lifetime_s, JITTER_CAP_S)


def moment(host: str, path: str, serial: int, start: float, end: float, renewal: DesiredRenewal) -> float:
    """Pure: when the daemon renews this certificate (unix time): `renewAt` of its lifetime gone, then its jitter."""
    return start + renewal.renew_at * (end - start) + jitter(host, path, serial, end - start)


def planned(host: DesiredHost, facts: Mapping[str, CertFact], now: float) -> list[str]:
    """Pure: what `plan` says of this host's managed certificates that are due (each with its reason)."""
    out = []
    for cert in host.certificates:
        fact = facts.get(cert.path)
        if cert.renew is None or fact is None or None in (fact.not_before, fact.not_after, fact.serial):
            continue
        assert fact.not_before is not None and fact.not_after is not None and fact.serial is not None
        due = moment(host.name, cert.path, fact.serial, fact.not_before, fact.not_after, cert.renew)
        if now < due:
            continue
        why = (
            f"expired {_utc(fact.not_after)}"
            if now >= fact.not_after
            else f"{cert.renew.renew_at:.0%} of its lifetime gone at {_utc(due)}, expires {_utc(fact.not_after)}"
        )
        name = cert.source.split("/", 1)[1]
        out.append(
            f"  ~ renew {cert.path} ({why}): the daemon renews it, or `reconciler certs renew --host {host.name} {name}`"
        )
    return out


def _utc(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


class Renewals:
    def __init__(self, metrics: Metrics, connector: Connector, leading: Callable[[], Awaitable[bool]] | None):
        self.metrics, self.leading = metrics, leading
        self.session = Session(connector)
        self.actor = f"reconciler run ({socket.gethostname()}, pid {os.getpid()})"
        self.seen: dict[tuple[str, str], dict[str, Any]] = {}  # (host, path) -> its /status entry
        self.failures: dict[tuple[str, str], int] = {}
        self._retry_at: dict[tuple[str, str], float] = {}
        self._renewed_at: dict[tuple[str, str], float] = {}
        self.enabled = False

    async def run(self, desired: Callable[[], DesiredState | None], stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            wait = await self.step(desired())
            if await pause(stopping, wait):
                break
        await self.session.close()

    async def step(self, desired: DesiredState | None, now: float | None = None) -> float:
        """One look at every managed certificate; the due ones renewed, one after another. The seconds until the
        next look."""
        chosen = managed(desired) if desired is not None else []
        self.enabled = bool(chosen)
        if desired is None or not chosen or (self.leading is not None and not await self.leading()):
            return LOOK_S
        wait = LOOK_S
        for host, cert in chosen:
            key = (host.name, cert.path)
            now = time.time() if now is None else now
            try:
                c = await current(self.session, host, cert.path)
            except HostError as exc:
                self.seen[key] = {"host": host.name, "path": cert.path, "error": str(exc)[:300]}
                self.session.forget(host.name)
                continue
            assert cert.renew is not None
            start, end = c.not_valid_before_utc.timestamp(), c.not_valid_after_utc.timestamp()
            due = moment(host.name, cert.path, c.serial_number, start, end, cert.renew)
            due = max(due, self._retry_at.get(key, 0.0), self._renewed_at.get(key, -MIN_GAP_S) + MIN_GAP_S)
            self.seen[key] = {
                "host": host.name,
                "path": cert.path,
                "serial": f"{c.serial_number:X}",
                "not_after": c.not_valid_after_utc.timestamp(),
                "due_at": due,
                "failures": self.failures.get(key, 0),
                "error": self.seen.get(key, {}).get("error"),
            }
            if now < due:
                wait = min(wait, due - now)
                continue
            if self.leading is not None and not await self.leading():  # asked again before each renewal
                return LOOK_S
            if not await self._renew(desired, host.name, cert, key):
                return RETRY_BASE_S  # not on to the next host after a failure: the next look decides
            wait = 1.0
        return max(wait, 1.0)

    async def _renew(self, desired: DesiredState, host: str, cert: DesiredCert, key: tuple[str, str]) -> bool:
        lines: list[str] = []  # each step with the seconds since the renewal began: where a slow one spent them
        began = time.monotonic()

        def say(line: str) -> None:
            lines.append(f"+{time.monotonic() - began:.1f}s {line}")

        try:
            done = await renew_one(self.session, desired, desired.hosts[host], cert, actor=self.actor, say=say)
        except Exception as exc:  # a HostError, or whatever else: a renewal's failure, never the daemon's end
            n = self.failures[key] = self.failures.get(key, 0) + 1
            self._retry_at[key] = time.time() + backoff(n, RETRY_BASE_S, RETRY_CAP_S)
            self.seen[key] = {**self.seen[key], "failures": n, "error": str(exc)[:600], "due_at": self._retry_at[key]}
            self.metrics.cert_renewals.labels(result="failed").inc()
            self.session.forget(host)
            log.error("certificate not renewed", host=host, path=cert.path, error=str(exc)[:600], failures=n)
            return False
        self.failures.pop(key, None)
        self._retry_at.pop(key, None)
        self._renewed_at[key] = time.time()
        self.seen[key] = {**self.seen[key], "serial": done.serial, "not_after": done.not_after, "error": None}
        self.metrics.cert_renewals.labels(result="ok").inc()
        log.info(
            "certificate renewed", host=host, path=cert.path, serial=done.serial, seconds=done.seconds, steps=lines
        )
        return True

    def status(self) -> dict[str, Any]:
        """The /status entry: each managed certificate as last seen, and when it is due."""
        return {"enabled": self.enabled, "certificates": [self.seen[k] for k in sorted(self.seen)]}
