"""Validated documents -> DesiredState: each host's files, units, checks and certificates.

Owns the per-host assembly: which documents select a host, an env File's lines, a Unit's file and restart
paths, probe URLs and addresses as rendered, two documents writing one path on a host. The jobs around it
live beside it: cross-document checks (`spec.checks`), the EtcdTuning document (`spec.etcd_tuning`),
rendering a template (`spec.templates`). Called by `spec.isolate.load_desired`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.errors import SpecError, SpecIssue
from reconciler.spec.cache import SpecCache
from reconciler.spec.checks import (
    check_hosts,
    check_references,
    check_selectors,
    component_issues,
    index_documents,
    within_size,
)
from reconciler.spec.desired import (
    DesiredBalancer,
    DesiredCert,
    DesiredCheck,
    DesiredDirectory,
    DesiredFile,
    DesiredHost,
    DesiredRenewal,
    DesiredState,
    DesiredTuning,
    DesiredUnit,
    Target,
)
from reconciler.spec.etcd_tuning import resolve_backup, resolve_tuning, with_timings
from reconciler.spec.hosts import local_path, with_groups
from reconciler.spec.model import (
    Balancer,
    CertificateSpec,
    DirectorySpec,
    Document,
    FileSpec,
    HealthCheckSpec,
    HostSpec,
    UnitSpec,
    selects,
    unit_name,
)
from reconciler.spec.origins import Origin
from reconciler.spec.templates import Renderer

MANAGED_HEADER = "# Managed by reconciler ({source}); local edits are reverted.\n"
_BARE_ENV_VALUE = re.compile(r"^[A-Za-z0-9_./:,=+@%-]*$")


def env_line(key: str, value: str) -> str:
    """KEY=value as systemd's EnvironmentFile and etcd's env parsing both read it."""
    if _BARE_ENV_VALUE.match(value):
        return f"{key}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key}="{escaped}"'


def build_desired(
    docs: list[Document], spec_dir: Path, overlay: Mapping[str, int] | None = None, cache: SpecCache | None = None
) -> DesiredState:
    """Render every host; `overlay` (the etcd tuner's values) raises the EtcdTuning file's env values."""
    issues: list[SpecIssue] = []
    by_kind = index_documents(docs, issues)
    hosts = with_groups(list(by_kind["Host"].values()), list(by_kind["HostGroup"].values()), spec_dir, issues)
    if not hosts:
        issues.append(SpecIssue(str(spec_dir), 0, "", "no Host document: nothing to manage"))
    check_hosts(hosts, issues)
    check_references(by_kind, issues)
    warnings = check_selectors(by_kind, hosts, issues)
    tuning = resolve_tuning(by_kind, overlay or {}, issues)
    backup = resolve_backup(by_kind, issues)
    if not within_size(hosts, by_kind, issues):
        raise SpecError(issues)
    renderer = Renderer(hosts, cache)
    origins = {
        f"{kind}/{doc.metadata.name}": origin_of(doc) for kind in ("File", "Unit") for doc in by_kind[kind].values()
    }
    desired = {h.metadata.name: _render_host(h, by_kind, renderer, spec_dir, issues, tuning, origins) for h in hosts}
    renderer.cache.end_render()
    renderer.report(issues)
    if not issues:  # the components' own rules, on what each host would run with
        issues += component_issues(desired, spec_dir)
    if issues:
        raise SpecError(issues)
    return DesiredState(hosts=desired, tuning=tuning, backup=backup, warnings=tuple(warnings))


class _Paths:
    """The files one host gets, by path: a second document writing a path is reported at its field, not kept."""

    def __init__(self, host: str, issues: list[SpecIssue]):
        self.host, self.issues = host, issues
        self.files: dict[str, DesiredFile] = {}

    def add(self, df: DesiredFile, doc: Document, *loc: str) -> None:
        other = self.files.get(df.path)
        if other is not None:
            self.issues.append(
                SpecIssue(
                    doc.file,
                    doc.line_of(*loc),
                    ".".join(loc),
                    f"{df.path} on host {self.host!r} is also written by {other.source}",
                )
            )
            return
        self.files[df.path] = df


def _render_host(
    host: Document,
    by_kind: dict[str, dict[str, Document]],
    renderer: Renderer,
    spec_dir: Path,
    issues: list[SpecIssue],
    tuning: DesiredTuning | None = None,
    origins: dict[str, Origin] | None = None,
) -> DesiredHost:
    hs: HostSpec = host.spec
    name = host.metadata.name
    target = Target(
        name=name,
        address=hs.address,
        port=hs.port,
        user=hs.user,
        identity_file=local_path(hs.identity_file, host, spec_dir),
        known_hosts=local_path(hs.known_hosts, host, spec_dir) or os.path.expanduser("~/.ssh/known_hosts"),
        unsafe_skip_host_key_verification=hs.unsafe_skip_host_key_verification,
        become=hs.become,
        ssh_config=hs.ssh_config if hs.ssh_config in (None, "none") else local_path(hs.ssh_config, host, spec_dir),
        implicit=tuple(f for f in ("port", "user", "known_hosts") if f not in hs.model_fields_set),
    )

    paths = _Paths(name, issues)
    file_paths: dict[str, str] = {}
    for doc in by_kind["File"].values():
        fs: FileSpec = doc.spec
        if not selects(fs.hosts, host):
            continue
        source = f"File/{doc.metadata.name}"
        if fs.env is not None:
            body = MANAGED_HEADER.format(source=source)
            tuned = tuning.effective if tuning and doc.metadata.name == tuning.file else {}
            for key, value in fs.env.items():
                rendered = renderer.located(_env_text(tuned.get(key, value)), host, doc, ("spec", "env", key), issues)
                if "\n" in rendered or "\r" in rendered:
                    issues.append(
                        SpecIssue(
                            doc.file, doc.line_of("spec", "env", key), f"spec.env.{key}", "value must be a single line"
                        )
                    )
                if "\x00" in rendered:
                    issues.append(
                        SpecIssue(
                            doc.file,
                            doc.line_of("spec", "env", key),
                            f"spec.env.{key}",
                            "value must not contain a NUL byte (an environment cannot carry it)",
                        )
                    )
                if renderer.located(key, host, doc, ("spec", "env", key), issues) != key:  # counted (never rendered):
                    break  # past MAX_RENDERED_TOTAL_BYTES, reported; the rest of this body would be built for nothing
                body += env_line(key, rendered) + "\n"
        else:
            content = fs.content or ""
            if tuning and doc.metadata.name == tuning.file:  # the timings' own lines, raised in place
                content = with_timings(content, tuning.effective)
            body = renderer.located(content, host, doc, ("spec", "content"), issues)
        paths.add(
            DesiredFile(fs.path, body.encode(), int(fs.effective_mode, 8), fs.owner, fs.group, fs.sensitive, source),
            doc,
            "spec",
            "path",
        )
        file_paths[doc.metadata.name] = fs.path

    checks: list[DesiredCheck] = []
    for doc in by_kind["HealthCheck"].values():
        cs: HealthCheckSpec = doc.spec
        if not selects(cs.hosts, host):
            continue
        if cs.http is not None:
            url = renderer.located(cs.http.url, host, doc, ("spec", "http", "url"), issues)
            if url and not _is_url(url):
                issues.append(
                    SpecIssue(
                        doc.file,
                        doc.line_of("spec", "http", "url"),
                        "spec.http.url",
                        f"rendered for host {name!r} to {url[:200]!r}, not an http(s) URL",
                    )
                )
            checks.append(
                DesiredCheck(
                    doc.metadata.name,
                    cs.timeout_seconds,
                    url=url,
                    ca_file=cs.http.ca_file,
                    cert_file=cs.http.cert_file,
                    key_file=cs.http.key_file,
                    expect_status=cs.http.expect_status,
                )
            )
        elif cs.tcp is not None:
            tcp_host = renderer.located(cs.tcp.host, host, doc, ("spec", "tcp", "host"), issues)
            if tcp_host and not _HOSTNAME.fullmatch(tcp_host):
                issues.append(
                    SpecIssue(
                        doc.file,
                        doc.line_of("spec", "tcp", "host"),
                        "spec.tcp.host",
                        f"rendered for host {name!r} to {tcp_host[:100]!r}, not a host name or address",
                    )
                )
            checks.append(DesiredCheck(doc.metadata.name, cs.timeout_seconds, tcp_host=tcp_host, tcp_port=cs.tcp.port))

    units: list[DesiredUnit] = []
    for doc in by_kind["Unit"].values():
        us: UnitSpec = doc.spec
        if not selects(us.hosts, host):
            continue
        uname = unit_name(doc.metadata.name)
        path = us.path or f"/etc/systemd/system/{uname}"
        paths.add(
            DesiredFile(
                path,
                renderer.located(us.content, host, doc, ("spec", "content"), issues).encode(),
                0o644,
                "root",
                "root",
                False,
                f"Unit/{doc.metadata.name}",
            ),
            doc,
            "spec",
            "path" if us.path else "metadata",
        )
        restart_on = (path,) + tuple(file_paths[f] for f in us.restart_on if f in file_paths)
        check = us.rollout.health_check if us.rollout else None
        if check and check in by_kind["HealthCheck"] and not any(c.name == check for c in checks):
            issues.append(
                SpecIssue(
                    doc.file,
                    doc.line_of("spec", "rollout", "healthCheck"),
                    "spec.rollout.healthCheck",
                    f"HealthCheck {check!r} does not select host {name!r}, which runs this unit",
                )
            )
        units.append(
            DesiredUnit(
                uname,
                doc.metadata.name,
                path,
                us.enabled,
                us.state == "running",
                restart_on,
                check,
                us.rollout.timeout_seconds if us.rollout else 120.0,
                us.rollback,
                _reload_on(doc, file_paths, by_kind, host, set(paths.files), issues),
                _balancer(us.balancer),
            )
        )
    certificates: dict[str, DesiredCert] = {}
    for doc in by_kind["Certificate"].values():
        cert: CertificateSpec = doc.spec
        if selects(cert.hosts, host):
            renewal = _renewal(doc, cert, {u.spec_name: u.name for u in units}, issues)
            for path in cert.paths:
                other = certificates.get(path)
                if other is not None and renewal and other.renew:
                    issues.append(
                        SpecIssue(
                            doc.file,
                            doc.line_of("spec", "paths"),
                            "spec.paths",
                            f"{path} is also renewed by {other.source}",
                        )
                    )
                if other is None or (renewal and not other.renew):  # a renewed one is reported too: it takes the place
                    certificates[path] = DesiredCert(path, cert.warn_days, f"Certificate/{doc.metadata.name}", renewal)
    return DesiredHost(
        target=target,
        files=paths.files,
        units=tuple(units),
        checks=tuple(checks),
        certificates=tuple(certificates.values()),
        directories=_directories(host, by_kind, paths.files, issues),
        addresses=_addresses(host, by_kind, renderer, issues),
        origins=origins or {},
    )


def _reload_on(
    doc: Document,
    file_paths: dict[str, str],
    by_kind: dict[str, dict[str, Document]],
    host: Document,
    written: set[str],
    issues: list[SpecIssue],
) -> tuple[str, ...]:
    """The paths whose change reloads the unit: its reloadOn Files', and the paths of its reloadOn Certificates that
    select this host. A Certificate's path that a File or a unit file writes is refused: that file's own
    restartOn/reloadOn says what its change does (a path in both would be restarted and reloaded for)."""
    us: UnitSpec = doc.spec
    paths: list[str] = []
    for i, name in enumerate(us.reload_on):
        if name in file_paths:
            paths.append(file_paths[name])
        elif name in by_kind["Certificate"]:
            cert: CertificateSpec = by_kind["Certificate"][name].spec
            for path in cert.paths if selects(cert.hosts, host) else []:
                if path in written:
                    issues.append(
                        SpecIssue(
                            doc.file,
                            doc.line_of("spec", "reloadOn", i),
                            f"spec.reloadOn[{i}]",
                            f"Certificate {name!r} lists {path}, which the specs write as a file: name that File instead",
                        )  # fmt: skip
                    )
                else:
                    paths.append(path)
    return tuple(dict.fromkeys(paths))


def _renewal(
    doc: Document, cert: CertificateSpec, units: dict[str, str], issues: list[SpecIssue]
) -> DesiredRenewal | None:
    """The renewal of a Certificate on this host; its `restart` as the host's systemd unit names."""
    r = cert.renew
    if r is None:
        return None
    for n, unit in enumerate(r.restart):
        if unit not in units:
            issues.append(
                SpecIssue(
                    doc.file,
                    doc.line_of("spec", "renew", "restart", n),
                    f"spec.renew.restart[{n}]",
                    f"{unit!r} is not a Unit of this host",
                )
            )
    restart = tuple(units[u] for u in r.restart if u in units)
    return DesiredRenewal(
        r.key_file,
        r.ca_file,
        r.ca_key_file or "",
        r.lifetime_days,
        r.renew_at,
        r.key_type,
        restart,
        r.subject,
        tuple(r.kubeconfigs),
        tuple(r.sign_command or ()),
    )


def _balancer(b: Balancer | None) -> DesiredBalancer | None:
    if b is None:
        return None
    drain_for = tuple(unit_name(u) for u in b.drain_for)
    return DesiredBalancer(b.socket, tuple(b.backends), drain_for, b.ready_check, b.drain_seconds)


def _addresses(
    host: Document, by_kind: dict[str, dict[str, Document]], renderer: Renderer, issues: list[SpecIssue]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for doc in by_kind["VirtualIP"].values():
        if not selects(doc.spec.hosts, host):
            continue
        address = renderer.located(doc.spec.address, host, doc, ("spec", "address"), issues)
        try:
            out[doc.metadata.name] = str(ipaddress.ip_address(address))
        except ValueError:
            if address:
                issues.append(
                    SpecIssue(
                        doc.file,
                        doc.line_of("spec", "address"),
                        "spec.address",
                        f"rendered for host {host.metadata.name!r} to {address[:100]!r}, not an IP address",
                    )
                )
    return out


def _directories(
    host: Document, by_kind: dict[str, dict[str, Document]], files: dict[str, DesiredFile], issues: list[SpecIssue]
) -> dict[str, DesiredDirectory]:
    out: dict[str, DesiredDirectory] = {}
    for doc in by_kind["Directory"].values():
        ds: DirectorySpec = doc.spec
        if not selects(ds.hosts, host):
            continue
        other = files.get(ds.path) or out.get(ds.path)
        if other is not None:
            issues.append(
                SpecIssue(
                    doc.file,
                    doc.line_of("spec", "path"),
                    "spec.path",
                    f"{ds.path} on host {host.metadata.name!r} is also {other.source}",
                )
            )
            continue
        source = f"Directory/{doc.metadata.name}"
        out[ds.path] = DesiredDirectory(ds.path, int(ds.mode, 8), ds.owner, ds.group, source)
    return out


_HOSTNAME = re.compile(r"[A-Za-z0-9.:-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_URL_CHARS = re.compile(r"https?://[A-Za-z0-9._~:/?#@!$&()*+,;=%\[\]-]+")  # RFC 3986's, nothing else


def _is_url(url: str) -> bool:
    """An http(s) URL with a host, at most 2048 characters, made of the characters URLs are made of; brackets
    only around an IPv6 address (curl would read `[1-100000]` elsewhere as a glob: 100000 requests)."""
    if len(url) > 2048 or not _URL_CHARS.fullmatch(url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:  # e.g. a port that is not a number
        return False
    host = parts.netloc.rpartition("@")[2]
    brackets = "[" in url.replace(host, "", 1) or "]" in url.replace(host, "", 1)  # curl globs: [1-100000]
    if brackets or ("[" in host and not re.fullmatch(r"\[[0-9A-Fa-f:.]+\](:\d+)?", host)):
        return False
    return bool(parts.hostname)


def _env_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def origin_of(doc: Document) -> Origin:
    """Where a File or Unit document writes its content (or its env keys) in its spec file."""
    env = getattr(doc.spec, "env", None) or {}
    return Origin(doc.file, doc.line_of("spec", "content"), {k: doc.line_of("spec", "env", k) for k in env})
