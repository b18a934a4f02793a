"""The seed's field guide as its masters' files read: the env files under /etc/kubernetes, /etc/etcd/etcd.conf,
token.csv and the four unit files, with the guide's own comments and commented-out lines, values in double quotes.

Pure text, one place: tests/integration/handbuilt.py writes it on the testbed with shell (each host with its own
drift), tests/support/masters.py builds the same masters in memory (transport.fake.SimHost) for import's unit tests.
The values are the bundled specs' (specs/etcd.yaml, specs/kubernetes.yaml): same addresses, ports, certificates,
data directory and heartbeat/election timeouts.
"""

from __future__ import annotations

from collections.abc import Mapping

SSL_DIR = "/etc/kubernetes/ssl"
KUBE_UNIT_DIR = "/usr/lib/systemd/system"  # where the guide puts the kube units
ETCD_UNIT_PATH = "/etc/systemd/system/etcd.service"  # Debian's etcd-server owns /usr/lib/systemd/system/etcd.service
KUBE_UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
UNITS = ("etcd", *KUBE_UNITS)
TOKEN_CSV = '0b3c2a7e5f1d4c6b9a8e7d6c5b4a3f2e,kubelet-bootstrap,10001,"system:kubelet-bootstrap"\n'


def guide_files(name: str, address: str, members: Mapping[str, str], release: str = "v1.8") -> dict[str, str]:
    """Path -> text of one master as the guide builds it (members: every etcd member's name -> address), for the
    guide's Kubernetes (v1.8), or "v1.20": as an operator following the guide on v1.20 must change it (`as_v1_20`)."""
    files = {
        "/etc/kubernetes/config": config(address),
        "/etc/kubernetes/apiserver": apiserver(address, members),
        "/etc/kubernetes/controller-manager": controller_manager(),
        "/etc/kubernetes/scheduler": scheduler(),
        "/etc/kubernetes/token.csv": TOKEN_CSV,
        "/etc/etcd/etcd.conf": etcd_conf(name, address, members),
        ETCD_UNIT_PATH: ETCD_UNIT,
        f"{KUBE_UNIT_DIR}/kube-apiserver.service": APISERVER_UNIT,
        f"{KUBE_UNIT_DIR}/kube-controller-manager.service": CONTROLLER_MANAGER_UNIT,
        f"{KUBE_UNIT_DIR}/kube-scheduler.service": SCHEDULER_UNIT,
    }
    if release == "v1.20":
        return as_v1_20(files, address)
    assert release == "v1.8", release
    return files


def as_v1_20(files: dict[str, str], address: str) -> dict[str, str]:
    """The guide's files with what v1.20 needs changed, the way the bundled specs change it (said next to each value
    there): the controller-manager and scheduler reach the apiserver over TLS with a kubeconfig (v1.20 serves no
    insecure port), the removed --experimental-bootstrap-token-auth becomes --enable-bootstrap-token-auth, and the
    service-account issuer and signing key v1.20 requires are given. The rest is the guide's, deprecated flags
    included (v1.20 still accepts them)."""
    out = dict(files)

    def change(path: str, old: str, new: str) -> None:
        assert out[path].count(old) == 1, (path, old)
        out[path] = out[path].replace(old, new)

    change(
        "/etc/kubernetes/config",
        f'KUBE_MASTER="--master=http://{address}:8080"',
        f'KUBE_MASTER="--master=https://{address}:6443 --kubeconfig=/etc/kubernetes/kubeconfig"',
    )
    change(
        "/etc/kubernetes/apiserver",
        "--experimental-bootstrap-token-auth ",
        "--enable-bootstrap-token-auth --service-account-issuer=https://kubernetes.default.svc "
        f"--service-account-signing-key-file={SSL_DIR}/ca-key.pem ",
    )
    out["/etc/kubernetes/kubeconfig"] = kubeconfig(address)
    return out


def kubeconfig(address: str) -> str:
    """/etc/kubernetes/kubeconfig (v1.20): the admin certificate the controller-manager and scheduler present."""
    return f"""\
apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    certificate-authority: {SSL_DIR}/ca.pem
    server: https://{address}:6443
users:
- name: admin
  user:
    client-certificate: {SSL_DIR}/admin.pem
    client-key: {SSL_DIR}/admin-key.pem
contexts:
- name: default
  context: {{cluster: kubernetes, user: admin}}
current-context: default
"""


# The guide's config header has a comment line "#" followed by three spaces; kept as it is there.
_SEED_SPACES = "   "


def config(address: str) -> str:
    """/etc/kubernetes/config: what every kube component reads first."""
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
KUBE_LOG_LEVEL="--v=0"

# Should this cluster be allowed to run privileged docker containers
KUBE_ALLOW_PRIV="--allow-privileged=true"

# How the controller-manager, scheduler, and proxy find the apiserver
#KUBE_MASTER="--master=http://sz-pg-oam-docker-test-001.tendcloud.com:8080"
KUBE_MASTER="--master=http://{address}:8080"
"""


def apiserver(address: str, members: Mapping[str, str]) -> str:
    """/etc/kubernetes/apiserver: its own address, every etcd member's client URL (members: name -> address)."""
    etcd_servers = ",".join(f"https://{a}:2379" for a in members.values())
    a = address
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


def controller_manager() -> str:
    """/etc/kubernetes/controller-manager."""
    return f"""\
###
# The following values are used to configure the kubernetes controller-manager

# defaults from config and apiserver should be adequate

# Add your own!
KUBE_CONTROLLER_MANAGER_ARGS="--address=127.0.0.1 --service-cluster-ip-range=10.254.0.0/16 --cluster-name=kubernetes \
--cluster-signing-cert-file={SSL_DIR}/ca.pem --cluster-signing-key-file={SSL_DIR}/ca-key.pem  \
--service-account-private-key-file={SSL_DIR}/ca-key.pem --root-ca-file={SSL_DIR}/ca.pem --leader-elect=true"
"""


def scheduler() -> str:
    """/etc/kubernetes/scheduler."""
    return """\
###
# kubernetes scheduler config

# default config should be adequate

# Add your own!
KUBE_SCHEDULER_ARGS="--leader-elect=true --address=127.0.0.1"
"""


def etcd_conf(name: str, address: str, members: Mapping[str, str]) -> str:
    """/etc/etcd/etcd.conf in the etcd package's style, the heartbeat lines appended as the guide adds them."""
    a = address
    cluster = ",".join(f"{n}=https://{m}:2380" for n, m in members.items())
    return f"""\
#[member]
ETCD_NAME="{name}"
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


ETCD_UNIT = """\
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

APISERVER_UNIT = """\
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

CONTROLLER_MANAGER_UNIT = """\
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

SCHEDULER_UNIT = """\
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
