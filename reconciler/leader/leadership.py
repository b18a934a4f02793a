"""The daemon's side of leader election: where etcd is (from the specs), the elector's loop, what it reports.

Owns finding the cluster's etcd in the desired state (the client URLs and TLS files of the etcd members'
rollout HealthCheck: the certificate the health check already uses), running the `Elector` every `retry`
seconds, this replica's digest of its specs (after each good load), the leader metrics and the /status "leader"
entry. Started by `engine.daemon` with `reconciler run --leader-election`; its `fenced` is the daemon's fence
(`Rollouts.fence`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from reconciler.errors import SpecError
from reconciler.leader.elector import Elector
from reconciler.leader.gateway import EtcdUnavailable
from reconciler.leader.on_host import client_url, etcd_members
from reconciler.spec.desired import DesiredState
from reconciler.spec.load import spec_digest
from reconciler.status.metrics import Metrics
from reconciler.waits import pause

if TYPE_CHECKING:
    from reconciler.leader.from_here import EtcdGateway
    from reconciler.settings import DaemonSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EtcdAccess:
    endpoints: list[str]
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def etcd_access(desired: DesiredState) -> EtcdAccess | None:
    """The etcd members' client URLs and TLS files (`leader.on_host.etcd_members`) for this machine's client;
    None when the specs name no such members. The TLS files are the last member's: the same on every master."""
    members = etcd_members(desired)
    if not members:
        return None
    check = members[-1][1]
    return EtcdAccess([client_url(c) for _, c in members], check.ca_file, check.cert_file, check.key_file)


SPECS_KEY = "/reconciler/specs"  # {"digest", "by", "at"}: the specs the cluster agreed on, as a leader published them
HELD_KEY = "/reconciler/held"  # what leaders rolled back and hold (engine.held), for the next leader
# etcd answers a value in base64 (4/3 of it) and an answer over 1 MiB is not read (leader.answers): what a leader
# publishes must stay readable by the next; more stays in the leader's own state dir
MAX_HELD_VALUE = 512 << 10
REPLICAS = "/reconciler/replicas/"  # + name: each live replica's specs digest, under its lease


class Memory(Protocol):
    """What a leader carries to the next one (engine.held.Held): a JSON document, merged in by the next."""

    changed: int

    def to_json(self, max_bytes: int | None = None) -> str: ...

    def merge(self, text: str | bytes, source: str) -> None: ...


class Leadership:
    def __init__(
        self,
        name: str,
        metrics: Metrics,
        *,
        ttl: int,
        renew_deadline: float,
        retry: float,
        accept_specs: bool = False,
        replicas: int = 1,
        held: Memory | None = None,
    ):
        self.replicas = replicas  # how many replicas there are meant to be (one per etcd member)
        self.name, self.metrics = name, metrics
        self.ttl, self.renew_deadline, self.retry = ttl, renew_deadline, retry
        self.accept_specs = accept_specs  # an operator's override: this replica's specs become the agreed ones
        self.elector: Elector | None = None
        self._seen_transitions = 0
        self.waiting = "waiting for specs naming the etcd members"  # why there is no elector yet
        self.digest = ""  # this replica's specs (spec.load.spec_digest), set after each good load (`specs_loaded`)
        self.agreed: dict[str, Any] | None = None  # what etcd says the cluster agreed on
        self._published: tuple[int, str] | None = None  # (leadership token, digest) this replica published
        self.conflict = ""  # why this replica, though leader, must not apply its specs
        self._checked: tuple[int, str] | None = None  # (leadership token, digest) whose agreement was checked
        self.held = held  # the daemon's memory of rollbacks: taken over from etcd, published there
        self._held_taken = 0  # the leadership token under which the previous leaders' memory was merged
        self._held_sent = -1  # `held.changed` when last published

    @classmethod
    def of(cls, settings: DaemonSettings, metrics: Metrics, held: Memory) -> Leadership | None:
        """The daemon's election, when its settings ask for one (`--leader-election`)."""
        if not settings.leader_election:
            return None
        return cls(
            settings.name,
            metrics,
            ttl=settings.leader_ttl,
            renew_deadline=settings.renew_deadline,
            retry=settings.leader_retry,
            accept_specs=settings.accept_specs,
            held=held,
        )

    async def fenced(self) -> bool:
        """Acting, the key ours, and this replica's specs checked as agreed in this leadership (fails closed)."""
        e = self.elector
        if e is None or self.conflict or self._checked != (e.state.token, self.digest):
            return False
        return await e.fenced()

    async def deposed(self) -> bool:
        """Whether etcd shows this replica no longer leads (the rollback's fence: etcd not answering is no proof)."""
        return self.elector is None or await self.elector.deposed()

    async def _agree(self, elector: Elector) -> None:
        """The leader publishes its specs' digest; a new leader whose specs differ from the published ones applies
        nothing (they may be a stale copy) unless a majority of the replicas hold the same specs as it does (the
        operator changed them everywhere while the old leader was away) or `accept_specs`. Every replica publishes
        its own digest under its lease and reports whether it agrees."""
        if elector.lease and self.digest:
            await elector.gateway.put(REPLICAS + self.name, self.digest, elector.lease)
        same = sum(d == self.digest for d in (await elector.gateway.prefixed(REPLICAS)).values())
        majority = bool(self.digest) and same > self.replicas // 2
        held = await elector.gateway.holder(SPECS_KEY)
        try:
            record = json.loads(held.value) if held else None
        except ValueError:
            record = None  # not a record this program wrote: as if none was agreed yet
        self.agreed = record if isinstance(record, dict) and isinstance(record.get("digest"), str) else None
        agreed = self.agreed.get("digest") if self.agreed else None
        if not elector.acting():
            self.conflict = ""
        elif (
            agreed in (None, self.digest)
            or self.accept_specs
            or majority
            or (self._published is not None and self._published == (elector.state.token, agreed))
        ):  # nothing agreed yet, the same specs, the operator says so, most replicas hold them, or its own
            if agreed != self.digest and self.digest:
                record = {"digest": self.digest, "by": self.name, "at": time.time()}
                if not await elector.gateway.put_while(SPECS_KEY, json.dumps(record), elector.key, elector.state.token):
                    self._checked, self.conflict = None, ""  # deposed meanwhile: the next round finds out
                    return
                self.agreed, agreed = record, self.digest
                log.info("specs published", digest=self.digest[:12])
            self._published = (elector.state.token, self.digest)
            self.conflict = ""
            await self._carry_held(elector)
            self._checked = (elector.state.token, self.digest)
        else:
            self._checked = None
            by = self.agreed.get("by", "?") if self.agreed else "?"
            self.conflict = (
                f"this replica leads but its specs ({self.digest[:12]}) differ from the ones the cluster agreed on "
                f"({str(agreed)[:12]}, published by {by}): it applies nothing until they match (or run with "
                "--accept-specs to make them the agreed ones)"
            )
        self.metrics.specs_agree.labels(self.name).set(1 if agreed in (None, self.digest) else 0)

    async def _carry_held(self, elector: Elector) -> None:
        """A new leader takes in what the previous leaders rolled back and hold before it acts (the fence opens
        only after this); a leader publishes its memory when it changed, fenced on its key's revision."""
        held = self.held
        if held is None:
            return
        token = elector.state.token
        if self._held_taken != token:
            try:
                record = await elector.gateway.holder(HELD_KEY)
            except EtcdUnavailable as exc:  # too large to read, or etcd away: the fence asks etcd anyway
                log.error("held rollbacks in etcd not read", key=HELD_KEY, error=str(exc)[:200])
                record = None
            if record is not None:
                try:
                    held.merge(record.value[: MAX_HELD_VALUE + 1], HELD_KEY)
                except (ValueError, RecursionError) as exc:  # not what a leader wrote: the own memory stays
                    log.error("held rollbacks in etcd unreadable", key=HELD_KEY, error=str(exc)[:200])
            self._held_taken = token
        if held.changed != self._held_sent:
            value = held.to_json(MAX_HELD_VALUE)  # the newest entries that fit: all are in the state dir
            if not await elector.gateway.put_while(HELD_KEY, value, elector.key, token):
                return  # deposed meanwhile
            self._held_sent = held.changed

    def acting(self) -> bool:
        return self.elector is not None and self.elector.acting()

    async def run(
        self, desired: Callable[[], DesiredState | None], stopping: asyncio.Event, on_won: Callable[[], None]
    ) -> None:
        """Wait for the first good specs, then campaign and renew until stopped; give the key up at the end."""
        while (gateway := self._gateway(desired())) is None:
            await pause(stopping, self.retry)
            if stopping.is_set():
                return
        elector = self.elector = Elector(
            gateway, self.name, ttl=self.ttl, renew_deadline=self.renew_deadline, retry=self.retry
        )
        self.replicas = len(gateway.endpoints)  # one replica per etcd member
        while not stopping.is_set():
            was = elector.acting()
            try:
                await elector.step()
                await self._agree(elector)
            except EtcdUnavailable:
                self._checked = None  # the specs' agreement is not known: act on nothing
            except Exception:  # whatever etcd answered, the election goes on (this task ending stops the daemon)
                log.exception("leader election step failed")
                self._checked = None
            self._report(elector)
            if elector.acting() and not was:
                on_won()  # a new leader looks at every host at once
            await pause(stopping, elector.next_step())
        # the key is given up by `close`, once the passes in flight are done (the daemon calls it)

    async def specs_loaded(self, spec_dir: Path) -> None:
        """A good load of `spec_dir`: this replica's digest of it, and its agreement checked now (the fence refuses
        the new specs until then)."""
        try:
            self.digest = await asyncio.to_thread(spec_digest, spec_dir)
        except SpecError:  # the directory went away meanwhile: no digest, so nothing is agreed or applied
            self.digest = ""
        if self.elector is not None and self.elector.acting():
            try:
                await self._agree(self.elector)
            except Exception:  # EtcdUnavailable or worse: the next round of the loop tries again
                self._checked = None

    async def close(self) -> None:
        """Give the key up (another replica need not wait for the lease to expire) and close the client."""
        if self.elector is not None:
            await self.elector.resign()
            await self.elector.gateway.close()

    def _gateway(self, desired: DesiredState | None) -> EtcdGateway | None:
        from reconciler.leader.from_here import EtcdGateway  # httpx: only a daemon that runs elections needs it

        access = etcd_access(desired) if desired is not None else None
        if desired is not None and access is None:
            self.waiting = "the specs name no etcd members with a rollout HealthCheck"
        if access is None:
            return None
        try:
            return EtcdGateway(
                access.endpoints, ca_file=access.ca_file, cert_file=access.cert_file, key_file=access.key_file
            )
        except (OSError, ssl.SSLError) as exc:  # the TLS files are the health check's: on the masters
            self.waiting = f"cannot use the etcd client TLS files here: {exc}"
            log.error("leader election: no etcd client", error=self.waiting)
            return None

    def _report(self, elector: Elector) -> None:
        self.metrics.leader.labels(self.name).set(1 if elector.acting() else 0)
        delta = elector.state.transitions - self._seen_transitions
        if delta > 0:
            self.metrics.leader_transitions.labels(self.name).inc(delta)
            self._seen_transitions = elector.state.transitions

    def status(self) -> dict[str, Any]:
        state = self.elector.state if self.elector else None
        return {
            "enabled": True,
            "replica": self.name,
            "leader": state.leader if state else "",
            "this_replica_leads": self.acting(),
            "since": state.since if state else None,
            "transitions": state.transitions if state else 0,
            "error": state.error if state else self.waiting,
            "specs_digest": self.digest,
            "agreed_specs": self.agreed,
            "specs_agree": self.agreed is None or self.agreed.get("digest") == self.digest,
            "conflict": self.conflict,
        }
