"""Reading a spec directory: YAML documents -> validated `Document`s, every error located.

Owns YAML parsing with line numbers, duplicate-key detection, the document envelope
(apiVersion/kind/metadata/spec) and mapping pydantic errors to file:line:field.
Called by `load_desired` (below), which adds the cross-document checks of `spec.render`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from reconciler.errors import SpecError, SpecIssue
from reconciler.spec.cache import SpecCache
from reconciler.spec.desired import DesiredState
from reconciler.spec.model import API_VERSION, SPEC_MODELS, Document, Metadata

# libyaml's parser when PyYAML was built with it (the wheels are): ~4x faster than the pure-Python one,
# same nodes and marks (lines) for error messages.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Loc = tuple[str | int, ...]


def spec_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise SpecError([SpecIssue(str(directory), 0, "", "spec directory does not exist")])
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _to_python(node: yaml.Node, loc: Loc, lines: dict[Loc, int], issues: list[SpecIssue], file: str,
               loader: yaml.SafeLoader) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                issues.append(SpecIssue(file, key_node.start_mark.line + 1, _dotted(loc), "mapping keys must be scalars"))
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                issues.append(SpecIssue(file, key_node.start_mark.line + 1, _dotted(loc + (key,)), "duplicate key"))
                continue
            lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, loc + (key,), lines, issues, file, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, loc + (i,), lines, issues, file, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_documents(text: str, display: str) -> tuple[list[Document], list[SpecIssue]]:
    """Parse one YAML file's text into documents (envelope and spec validated)."""
    issues: list[SpecIssue] = []
    docs: list[Document] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=_COMPOSER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        return [], [SpecIssue(display, line, "", f"YAML syntax error: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return [], [SpecIssue(display, 0, "", f"cannot read: {exc}")]
    for node in nodes:
        if node is None:
            continue
        lines: dict[Loc, int] = {}
        # Scalars are built by YAML's safe rules with a constructor that lives for this document only: a
        # shared SafeLoader keeps every node it ever built in `constructed_objects`, with the file text
        # behind them (the daemon reloading specs leaked ~300 KB per edit that way).
        loader = yaml.SafeLoader("")
        try:
            raw = _to_python(node, (), lines, issues, display, loader)
        except yaml.YAMLError as exc:  # e.g. a bare "=" resolves to a tag the safe loader cannot build
            mark = getattr(exc, "problem_mark", None) or node.start_mark
            issues.append(SpecIssue(display, mark.line + 1, "", f"YAML value not allowed: {getattr(exc, 'problem', exc)}"))
            continue
        doc = _document(raw, lines, display, node.start_mark.line + 1, issues)
        if doc is not None:
            docs.append(doc)
    return docs, issues


def _document(raw: Any, lines: dict[Loc, int], file: str, line: int, issues: list[SpecIssue]) -> Document | None:
    def issue(loc: Loc, message: str) -> None:
        where = next((lines[loc[:c]] for c in range(len(loc), 0, -1) if loc[:c] in lines), line)
        issues.append(SpecIssue(file, where, _dotted(loc), message))

    if not isinstance(raw, dict):
        issue((), "a document must be a mapping with apiVersion, kind, metadata and spec")
        return None
    before = len(issues)
    for key in raw.keys() - {"apiVersion", "kind", "metadata", "spec"}:
        issue((key,), "unknown field (expected apiVersion, kind, metadata, spec)")
    if raw.get("apiVersion") != API_VERSION:
        issue(("apiVersion",), f"must be {API_VERSION!r}, got {raw.get('apiVersion')!r}")
    kind = raw.get("kind")
    model = SPEC_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        issue(("kind",), f"unknown kind {kind!r} (expected one of {', '.join(SPEC_MODELS)})")
    metadata = spec = None
    try:
        metadata = Metadata.model_validate(raw.get("metadata", {}))
    except ValidationError as exc:
        _report(exc, ("metadata",), issue)
    if "spec" not in raw:
        issue(("spec",), "missing field")
    elif model is not None:
        try:
            spec = model.model_validate(raw["spec"] if raw["spec"] is not None else {})
        except ValidationError as exc:
            _report(exc, ("spec",), issue)
    if len(issues) > before or metadata is None or spec is None:
        return None
    return Document(kind=kind, metadata=metadata, spec=spec, file=file, line=line, lines=lines)


def _report(exc: ValidationError, prefix: Loc, issue: Any) -> None:
    merged: dict[Loc, list[str]] = {}
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not _is_union_tag(p))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "missing field"
        if message not in merged.setdefault(loc, []):
            merged[loc].append(message)
    for loc, messages in merged.items():
        issue(loc, "; or ".join(messages))


_UNION_TAGS = {"str", "int", "float", "bool", "MatchLabels"}


def _is_union_tag(part: str | int) -> bool:
    # pydantic names the union member in the location ("literal['all']", "MatchLabels"); operators never wrote it.
    return isinstance(part, str) and (part in _UNION_TAGS or part.startswith(("literal[", "function-")))


def load_documents(directory: Path, cache: SpecCache | None = None) -> list[Document]:
    """All documents in the directory; raises SpecError listing every problem.

    With a cache, a file whose text is unchanged since the last load is not parsed again.
    """
    issues: list[SpecIssue] = []
    docs: list[Document] = []
    base = directory.parent
    parsed: dict[str, tuple[str, Any]] = {}
    for path in spec_files(directory):
        display = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(SpecIssue(display, 0, "", f"cannot read: {exc}"))
            continue
        known = cache.parsed.get(display) if cache else None
        found, problems = known[1] if known and known[0] == text else parse_documents(text, display)
        parsed[display] = (text, (found, problems))
        docs.extend(found)
        issues.extend(problems)
    if cache is not None:
        cache.parsed = parsed
    if issues:
        raise SpecError(issues)
    if not docs:
        raise SpecError([SpecIssue(str(directory), 0, "", "no spec documents found (*.yaml, *.yml)")])
    return docs


def load_desired(directory: Path, overlay: Mapping[str, int] | None = None,
                 cache: SpecCache | None = None) -> DesiredState:
    """Spec directory (plus the etcd tuner's overlay, if any) -> DesiredState for every host, or SpecError.

    The daemon passes the same `cache` to every load, so a reload renders only what changed.
    """
    from reconciler.spec.render import build_desired

    return build_desired(load_documents(directory, cache), spec_dir=directory, overlay=overlay, cache=cache)
