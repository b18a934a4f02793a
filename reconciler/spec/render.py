"""Validated documents -> DesiredState: selectors, cross-document checks and per-host templates.

Owns: duplicate names, dangling references, two documents writing one path on a host, and rendering
of `content`, `env` values and probe addresses with Jinja2 (sandboxed, StrictUndefined: an undefined
variable is an error naming the host, never an empty string). Called by `spec.isolate.load_desired`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from jinja2.exceptions import SecurityError

from reconciler.components.check import problems as component_problems
from reconciler.components.etcd import ELECTION_KEY, HEARTBEAT_KEY
from reconciler.errors import SpecError, SpecIssue
from reconciler.spec.cache import SpecCache
from reconciler.spec.desired import (
    DesiredCert,
    DesiredCheck,
    DesiredFile,
    DesiredHost,
    DesiredState,
    DesiredTuning,
    DesiredUnit,
    Target,
    TuningPolicy,
)
from reconciler.spec.limits import MAX_DESIRED_ITEMS, MAX_RENDERED_TOTAL_BYTES, UNIT_NAME_MAX, LoadExpired
from reconciler.spec.model import (
    CertificateSpec,
    Document,
    EtcdTuningSpec,
    FileSpec,
    HealthCheckSpec,
    HostSelector,
    HostSpec,
    UnitSpec,
)
from reconciler.spec.sandbox import BoundedEnvironment, RenderLimitError

MANAGED_HEADER = "# Managed by reconciler ({source}); local edits are reverted.\n"
_UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".mount", ".target")
_BARE_ENV_VALUE = re.compile(r"^[A-Za-z0-9_./:,=+@%-]*$")


def unit_name(spec_name: str) -> str:
    return spec_name if spec_name.endswith(_UNIT_SUFFIXES) else f"{spec_name}.service"


def env_line(key: str, value: str) -> str:
    """KEY=value as systemd's EnvironmentFile and etcd's env parsing both read it."""
    if _BARE_ENV_VALUE.match(value):
        return f"{key}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key}="{escaped}"'


def selects(selector: HostSelector, labels: Mapping[str, str]) -> bool:
    if isinstance(selector, str):  # "all" (comparing a pydantic model to a string costs its __eq__)
        return True
    return all(labels.get(k) == v for k, v in selector.match_labels.items())


class _Renderer:
    """Renders templates per host within the limits: each rendering is bounded (spec.sandbox), all of one load
    together too, and a template that failed for one host is not tried again for the others."""

    def __init__(self, hosts: list[Document], cache: SpecCache | None = None):
        self.env = BoundedEnvironment()
        self.hosts = [self._host_context(h) for h in hosts]
        self.by_name = {h["name"]: h for h in self.hosts}
        self._templates: dict[str, jinja2.Template] = {}
        self.failed: dict[str, str] = {}  # template text -> why it failed (reported once, for the first host)
        self.total_bytes = 0
        self.cache = cache or SpecCache()
        # pickle keeps one copy of what YAML aliases share (repr would expand 10k aliases of a 1 MB string)
        self.cache.begin_render(hashlib.sha256(pickle.dumps(self.hosts)).hexdigest())

    @staticmethod
    def _host_context(doc: Document) -> dict[str, Any]:
        spec: HostSpec = doc.spec
        return {
            "name": doc.metadata.name,
            "address": spec.address,
            "port": spec.port,
            "user": spec.user,
            "labels": dict(doc.metadata.labels),
            "vars": dict(spec.vars),
        }

    def render(self, text: str, host: Document) -> str:
        """The text rendered for the host; raises RenderLimitError, a Jinja error, or whatever the template raised."""
        if "{" not in text:  # no Jinja syntax possible ({{ }}, {% %}, {# #}): the text is its own rendering
            self._count(text)
            return _utf8(text)
        key = (text, "")  # a template that reads neither `host` nor `vars` renders once for every host
        rendered = self.cache.rendering(key)
        if rendered is None:
            key = (text, host.metadata.name)
            rendered = self.cache.rendering(key)
        if rendered is None:
            template = self._templates.get(text)
            if template is None:
                template = self._templates[text] = self.env.bounded_template(text)
            if not template.per_host:  # type: ignore[attr-defined]
                key = (text, "")
            me = self.by_name[host.metadata.name]
            rendered = _utf8(self.env.render(template, host=me, hosts=self.hosts, vars=me["vars"]))
        self._count(rendered)
        self.cache.keep(key, rendered)
        return rendered

    def _count(self, text: str) -> None:
        self.total_bytes += len(text) if text.isascii() else 4 * len(text)  # UTF-8: at most 4 bytes a character
        if self.total_bytes > MAX_RENDERED_TOTAL_BYTES:
            raise RenderLimitError(
                f"the renderings of all documents for all hosts exceed {MAX_RENDERED_TOTAL_BYTES} "
                "bytes together (limit MAX_RENDERED_TOTAL_BYTES)"
            )


def _utf8(text: str) -> str:
    """`text` if it can be written as UTF-8 (a YAML escape or a template can make a lone surrogate, which cannot)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not writable as UTF-8: a lone surrogate at character {exc.start}") from None
    return text


def build_desired(
    docs: list[Document], spec_dir: Path, overlay: Mapping[str, int] | None = None, cache: SpecCache | None = None
) -> DesiredState:
    """Render every host; `overlay` (the etcd tuner's values) raises the EtcdTuning file's env values."""
    issues: list[SpecIssue] = []
    by_kind: dict[str, dict[str, Document]] = {
        k: {} for k in ("Host", "File", "Unit", "HealthCheck", "EtcdTuning", "Certificate")
    }
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
    hosts = list(by_kind["Host"].values())
    if not hosts:
        issues.append(SpecIssue(str(spec_dir), 0, "", "no Host document: nothing to manage"))
    _check_hosts(hosts, issues)
    _check_references(by_kind, issues)
    tuning = _tuning(by_kind, overlay or {}, issues)
    if not _within_size(hosts, by_kind, issues):
        raise SpecError(issues)
    renderer = _Renderer(hosts, cache)
    desired = {h.metadata.name: _render_host(h, by_kind, renderer, spec_dir, issues, tuning) for h in hosts}
    renderer.cache.end_render()
    if not issues:  # the components' own rules, on what each host would run with
        issues += _component_issues(desired, by_kind, spec_dir)
    if issues:
        raise SpecError(issues)
    return DesiredState(hosts=desired, tuning=tuning)


def _tuning(
    by_kind: dict[str, dict[str, Document]], overlay: Mapping[str, int], issues: list[SpecIssue]
) -> DesiredTuning | None:
    docs = list(by_kind["EtcdTuning"].values())
    for extra in docs[1:]:
        issues.append(
            SpecIssue(
                extra.file, extra.line, "kind", f"only one EtcdTuning document is allowed (first at {docs[0].where()})"
            )
        )
    if not docs or not docs[0].spec.enabled:
        return None
    doc = docs[0]
    ts: EtcdTuningSpec = doc.spec
    unit, file = by_kind["Unit"].get(ts.unit), by_kind["File"].get(ts.file)
    if unit is None or unit.spec.rollout is None:
        issues.append(
            SpecIssue(
                doc.file,
                doc.line_of("spec", "unit"),
                "spec.unit",
                f"no Unit named {ts.unit!r} with a rollout (members restart one at a time)",
            )
        )
    if file is None or file.spec.env is None:
        issues.append(SpecIssue(doc.file, doc.line_of("spec", "file"), "spec.file", f"no env File named {ts.file!r}"))
        return None
    spec_values: dict[str, int] = {}
    for key in (HEARTBEAT_KEY, ELECTION_KEY):
        value = file.spec.env.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            issues.append(
                SpecIssue(
                    file.file,
                    file.line_of("spec", "env", key),
                    f"spec.env.{key}",
                    f"EtcdTuning {doc.metadata.name!r} needs {key} here as a plain number of ms",
                )
            )
        else:
            spec_values[key] = value
    if len(spec_values) < 2 or unit is None:
        return None
    if spec_values[ELECTION_KEY] < 5 * spec_values[HEARTBEAT_KEY]:
        issues.append(
            SpecIssue(
                file.file,
                file.line_of("spec", "env", ELECTION_KEY),
                f"spec.env.{ELECTION_KEY}",
                "etcd refuses an election timeout below 5 x the heartbeat interval",
            )
        )
    effective = {k: max(v, int(overlay.get(k, 0))) for k, v in spec_values.items()}
    policy = TuningPolicy(
        warnings=ts.warnings,
        window_seconds=ts.window_seconds,
        margin=ts.margin,
        round_to_ms=ts.round_to_ms,
        election_multiplier=ts.election_multiplier,
        max_heartbeat_ms=ts.max_heartbeat_ms,
        max_election_ms=ts.max_election_ms,
        cooldown_seconds=ts.cooldown_seconds,
        restart_grace_seconds=ts.restart_grace_seconds,
    )
    return DesiredTuning(
        unit_name(ts.unit),
        ts.file,
        file.spec.path,
        policy,
        spec_values,
        dict(overlay),
        effective,
        f"EtcdTuning/{doc.metadata.name}",
    )


def _component_issues(
    desired: dict[str, DesiredHost], by_kind: dict[str, dict[str, Document]], spec_dir: Path
) -> list[SpecIssue]:
    """What etcd and the kube components would refuse (`components`), located in the document that wrote it."""
    hosts = {
        name: (
            {path: f.content.decode("utf-8", errors="replace") for path, f in h.files.items()},
            [(u.name, u.path) for u in h.units],
        )
        for name, h in desired.items()
    }
    docs = {f"{kind}/{doc.metadata.name}": doc for kind in ("File", "Unit") for doc in by_kind[kind].values()}
    issues: list[SpecIssue] = []
    for problem in component_problems(hosts):
        setting = problem.setting
        file = desired[problem.host].files.get(setting.path) if setting else None
        doc = docs.get(file.source) if file else None
        shown = "" if setting is None or not setting.value or (file and file.sensitive) else f"={setting.value[:80]}"
        message = f"{setting.label if setting else 'value'}{shown} on host {problem.host!r}: {problem.message}"
        if doc is None or setting is None:
            issues.append(SpecIssue(str(spec_dir), 0, "", message))
        elif doc.kind == "File" and doc.spec.env is not None and setting.key in doc.spec.env:
            issues.append(
                SpecIssue(doc.file, doc.line_of("spec", "env", setting.key), f"spec.env.{setting.key}", message)
            )
        else:  # a line of a `content: |` block: the key's line, then the line within the content
            issues.append(SpecIssue(doc.file, doc.line_of("spec", "content") + setting.line, "spec.content", message))
    return issues


def _within_size(hosts: list[Document], by_kind: dict[str, dict[str, Document]], issues: list[SpecIssue]) -> bool:
    """Whether hosts x what each document selects stays within MAX_DESIRED_ITEMS, counted before anything is
    rendered (and no further than the limit: 3000 Hosts x 3000 Files stop after ~35 documents)."""
    total = 0
    for kind in ("File", "Unit", "HealthCheck", "Certificate"):
        for doc in by_kind[kind].values():
            weight = len(doc.spec.paths) if kind == "Certificate" else 1
            total += weight * sum(1 for h in hosts if selects(doc.spec.hosts, h.metadata.labels))
            if total > MAX_DESIRED_ITEMS:
                issues.append(
                    SpecIssue(
                        doc.file,
                        doc.line_of("spec", "hosts"),
                        "spec.hosts",
                        "the hosts' files, units, checks and "
                        f"certificate paths come to more than {MAX_DESIRED_ITEMS} with this "
                        "document (limit MAX_DESIRED_ITEMS)",
                    )
                )
                return False
    return True


def _check_hosts(hosts: list[Document], issues: list[SpecIssue]) -> None:
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
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)


def _check_units(doc: Document, issues: list[SpecIssue]) -> None:
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


def _check_references(by_kind: dict[str, dict[str, Document]], issues: list[SpecIssue]) -> None:
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
        _check_units(doc, issues)
        for i, name in enumerate(spec.restart_on):
            if name not in by_kind["File"]:
                issues.append(
                    SpecIssue(
                        doc.file, doc.line_of("spec", "restartOn", i), f"spec.restartOn[{i}]", f"no File named {name!r}"
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


def _local_path(value: str | None, doc: Document, spec_dir: Path) -> str | None:
    if value is None:
        return None
    try:
        path = Path(os.path.expanduser(value))
    except (ValueError, OSError):  # e.g. a NUL byte in "~user": left as written, refused when it is opened
        path = Path(value)
    return str(path if path.is_absolute() else (spec_dir.parent / doc.file).parent / path)


def _render_host(
    host: Document,
    by_kind: dict[str, dict[str, Document]],
    renderer: _Renderer,
    spec_dir: Path,
    issues: list[SpecIssue],
    tuning: DesiredTuning | None = None,
) -> DesiredHost:
    hs: HostSpec = host.spec
    name = host.metadata.name
    labels = host.metadata.labels
    target = Target(
        name=name,
        address=hs.address,
        port=hs.port,
        user=hs.user,
        identity_file=_local_path(hs.identity_file, host, spec_dir),
        known_hosts=_local_path(hs.known_hosts, host, spec_dir) or os.path.expanduser("~/.ssh/known_hosts"),
        unsafe_skip_host_key_verification=hs.unsafe_skip_host_key_verification,
    )

    def render(text: str, doc: Document, *loc: str) -> str:
        try:
            return rendered_or_reported(text, doc, *loc)
        except LoadExpired as exc:  # the whole load's wall clock, most likely spent in this template (or in
            # freeing what it built, or in reporting it: so caught out here)
            exc.locate(doc.file, doc.line_of(*loc), ".".join(loc), f"rendering for host {name!r}: ")
            raise

    def rendered_or_reported(text: str, doc: Document, *loc: str) -> str:
        if text in renderer.failed:  # reported for the first host it failed on; not worth trying again
            return ""
        sensitive = doc.kind == "File" and doc.spec.sensitive
        try:
            return renderer.render(text, host)
        except jinja2.TemplateSyntaxError as exc:
            key_line = doc.line_of(*loc)
            block = "\n" in text and key_line != doc.line  # a `key: |` block starts on the line after its key
            line = key_line + (exc.lineno if block else 0)
            renderer.failed[text] = "template syntax error" + (
                " (details withheld: the file is sensitive)" if sensitive else f": {exc.message}"
            )
            issues.append(SpecIssue(doc.file, line, ".".join(loc), renderer.failed[text]))
        except Exception as exc:  # whatever a template raises is the template's error, located, never a crash
            why = _render_failure(exc, sensitive=sensitive)
            issues.append(SpecIssue(doc.file, doc.line_of(*loc), ".".join(loc), f"rendering for host {name!r}: {why}"))
            if isinstance(exc, (RenderLimitError, RecursionError, MemoryError)):  # costly: once is enough
                renderer.failed[text] = why
        return ""

    files: dict[str, DesiredFile] = {}

    def add(df: DesiredFile, doc: Document, *loc: str) -> None:
        other = files.get(df.path)
        if other is not None:
            issues.append(
                SpecIssue(
                    doc.file,
                    doc.line_of(*loc),
                    ".".join(loc),
                    f"{df.path} on host {name!r} is also written by {other.source}",
                )
            )
            return
        files[df.path] = df

    file_paths: dict[str, str] = {}
    for doc in by_kind["File"].values():
        fs: FileSpec = doc.spec
        if not selects(fs.hosts, labels):
            continue
        source = f"File/{doc.metadata.name}"
        if fs.env is not None:
            body = MANAGED_HEADER.format(source=source)
            tuned = tuning.effective if tuning and doc.metadata.name == tuning.file else {}
            for key, value in fs.env.items():
                rendered = render(_env_text(tuned.get(key, value)), doc, "spec", "env", key)
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
                body += env_line(key, rendered) + "\n"
        else:
            body = render(fs.content or "", doc, "spec", "content")
        add(
            DesiredFile(fs.path, body.encode(), int(fs.effective_mode, 8), fs.owner, fs.group, fs.sensitive, source),
            doc,
            "spec",
            "path",
        )
        file_paths[doc.metadata.name] = fs.path

    checks: list[DesiredCheck] = []
    for doc in by_kind["HealthCheck"].values():
        cs: HealthCheckSpec = doc.spec
        if not selects(cs.hosts, labels):
            continue
        if cs.http is not None:
            url = render(cs.http.url, doc, "spec", "http", "url")
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
            tcp_host = render(cs.tcp.host, doc, "spec", "tcp", "host")
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
        if not selects(us.hosts, labels):
            continue
        uname = unit_name(doc.metadata.name)
        path = us.path or f"/etc/systemd/system/{uname}"
        add(
            DesiredFile(
                path,
                render(us.content, doc, "spec", "content").encode(),
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
            )
        )
    certificates: dict[str, DesiredCert] = {}
    for doc in by_kind["Certificate"].values():
        cert: CertificateSpec = doc.spec
        if selects(cert.hosts, labels):
            for path in cert.paths:
                certificates.setdefault(path, DesiredCert(path, cert.warn_days, f"Certificate/{doc.metadata.name}"))
    return DesiredHost(
        target=target, files=files, units=tuple(units), checks=tuple(checks), certificates=tuple(certificates.values())
    )


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


def _render_failure(exc: Exception, *, sensitive: bool) -> str:
    """What to say about a failed rendering: the limit or Jinja's message; only the kind of error for a sensitive
    file (a message such as "invalid literal for int(): 's3cret'" would carry its content)."""
    if isinstance(exc, RenderLimitError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "recursion too deep"
    if isinstance(exc, MemoryError):
        return "needs more memory than a spec load may use (limit MAX_LOAD_MEMORY_BYTES)"
    if sensitive:  # an undefined name, a security refusal, any message could quote what the template holds
        return f"{type(exc).__name__} (details withheld: the file is sensitive)"
    if isinstance(exc, (jinja2.UndefinedError, SecurityError)):
        return str(exc)[:200]
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _env_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
