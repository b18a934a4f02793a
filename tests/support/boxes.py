"""Hand-built masters in memory (Box): the files, units and systemd answers that `reconciler import` reads, behind
the Connection protocol. Used by the import tests."""

from __future__ import annotations

import asyncio
import base64
import posixpath
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from reconciler.adopt import discover as disc
from reconciler.adopt.describe import HostInfo
from reconciler.adopt.discover import (
    MAX_FILE,
    FoundHost,
    discover,
)
from reconciler.errors import TransientHostError
from reconciler.transport.base import MAX_OUTPUT, CommandResult

TOKEN = b'0b3c2a7e5f1d4c6b9a8e7d6c5b4a3f2e,kubelet-bootstrap,10001,"system:kubelet-bootstrap"\n'


KUBE_DIR = "/usr/lib/systemd/system"  # systemd reports it as /lib/systemd/system (Debian's merged /usr)


@dataclass
class Box:
    name: str
    address: str
    files: dict[str, bytes] = field(default_factory=dict)
    stats: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # path -> mode, owner, group
    units: dict[str, str] = field(default_factory=dict)  # unit -> FragmentPath as systemd reports it
    drop_ins: dict[str, list[str]] = field(default_factory=dict)
    states: dict[str, tuple[str, str]] = field(default_factory=dict)  # unit -> ActiveState, UnitFileState
    dirs: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # directory -> mode, owner, group
    links: set[str] = field(default_factory=set)
    real_dirs: dict[str, str] = field(default_factory=lambda: {"/lib/systemd/system": KUBE_DIR})
    canonical_answer: str | None = None  # what a hostile host prints for the canonical-path script
    ids: dict[str, str] = field(default_factory=dict)  # unit asked for -> the Id systemd answers (an alias's)
    read: list[str] = field(default_factory=list)  # every path the read script was asked for
    probed: list[str] = field(default_factory=list)  # every path whose first line the cert script read
    ignore_budget: bool = False  # a hostile shell: sends every file whole, whatever budget it is given

    def real(self, path: str) -> str:
        d = posixpath.dirname(path)
        return f"{self.real_dirs.get(d, d)}/{posixpath.basename(path)}"

    def answer(self, script: str, args: list[str]) -> str:
        if script == disc._LIST_SCRIPT:
            return self._list(args[1], args[2:])
        if script == disc._CANONICAL_SCRIPT:
            if self.canonical_answer is not None:
                return self.canonical_answer
            return "".join(self.real(p) + "\0" for p in args)
        if script == disc._READ_SCRIPT:
            return self._read_all(int(args[0]), args[1:])
        if script == disc._CERT_SCRIPT:
            self.probed += args
            return "".join(p + "\n" for p in args if self._cert(p))
        raise AssertionError(f"import ran a script the Box does not know: {script[:80]!r}")

    def _list(self, cert_dir: str, wanted: list[str]) -> str:
        blocks = []
        for u in wanted:
            if u in self.units:
                active, enabled = self.states.get(u, ("active", "enabled"))
                blocks.append(
                    f"Id={self.ids.get(u, u)}\nLoadState=loaded\nActiveState={active}\nUnitFileState={enabled}\n"
                    f"FragmentPath={self.units[u]}\nDropInPaths={' '.join(self.drop_ins.get(u, []))}\n"
                )
            else:
                blocks.append(
                    f"Id={u}\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\nFragmentPath=\nDropInPaths=\n"
                )
        certs = [p for p in sorted(self.files) if posixpath.dirname(p) == cert_dir and self._cert(p)]
        return "\n".join(blocks) + "@@CERTS\n" + "".join(p + "\n" for p in certs)

    def _cert(self, path: str) -> bool:
        return path not in self.links and self.files.get(path, b"").startswith(b"-----BEGIN CERTIFICATE-----")

    def _read_all(self, left: int, paths: list[str]) -> str:
        """The read script's answer: each file's content while the budget `left` takes it, then "@@BUDGET"."""
        self.read += paths
        out = []
        for p in paths:
            answer, size = self._read(p)
            if size is not None and size <= MAX_FILE and not self.ignore_budget:
                if size > left:
                    return "".join(out) + f"@@BUDGET {p}\n"
                left -= size
            out.append(answer)
        return "".join(out)

    def _read(self, p: str) -> tuple[str, int | None]:
        d = posixpath.dirname(p)
        if self.real_dirs.get(d, d) != d:
            return f"@@F {p} dirlink\n", None
        if p in self.links:
            return f"@@F {p} link\n", None
        if p in self.dirs:
            mode, owner, group = self.dirs[p]
            return f"@@F {p} dir 0 {mode:o} {b64(owner)} {b64(group)}\n", None
        if p not in self.files:
            return f"@@F {p} missing\n", None
        mode, owner, group = self.stats.get(p, (0o644, "root", "root"))
        content = self.files[p]
        sent = content if self.ignore_budget or len(content) <= MAX_FILE else b""  # the script reads no large file
        head = base64.b64encode(sent).decode()
        return f"@@F {p} file {len(content)} {mode:o} {b64(owner)} {b64(group)}\n{head}\n", len(content)


class BoxConnection:
    """The Connection protocol over a Box: runs import's scripts by what they mean."""

    def __init__(self, box: Box):
        self.box = box

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        assert list(argv[:2]) == ["sh", "-c"] and argv[3] == "reconciler-import"
        out = self.box.answer(argv[2], list(argv[4:])).encode("utf-8", "surrogateescape")
        if len(out) > max_output:
            raise TransientHostError("more output than asked for")
        return CommandResult(tuple(argv), 0, out, b"")

    async def lines(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        raise AssertionError("import runs no long-lived command")
        yield b""  # pragma: no cover

    async def close(self) -> None:
        pass


def fleet(n: int = 3) -> list[Box]:
    """Masters built by hand as the seed's guide builds them; they differ only by their own name and address."""
    names = [f"master-{i}" for i in range(1, n + 1)]
    addresses = {h: f"198.18.0.{10 + i}" for i, h in enumerate(names, 1)}
    cluster = ",".join(f"{h}=https://{a}:2380" for h, a in addresses.items())
    etcd_servers = ",".join(f"https://{a}:2379" for a in addresses.values())
    boxes = []
    for h, a in addresses.items():
        apiserver = f"""\
###
## kubernetes system config {{ not a template }}
KUBE_API_ADDRESS="--advertise-address={a} --bind-address={a} --insecure-bind-address={a}"
KUBE_ETCD_SERVERS="--etcd-servers={etcd_servers}"
KUBE_API_ARGS="--authorization-mode=RBAC --token-auth-file=/etc/kubernetes/token.csv \\
--tls-cert-file={SSL}/kubernetes.pem --tls-private-key-file={SSL}/kubernetes-key.pem \\
--client-ca-file={SSL}/ca.pem --service-account-key-file={SSL}/ca-key.pem --etcd-cafile={SSL}/ca.pem \\
--etcd-certfile={SSL}/kubernetes.pem --etcd-keyfile={SSL}/kubernetes-key.pem --event-ttl=1h"
"""
        files = {
            "/etc/kubernetes/config": b'###\n# kubernetes system config\n#   \nKUBE_LOGTOSTDERR="--logtostderr=true"\n'
            b'KUBE_LOG_LEVEL="--v=0"\n' + f'KUBE_MASTER="--master=http://{a}:8080"\n'.encode(),
            "/etc/kubernetes/apiserver": apiserver.encode(),
            "/etc/kubernetes/scheduler": b'###\n# kubernetes scheduler config\n\nKUBE_SCHEDULER_ARGS="--leader-elect=true '
            b'--address=127.0.0.1"\n',
            "/etc/kubernetes/token.csv": TOKEN,
            "/etc/etcd/etcd.conf": etcd_conf(h, a, cluster).encode(),
            "/etc/systemd/system/etcd.service": ETCD_UNIT.encode(),
            f"{KUBE_DIR}/kube-apiserver.service": APISERVER_UNIT.encode(),
            f"{KUBE_DIR}/kube-scheduler.service": SCHEDULER_UNIT.encode(),
            f"{SSL}/ca.pem": CERT_PEM,
            f"{SSL}/kubernetes.pem": CERT_PEM,
            f"{SSL}/ca-key.pem": KEY_PEM,
            f"{SSL}/kubernetes-key.pem": KEY_PEM,
        }
        units = {
            "etcd.service": "/etc/systemd/system/etcd.service",
            "kube-apiserver.service": "/lib/systemd/system/kube-apiserver.service",
            "kube-scheduler.service": "/lib/systemd/system/kube-scheduler.service",
        }
        stats = {"/etc/kubernetes/token.csv": (0o600, "root", "root"), "/etc/etcd/etcd.conf": (0o640, "root", "etcd")}
        dirs = {"/var/lib/etcd": (0o755, "root", "root"), "/var/lib/etcd/default.etcd": (0o700, "etcd", "etcd")}
        boxes.append(Box(h, a, files, stats, units, dirs=dirs))
    return boxes


def found_hosts(boxes: list[Box], units: tuple[str, ...] = ()) -> dict[str, FoundHost]:
    async def all_of() -> list[FoundHost]:
        return list(await asyncio.gather(*(discover(BoxConnection(b), b.name, units) for b in boxes)))

    return {f.name: f for f in asyncio.run(all_of())}


def infos(boxes: list[Box]) -> list[HostInfo]:
    return [HostInfo(b.name, b.address, {"role": "master"}, {"address": b.address}) for b in boxes]


SSL = "/etc/kubernetes/ssl"


CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----\n"


KEY_PEM = b"-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END RSA PRIVATE KEY-----\n"


ETCD_UNIT = """\
[Unit]
Description=Etcd Server
After=network.target

[Service]
Type=notify
WorkingDirectory=/var/lib/etcd/
EnvironmentFile=-/etc/etcd/etcd.conf
ExecStart=/usr/bin/etcd
Restart=on-failure
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


APISERVER_UNIT = """\
[Unit]
Description=Kubernetes API Service
After=etcd.service

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/apiserver
ExecStart=/usr/local/bin/kube-apiserver \\
        $KUBE_LOGTOSTDERR \\
        $KUBE_LOG_LEVEL \\
        $KUBE_ETCD_SERVERS \\
        $KUBE_API_ADDRESS \\
        $KUBE_API_ARGS
Restart=on-failure
Type=notify

[Install]
WantedBy=multi-user.target
"""


SCHEDULER_UNIT = """\
[Unit]
Description=Kubernetes Scheduler Plugin

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/scheduler
ExecStart=/usr/local/bin/kube-scheduler $KUBE_LOGTOSTDERR $KUBE_LOG_LEVEL $KUBE_SCHEDULER_ARGS
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def etcd_conf(name: str, address: str, cluster: str) -> str:
    return f"""\
#[member]
ETCD_NAME="{name}"
ETCD_DATA_DIR="/var/lib/etcd/default.etcd"
#ETCD_SNAPSHOT_COUNT="10000"
ETCD_LISTEN_PEER_URLS="https://{address}:2380"
ETCD_LISTEN_CLIENT_URLS="https://{address}:2379,https://127.0.0.1:2379"
#[cluster]
ETCD_INITIAL_ADVERTISE_PEER_URLS="https://{address}:2380"
ETCD_INITIAL_CLUSTER="{cluster}"
ETCD_INITIAL_CLUSTER_STATE="new"
ETCD_INITIAL_CLUSTER_TOKEN="k8s-etcd-cluster"
ETCD_ADVERTISE_CLIENT_URLS="https://{address}:2379"
#[security]
ETCD_CERT_FILE="{SSL}/kubernetes.pem"
ETCD_KEY_FILE="{SSL}/kubernetes-key.pem"
ETCD_CLIENT_CERT_AUTH="true"
ETCD_TRUSTED_CA_FILE="{SSL}/ca.pem"
ETCD_PEER_CERT_FILE="{SSL}/kubernetes.pem"
ETCD_PEER_KEY_FILE="{SSL}/kubernetes-key.pem"
ETCD_PEER_CLIENT_CERT_AUTH="true"
ETCD_PEER_TRUSTED_CA_FILE="{SSL}/ca.pem"

# slow disks: "failed to send out heartbeat on time"
ETCD_HEARTBEAT_INTERVAL=100
ETCD_ELECTION_TIMEOUT=1000
"""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
