"""Writing an `Adoption` as spec files people would keep in git: one file per component, a comment above every
document that is not simply shared, multi-line text as YAML literal blocks.

Pure (text in, text out): `spec_files` returns file name -> YAML text; each document is checked to read back
as exactly what was meant before it is returned (a ValueError otherwise). Used by `adopt.importer`.
"""

from __future__ import annotations

from typing import Any

import yaml

from reconciler.adopt.describe import Adoption, Doc
from reconciler.spec.model import API_VERSION

HEADERS = {
    "inventory.yaml": "The masters, as `reconciler import` found them. Labels select what each host gets.",
    "etcd.yaml": "etcd as it runs on the members: its unit, the env file it reads, its health check.",
    "kubernetes.yaml": "kube-apiserver, kube-controller-manager and kube-scheduler: units, the files they read, "
    "health checks.",
    "certificates.yaml": "Certificates the components use: reported (missing, days to expiry), never written.",
    "units.yaml": "Further units given with --unit, and the files they read.",
}
ORDER = ("inventory.yaml", "etcd.yaml", "kubernetes.yaml", "units.yaml", "certificates.yaml")
KIND_ORDER = ("Host", "Directory", "File", "Unit", "HealthCheck", "EtcdTuning", "Certificate")


class _Dumper(yaml.SafeDumper):
    pass


_YAML_BREAKS = ("\x85", "\u2028", "\u2029")  # line breaks to YAML 1.1, written raw by PyYAML unless double-quoted


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if any(c in value for c in _YAML_BREAKS):
        style: str | None = '"'
    else:  # PyYAML falls back to quoting where a block cannot hold the text
        style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class Flow(dict):  # type: ignore[type-arg]
    """A small mapping written on one line: `hosts: {matchLabels: {role: master}}`."""


class FlowList(list):  # type: ignore[type-arg]
    """A short list written on one line: `restartOn: [etcd-conf]`."""


class Quoted(str):
    """A string written in double quotes: `mode: "0644"`, as docs/specs.md writes modes (and warnings quote them)."""


def _flow(dumper: yaml.SafeDumper, value: dict[str, Any]) -> yaml.MappingNode:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value, flow_style=True)


def _flow_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(Flow, _flow)
_Dumper.add_representer(FlowList, _flow_list)
_Dumper.add_representer(
    Quoted, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style='"')
)


def _readable(spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    if isinstance(out.get("hosts"), dict):
        out["hosts"] = Flow(out["hosts"])
    if isinstance(out.get("http"), dict):
        out["http"] = Flow(out["http"])
    for key in ("restartOn", "paths"):
        if isinstance(out.get(key), list) and len(out[key]) <= 4:
            out[key] = FlowList(out[key])
    if isinstance(out.get("mode"), str):
        out["mode"] = Quoted(out["mode"])
    return out


def document(doc: Doc) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": doc.name}
    if doc.labels:
        metadata["labels"] = doc.labels
    return {"apiVersion": API_VERSION, "kind": doc.kind, "metadata": metadata, "spec": _readable(doc.spec)}


def _yaml(data: dict[str, Any]) -> str:
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100000, default_flow_style=False)
    if yaml.safe_load(text) != data:
        raise ValueError(f"{data['kind']}/{data['metadata']['name']} does not read back as written")
    return text


def _comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())


def spec_files(adoption: Adoption, source: str) -> dict[str, str]:
    """File name -> YAML text for every file the adoption fills."""
    out: dict[str, str] = {}
    names = sorted(adoption.files, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    for name in names:
        docs = sorted(adoption.files[name], key=lambda d: KIND_ORDER.index(d.kind))
        parts = [_comment(f"{HEADERS.get(name, '')}\nWritten by `reconciler import` from {source}.")]
        for i, doc in enumerate(docs):
            parts.append(("---\n" if i else "") + (_comment(doc.comment) if doc.comment else "") + _yaml(document(doc)))
        out[name] = "".join(parts)
    return out
