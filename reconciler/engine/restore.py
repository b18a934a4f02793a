"""`reconciler etcd restore SNAPSHOT`: every member of the cluster's etcd rebuilt from one snapshot, a person's act.

Owns the order and what is said at each step: the snapshot checked here first (etcd's trailer); refused while etcd
answers (a healthy cluster is not restored over) unless forced; every kube-apiserver, kube-controller-manager and
kube-scheduler stopped, then every etcd member; each member's data directory rebuilt from the same file with one
new cluster token (etcd_restore.sh: the old directory kept beside it, ownership as before, the revision bumped where
the host has etcdutl); every member started at once and waited for until each passes its health check; then the
apiservers, then the controller-managers and schedulers. Each step is idempotent (a member already rebuilt from
this snapshot is left as it is, the token is the snapshot's): a restore stopped anywhere is run again and goes on.
"""

from __future__ import annotations

import asyncio
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.backup import age, store
from reconciler.backup.snapshot_file import Trailer
from reconciler.components.etcd import member_config
from reconciler.components.systemd import service
from reconciler.engine.break_glass import quorum_state
from reconciler.engine.guard import wait_healthy
from reconciler.errors import HostError
from reconciler.observe.facts import shipped_script
from reconciler.spec.desired import DesiredHost, DesiredState
from reconciler.terminal import printable
from reconciler.transport.session import Session

SCRIPT = shipped_script("etcd_restore.sh", "reconciler.backup")
KUBE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")  # stopped first, started last, in this order
MAX_SNAPSHOT_BYTES = 9 * 1024**3
WAIT_S = 180.0


class RestoreRefused(Exception):
    """Not started: why (nothing was touched)."""


@dataclass(frozen=True)
class Member:
    host: DesiredHost
    unit: str
    name: str
    data_dir: str
    peer_urls: str
    initial_cluster: str
    binary_dir: str
    check: str | None  # its rollout health check


# directories a data dir may never be: the restore renames the data dir aside, as root
SYSTEM_DIRS = frozenset(
    "/ /bin /boot /dev /etc /home /lib /lib64 /media /mnt /opt /proc /root /run /sbin /srv /sys /tmp /usr /var "
    "/usr/lib /usr/local /usr/bin /usr/sbin /var/lib /var/tmp /var/log /var/cache /var/backups /etc/kubernetes".split()
)


def data_dir_problem(path: str) -> str:
    """Why `path` cannot be a data directory the restore renames aside ("" when it can)."""
    if not path.startswith("/") or posixpath.normpath(path) != path.rstrip("/") or "//" in path:
        return f"{path!r} is not an absolute, normalised path"
    if path.rstrip("/") in SYSTEM_DIRS or path.rstrip("/").count("/") < 2:
        return f"{path!r} is a system directory, not one of etcd's own"
    return ""


def members(desired: DesiredState) -> list[Member]:
    """The cluster's etcd members as the specs configure them (name, data dir, peer URLs, initial cluster)."""
    unit = desired.etcd_unit
    if unit is None:
        raise RestoreRefused("no etcd unit in the specs")
    out = []
    for host in desired.hosts_with_unit(unit):
        u = next(x for x in host.units if x.name == unit)
        texts = {p: f.content.decode("utf-8", errors="replace") for p, f in host.files.items()}
        svc = service(u.path, texts)
        config = member_config(svc)
        missing = [k for k in ("name", "data-dir", "initial-advertise-peer-urls", "initial-cluster") if k not in config]
        if missing:
            raise RestoreRefused(f"{host.name}: the specs do not say etcd's {', '.join(missing)} ({unit})")
        binary = svc.argv[0].value if svc.argv else ""
        problem = data_dir_problem(config["data-dir"].value)
        if problem:
            raise RestoreRefused(f"{host.name}: etcd's data-dir {problem}")
        out.append(
            Member(
                host,
                unit,
                config["name"].value,
                config["data-dir"].value.rstrip("/"),
                config["initial-advertise-peer-urls"].value,
                config["initial-cluster"].value,
                binary.rpartition("/")[0] or "/usr/bin",
                u.rollout_check,
            )
        )
    return out


def _kube_units(host: DesiredHost, program: str) -> list[str]:
    texts = {p: f.content.decode("utf-8", errors="replace") for p, f in host.files.items()}
    return [u.name for u in host.units if service(u.path, texts).program == program]


def checked(snapshot: Path, identity: Path | None = None) -> tuple[bytes, str]:
    """The snapshot's bytes and sha256, once it is a regular file of at most MAX_SNAPSHOT_BYTES (decrypted with the
    age identity file `identity` when its name ends .age) that etcd's own trailer says is whole; RestoreRefused
    otherwise."""
    try:
        st = snapshot.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SNAPSHOT_BYTES + 65536:
            raise RestoreRefused(f"{snapshot} is not a regular file of at most {MAX_SNAPSHOT_BYTES} bytes")
        if snapshot.name.endswith(age.SUFFIX):
            if identity is None:
                raise RestoreRefused(f"{snapshot} is encrypted with age: give the identity file (--identity KEYFILE)")
            data = age.decrypted(str(snapshot), str(identity), MAX_SNAPSHOT_BYTES)
        else:
            data = snapshot.read_bytes()
    except OSError as exc:
        raise RestoreRefused(f"{snapshot}: {exc.strerror or exc}") from exc
    except age.AgeError as exc:
        raise RestoreRefused(f"{snapshot}: {exc}") from exc
    trailer = Trailer()
    for i in range(0, len(data), 1 << 20):
        trailer.feed(data[i : i + (1 << 20)])
    problem = trailer.problem()
    if problem:
        raise RestoreRefused(f"{snapshot} is not a whole etcd snapshot: {problem}")
    return data, trailer.file_sha256.hexdigest()


def other_cluster(record: store.Kept | None, cluster: list[Member]) -> str:
    """Pure: why the snapshot is of another cluster than the specs' ("" when it is not, or cannot be told): its record
    names the members it had then, and none of their peer URLs is one the specs give a member now."""
    if record is None or not record.cluster:
        return ""
    theirs = {m.partition("=")[2] for m in record.cluster}
    ours = {u for m in cluster for u in m.peer_urls.split(",") if u}
    if theirs & ours:
        return ""
    return (
        f"the snapshot is of another cluster: its members were {', '.join(sorted(theirs))[:400]}; the specs' are "
        f"{', '.join(sorted(ours))[:400]} (the wrong file, or the wrong spec directory?)"
    )


def notes(snapshot: Path, record: store.Kept | None, problem: str) -> list[str]:
    """What the person restoring should read before it goes on: a snapshot with no record, one of another cluster
    (restored anyway), newer ones kept beside it."""
    if record is None:
        return [
            f"note: {snapshot.name} has no record beside it (taken by hand?): which cluster it is of is not checked"
        ]
    out = [f"note: restoring it anyway: {problem}"] if problem else []
    if record.needs:
        out.append(f"note: a restored cluster needs besides it: {'; '.join(record.needs)}")
    newer = [k for k in store.listed(snapshot.parent) if k.taken_at > record.taken_at]
    if newer:
        age = (newer[0].taken_at - record.taken_at) / 60
        out.append(
            f"note: {len(newer)} newer snapshot(s) kept beside it, the newest {Path(newer[0].path).name} (revision "
            f"{newer[0].revision}, {age:.0f} min later): what was written in between is lost"
        )
    return out


async def restore(
    session: Session,
    desired: DesiredState,
    snapshot: Path,
    *,
    force: bool,
    say: Callable[[str], None],
    any_cluster: bool = False,
    identity: Path | None = None,
    plan_only: bool = False,
) -> None:
    """Every step, said as it begins; RestoreRefused before anything is touched, HostError on a step that failed
    (run it again: the steps done are not done twice). `plan_only`: every check made (the snapshot, its cluster,
    etcd silent, each member's data dir), then each step said as one it would take; nothing changed."""
    data, sha = checked(snapshot, identity)
    cluster = members(desired)
    token = f"restored-{sha[:16]}"
    say(f"snapshot {snapshot}: whole ({len(data)} bytes, sha256 {sha[:16]}); new cluster token {token}")
    record = store.beside(snapshot)
    problem = other_cluster(record, cluster)
    if problem and not any_cluster:
        raise RestoreRefused(f"{problem}; --any-cluster to restore it here anyway")
    for note in notes(snapshot, record, problem):
        say(note)
    kind, detail = await quorum_state(session, desired)
    if kind != "silent" and not force:
        why = f"etcd answers through {detail}" if kind == "answered" else f"etcd may be up ({detail})"
        raise RestoreRefused(f"{why}: a cluster that may hold newer data is not restored over; --force to do it anyway")
    tools = await asyncio.gather(*(_ready(session, m) for m in cluster))  # nothing stopped where it cannot be done
    for m, tool in zip(cluster, tools, strict=True):
        say(f"{m.host.name}: {m.data_dir} can be rebuilt ({tool})")
    hosts = sorted({m.host.name for m in cluster} | set(desired.hosts))
    if plan_only:
        members_at = ", ".join(m.host.name for m in cluster)
        for step in (
            *(f"would stop {program} on {', '.join(hosts)}" for program in reversed(KUBE)),
            f"would stop etcd on {members_at}",
            *(
                f"would rebuild {m.host.name}:{m.data_dir} (member {m.name}) from the snapshot, token {token}, the old "
                "directory kept beside it"
                for m in cluster
            ),  # fmt: skip
            f"would start etcd on {members_at} and wait for each to be healthy",
            *(f"would start {program} on {', '.join(hosts)}" for program in KUBE),
        ):
            say(step)
        return
    for program in reversed(KUBE):
        say(f"stopping {program} on {', '.join(hosts)}")
        await _everywhere(session, desired, hosts, "stop", program)
    say(f"stopping etcd on {', '.join(m.host.name for m in cluster)}")
    await asyncio.gather(*(systemctl(session, m.host, "stop", [m.unit]) for m in cluster))
    for m in cluster:
        say(f"{m.host.name}: rebuilding {m.data_dir} (member {m.name}) from the snapshot")

    async def rebuilt(m: Member) -> None:
        say(f"{m.host.name}: {await _rebuild(session, m, data, sha, token)}")

    # every member at once (the copy is what takes the time: 1 GB over SSH); each said as it is done, a failure
    # said once every other member's rebuild has ended (none is left half-way by another's failure)
    failures = [e for e in await asyncio.gather(*map(rebuilt, cluster), return_exceptions=True) if e is not None]
    if failures:
        raise failures[0]
    say(f"starting etcd on {', '.join(m.host.name for m in cluster)} and waiting for each to be healthy")
    await asyncio.gather(*(systemctl(session, m.host, "start", [m.unit], no_block=True) for m in cluster))
    for m in cluster:
        if m.check:
            result = await wait_healthy(session, m.host, m.check, WAIT_S)
            if not result.ok:
                raise HostError(f"{m.host.name}: etcd not healthy after the restore: {result.detail}")
    for program in KUBE:
        say(f"starting {program} on {', '.join(hosts)}")
        await _everywhere(session, desired, hosts, "start", program)
    await asyncio.gather(*(_script(session, m, ["done", m.data_dir]) for m in cluster))  # may be restored again
    say("restored: run `reconciler check` to see every component healthy")


async def _everywhere(session: Session, desired: DesiredState, hosts: list[str], verb: str, program: str) -> None:
    """`systemctl verb` the units running `program` on every host, at once."""
    await asyncio.gather(
        *(systemctl(session, desired.hosts[h], verb, _kube_units(desired.hosts[h], program)) for h in hosts)
    )


async def systemctl(session: Session, host: DesiredHost, verb: str, units: list[str], no_block: bool = False) -> None:
    """`systemctl VERB -- UNITS` on the host (queued with no_block); a HostError saying its answer when it fails.
    Used by the restore and by `engine.replace`."""
    if not units:
        return
    conn = await session.connection(host.target)
    argv = ["systemctl", verb, *(["--no-block"] if no_block else []), "--", *units]
    result = await conn.run(argv, timeout=WAIT_S)
    if not result.ok:
        raise HostError(f"{host.name}: systemctl {verb} {' '.join(units)}: {result.describe()}")


async def _script(session: Session, m: Member, args: list[str], data: bytes = b"") -> str:
    """etcd_restore.sh on the member's host; its stdout, or a HostError saying its @@ERR."""
    conn = await session.connection(m.host.target)
    argv = ["bash", "-c", SCRIPT, "reconciler-etcd-restore", *args]
    result = await conn.run(argv, input=data, timeout=WAIT_S + len(data) / 1e6)
    text = result.stdout.decode("utf-8", errors="replace")
    said = text + result.stderr.decode("utf-8", errors="replace")
    err = next((ln for ln in said.splitlines() if ln.startswith("@@ERR ")), "")
    if not result.ok or err:
        raise HostError(f"{m.host.name}: {printable(err.removeprefix('@@ERR '))[:600] or result.describe()}")
    return text


async def _ready(session: Session, m: Member) -> str:
    """Which tool will rebuild the member; RestoreRefused when its data directory cannot be rebuilt (a link, a
    mount point): asked before anything is stopped."""
    try:
        text = await _script(session, m, ["check", m.data_dir, m.binary_dir])
    except HostError as exc:
        raise RestoreRefused(str(exc)) from exc
    return "etcdutl: the revision bumped" if "@@OK etcdutl" in text else "etcdctl only: the revision not bumped"


async def _rebuild(session: Session, m: Member, data: bytes, sha: str, token: str) -> str:
    args = ["rebuild", sha, m.name, m.data_dir, m.initial_cluster, m.peer_urls, token, m.binary_dir]
    text = await _script(session, m, args, data)
    if "@@ALREADY" in text:
        return "already rebuilt from this snapshot: left as it is"
    note = " (its host has no etcdutl: the revision is not bumped, watchers are not told to re-list)"
    return "rebuilt, the old data directory kept beside it" + (note if "@@NOBUMP" in text else "")
