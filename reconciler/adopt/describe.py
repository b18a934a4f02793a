"""From what the hosts hold to spec documents: one document for what all hosts share, a template over `host`
for what differs only by each host's name and address, per-host documents for what differs otherwise.

Pure. Input: each host's `FoundHost` (adopt.discover) and how it is reached; output: documents as plain data
(`Doc`), grouped into the files `adopt.emit` writes, the problems that keep the import from being exact, and
warnings: what import copied exactly but should not stay so (a secret others can read, a secret in a unit file).
A sensitive file is described as its host has it, mode included (`wideMode` where others than its owner may read
it); never a word of what it holds in a comment, problem or warning.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.adopt.discover import FoundFile, FoundHost, FoundUnit, etcd_options
from reconciler.adopt.templating import literal, template_for
from reconciler.components import kube
from reconciler.components.etcd import ELECTION_KEY, HEARTBEAT_KEY, MIN_ELECTION_FACTOR
from reconciler.components.systemd import Service
from reconciler.spec.etcd_tuning import content_timings
from reconciler.spec.model import NAME_RE, unit_name

MEMBER = ("etcd", "member")
ROLE = ("role", "master")
HOST_LABEL = "host"


@dataclass
class Doc:
    kind: str
    name: str
    spec: dict[str, Any]
    comment: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostInfo:
    name: str
    address: str
    labels: dict[str, str]
    spec: dict[str, Any]  # the Host document's spec as it will be written


@dataclass
class Adoption:
    files: dict[str, list[Doc]] = field(default_factory=dict)  # output file name -> documents
    problems: list[str] = field(default_factory=list)  # what import cannot describe exactly
    notes: list[str] = field(default_factory=list)  # what it left out on purpose
    warnings: list[str] = field(default_factory=list)  # described exactly, but should not stay so
    private: set[str] = field(default_factory=set)  # output files holding a secret (written 0600)

    def add(self, file: str, doc: Doc) -> None:
        self.files.setdefault(file, []).append(doc)


def doc_name(text: str) -> str:
    """A document name from a path or unit: lower case, [-a-z0-9.], at most 63 characters."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")[:63].strip("-.")
    return name if re.fullmatch(NAME_RE, name) else "imported"


def file_doc_name(path: str) -> str:
    """/etc/kubernetes/apiserver -> kubernetes-apiserver; /etc/etcd/etcd.conf -> etcd-conf."""
    parent, base = posixpath.basename(posixpath.dirname(path)), posixpath.basename(path)
    base = base.replace(".", "-")
    return doc_name(base if base.startswith(parent) or not parent else f"{parent}-{base}")


_TEMPLATE_WHY = "differs between hosts only by each host's name and address: a template"
_SWITCH_WHY = "differs between hosts: the lines that differ are chosen by host name ({% if host.name == ... %})"


class _Grouper:
    """Decides, for one resource found on some hosts, which documents describe it."""

    def __init__(self, hosts: list[HostInfo]):
        self.hosts = {h.name: h for h in hosts}
        self.labels_needed: set[str] = set()  # hosts that need their `host: NAME` label

    def selector(self, names: list[str], members: set[str], etcd: bool = False) -> Any:
        """A selector for exactly these hosts by the labels they will have (`_labels`), or None."""
        labels = _labels(list(self.hosts.values()), members, set())
        role_everywhere = all(lb.get(ROLE[0]) == ROLE[1] for lb in labels.values())
        # the member label selects exactly the members only if no other host already carries it
        member_label = {h for h, lb in labels.items() if lb.get(MEMBER[0]) == MEMBER[1]} == members
        if etcd and set(names) == members and member_label:
            return {"matchLabels": {MEMBER[0]: MEMBER[1]}}
        if set(names) == set(self.hosts):
            return {"matchLabels": {ROLE[0]: ROLE[1]}} if role_everywhere else "all"
        if set(names) == members and members and member_label:
            return {"matchLabels": {MEMBER[0]: MEMBER[1]}}
        return None

    def group(
        self,
        base: str,
        found: Mapping[str, dict[str, Any]],
        text_key: str | None,
        members: set[str],
        *,
        switch: bool = False,
        etcd: bool = False,
    ) -> list[tuple[str, dict[str, Any], str, list[str]]]:
        """(document name, spec, comment, hosts it selects) for a resource whose per-host spec is `found` (host -> spec); the field
        `text_key` (content, or a URL) may become a template over the host's name and address."""
        names = sorted(found)
        plain = [{k: v for k, v in spec.items() if k != text_key} for spec in found.values()]
        selector = self.selector(names, members, etcd)
        if selector is not None and all(p == plain[0] for p in plain):
            if text_key is None:
                return [(base, {"hosts": selector, **plain[0]}, "", names)]
            texts = {h: found[h][text_key] for h in names}
            values = {h: (h, self.hosts[h].address) for h in names}
            template = template_for(texts, values)
            if template is None and switch:
                template = template_for(texts, values, switch=True)
            if template is not None:
                why = "" if len(set(texts.values())) == 1 else _TEMPLATE_WHY
                if "{% if host.name" in template:
                    why = _SWITCH_WHY
                return [(base, {"hosts": selector, **plain[0], text_key: template}, why, names)]
        out = []
        for h in names:
            self.labels_needed.add(h)
            spec = dict(found[h])
            if text_key is not None:
                spec[text_key] = literal(spec[text_key])
            why = (
                f"only on {h}" if len(names) == 1 else f"{h}'s own: the hosts differ here by more than name and address"
            )
            out.append((doc_name(f"{base}-{h}"), {"hosts": {"matchLabels": {HOST_LABEL: h}}, **spec}, why, [h]))
        return out


def _text(f: FoundFile, where: str, problems: list[str]) -> str | None:
    try:
        text = f.content.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{where}: {f.path} is not UTF-8 text; a File's content is text")
        return None
    if "\x00" in text:
        problems.append(f"{where}: {f.path} holds a NUL byte")
        return None
    return text


def _file_spec(f: FoundFile, sensitive: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"path": f.path}
    default_mode = 0o600 if sensitive else 0o644
    if f.mode != default_mode:
        spec["mode"] = f"{f.mode:04o}"
    if f.owner != "root":
        spec["owner"] = f.owner
    if f.group != "root":
        spec["group"] = f.group
    if sensitive:
        spec["sensitive"] = True
        if f.mode & 0o077:  # as the host has it: a sensitive file's mode is owner-only unless the spec says so
            spec["wideMode"] = True
    return spec


def tighter_mode(mode: int, group: str) -> int:
    """The mode a secret others can read should have: owner-only, or owner and group for a group of its own
    (a service's group reads it: `root:etcd 0640`)."""
    return mode & (0o7700 if group == "root" else 0o7750)


def _open_secret(name: str, spec: dict[str, Any], hosts: list[str], file: str) -> tuple[str, str] | None:
    """(the document's comment, a warning) for a sensitive File others can read on its hosts; None otherwise."""
    mode = int(spec.get("mode", "0600"), 8)
    if not (spec.get("sensitive") and mode & 0o006):
        return None
    tight = f'mode: "{tighter_mode(mode, spec.get("group", "root")):04o}"'
    path, can = spec["path"], "read" if mode & 0o004 else "write"
    comment = (
        f"holds secrets, but others can {can} it on the host (mode {mode:04o}): copied as it is (wideMode);\n"
        f"tighten it: {tight} here, and apply (only its mode changes: one attrs change, no restart)"
    )
    warning = (
        f"{', '.join(hosts)}: {path} holds secrets but others can {can} it (mode {mode:04o}); imported as it is. "
        f"Tighten it with one line in {file}, File/{name}: {tight} (plan then shows one attrs change, no restart)"
    )
    return comment, warning


def _component_file(unit: str) -> str:
    return "etcd.yaml" if unit == "etcd.service" else "kubernetes.yaml" if unit.startswith("kube-") else "units.yaml"


def _check(svc: Service, address: str) -> dict[str, Any] | None:
    """A HealthCheck spec for the seed's components, from their flags (None for other programs)."""
    flags = {k: s.value for k, s in svc.flags().items()}
    program = svc.program
    if program == "etcd":
        config = etcd_options(svc)
        urls = [u for u in config.get("advertise-client-urls", "").split(",") if u]
        if not urls:
            return None
        http: dict[str, Any] = {"url": urls[0].rstrip("/") + "/health"}
        if urls[0].startswith("https:"):
            for option, key in (("trusted-ca-file", "caFile"), ("cert-file", "certFile"), ("key-file", "keyFile")):
                if config.get(option):
                    http[key] = config[option]
        return {"http": http, "timeoutSeconds": 3}
    if program == kube.APISERVER:
        port = flags.get("insecure-port", flags.get("port", "8080"))
        if port != "0":
            host = flags.get("insecure-bind-address", "127.0.0.1")
            return {"http": {"url": f"http://{host}:{port}/healthz"}}
        host = flags.get("bind-address", address)
        http = {"url": f"https://{host}:{flags.get('secure-port', '6443')}/healthz"}
        if flags.get("client-ca-file"):
            http["caFile"] = flags["client-ca-file"]
        return {"http": http}
    defaults = {kube.CONTROLLER_MANAGER: "10252", "kube-scheduler": "10251"}
    if program in defaults:
        port = flags.get("port", defaults[program])
        if port == "0":
            return None
        host = flags.get("address", "127.0.0.1")
        return {"http": {"url": f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/healthz"}}
    return None


def describe(hosts: list[HostInfo], found: Mapping[str, FoundHost]) -> Adoption:
    out = Adoption()
    for info in hosts:
        out.problems += [f"{info.name}: {p}" for p in found[info.name].problems]
    ctx = _Context(out, found, _Grouper(hosts), {h for h, f in found.items() if "etcd.service" in f.units})
    file_names = _files(ctx)
    _directories(ctx)
    check_names = _health_checks(ctx)
    _units(ctx, file_names, check_names)
    _certificates(ctx)
    _tuning(out, file_names, found)
    labels = _labels(hosts, ctx.members, ctx.grouper.labels_needed)
    out.files["inventory.yaml"] = [
        Doc("Host", h.name, h.spec, labels=labels[h.name]) for h in sorted(hosts, key=lambda h: h.name)
    ]
    return out


@dataclass
class _Context:
    out: Adoption
    found: Mapping[str, FoundHost]
    grouper: _Grouper
    members: set[str]  # hosts running etcd


def _files(ctx: _Context) -> dict[str, list[str]]:
    """File documents for what the units read; returns path -> the documents describing it."""
    file_names: dict[str, list[str]] = {}
    unit_files = {u.fragment_path for f in ctx.found.values() for u in f.units.values()}
    readers: dict[str, str] = {}  # path -> the first unit reading it (whose component file holds it)
    for f in ctx.found.values():
        for unit, paths in f.reads.items():
            for p in paths:
                readers.setdefault(p, unit)
    used: set[str] = set()  # File names taken (two paths may look alike: /etc/a/config, /srv/a/config)
    for path in sorted(set(readers) - unit_files):
        per_host: dict[str, dict[str, Any]] = {}
        for host, f in ctx.found.items():
            got = f.files.get(path)
            if got is None:
                continue
            if not got.ok:
                if got.state != "missing":  # a missing env file is a unit's optional one ("-/path"): nothing
                    ctx.out.problems.append(f"{host}: {path} {got.why()}")
                continue
            text = _text(got, host, ctx.out.problems)
            if text is not None:
                per_host[host] = {**_file_spec(got, path in f.sensitive), "content": text}
        if not per_host:
            continue
        etcd = readers[path] == "etcd.service"
        base = file_doc_name(path)
        base = next(n for n in (base, *(f"{base[:59]}-{i}" for i in range(2, 10000))) if n not in used)
        file = _component_file(readers[path])
        for name, spec, why, selected in ctx.grouper.group(base, per_host, "content", ctx.members, etcd=etcd):
            used.add(name)
            file_names.setdefault(path, []).append(name)
            if spec.get("sensitive"):
                ctx.out.private.add(file)
            said = _open_secret(name, spec, selected, file)
            if said is not None:
                why = f"{why}\n{said[0]}" if why else said[0]
                ctx.out.warnings.append(said[1])
            ctx.out.add(file, Doc("File", name, spec, why))
    return file_names


def _directories(ctx: _Context) -> None:
    """Directory documents for where the units work (WorkingDirectory=, etcd's data directory), as they are."""
    owner: dict[str, str] = {}  # path -> the first unit working in it
    for f in ctx.found.values():
        for unit, dirs in f.directories.items():
            for d in dirs:
                owner.setdefault(d, unit)
    for path in sorted(owner):
        per_host: dict[str, dict[str, Any]] = {}
        for host, f in ctx.found.items():
            got = f.files.get(path)
            if got is None or got.state == "missing":
                continue
            if got.state != "dir":
                why = "is a regular file, not a directory" if got.ok else got.why()
                ctx.out.problems.append(f"{host}: {path} {why}")
                continue
            spec: dict[str, Any] = {"path": path}
            if got.mode != 0o755:
                spec["mode"] = f"{got.mode:04o}"
            if got.mode & 0o7000:
                spec["specialBits"] = True
            if got.owner != "root":
                spec["owner"] = got.owner
            if got.group != "root":
                spec["group"] = got.group
            per_host[host] = spec
        etcd = owner[path] == "etcd.service"
        for name, spec, why, _ in ctx.grouper.group(doc_name(path), per_host, None, ctx.members, etcd=etcd):
            ctx.out.add(_component_file(owner[path]), Doc("Directory", name, spec, why))


def _health_checks(ctx: _Context) -> dict[str, dict[str, str]]:
    """HealthCheck documents from the components' flags; returns unit -> host -> the check's name."""
    checks: dict[str, dict[str, dict[str, Any]]] = {}
    for host, f in ctx.found.items():
        for unit, svc in f.services.items():
            check = _check(svc, ctx.grouper.hosts[host].address)
            if check is not None:
                checks.setdefault(unit, {})[host] = check
    names: dict[str, dict[str, str]] = {}
    for unit, per_host in sorted(checks.items()):
        flat = {h: {**{k: v for k, v in c.items() if k != "http"}, **c["http"]} for h, c in per_host.items()}
        base, etcd = doc_name(unit.removesuffix(".service")), unit == "etcd.service"
        for name, spec, why, selected in ctx.grouper.group(base, flat, "url", ctx.members, etcd=etcd):
            http = {k: spec.pop(k) for k in ("url", "caFile", "certFile", "keyFile") if k in spec}
            for host in selected:
                names.setdefault(unit, {})[host] = name
            hosts = spec.pop("hosts")
            ctx.out.add(_component_file(unit), Doc("HealthCheck", name, {"hosts": hosts, "http": http, **spec}, why))
    return names


def _unit_spec(ctx: _Context, host: str, u: FoundUnit) -> dict[str, Any] | None:
    f = ctx.found[host]
    frag = f.files.get(u.fragment_path)
    if frag is None or not frag.ok:
        if frag is not None:
            ctx.out.problems.append(f"{host}: unit {u.name}: {u.fragment_path} {frag.why()}")
        return None
    text = _text(frag, host, ctx.out.problems)
    if text is None:
        return None
    spec: dict[str, Any] = {}
    if u.fragment_path != f"/etc/systemd/system/{u.name}":
        spec["path"] = u.fragment_path
    if u.unit_file_state not in ("enabled", "static", "generated"):
        spec["enabled"] = False
    if u.active_state != "active":
        spec["state"] = "stopped"
    return {**spec, "content": text}


def _units(ctx: _Context, file_names: dict[str, list[str]], check_names: dict[str, dict[str, str]]) -> None:
    """One Unit document per unit (its name is the unit's), restarted by the File documents it reads."""
    units: dict[str, dict[str, dict[str, Any]]] = {}
    restart_on: dict[str, list[str]] = {}  # unit -> the File documents it reads on any host
    rollout_checks: dict[str, set[str | None]] = {}
    secrets: dict[str, list[str]] = {}  # unit -> where its file holds what looks like a secret
    for host, f in ctx.found.items():
        for u in f.units.values():
            spec = _unit_spec(ctx, host, u)
            if spec is None:
                continue
            restart_on.setdefault(u.name, [])
            restart_on[u.name] += [n for p in f.reads.get(u.name, ()) for n in file_names.get(p, [])]
            rollout_checks.setdefault(u.name, set()).add(check_names.get(u.name, {}).get(host))
            units.setdefault(u.name, {})[host] = spec
            if u.fragment_path in f.unit_secrets:
                secrets.setdefault(u.name, []).append(f"{host}: {u.fragment_path} {f.unit_secrets[u.fragment_path]}")
    for unit, per_host in sorted(units.items()):
        base = doc_name(unit.removesuffix(".service")) if unit.endswith(".service") else doc_name(unit)
        if unit_name(base) != unit:
            ctx.out.problems.append(f"unit {unit}: a Unit document cannot name it (names are [a-z0-9.-])")
            continue
        docs = ctx.grouper.group(base, per_host, "content", ctx.members, switch=True, etcd=unit == "etcd.service")
        if len(docs) > 1:  # a Unit document's name is the unit's: one document must serve every host
            ctx.out.problems.append(
                f"unit {unit} differs between hosts in more than its text (path, enablement or state): "
                + ", ".join(sorted(per_host))
            )
            continue
        _, spec, why, _ = docs[0]
        if restart_on.get(unit):
            spec["restartOn"] = list(dict.fromkeys(restart_on[unit]))
        gates = rollout_checks.get(unit, set())
        if unit == "etcd.service" and len(gates) == 1 and None not in gates:
            spec["rollout"] = {"strategy": "OneAtATime", "healthCheck": gates.pop(), "timeoutSeconds": 120}
        elif unit == "etcd.service":
            ctx.out.problems.append("etcd.service: no one HealthCheck for all its members; its rollout cannot be gated")
        if unit in secrets:  # a Unit cannot be sensitive: its text shows in plan's diffs
            ctx.out.private.add(_component_file(unit))
            ctx.out.warnings.append(
                f"unit {unit}: " + "; ".join(secrets[unit]) + ": a unit file is no place for a secret (plan shows "
                "its lines when they change); move it into a drop-in or an EnvironmentFile= only its owner can "
                "read, which import then marks sensitive"
            )
        ctx.out.add(_component_file(unit), Doc("Unit", base, _ordered(spec), why))


def _ordered(spec: dict[str, Any]) -> dict[str, Any]:
    """A Unit's fields in the order people read them: where, when, then the text."""
    order = ("hosts", "path", "enabled", "state", "restartOn", "rollout", "content")
    return {k: spec[k] for k in order if k in spec}


def _labels(hosts: list[HostInfo], members: set[str], need_host: set[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for h in hosts:
        labels = dict(h.labels)
        labels.setdefault(*ROLE)
        if h.name in members:
            labels.setdefault(*MEMBER)
        if h.name in need_host:
            labels[HOST_LABEL] = h.name
        out[h.name] = labels
    return out


def _certificates(ctx: _Context) -> None:
    found, grouper, members, out = ctx.found, ctx.grouper, ctx.members, ctx.out
    per_host = {h: set(f.certificates) for h, f in found.items() if f.certificates}
    if not per_host:
        return
    shared = set.intersection(*per_host.values()) if len(per_host) == len(found) else set()
    if shared:
        selector = grouper.selector(sorted(found), members)
        out.add("certificates.yaml", Doc("Certificate", "certificates", {"hosts": selector, "paths": sorted(shared)}))
    for h, paths in sorted(per_host.items()):
        if paths - shared:
            grouper.labels_needed.add(h)
            out.add(
                "certificates.yaml",
                Doc(
                    "Certificate",
                    doc_name(f"certificates-{h}"),
                    {"hosts": {"matchLabels": {HOST_LABEL: h}}, "paths": sorted(paths - shared)},
                    f"only on {h}",
                ),
            )


def _tuning(out: Adoption, file_names: dict[str, list[str]], found: Mapping[str, FoundHost]) -> None:
    """An EtcdTuning document when the etcd members' env file is one document holding both timings."""
    conf = {p for f in found.values() for p in f.reads.get("etcd.service", ())}
    docs = [n for p in sorted(conf) for n in file_names.get(p, [])]
    etcd_units = [d for d in out.files.get("etcd.yaml", []) if d.kind == "Unit" and unit_name(d.name) == "etcd.service"]
    holding = [
        d
        for d in out.files.get("etcd.yaml", [])
        if d.kind == "File" and d.name in docs and _holds_timings(str(d.spec.get("content", "")))
    ]
    if len(etcd_units) == 1 and "rollout" in etcd_units[0].spec and len(holding) == 1:
        out.add(
            "etcd.yaml",
            Doc(
                "EtcdTuning",
                "etcd",
                {"unit": etcd_units[0].name, "file": holding[0].name},
                "raises the two timings in place (one member at a time) when etcd logs that it is overloaded",
            ),
        )
    elif found and any("etcd.service" in f.units for f in found.values()):
        out.notes.append(
            "no EtcdTuning document: the etcd members' env file is not one document with literal "
            f"{HEARTBEAT_KEY}=<ms> and {ELECTION_KEY}=<ms> lines that etcd accepts (election >= 5 x heartbeat)"
        )


def _holds_timings(content: str) -> bool:
    """Both timings as literal lines, with values etcd (and the loader) accept."""
    timings = content_timings(content)
    heartbeat, election = timings.get(HEARTBEAT_KEY, 0), timings.get(ELECTION_KEY, 0)
    return heartbeat > 0 and election >= MIN_ELECTION_FACTOR * heartbeat
