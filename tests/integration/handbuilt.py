"""Masters built by hand, as the seed's field guide builds them, out of a converged testbed.

`build_by_hand(bed)` rewrites every host with plain shell over ssh (heredocs, `systemctl daemon-reload`,
`enable`, restarts), never through reconciler's code. What it leaves is what an operator following the guide
leaves:

- the four env files under /etc/kubernetes with the guide's own comments and commented-out lines, values in
  double quotes, /etc/kubernetes/token.csv (mode 0644, TOKEN_MODE: the guide writes it with `cat >` under umask
  022 and never tightens it), and /etc/etcd/etcd.conf in the etcd package's style
  (`#[member]`, `#[cluster]`, `#[security]` sections, commented-out defaults, the heartbeat lines appended
  at the end as the guide adds them);
- the three kube units at /usr/lib/systemd/system/kube-*.service, the guide's location (KUBE_UNIT_DIR).
  On the Debian 12 image that is a real directory: the merged-/usr link is /lib -> usr/lib, so
  /lib/systemd/system is the same directory seen through the link, and nothing shadows /usr/lib there
  once reconciler's /etc/systemd/system/kube-*.service (and their enablement links) are removed. The
  script checks it is still a real directory and stops otherwise (no silent fallback to /etc);
- etcd's unit at /etc/systemd/system/etcd.service (ETCD_UNIT_PATH): Debian's etcd-server package owns
  /usr/lib/systemd/system/etcd.service, which ours must override, not overwrite.

The values are the bundled specs' (specs/etcd.yaml, specs/kubernetes.yaml), so the cluster keeps running
as it did: same addresses, ports, certificates, data dir (/var/lib/etcd/default.etcd, so etcd keeps its
data) and heartbeat/election timeouts. Besides each host's own name and address, the hosts differ the way
hand-built hosts drift apart: HAND_BUILT_DIFFERENCES.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed import Testbed, TestHost

KUBE_UNIT_DIR = "/usr/lib/systemd/system"
ETCD_UNIT_PATH = "/etc/systemd/system/etcd.service"
KUBE_UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
UNITS = ("etcd", *KUBE_UNITS)
SSL_DIR = "/etc/kubernetes/ssl"
TOKEN_CSV = '0b3c2a7e5f1d4c6b9a8e7d6c5b4a3f2e,kubelet-bootstrap,10001,"system:kubelet-bootstrap"\n'
TOKEN_MODE = "0644"  # as the guide leaves token.csv (a new file under umask 022; the guide has no chmod)
WAIT_SECONDS = 60


@dataclass(frozen=True)
class HandDifference:
    """One host's own drift: `text` occurs in `path` on `host` and in that file on no other host."""

    host: str
    path: str
    what: str
    text: str


HAND_BUILT_DIFFERENCES: dict[str, HandDifference] = {
    d.host: d
    for d in (
        HandDifference(
            "master-1",
            "/etc/kubernetes/controller-manager",
            "a trailing blank line after KUBE_CONTROLLER_MANAGER_ARGS",
            '--leader-elect=true"\n\n',
        ),
        HandDifference(
            "master-2",
            "/etc/kubernetes/scheduler",
            "an extra comment line above KUBE_SCHEDULER_ARGS",
            "# tuned by hand 2017-10-03\n",
        ),
        HandDifference(
            "master-3",
            "/etc/kubernetes/config",
            'KUBE_LOG_LEVEL="--v=2" where the others say --v=0',
            'KUBE_LOG_LEVEL="--v=2"\n',
        ),
    )
}


def file_on(bed: Testbed, host_name: str, path: str) -> bytes:
    """The bytes of `path` on host `host_name`, read through its root as seen from this machine."""
    return (bed.host(host_name).root / path.lstrip("/")).read_bytes()


def _drifted(host: TestHost, path: str) -> bool:
    difference = HAND_BUILT_DIFFERENCES.get(host.name)
    return difference is not None and difference.path == path


# --- the files, as the guide writes them --------------------------------------------------------------

# The guide's config header has a comment line "#" followed by three spaces; kept as it is there.
_SEED_SPACES = "   "


def _config(host: TestHost) -> str:
    level = "--v=2" if _drifted(host, "/etc/kubernetes/config") else "--v=0"
    return f"""\
###
# kubernetes system config
#{_SEED_SPACES}
# The following values are used to configure various aspects of all
# kubernetes services, including
#
#   kube-apiserver.service
#   kube-controller-manager.service
#   kube-scheduler.service
#   kubelet.service
#   kube-proxy.service
# logging to stderr means we get it in the systemd journal
KUBE_LOGTOSTDERR="--logtostderr=true"

# journal message level, 0 is debug
KUBE_LOG_LEVEL="{level}"

# Should this cluster be allowed to run privileged docker containers
KUBE_ALLOW_PRIV="--allow-privileged=true"

# How the controller-manager, scheduler, and proxy find the apiserver
#KUBE_MASTER="--master=http://sz-pg-oam-docker-test-001.tendcloud.com:8080"
KUBE_MASTER="--master=http://{host.address}:8080"
"""


def _apiserver(host: TestHost, bed: Testbed) -> str:
    etcd_servers = ",".join(f"https://{h.address}:2379" for h in bed.hosts)
    a = host.address
    return f"""\
###
## kubernetes system config
##
## The following values are used to configure the kube-apiserver
##
#
## The address on the local server to listen to.
#KUBE_API_ADDRESS="--insecure-bind-address=sz-pg-oam-docker-test-001.tendcloud.com"
KUBE_API_ADDRESS="--advertise-address={a} --bind-address={a} --insecure-bind-address={a}"
#
## The port on the local server to listen on.
#KUBE_API_PORT="--port=8080"
#
## Port minions listen on
#KUBELET_PORT="--kubelet-port=10250"
#
## Comma separated list of nodes in the etcd cluster
KUBE_ETCD_SERVERS="--etcd-servers={etcd_servers}"
#
## Address range to use for services
KUBE_SERVICE_ADDRESSES="--service-cluster-ip-range=10.254.0.0/16"
#
## default admission control policies
KUBE_ADMISSION_CONTROL="--admission-control=ServiceAccount,NamespaceLifecycle,NamespaceExists,LimitRanger,ResourceQuota"
#
## Add your own!
KUBE_API_ARGS="--authorization-mode=RBAC --runtime-config=rbac.authorization.k8s.io/v1beta1 --kubelet-https=true \
--experimental-bootstrap-token-auth --token-auth-file=/etc/kubernetes/token.csv --service-node-port-range=30000-32767 \
--tls-cert-file={SSL_DIR}/kubernetes.pem --tls-private-key-file={SSL_DIR}/kubernetes-key.pem \
--client-ca-file={SSL_DIR}/ca.pem --service-account-key-file={SSL_DIR}/ca-key.pem --etcd-cafile={SSL_DIR}/ca.pem \
--etcd-certfile={SSL_DIR}/kubernetes.pem --etcd-keyfile={SSL_DIR}/kubernetes-key.pem --enable-swagger-ui=true \
--apiserver-count=3 --audit-log-maxage=30 --audit-log-maxbackup=3 --audit-log-maxsize=100 \
--audit-log-path=/var/lib/audit.log --event-ttl=1h"
"""


def _controller_manager(host: TestHost) -> str:
    text = f"""\
###
# The following values are used to configure the kubernetes controller-manager

# defaults from config and apiserver should be adequate

# Add your own!
KUBE_CONTROLLER_MANAGER_ARGS="--address=127.0.0.1 --service-cluster-ip-range=10.254.0.0/16 --cluster-name=kubernetes \
--cluster-signing-cert-file={SSL_DIR}/ca.pem --cluster-signing-key-file={SSL_DIR}/ca-key.pem  \
--service-account-private-key-file={SSL_DIR}/ca-key.pem --root-ca-file={SSL_DIR}/ca.pem --leader-elect=true"
"""
    return text + "\n" if _drifted(host, "/etc/kubernetes/controller-manager") else text


def _scheduler(host: TestHost) -> str:
    note = "# tuned by hand 2017-10-03\n" if _drifted(host, "/etc/kubernetes/scheduler") else ""
    return f"""\
###
# kubernetes scheduler config

# default config should be adequate

# Add your own!
{note}KUBE_SCHEDULER_ARGS="--leader-elect=true --address=127.0.0.1"
"""


def _etcd_conf(host: TestHost, bed: Testbed) -> str:
    a = host.address
    cluster = ",".join(f"{h.name}=https://{h.address}:2380" for h in bed.hosts)
    return f"""\
#[member]
ETCD_NAME="{host.name}"
ETCD_DATA_DIR="/var/lib/etcd/default.etcd"
#ETCD_WAL_DIR=""
#ETCD_SNAPSHOT_COUNT="10000"
ETCD_LISTEN_PEER_URLS="https://{a}:2380"
ETCD_LISTEN_CLIENT_URLS="https://{a}:2379,https://127.0.0.1:2379"
#ETCD_MAX_SNAPSHOTS="5"
#ETCD_MAX_WALS="5"
#ETCD_CORS=""
#
#[cluster]
ETCD_INITIAL_ADVERTISE_PEER_URLS="https://{a}:2380"
# if you use different ETCD_NAME (e.g. test), set ETCD_INITIAL_CLUSTER value for this name, i.e. "test=http://..."
ETCD_INITIAL_CLUSTER="{cluster}"
ETCD_INITIAL_CLUSTER_STATE="new"
ETCD_INITIAL_CLUSTER_TOKEN="k8s-etcd-cluster"
ETCD_ADVERTISE_CLIENT_URLS="https://{a}:2379"
#ETCD_DISCOVERY=""
#ETCD_STRICT_RECONFIG_CHECK="false"
#
#[security]
ETCD_CERT_FILE="{SSL_DIR}/kubernetes.pem"
ETCD_KEY_FILE="{SSL_DIR}/kubernetes-key.pem"
ETCD_CLIENT_CERT_AUTH="true"
ETCD_TRUSTED_CA_FILE="{SSL_DIR}/ca.pem"
#ETCD_AUTO_TLS="false"
ETCD_PEER_CERT_FILE="{SSL_DIR}/kubernetes.pem"
ETCD_PEER_KEY_FILE="{SSL_DIR}/kubernetes-key.pem"
ETCD_PEER_CLIENT_CERT_AUTH="true"
ETCD_PEER_TRUSTED_CA_FILE="{SSL_DIR}/ca.pem"
#ETCD_PEER_AUTO_TLS="false"

# slow disks: "failed to send out heartbeat on time" (election timeout at least 5 x heartbeat)
ETCD_HEARTBEAT_INTERVAL=100
ETCD_ELECTION_TIMEOUT=1000
"""


_ETCD_UNIT = """\
[Unit]
Description=Etcd Server
After=network.target
After=network-online.target
Wants=network-online.target
Documentation=https://github.com/coreos

[Service]
Type=notify
StateDirectory=etcd
WorkingDirectory=/var/lib/etcd/
EnvironmentFile=-/etc/etcd/etcd.conf
ExecStart=/usr/bin/etcd
Restart=on-failure
RestartSec=5
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""

_APISERVER_UNIT = """\
[Unit]
Description=Kubernetes API Service
Documentation=https://github.com/GoogleCloudPlatform/kubernetes
After=network.target
After=etcd.service

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/apiserver
ExecStart=/usr/local/bin/kube-apiserver \\
        $KUBE_LOGTOSTDERR \\
        $KUBE_LOG_LEVEL \\
        $KUBE_ETCD_SERVERS \\
        $KUBE_API_ADDRESS \\
        $KUBE_API_PORT \\
        $KUBELET_PORT \\
        $KUBE_ALLOW_PRIV \\
        $KUBE_SERVICE_ADDRESSES \\
        $KUBE_ADMISSION_CONTROL \\
        $KUBE_API_ARGS
Restart=on-failure
Type=notify
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""

_CONTROLLER_MANAGER_UNIT = """\
[Unit]
Description=Kubernetes Controller Manager
Documentation=https://github.com/GoogleCloudPlatform/kubernetes

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/controller-manager
ExecStart=/usr/local/bin/kube-controller-manager \\
        $KUBE_LOGTOSTDERR \\
        $KUBE_LOG_LEVEL \\
        $KUBE_MASTER \\
        $KUBE_CONTROLLER_MANAGER_ARGS
Restart=on-failure
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""

_SCHEDULER_UNIT = """\
[Unit]
Description=Kubernetes Scheduler Plugin
Documentation=https://github.com/GoogleCloudPlatform/kubernetes

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/scheduler
ExecStart=/usr/local/bin/kube-scheduler \\
            $KUBE_LOGTOSTDERR \\
            $KUBE_LOG_LEVEL \\
            $KUBE_MASTER \\
            $KUBE_SCHEDULER_ARGS
Restart=on-failure
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def hand_built_files(bed: Testbed) -> dict[str, dict[str, str]]:
    """Host name -> path -> the text build_by_hand writes there (pure: nothing is read from the hosts)."""
    files = {
        host.name: {
            "/etc/kubernetes/config": _config(host),
            "/etc/kubernetes/apiserver": _apiserver(host, bed),
            "/etc/kubernetes/controller-manager": _controller_manager(host),
            "/etc/kubernetes/scheduler": _scheduler(host),
            "/etc/kubernetes/token.csv": TOKEN_CSV,
            "/etc/etcd/etcd.conf": _etcd_conf(host, bed),
            ETCD_UNIT_PATH: _ETCD_UNIT,
            f"{KUBE_UNIT_DIR}/kube-apiserver.service": _APISERVER_UNIT,
            f"{KUBE_UNIT_DIR}/kube-controller-manager.service": _CONTROLLER_MANAGER_UNIT,
            f"{KUBE_UNIT_DIR}/kube-scheduler.service": _SCHEDULER_UNIT,
        }
        for host in bed.hosts
    }
    for d in HAND_BUILT_DIFFERENCES.values():  # the differences are what was written, and only there
        if d.host in files:
            assert all((d.text in by_path[d.path]) == (name == d.host) for name, by_path in files.items()), d
    return files


# --- the shell, as an operator types it ---------------------------------------------------------------


def _heredoc(path: str, text: str) -> str:
    assert text.endswith("\n") and "\nEOF\n" not in "\n" + text, path
    return f"cat > {path} <<'EOF'\n{text}EOF\n"


def _write_script(files: dict[str, str]) -> str:
    shadowing = " ".join(
        f"/etc/systemd/system/{u}.service /etc/systemd/system/multi-user.target.wants/{u}.service" for u in KUBE_UNITS
    )
    writes = "".join(_heredoc(path, text) for path, text in files.items())
    return (
        "set -eu\n"
        "umask 022\n"
        f"if [ -L {KUBE_UNIT_DIR} ] || [ ! -d {KUBE_UNIT_DIR} ]; then\n"
        f"  echo '{KUBE_UNIT_DIR} is not a real directory here; not written' >&2; exit 4\n"
        "fi\n"
        f"rm -f {shadowing}\n"
        "mkdir -p /etc/kubernetes /etc/etcd\n"
        f"{writes}"
        f"chmod {TOKEN_MODE} /etc/kubernetes/token.csv\n"  # whatever mode an earlier owner gave it
        "systemctl daemon-reload\n"
        f"systemctl enable {' '.join(UNITS)}\n"
    )


def _wait_etcd(addresses: list[str]) -> str:
    """Shell: wait (at most WAIT_SECONDS in all) until etcd at every address answers /health."""
    return (
        f"deadline=$(( $(date +%s) + {WAIT_SECONDS} ))\n"
        f"for addr in {' '.join(addresses)}; do\n"
        f"  until curl -sf --max-time 3 --cacert {SSL_DIR}/ca.pem --cert {SSL_DIR}/kubernetes.pem "
        f'--key {SSL_DIR}/kubernetes-key.pem "https://$addr:2379/health" >/dev/null; do\n'
        f'    if [ "$(date +%s)" -ge "$deadline" ]; then echo "etcd at $addr not healthy after {WAIT_SECONDS} s" >&2; '
        "exit 1; fi\n"
        "    sleep 1\n"
        "  done\n"
        "done\n"
    )


def _restart_etcd_script(host: TestHost, bed: Testbed) -> str:
    others = [h.address for h in bed.hosts if h is not host]
    return f"set -eu\n{_wait_etcd(others)}systemctl restart etcd\n{_wait_etcd([host.address])}"


def _restart_kube_script() -> str:
    return (
        "set -eu\n"
        "systemctl restart kube-apiserver\n"
        "systemctl restart kube-controller-manager\n"
        "systemctl restart kube-scheduler\n"
        f"deadline=$(( $(date +%s) + {WAIT_SECONDS} ))\n"
        f"for u in {' '.join(KUBE_UNITS)}; do\n"
        '  until systemctl is-active --quiet "$u"; do\n'
        '    if [ "$(date +%s)" -ge "$deadline" ]; then echo "$u not active" >&2; systemctl status --no-pager "$u" >&2; '
        "exit 1; fi\n"
        "    sleep 0.5\n"
        "  done\n"
        "done\n"
    )


def build_by_hand(bed: Testbed) -> None:
    """Turn the running, converged testbed into masters built by hand (see the module docstring).

    Every host's files are written, the units reloaded and enabled; then etcd restarts one member at a time,
    each waiting for the other members' health first and its own after (quorum is never lost); then each
    host's kube-apiserver, kube-controller-manager and kube-scheduler restart until active.
    """
    files = hand_built_files(bed)
    for host in bed.hosts:
        host.ssh(_write_script(files[host.name]))
    for host in bed.hosts:
        host.ssh(_restart_etcd_script(host, bed), timeout=3 * WAIT_SECONDS + 120)
    for host in bed.hosts:
        host.ssh(_restart_kube_script(), timeout=WAIT_SECONDS + 120)
