"""The testbed's masters (python -m testbed up), as specs/inventory.yaml lists them, for pyinfra."""

_SSH = {
    "ssh_user": "root",
    "ssh_key": "/run/reconciler-testbed/ssh/id_ed25519",
    "ssh_known_hosts_file": "/run/reconciler-testbed/ssh/known_hosts",
    "ssh_strict_host_key_checking": "yes",
}

masters = [(f"master-{i}", {"ssh_hostname": f"198.18.0.1{i}", **_SSH}) for i in (1, 2, 3)]
etcd = masters
