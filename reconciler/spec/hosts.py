"""Host documents as the rest of rendering sees them: their HostGroups applied, local paths resolved.

A HostGroup gives the hosts it selects what they share (port, user, identityFile, knownHosts, become, sshConfig,
vars); a Host's own value wins, and two groups giving one host different values for a field or a var is an
issue at the second group's field. A relative path is resolved from the file of the document that gives it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reconciler.errors import SpecIssue
from reconciler.spec.model import Document, HostGroupSpec, selects

FIELDS = ("port", "user", "identity_file", "known_hosts", "become", "ssh_config")
PATHS = ("identity_file", "known_hosts", "ssh_config")
_CAMEL = {"identity_file": "identityFile", "known_hosts": "knownHosts", "ssh_config": "sshConfig"}


def local_path(value: str | None, doc: Document, spec_dir: Path) -> str | None:
    """A path on this machine named in `doc`: `~` expanded, a relative one taken from the document's file."""
    if value is None:
        return None
    try:
        path = Path(os.path.expanduser(value))
    except (ValueError, OSError):  # e.g. a NUL byte in "~user": left as written, refused when it is opened
        path = Path(value)
    return str(path if path.is_absolute() else (spec_dir.parent / doc.file).parent / path)


def with_groups(
    hosts: list[Document], groups: list[Document], spec_dir: Path, issues: list[SpecIssue]
) -> list[Document]:
    """Each Host with what the HostGroups selecting it give (in name order), its own values kept."""
    out = []
    for host in hosts:
        given: dict[str, tuple[Any, Document]] = {}
        shared: dict[str, tuple[Any, Document]] = {}
        for group in sorted(groups, key=lambda g: g.metadata.name):
            spec: HostGroupSpec = group.spec
            if not selects(spec.hosts, host):
                continue
            for field in FIELDS:
                if field not in spec.model_fields_set or field in host.spec.model_fields_set:
                    continue
                value = getattr(spec, field)
                if field in PATHS and value != "none":
                    value = local_path(value, group, spec_dir)
                _give(given, field, value, group, host, issues, ("spec", _CAMEL.get(field, field)))
            for key, value in spec.vars.items():
                if key not in host.spec.vars:
                    _give(shared, key, value, group, host, issues, ("spec", "vars", key))
        if not given and not shared:
            out.append(host)
            continue
        update: dict[str, Any] = {f: v for f, (v, _) in given.items()}
        if shared:
            update["vars"] = {**{k: v for k, (v, _) in shared.items()}, **host.spec.vars}
        out.append(host.model_copy(update={"spec": host.spec.model_copy(update=update)}))
    return out


def _give(
    given: dict[str, tuple[Any, Document]],
    key: str,
    value: Any,
    group: Document,
    host: Document,
    issues: list[SpecIssue],
    loc: tuple[str, ...],
) -> None:
    first = given.setdefault(key, (value, group))
    if first[1] is not group and first[0] != value:
        issues.append(
            SpecIssue(
                group.file,
                group.line_of(*loc),
                ".".join(loc),
                f"host {host.metadata.name!r} is given another {loc[-1]} by HostGroup/{first[1].metadata.name} "
                f"({first[1].where(*loc)}): give it once, or on the Host",
            )
        )
