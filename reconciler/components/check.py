"""Every component rule over every host: which services are etcd, kube-apiserver, kube-controller-manager.

Owns recognising a component by its program (ExecStart's binary) and running its rules (`components.etcd`,
`components.kube`) across hosts. Pure: hosts arrive as their files (path -> text) and units (name, path);
problems leave located by the file and line on the host that carries the value. Called by `spec.render`.
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.components import etcd, kube
from reconciler.components.etcd import Problem
from reconciler.components.systemd import Service, Setting, program, service

PROGRAMS = ("etcd", kube.APISERVER, kube.CONTROLLER_MANAGER)

Host = tuple[dict[str, str], list[tuple[str, str]]]  # files by path, units as (name, unit file path)


def services(host: Host) -> dict[str, tuple[str, Service]]:
    """The host's services by program (etcd, kube-apiserver, ...): (unit name, Service)."""
    files, units = host
    out: dict[str, tuple[str, Service]] = {}
    for name, path in units:
        if program(path, files) not in (None, *PROGRAMS):
            continue  # not a component with rules: not worth reading its environment
        svc = service(path, files)
        out.setdefault(svc.program or name.removesuffix(".service"), (name, svc))
    return out


def problems(hosts: dict[str, Host]) -> list[Problem]:
    found = {host: services(h) for host, h in hosts.items()}
    members = {host: etcd.member_config(s["etcd"][1]) for host, s in found.items() if "etcd" in s}
    out = etcd.check_members(members)
    clients = set().union(*(etcd.client_urls(c) for c in members.values())) if members else set()
    out += kube.check({host: {p: svc for p, (_, svc) in s.items()} for host, s in found.items()}, clients)
    fallback = {
        host: _exec_start(s["etcd"][1], hosts[host][1], s["etcd"][0]) for host, s in found.items() if "etcd" in s
    }
    return [p if p.setting is not None else replace(p, setting=fallback.get(p.host)) for p in out]


def _exec_start(svc: Service, units: list[tuple[str, str]], unit: str) -> Setting:
    if svc.argv:
        return replace(svc.argv[0], key="")
    return Setting("", dict(units).get(unit, ""), 1)
