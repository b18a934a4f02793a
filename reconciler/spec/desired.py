"""DesiredState: the spec directory rendered for each host; the input of planning.

Built by `spec.render` from validated documents; read by observe, plan, apply and the engine.
Plain frozen dataclasses: no YAML, no templates, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from reconciler.components.etcd import MAX_ELECTION_MS
from reconciler.components.systemd import is_drop_in, program
from reconciler.spec.origins import Origin


@dataclass(frozen=True)
class TuningPolicy:
    """The EtcdTuning document's policy, as `tuning.policy.decide` reads it."""

    warnings: int = 3
    window_seconds: float = 60.0
    margin: float = 1.5
    round_to_ms: int = 50
    election_multiplier: float = 10.0
    max_heartbeat_ms: int = 1000
    max_election_ms: int = MAX_ELECTION_MS
    cooldown_seconds: float = 600.0
    restart_grace_seconds: float = 30.0


@dataclass(frozen=True)
class Target:
    """How to reach a host over SSH."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None
    known_hosts: str | None = None
    unsafe_skip_host_key_verification: bool = False
    become: str | None = None  # "sudo": every command runs through `sudo -n --` (SSH as a non-root user)
    ssh_config: str | None = None  # OpenSSH client config file; None: ~/.ssh/config if there is one; "none": none
    # fields holding reconciler's defaults, not values the spec gave ("port", "user", "known_hosts"): an ssh config
    # may set these (what the spec says explicitly wins over the config, as ssh's command line does)
    implicit: tuple[str, ...] = ()


@dataclass(frozen=True)
class DesiredFile:
    path: str
    content: bytes
    mode: int
    owner: str
    group: str
    sensitive: bool
    source: str  # "File/etcd-conf" or "Unit/etcd"


@dataclass(frozen=True)
class DesiredDirectory:
    path: str
    mode: int
    owner: str
    group: str
    source: str  # "Directory/etcd-data"


RELOAD_STAMPS = "/run/reconciler/reloaded"  # tmpfs: gone at boot, when every unit starts on its files anyway


@dataclass(frozen=True)
class DesiredUnit:
    name: str  # systemd unit name, e.g. "etcd.service"
    spec_name: str  # metadata.name, e.g. "etcd"
    path: str
    enabled: bool
    running: bool
    restart_on: tuple[str, ...]  # paths of files whose change restarts the unit (its own unit file included)
    rollout_check: str | None = None  # HealthCheck name gating one-at-a-time restarts
    rollout_timeout: float = 120.0
    rollback: bool = True  # restore the previous config when a restart onto new config fails
    reload_on: tuple[str, ...] = ()  # paths of files whose change reloads the unit (systemctl reload) instead
    balancer: DesiredBalancer | None = None  # a load balancer's: which servers it drains, and when

    @property
    def reload_stamp(self) -> str:
        """Left on the host by each reload this unit gets from us: a file changed later is due for another."""
        return f"{RELOAD_STAMPS}/{self.name}"

    @property
    def unit_files(self) -> tuple[str, ...]:
        """The unit file and the drop-ins among its files: what systemd must reload when they change."""
        return (self.path, *(p for p in self.restart_on if is_drop_in(p, self.name)))


@dataclass(frozen=True)
class DesiredBalancer:
    """A load balancer unit's servers, drained while their hosts' units restart (UnitSpec.balancer)."""

    socket: str
    backends: tuple[str, ...]
    drain_for: tuple[str, ...]  # unit names ("etcd.service")
    ready_check: str | None
    drain_seconds: float


@dataclass(frozen=True)
class DesiredCheck:
    name: str
    timeout: float
    url: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    expect_status: int = 200
    tcp_host: str | None = None
    tcp_port: int | None = None

    def describe(self) -> str:
        return self.url if self.url else f"tcp://{self.tcp_host}:{self.tcp_port}"


@dataclass(frozen=True)
class DesiredRenewal:
    """How a certificate is renewed (Certificate.spec.renew)."""

    key_file: str
    ca_file: str  # on reconciler's machine
    ca_key_file: str  # "" with a sign_command
    lifetime_days: float
    renew_at: float  # fraction of the lifetime
    key_type: str
    restart: tuple[str, ...]  # unit names, in order
    subject: str | None = None  # RFC 4514: the only subject renewed at this path
    kubeconfigs: tuple[str, ...] = ()  # on the master, embedding the pair: rewritten with it
    sign_command: tuple[str, ...] = ()  # an external signer on reconciler's machine (argv) instead of ca_key_file


@dataclass(frozen=True)
class DesiredCert:
    path: str
    warn_days: float
    source: str  # "Certificate/kubernetes-ssl"
    renew: DesiredRenewal | None = None


@dataclass(frozen=True)
class DesiredHost:
    target: Target
    files: dict[str, DesiredFile] = field(default_factory=dict)  # by path; unit files included
    units: tuple[DesiredUnit, ...] = ()
    checks: tuple[DesiredCheck, ...] = ()
    certificates: tuple[DesiredCert, ...] = ()  # reported (presence, days to expiry), never written
    directories: dict[str, DesiredDirectory] = field(default_factory=dict)  # by path
    addresses: dict[str, str] = field(default_factory=dict)  # VirtualIP name -> the address; observed, never set
    # where each File and Unit document is written ("File/etcd-conf" -> Origin), one dict shared by every host
    origins: dict[str, Origin] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.target.name

    def check(self, name: str) -> DesiredCheck | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass(frozen=True)
class DesiredTuning:
    """The EtcdTuning document, resolved: which unit and file, the policy, and the spec's own values."""

    unit: str  # systemd unit name, e.g. "etcd.service"
    file: str  # the File document's name, e.g. "etcd-conf"
    path: str  # the env file, e.g. /etc/etcd/etcd.conf
    policy: TuningPolicy
    spec_values: dict[str, int]  # ETCD_HEARTBEAT_INTERVAL / ETCD_ELECTION_TIMEOUT as the specs give them
    overlay: dict[str, int] = field(default_factory=dict)  # what the tuner's overlay asked for
    effective: dict[str, int] = field(default_factory=dict)  # what the hosts are given (the higher of the two)
    source: str = ""


@dataclass(frozen=True)
class DesiredBackup:
    """The EtcdBackup document: when the daemon snapshots etcd, where it keeps the snapshots, for how long."""

    interval_seconds: float
    keep: int
    max_age_seconds: float | None
    directory: str
    source: str  # file:line of the document
    recipients: tuple[str, ...] = ()  # age public keys the snapshots are encrypted to (none: said unencrypted)


@dataclass(frozen=True)
class DesiredState:
    hosts: dict[str, DesiredHost]
    tuning: DesiredTuning | None = None
    backup: DesiredBackup | None = None
    warnings: tuple[str, ...] = ()  # what is valid but most likely not meant (a selector that selects no host)

    def hosts_with_unit(self, unit: str) -> list[DesiredHost]:
        return [h for _, h in sorted(self.hosts.items()) if any(u.name == unit for u in h.units)]

    @cached_property
    def etcd_units(self) -> frozenset[str]:
        """Every unit that runs etcd: the EtcdTuning's, each whose program (ExecStart's binary, drop-ins included)
        is etcd (a second cluster, e.g. for events, included), and etcd.service when a host has it. Their members
        hold a quorum: the rollout guard is never relaxed for them but by `apply --break-glass`."""
        found = {self.tuning.unit} if self.tuning is not None else set()
        for _, host in sorted(self.hosts.items()):
            for unit in host.units:
                if unit.name in found:
                    continue
                texts = {
                    p: f.content.decode(errors="replace")
                    for p, f in host.files.items()
                    if p == unit.path or f"/{unit.name}.d/" in p  # its drop-ins, wherever systemd reads them
                }
                if program(unit.path, texts) == "etcd":
                    found.add(unit.name)
        if self.hosts_with_unit("etcd.service"):
            found.add("etcd.service")
        return frozenset(found)

    @cached_property
    def etcd_unit(self) -> str | None:
        """The cluster's etcd (the one leader election, the restart lock and `--break-glass` use): the EtcdTuning's
        unit, else etcd.service, else the first unit that runs etcd; None when no host runs etcd."""
        if self.tuning is not None:
            return self.tuning.unit
        if "etcd.service" in self.etcd_units:
            return "etcd.service"
        return min(self.etcd_units, default=None)
