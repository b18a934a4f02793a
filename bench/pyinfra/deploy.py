"""The job of specs/ as an experienced pyinfra user writes it, next to bench/ansible/site.yml: the same templates
(bench/ansible/templates, rendered byte for byte as reconciler renders specs/), the same files, modes and
restarts, etcd restarted one member at a time behind a health wait, health checks and certificate expiry at the
end. bench/peer.py checks that each tool finds nothing to do after the other converged.

    bench/.venv-pyinfra/bin/pyinfra -y bench/pyinfra/inventory.py bench/pyinfra/deploy.py
"""

from io import StringIO
from pathlib import Path

from pyinfra import host, inventory
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

TEMPLATES = Path(__file__).resolve().parents[1] / "ansible" / "templates"
TLS = "--cacert /etc/kubernetes/ssl/ca.pem --cert /etc/kubernetes/ssl/kubernetes.pem --key /etc/kubernetes/ssl/kubernetes-key.pem"
ETCD_HEALTH = f"curl -fsS {TLS} https://{host.data.ssh_hostname}:2379/health"


def template(name: str) -> StringIO:
    """Ansible's template text, less its '#jinja2:' settings line (the environment below is those settings)."""
    text = (TEMPLATES / name).read_text()
    return StringIO(text.split("\n", 1)[1] if text.startswith("#jinja2:") else text)


members = [(h.name, h.data.ssh_hostname) for h in inventory.get_group("etcd")]
variables = {
    "ansible_host": host.data.ssh_hostname,
    "inventory_hostname": host.name,
    "groups": {"etcd": [name for name, _ in members]},
    "hostvars": {name: {"ansible_host": address} for name, address in members},
    "etcd_binary": "/usr/bin/etcd",
}


def put(src: str, dest: str, mode: str = "644", **kw: object):  # noqa: ANN201 (pyinfra's OperationMeta)
    return files.template(
        name=dest,
        src=template(src),
        dest=dest,
        user="root",
        group="root",
        mode=mode,
        jinja_env_kwargs={"trim_blocks": False},
        **variables,
        **kw,
    )


# etcd members
etcd_unit = put("etcd.service.j2", "/etc/systemd/system/etcd.service")
etcd_conf = put("etcd.conf.j2", "/etc/etcd/etcd.conf")
systemd.daemon_reload(name="reload systemd for a new etcd unit file", _if=etcd_unit.did_change)
etcd_started = systemd.service(name="etcd enabled and running", service="etcd", running=True, enabled=True)
# a changed member restarts one at a time (a new cluster's members start together, above), healthy before the next
etcd_restart = systemd.service(
    name="restart etcd",
    service="etcd",
    restarted=True,
    _if=[any_changed(etcd_unit, etcd_conf), lambda: not etcd_started.did_change()],
    _serial=True,
)
server.shell(
    name="wait until the restarted member is healthy",
    commands=[f"for i in $(seq 120); do {ETCD_HEALTH} && exit 0; sleep 1; done; exit 1"],
    _if=etcd_restart.did_change,
    _serial=True,
)

# kubernetes control plane
config = put("config.j2", "/etc/kubernetes/config")
apiserver = put("apiserver.j2", "/etc/kubernetes/apiserver")
token = put("token.csv.j2", "/etc/kubernetes/token.csv", mode="600")
controller_manager = put("controller-manager.j2", "/etc/kubernetes/controller-manager")
scheduler = put("scheduler.j2", "/etc/kubernetes/scheduler")
kubeconfig = put("kubeconfig.j2", "/etc/kubernetes/kubeconfig", mode="600")
units = {
    name: put(f"{name}.service.j2", f"/usr/lib/systemd/system/{name}.service")  # the seed's place, as the specs
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
}
systemd.daemon_reload(name="reload systemd", _if=any_changed(*units.values()))
reads = {
    "kube-apiserver": (apiserver, token),
    "kube-controller-manager": (controller_manager, kubeconfig),
    "kube-scheduler": (scheduler, kubeconfig),
}
for name, unit in units.items():  # as Ansible's handlers: restart what changed, then enabled and running
    systemd.service(name=f"restart {name}", service=name, restarted=True, _if=any_changed(config, unit, *reads[name]))
for name in units:
    systemd.service(name=f"{name} enabled and running", service=name, running=True, enabled=True)
server.shell(
    name="components healthy (kubectl get cs), etcd healthy, certificates valid for 30 more days",
    commands=[
        "for i in $(seq 60); do curl -fsS -o /dev/null --cacert /etc/kubernetes/ssl/ca.pem"
        f" https://{host.data.ssh_hostname}:6443/readyz && break; sleep 1; done",
        "for i in $(seq 60); do curl -fsS -o /dev/null http://127.0.0.1:10252/healthz && break; sleep 1; done",
        "for i in $(seq 60); do curl -fsS -o /dev/null http://127.0.0.1:10251/healthz && break; sleep 1; done",
        f"{ETCD_HEALTH} >/dev/null",
        "openssl x509 -noout -checkend 2592000 -in /etc/kubernetes/ssl/ca.pem",
        "openssl x509 -noout -checkend 2592000 -in /etc/kubernetes/ssl/kubernetes.pem",
        "openssl x509 -noout -checkend 2592000 -in /etc/kubernetes/ssl/admin.pem",
    ],
)
