"""The kube components' rules that can be checked before a restart: what the seed warns about.

Owns: `--service-cluster-ip-range` well-formed and identical for every kube-apiserver and
kube-controller-manager (the seed: "must be the same as the apiserver's"), and `--etcd-servers` naming
only etcd members that are declared (by the client URLs they serve). Pure; called by `components.check`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from urllib.parse import urlsplit

from reconciler.components.etcd import Problem
from reconciler.components.systemd import Service, Setting

APISERVER, CONTROLLER_MANAGER = "kube-apiserver", "kube-controller-manager"


def check(services: dict[str, dict[str, Service]], etcd_clients: set[tuple[str, str, int]]) -> list[Problem]:
    """`services`: host -> program name -> Service; `etcd_clients`: every declared member's client URLs."""
    problems: list[Problem] = []
    ranges: dict[tuple[str, str], Setting] = {}
    for host, programs in sorted(services.items()):
        for program in (APISERVER, CONTROLLER_MANAGER):
            svc = programs.get(program)
            if svc is None:
                continue
            flags = svc.flags()
            cidr = flags.get("service-cluster-ip-range")
            if cidr is not None:
                try:
                    for part in cidr.value.split(","):
                        ipaddress.ip_network(part.strip())
                    ranges[(host, program)] = cidr
                except ValueError:
                    problems.append(
                        Problem(
                            host,
                            cidr,
                            f"{program} --service-cluster-ip-range {cidr.value[:60]!r} "
                            "is not a network (e.g. 10.254.0.0/16)",
                        )
                    )
            servers = flags.get("etcd-servers") if program == APISERVER else None
            for url in servers.value.split(",") if servers and etcd_clients else []:
                try:
                    parts = urlsplit(url.strip())
                    key = (parts.scheme, parts.hostname or "", parts.port or 0)
                except ValueError:
                    key = ("", "", 0)
                if key not in etcd_clients:
                    problems.append(
                        Problem(
                            host,
                            servers,
                            f"--etcd-servers names {url.strip()[:100]!r}, which no declared "
                            "etcd member serves (its client URLs)",
                        )
                    )
    if len({s.value for s in ranges.values()}) > 1:
        common, _ = Counter(s.value for s in ranges.values()).most_common(1)[0]
        for (host, program), setting in sorted(ranges.items()):
            if setting.value != common:
                problems.append(
                    Problem(
                        host,
                        setting,
                        f"{program} --service-cluster-ip-range {setting.value} differs from "
                        f"{common}: kube-apiserver and kube-controller-manager must use the "
                        "same range on every master",
                    )
                )
    return problems
