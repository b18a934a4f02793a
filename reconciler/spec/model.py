"""The spec documents as operators write them: one pydantic model per `kind`.

Owns the shape and the per-field rules of every kind: `Host`, `HostGroup`, `File`, `Directory`, `Unit`,
`HealthCheck`, `Certificate`, `VirtualIP`, `EtcdTuning`, `EtcdBackup` (docs/specs.md is their reference).
`spec.load` validates raw YAML against these models; nothing here knows about files, lines or hosts.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic.alias_generators import to_camel

from reconciler.spec.limits import NAME_MAX, PATH_MAX

API_VERSION = "reconciler/v1"

NAME_RE = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # fullmatch: "FOO\n" is not a name
# Path characters we accept on a host: no whitespace, quotes, globs or control characters.
PATH_RE = re.compile(r"/[A-Za-z0-9._@+=,:/-]*")  # fullmatch


def _normalised_absolute(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"path {path[:100]!r} must be absolute")
    if len(path.encode()) >= PATH_MAX:
        raise ValueError(f"path is {len(path.encode())} bytes long; Linux allows {PATH_MAX - 1} (PATH_MAX)")
    if not PATH_RE.fullmatch(path):
        raise ValueError(f"path {path[:100]!r} has characters outside [A-Za-z0-9._@+=,:/-]")
    expected = "/" + posixpath.normpath(path).lstrip("/")  # POSIX keeps a leading "//" as is; we do not
    if path == "/" or path != expected:
        raise ValueError(f"path {path[:100]!r} is not normalised (expected {expected[:100]!r})")
    long = next((part for part in path.split("/") if len(part.encode()) > NAME_MAX), None)
    if long is not None:
        raise ValueError(
            f"path component {long[:40]!r}... is {len(long.encode())} bytes long; Linux allows {NAME_MAX} (NAME_MAX)"
        )
    return path


def _octal_mode(mode: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3,4}", mode):
        raise ValueError(f"mode {mode[:20]!r} must be an octal string such as '0644'")
    return mode


AbsPath = Annotated[str, AfterValidator(_normalised_absolute)]


def is_spec_path(path: str) -> bool:
    """Whether a spec could name this path (what AbsPath accepts)."""
    try:
        _normalised_absolute(path)
    except ValueError:
        return False
    return True


Mode = Annotated[str, AfterValidator(_octal_mode)]
Name = Annotated[str, Field(pattern=NAME_RE, max_length=253)]
Account = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_.-]*\$?$", max_length=32)]


class Strict(BaseModel):
    """Base: unknown fields are errors, fields are camelCase in YAML."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class Metadata(Strict):
    name: Name
    labels: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]+$")], str] = {}


class MatchLabels(Strict):
    match_labels: dict[str, str] = Field(min_length=1)


def _selector_form(value: Any) -> str | None:
    if value == "all":
        return "all"
    if isinstance(value, dict | MatchLabels):
        return "labels"
    if isinstance(value, list):
        return "names"
    return None


# which hosts a document is for: every one, those whose labels match, or the hosts named
HostSelector = Annotated[
    Annotated[Literal["all"], Tag("all")]
    | Annotated[MatchLabels, Tag("labels")]
    | Annotated[list[Name], Field(min_length=1), Tag("names")],
    Discriminator(
        _selector_form,
        custom_error_type="host_selector",
        custom_error_message='hosts: "all", {matchLabels: {KEY: VALUE}} or a list of host names ([master-1, master-2])',
    ),
]


class HostSpec(Strict):
    address: Annotated[str, Field(pattern=r"^[A-Za-z0-9.:-]+$", max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: Account = "root"
    identity_file: Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=4095)] | None = None
    known_hosts: Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=4095)] | None = None
    unsafe_skip_host_key_verification: bool = Field(
        default=False,
        description="UNSAFE: accept any host key (man-in-the-middle possible). Never use outside a lab.",
    )
    become: Literal["sudo"] | None = Field(
        default=None,
        description="sudo: SSH as `user` and run every command as root through `sudo -n` (passwordless sudo)",
    )
    # OpenSSH client config for this host (Host aliases, HostName, Port, User, IdentityFile, ProxyJump, ...):
    # unset, ~/.ssh/config when there is one; "none", no config
    ssh_config: Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=4095)] | None = None
    vars: dict[str, Any] = {}


class HostGroupSpec(Strict):
    """What the hosts it selects share, said once instead of on every Host: how to reach them and vars. A Host's
    own value wins; two groups giving one host different values for a field (or a var) is an error."""

    hosts: HostSelector = "all"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: Account | None = None
    identity_file: Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=4095)] | None = None
    known_hosts: Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=4095)] | None = None
    become: Literal["sudo"] | None = None
    ssh_config: Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=4095)] | None = None
    vars: dict[str, Any] = {}


class FileSpec(Strict):
    path: AbsPath
    hosts: HostSelector = "all"
    content: str | None = None
    env: dict[str, str | int | float | bool] | None = None
    mode: Mode | None = None  # default 0644, 0600 when sensitive
    owner: Account = "root"
    group: Account = "root"
    sensitive: bool = False
    special_bits: bool = False  # the mode may set setuid, setgid or sticky
    # a sensitive file may keep a mode others can read: as a hand-built host has it (`reconciler import` writes it
    # so, and says how to tighten it: `mode: "0600"`, one attrs change, no restart)
    wide_mode: bool = False

    @property
    def effective_mode(self) -> str:
        return self.mode or ("0600" if self.sensitive else "0644")

    @model_validator(mode="after")
    def _one_source(self) -> FileSpec:
        mode = int(self.effective_mode, 8)
        if mode & 0o7000 and not self.special_bits:
            raise ValueError(f"mode {self.mode} sets setuid, setgid or sticky bits; say so with 'specialBits: true'")
        if self.sensitive and mode & 0o077 and not self.wide_mode:
            raise ValueError(
                f"a sensitive file must be readable by its owner only (mode 0600 or 0400), not {self.mode} "
                "(to keep a wider mode a host already has, say so with 'wideMode: true')"
            )
        if (self.content is None) == (self.env is None):
            raise ValueError("exactly one of 'content' or 'env' must be given")
        for key in self.env or {}:
            if not ENV_KEY_RE.fullmatch(key):
                raise ValueError(f"env key {key[:100]!r} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)")
        return self


class DirectorySpec(Strict):
    """A directory a host must have, with its mode and owner (created with its parents; never removed)."""

    path: AbsPath
    hosts: HostSelector = "all"
    mode: Mode = "0755"
    owner: Account = "root"
    group: Account = "root"
    special_bits: bool = False

    @model_validator(mode="after")
    def _bits(self) -> DirectorySpec:
        if int(self.mode, 8) & 0o7000 and not self.special_bits:
            raise ValueError(f"mode {self.mode} sets setuid, setgid or sticky bits; say so with 'specialBits: true'")
        return self


class VirtualIPSpec(Strict):
    """An address that exactly one of the selected hosts should hold (keepalived's VIP): observed on each of
    them, reported (/status, `reconciler_vip_held`), never assigned by reconciler."""

    hosts: HostSelector = "all"
    address: Annotated[str, Field(min_length=1, max_length=253)]  # a template, rendered per host: an IP address


class Rollout(Strict):
    strategy: Literal["OneAtATime"] = "OneAtATime"
    health_check: Name
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 120.0


BACKEND_RE = r"^[A-Za-z0-9_.:-]{1,100}$"  # a HAProxy backend's name as its runtime API takes it: no space, no ';'


class Balancer(Strict):
    """The unit is a load balancer (HAProxy) in front of other hosts: before one of `drainFor` restarts on a host,
    that host's server (the server named as the host) is drained in `backends` through HAProxy's master socket,
    and put back once the host passes `readyCheck`."""

    socket: AbsPath = "/run/haproxy-master.sock"  # HAProxy's master CLI (haproxy -S), root's
    backends: Annotated[list[Annotated[str, Field(pattern=BACKEND_RE)]], Field(min_length=1, max_length=16)]
    drain_for: Annotated[list[Name], Field(min_length=1, max_length=16)]  # the Units whose restart drains their host
    ready_check: Name | None = None  # a HealthCheck on the drained host, passing before its server is put back
    drain_seconds: Annotated[float, Field(ge=0, le=600)] = 10.0  # at most, for its open connections to end


class UnitSpec(Strict):
    hosts: HostSelector = "all"
    path: AbsPath | None = None
    content: str
    enabled: bool = True
    state: Literal["running", "stopped"] = "running"
    restart_on: list[Name] = []
    reload_on: list[Name] = []  # files whose change `systemctl reload`s the unit instead of restarting it
    rollout: Rollout | None = None
    rollback: bool = True  # a restart onto new config that fails puts the previous config back
    balancer: Balancer | None = None  # a load balancer's: servers drained while their hosts' units restart


class HttpProbe(Strict):
    url: Annotated[str, Field(pattern=r"^https?://[^\n]+$")]
    ca_file: AbsPath | None = None
    cert_file: AbsPath | None = None
    key_file: AbsPath | None = None
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200

    @model_validator(mode="after")
    def _client_pair(self) -> HttpProbe:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("certFile and keyFile go together")
        return self


class TcpProbe(Strict):
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)]


class HealthCheckSpec(Strict):
    hosts: HostSelector = "all"
    http: HttpProbe | None = None
    tcp: TcpProbe | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0

    @model_validator(mode="after")
    def _one_probe(self) -> HealthCheckSpec:
        if (self.http is None) == (self.tcp is None):
            raise ValueError("exactly one of 'http' or 'tcp' must be given")
        return self


class RenewSpec(Strict):
    """A certificate reconciler renews: its key made on the master, signed here by the operator's CA."""

    key_file: AbsPath  # on the master, beside the certificate: replaced with it, as one pair
    ca_file: AbsPath  # the CA's certificate, on reconciler's machine
    # the CA's key, on reconciler's machine (mode 0600, never sent anywhere); or, instead, `signCommand`
    ca_key_file: AbsPath | None = None
    # an external signer on reconciler's machine (argv, no shell; the program's absolute path first): the CSR on
    # stdin, what to issue in RECONCILER_* variables, the certificate (PEM) on stdout; checked before it is installed
    sign_command: Annotated[list[Annotated[str, Field(min_length=1, max_length=4096)]], Field(min_length=1, max_length=64)] | None = None  # fmt: skip
    lifetime_days: Annotated[float, Field(ge=1, le=3650)] = 365.0
    renew_at: Annotated[float, Field(ge=0.05, le=0.9)] = 2 / 3  # of the lifetime: cert-manager's and step's default
    key_type: Literal["rsa-2048", "ecdsa-p256"] = "rsa-2048"
    restart: list[Name] = []  # the Units that read the pair, restarted in this order (health-gated, one host at a time)
    # the certificate's subject as RFC 4514 (e.g. "CN=admin,O=system:masters"): only a certificate of this subject is
    # renewed; required for one that names no host (a client's: nothing else ties its identity to this path)
    subject: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    # kubeconfigs on the master that embed the pair (client-certificate-data / client-key-data): rewritten with it
    kubeconfigs: Annotated[list[AbsPath], Field(max_length=16)] = []

    @field_validator("sign_command")
    @classmethod
    def _program_by_path(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            _normalised_absolute(value[0])  # no PATH look-up: the daemon's PATH is not the operator's shell's
            if any("\0" in a for a in value):
                raise ValueError("an argument holds a NUL byte")
        return value

    @model_validator(mode="after")
    def _one_signer(self) -> RenewSpec:
        if (self.ca_key_file is None) == (self.sign_command is None):
            raise ValueError("give the CA's key (caKeyFile) or an external signer (signCommand), one of the two")
        return self

    @field_validator("subject")
    @classmethod
    def _subject_is_a_name(cls, value: str | None) -> str | None:
        if value is not None:
            from cryptography import x509  # only for a spec that pins a subject

            try:
                x509.Name.from_rfc4514_string(value)
            except ValueError as exc:
                raise ValueError(
                    f"not an RFC 4514 name (e.g. CN=admin,O=system:masters){': ' if str(exc) else ''}{exc}"
                ) from None
        return value


class CertificateSpec(Strict):
    """Certificates a host must have: reported (missing, days to expiry); with `renew`, renewed from the CA."""

    hosts: HostSelector = "all"
    paths: list[AbsPath] = Field(min_length=1, max_length=256)  # bounded: each is looked at on every pass
    warn_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    renew: RenewSpec | None = None

    @model_validator(mode="after")
    def _one_path_renewed(self) -> CertificateSpec:
        if self.renew is not None and len(self.paths) != 1:
            raise ValueError("a renewed Certificate names one path (its key is 'renew.keyFile')")
        if self.renew is not None:
            cert, key = self.paths[0], self.renew.key_file
            if key == cert or posixpath.dirname(key) != posixpath.dirname(cert):
                raise ValueError(
                    f"renew.keyFile must be the certificate's own key file beside it in {posixpath.dirname(cert)}"
                )
        return self


class EtcdTuningSpec(Strict):
    """Automatic raise of etcd's heartbeat/election timeouts on overload (one such document at most)."""

    unit: Name = "etcd"  # the Unit whose hosts are the members (its rollout policy restarts them)
    file: Name = "etcd-conf"  # the env File holding ETCD_HEARTBEAT_INTERVAL / ETCD_ELECTION_TIMEOUT
    enabled: bool = True
    warnings: Annotated[int, Field(ge=1, le=1000)] = 3
    window_seconds: Annotated[float, Field(gt=0, le=86400)] = 60.0
    margin: Annotated[float, Field(ge=1.0, le=10.0)] = 1.5
    round_to_ms: Annotated[int, Field(ge=1, le=1000)] = 50
    election_multiplier: Annotated[float, Field(ge=5, le=50)] = 10.0
    max_heartbeat_ms: Annotated[int, Field(ge=10, le=10000)] = 1000
    max_election_ms: Annotated[int, Field(ge=50, le=50000)] = 50000
    cooldown_seconds: Annotated[float, Field(ge=0, le=604800)] = 600.0
    restart_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0


AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")  # an age X25519 public key (bech32, its own charset)


def _age_recipient(value: str) -> str:
    if not AGE_RECIPIENT.fullmatch(value):
        raise ValueError("not an age public key (age1 and 58 characters: `age-keygen -y KEYFILE` prints it)")
    return value


class SnapshotEncryption(Strict):
    """How snapshots are kept at rest: encrypted to age public keys (the private keys stay with the operator), or
    said to be unencrypted. One of the two, said: a snapshot holds every Secret of the cluster."""

    age_recipients: Annotated[list[Annotated[str, AfterValidator(_age_recipient)]], Field(max_length=16)] = []
    unencrypted: bool = False

    @model_validator(mode="after")
    def _one(self) -> SnapshotEncryption:
        if bool(self.age_recipients) == self.unencrypted:
            raise ValueError("say exactly one: 'ageRecipients' (a list of age public keys) or 'unencrypted: true'")
        return self


class EtcdBackupSpec(Strict):
    """Snapshots of the cluster's etcd the daemon takes on a schedule and keeps on its own machine (one at most)."""

    encryption: SnapshotEncryption  # required: snapshots hold the cluster's Secrets

    interval_seconds: Annotated[float, Field(ge=60, le=604800)] = 3600.0
    keep: Annotated[int, Field(ge=1, le=10000)] = 24  # the newest this many
    max_age_hours: Annotated[float, Field(gt=0, le=87600)] | None = None  # and none older (but the newest)
    directory: AbsPath = "/var/lib/reconciler/etcd-snapshots"  # on the machine the daemon runs on


SPEC_MODELS: dict[str, type[Strict]] = {
    "Host": HostSpec,
    "HostGroup": HostGroupSpec,
    "File": FileSpec,
    "Directory": DirectorySpec,
    "Unit": UnitSpec,
    "HealthCheck": HealthCheckSpec,
    "EtcdTuning": EtcdTuningSpec,
    "EtcdBackup": EtcdBackupSpec,
    "Certificate": CertificateSpec,
    "VirtualIP": VirtualIPSpec,
}


class Document(BaseModel):
    """One validated document, with where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: str
    metadata: Metadata
    spec: Any
    file: str
    line: int
    lines: dict[tuple[str | int, ...], int] = {}

    def line_of(self, *loc: str | int) -> int:
        """Line of the deepest known field on `loc` (falls back to the document start)."""
        for cut in range(len(loc), 0, -1):
            if loc[:cut] in self.lines:
                return self.lines[loc[:cut]]
        return self.line

    def where(self, *loc: str | int) -> str:
        return f"{self.file}:{self.line_of(*loc)}"


_UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".mount", ".target")


def unit_name(spec_name: str) -> str:
    return spec_name if spec_name.endswith(_UNIT_SUFFIXES) else f"{spec_name}.service"


def selects(selector: HostSelector, host: Document) -> bool:
    """Whether the document whose `hosts` is `selector` is for `host` (a Host document)."""
    if isinstance(selector, str):  # "all" (comparing a pydantic model to a string costs its __eq__)
        return True
    if isinstance(selector, list):
        return host.metadata.name in selector
    labels = host.metadata.labels
    return all(labels.get(k) == v for k, v in selector.match_labels.items())
