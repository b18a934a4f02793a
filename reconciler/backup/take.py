"""An etcd snapshot taken from a healthy member and kept, checked, on this machine.

Owns choosing the member (one that answers, not a learner, a follower before the leader: the leader has the most
to do), asking its host for the snapshot through the SSH connection reconciler already has (etcd_snapshot.sh:
`etcdctl snapshot save` with the client certificate of the member's health check, which never leaves the host;
its `snapshot status`; the bytes on stdout), receiving the bytes into a file of their own while etcd's trailer is
checked (`snapshot_file`), comparing the size with what the member said, and only then naming the file
(`store.keep`). A copy that is not whole is removed and said so (SnapshotFailed): it never counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconciler.backup import store
from reconciler.backup.age import SUFFIX as AGE
from reconciler.backup.age import AgeError, Encrypting
from reconciler.backup.snapshot_file import HASH_SIZE, Trailer
from reconciler.components.systemd import service
from reconciler.errors import HostError
from reconciler.leader.gateway import EtcdUnavailable
from reconciler.leader.membership import EtcdRefused, Membership
from reconciler.leader.on_host import EtcdOnHosts, client_url, etcd_members
from reconciler.observe.facts import shipped_script
from reconciler.spec.desired import DesiredCheck, DesiredHost, DesiredState
from reconciler.terminal import printable
from reconciler.transport.session import Session

log = structlog.get_logger(__name__)

SCRIPT = shipped_script("etcd_snapshot.sh", "reconciler.backup")
MAX_SNAPSHOT_BYTES = 9 * 1024**3  # etcd's largest backend quota is 8 GiB
TIMEOUT = 1800.0  # seconds one snapshot may take, whole: ~1 GB at ~1 MB/s


BEFORE_TURN_DIR = "before-rollout"  # beside the schedule's, kept apart from it
BEFORE_TURN_KEEP = 12


class SnapshotFailed(Exception):
    """No whole snapshot was kept; says why, member by member."""


@dataclass(frozen=True)
class Member:
    host: DesiredHost
    check: DesiredCheck
    leader: bool
    db_size: int  # bytes of its database as it says (0: not said): the room its host needs for the snapshot


async def take(session: Session, desired: DesiredState, directory: Path) -> store.Kept:
    """A snapshot of the cluster's etcd kept in `directory`, from the first member that gives a whole one."""
    members = etcd_members(desired)
    if not members:
        raise SnapshotFailed("no etcd member in the specs (the etcd unit's rollout health check names its URL)")
    chosen, unfit = await _members(session, members)
    errors = list(unfit)
    cluster = await _cluster(session, members) if chosen else ()
    recipients = desired.backup.recipients if desired.backup is not None else ()
    for member in chosen:
        try:
            return await _from(session, member, directory, cluster, recipients)
        except (HostError, SnapshotFailed) as exc:
            log.warning("etcd snapshot failed", member=member.host.name, error=str(exc))
            errors.append(f"{member.host.name}: {exc}")
        except (OSError, AgeError) as exc:  # this machine's side (its directory, disk, age): no member does better
            raise SnapshotFailed(f"keeping it in {directory}: {exc}") from exc
    raise SnapshotFailed("; ".join(errors) or "no member answered")


async def before_turn(session: Session, desired: DesiredState, host: str, unit: str) -> store.Kept:
    """The snapshot taken before `unit`'s rollout turn on `host` (an etcd restart onto new config: a change, a
    tuning raise), when the specs have an EtcdBackup: kept in its directory's `before-rollout/` (the newest
    BEFORE_TURN_KEEP). A HostError when none could be kept: the turn is not taken without one."""
    assert desired.backup is not None
    directory = Path(desired.backup.directory) / BEFORE_TURN_DIR
    try:
        kept = await take(session, desired, directory)
        await asyncio.to_thread(store.prune, directory, BEFORE_TURN_KEEP, None)
    except (SnapshotFailed, OSError) as exc:
        raise HostError(
            f"{host}: no etcd snapshot could be kept before restarting {unit} ({exc}); turn not taken"
        ) from exc
    log.info("etcd snapshot before a rollout turn", host=host, unit=unit, path=kept.path, revision=kept.revision)
    return kept


async def _members(session: Session, members: list[tuple[DesiredHost, DesiredCheck]]) -> tuple[list[Member], list[str]]:
    """The members to take it from, followers first; and why the others are not (silent, a learner)."""
    api = EtcdOnHosts(session, members)
    chosen: list[Member] = []
    unfit: list[str] = []
    for n, (host, check) in enumerate(api.members):
        said = await api.member_status(n)
        if isinstance(said, str):
            unfit.append(said)
        elif said.learner:
            unfit.append(f"{host.name}: a learner (not yet in sync): never snapshotted")
        else:
            chosen.append(Member(host, check, leader=said.leads, db_size=said.db_size))
    return sorted(chosen, key=lambda m: m.leader), unfit


async def _cluster(session: Session, members: list[tuple[DesiredHost, DesiredCheck]]) -> tuple[str, ...]:
    """The cluster's members as etcd lists them ("name=peer URL", sorted), for the record: which cluster a snapshot
    is of (a restore refuses another's); () when no member says."""
    try:
        listed = await Membership(EtcdOnHosts(session, members)).listed()
    except (EtcdUnavailable, EtcdRefused, ValueError) as exc:
        log.warning("etcd's member list not read: the snapshot's record will not name its cluster", error=str(exc))
        return ()
    return tuple(sorted(f"{e.name}={url}" for e in listed if e.started for url in e.peer_urls))


async def _from(
    session: Session, member: Member, directory: Path, cluster: tuple[str, ...], recipients: tuple[str, ...] = ()
) -> store.Kept:
    check = member.check
    argv = ["bash", "-c", SCRIPT, "reconciler-etcd-snapshot", client_url(check)]
    argv += [check.ca_file or "-", check.cert_file or "-", check.key_file or "-", str(member.db_size)]
    conn = await session.connection(member.host.target)
    fd, partial = store.receiving(directory)
    trailer = Trailer()
    began, taken_at = time.monotonic(), time.time()
    try:
        with os.fdopen(fd, "wb") as out:
            encrypting = Encrypting(out.fileno(), recipients) if recipients else None  # plain bytes never on disk
            write = encrypting.write if encrypting is not None else out.write

            def sink(chunk: bytes) -> None:
                write(chunk)
                trailer.feed(chunk)

            try:
                result = await conn.copy_out(argv, sink, timeout=TIMEOUT, max_bytes=MAX_SNAPSHOT_BYTES)
                if encrypting is not None:
                    await asyncio.to_thread(encrypting.close)
            finally:
                if encrypting is not None:
                    encrypting.kill()
            out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())  # GBs of dirty pages: not on the event loop
        said = _said(result.stderr)
        problem = _problem(result.ok, result.describe(), said, trailer)
        if problem:
            raise SnapshotFailed(problem)
        kept = store.Kept(
            path=str(directory / (store.name(taken_at, int(said["revision"])) + (AGE if recipients else ""))),
            member=member.host.name,
            revision=int(said["revision"]),
            keys=int(said["totalKey"]),
            size=trailer.size,
            sha256=trailer.file_sha256.hexdigest(),
            taken_at=taken_at,
            seconds=round(time.monotonic() - began, 3),
            cluster=cluster,
            encrypted="age" if recipients else "",
            needs=needs(member.host, check),
        )
        return await asyncio.to_thread(store.keep, partial, kept)
    finally:
        partial.unlink(missing_ok=True)  # gone once kept (renamed); removed when not whole


def needs(host: DesiredHost, check: DesiredCheck) -> tuple[str, ...]:
    """Pure: what a cluster restored from a snapshot needs besides it, as the specs say it (named in its record): the CA
    etcd's members and clients trust, and the apiservers' encryption config (without it a restored cluster's Secrets
    cannot be read)."""
    out = [f"{check.ca_file} (the CA etcd's members trust)"] if check.ca_file else []
    texts = {p: f.content.decode("utf-8", errors="replace") for p, f in host.files.items()}
    for unit in host.units:
        svc = service(unit.path, texts)
        if svc.program == "kube-apiserver":
            config = svc.flags().get("encryption-provider-config")
            if config is not None:
                out.append(f"{config.value[:200]} (the apiservers' encryption config)")
    return tuple(dict.fromkeys(out))


def _said(stderr: bytes) -> dict[str, Any]:
    """What etcd_snapshot.sh said on stderr: the snapshot's status ({} if none), its error ("error")."""
    out: dict[str, Any] = {}
    for line in stderr.decode("utf-8", errors="replace").splitlines():
        if line.startswith("@@STATUS "):
            try:
                status = json.loads(line.removeprefix("@@STATUS "))
            except (ValueError, RecursionError):
                continue
            if isinstance(status, dict):  # integers only (a bool is not one), as etcd's own: 0..2**63
                fields = ("revision", "totalKey", "totalSize")
                out.update({k: v for k in fields if type(v := status.get(k)) is int and 0 <= v < 2**63})
        elif line.startswith("@@ERR "):
            out["error"] = printable(line.removeprefix("@@ERR "))[:600]
    return out


def _problem(ok: bool, described: str, said: dict[str, Any], trailer: Trailer) -> str | None:
    """Why what arrived is not a whole snapshot of what the member saved; None when it is."""
    if not ok:
        return str(said.get("error") or described)
    whole = trailer.problem()
    if whole:
        return f"what arrived is not whole: {whole}"
    if "revision" not in said or "totalKey" not in said:
        return "the member did not say the snapshot's revision (etcdctl snapshot status)"
    if "totalSize" in said and said["totalSize"] + HASH_SIZE != trailer.size:
        return f"{trailer.size} bytes arrived; the member's snapshot has {said['totalSize'] + HASH_SIZE}"
    return None
