"""Checks across documents: duplicate names and addresses, dangling references, unit names and directories,
the size of hosts x documents, and what the components (etcd, kube) would refuse on each host.

Pure: documents (and, for the components, the rendered DesiredHosts) in, located SpecIssues out. Called by
`spec.render`.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from reconciler.components.check import problems as component_problems
from reconciler.components.systemd import UNIT_DIRS
from reconciler.errors import SpecIssue
from reconciler.spec.desired import DesiredHost
from reconciler.spec.limits import MAX_DESIRED_ITEMS, MAX_HOSTS, UNIT_NAME_MAX
from reconciler.spec.model import SPEC_MODELS, Document, UnitSpec, selects, unit_name
from reconciler.spec.origins import locate


def index_documents(docs: list[Document], issues: list[SpecIssue]) -> dict[str, dict[str, Document]]:
    """Documents by kind and name; a second document of a kind and name is reported, not kept."""
    by_kind: dict[str, dict[str, Document]] = {k: {} for k in SPEC_MODELS}
    for doc in docs:
        seen = by_kind[doc.kind].get(doc.metadata.name)
        if seen is not None:
            issues.append(
                SpecIssue(
                    doc.file,
                    doc.line_of("metadata", "name"),
                    "metadata.name",
                    f"duplicate {doc.kind} name {doc.metadata.name!r} (first at {seen.where('metadata', 'name')})",
                )
            )
            continue
        by_kind[doc.kind][doc.metadata.name] = doc
    return by_kind


def check_hosts(hosts: list[Document], issues: list[SpecIssue]) -> None:
    seen: dict[tuple[str, int], Document] = {}
    for doc in hosts:
        key = (doc.spec.address, doc.spec.port)
        if key in seen:
            issues.append(
                SpecIssue(
                    doc.file,
                    doc.line_of("spec", "address"),
                    "spec.address",
                    f"{key[0]}:{key[1]} is also host {seen[key].metadata.name!r}",
                )
            )
        seen[key] = doc


# Where systemd loads system units from (systemd.unit(5)); Debian's /lib is /usr/lib on merged-/usr systems.


def _check_unit(doc: Document, issues: list[SpecIssue]) -> None:
    spec: UnitSpec = doc.spec
    name = unit_name(doc.metadata.name)
    if len(name) > UNIT_NAME_MAX:
        issues.append(
            SpecIssue(
                doc.file,
                doc.line_of("metadata", "name"),
                "metadata.name",
                f"unit name {name[:40]!r}... is {len(name)} characters; systemd allows {UNIT_NAME_MAX}",
            )
        )
    if spec.path is not None and (
        posixpath.dirname(spec.path) not in UNIT_DIRS or posixpath.basename(spec.path) != name
    ):
        issues.append(
            SpecIssue(
                doc.file,
                doc.line_of("spec", "path"),
                "spec.path",
                f"a unit file lives in a systemd unit directory under its own name, e.g. "
                f"/etc/systemd/system/{name[:60]} (directories: {', '.join(UNIT_DIRS)})",
            )
        )


def check_references(by_kind: dict[str, dict[str, Document]], issues: list[SpecIssue]) -> None:
    units: dict[str, Document] = {}
    for doc in by_kind["Unit"].values():  # `etcd` and `etcd.service` are one systemd unit
        other = units.setdefault(unit_name(doc.metadata.name), doc)
        if other is not doc:
            issues.append(
                SpecIssue(
                    doc.file,
                    doc.line_of("metadata", "name"),
                    "metadata.name",
                    f"Unit {doc.metadata.name!r} is the same systemd unit as {other.metadata.name!r} "
                    f"({other.where('metadata', 'name')})",
                )
            )
    for doc in by_kind["Unit"].values():
        spec: UnitSpec = doc.spec
        _check_unit(doc, issues)
        for key, names in (("restartOn", spec.restart_on), ("reloadOn", spec.reload_on)):
            for i, name in enumerate(names):
                # a reload may also follow a Certificate's files (a bundle the unit verifies peers with: HAProxy's
                # ca-file), which reconciler renews or rotates and never writes as a File
                if key == "reloadOn" and name in by_kind["File"] and name in by_kind["Certificate"]:
                    issues.append(
                        SpecIssue(
                            doc.file,
                            doc.line_of("spec", key, i),
                            f"spec.{key}[{i}]",
                            f"a File and a Certificate are both named {name!r}: rename one",
                        )  # fmt: skip
                    )
                elif name not in by_kind["File"] and not (key == "reloadOn" and name in by_kind["Certificate"]):
                    kinds = "File or Certificate" if key == "reloadOn" else "File"
                    issues.append(
                        SpecIssue(
                            doc.file, doc.line_of("spec", key, i), f"spec.{key}[{i}]", f"no {kinds} named {name!r}"
                        )
                    )
                elif key == "reloadOn" and name in spec.restart_on:
                    issues.append(
                        SpecIssue(
                            doc.file,
                            doc.line_of("spec", key, i),
                            f"spec.{key}[{i}]",
                            f"File {name!r} is in restartOn too: a change either restarts or reloads",
                        )
                    )
        if spec.rollout and spec.rollout.health_check not in by_kind["HealthCheck"]:
            issues.append(
                SpecIssue(
                    doc.file,
                    doc.line_of("spec", "rollout", "healthCheck"),
                    "spec.rollout.healthCheck",
                    f"no HealthCheck named {spec.rollout.health_check!r}",
                )
            )


def within_size(hosts: list[Document], by_kind: dict[str, dict[str, Document]], issues: list[SpecIssue]) -> bool:
    """Whether hosts x documents stays within MAX_DESIRED_ITEMS, counted before anything is rendered or selected
    (selecting is work too: 3800 Hosts x 2250 Files that select nobody were 8.6M selector checks)."""
    if len(hosts) > MAX_HOSTS:
        doc = hosts[MAX_HOSTS]
        issues.append(SpecIssue(doc.file, doc.line, "kind", f"more than {MAX_HOSTS} Host documents (limit MAX_HOSTS)"))
        return False
    total = 0
    for kind in ("File", "Directory", "Unit", "HealthCheck", "Certificate", "VirtualIP"):
        for doc in by_kind[kind].values():
            total += len(hosts) * (len(doc.spec.paths) if kind == "Certificate" else 1)
            if total > MAX_DESIRED_ITEMS:
                issues.append(
                    SpecIssue(
                        doc.file,
                        doc.line_of("spec", "hosts"),
                        "spec.hosts",
                        f"hosts x files, units, checks and certificate paths come to more than {MAX_DESIRED_ITEMS} "
                        "with this document (limit MAX_DESIRED_ITEMS)",
                    )
                )
                return False
    return True


def component_issues(desired: dict[str, DesiredHost], spec_dir: Path) -> list[SpecIssue]:
    """What etcd and the kube components would refuse (`components`), located in the document that wrote it."""
    hosts = {
        name: (
            {path: f.content.decode("utf-8", errors="replace") for path, f in h.files.items()},
            [(u.name, u.path) for u in h.units],
        )
        for name, h in desired.items()
    }
    issues: list[SpecIssue] = []
    for problem in component_problems(hosts):
        setting = problem.setting
        host = desired[problem.host]
        file = host.files.get(setting.path) if setting else None
        sensitive = file is not None and file.sensitive
        shown = "" if setting is None or not setting.value or sensitive else f"={setting.value[:80]}"
        why = (
            "the component would refuse it (details withheld: the file is sensitive)" if sensitive else problem.message
        )
        message = f"{setting.label if setting else 'value'}{shown} on host {problem.host!r}: {why}"
        where = locate(setting, host.origins.get(file.source)) if file and setting else None
        issues.append(SpecIssue(*where, message) if where else SpecIssue(str(spec_dir), 0, "", message))
    return issues


SELECTING_KINDS = ("HostGroup", "File", "Directory", "Unit", "HealthCheck", "Certificate", "VirtualIP")


def check_selectors(
    by_kind: dict[str, dict[str, Document]], hosts: list[Document], issues: list[SpecIssue]
) -> list[str]:
    """A host named in a selector must exist (an issue); a selector that selects no host is valid but most likely
    a typo in a label (a warning, returned: one per label set, naming every document that asks for it)."""
    names = {h.metadata.name for h in hosts}
    nobody: dict[str, list[str]] = {}
    for kind in SELECTING_KINDS:
        for doc in by_kind[kind].values():
            selector = doc.spec.hosts
            if isinstance(selector, list):
                for i, name in enumerate(selector):
                    if name not in names:
                        issues.append(
                            SpecIssue(
                                doc.file, doc.line_of("spec", "hosts", i), f"spec.hosts[{i}]", f"no Host named {name!r}"
                            )
                        )
            elif selector != "all" and hosts and not any(selects(selector, h) for h in hosts):
                wanted = ", ".join(f"{k}={v}" for k, v in selector.match_labels.items())
                nobody.setdefault(wanted, []).append(f"{kind}/{doc.metadata.name} ({doc.where('spec', 'hosts')})")
    return [
        f"no Host is labelled {wanted}: {len(docs)} document(s) select no host: {', '.join(docs)}"
        for wanted, docs in nobody.items()
    ]
