"""Reading a spec directory: YAML documents -> validated `Document`s, every error located.

Owns YAML parsing with line numbers, duplicate-key detection, the document envelope
(apiVersion/kind/metadata/spec) and mapping pydantic errors to file:line:field.
Called by `spec.isolate.load_desired`, which adds the cross-document checks of `spec.render`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from reconciler.errors import SpecError, SpecIssue
from reconciler.spec.cache import SpecCache
from reconciler.spec.limits import (
    MAX_NUMBER_CHARS,
    MAX_SPEC_BYTES,
    MAX_SPEC_DIR_ENTRIES,
    MAX_SPEC_FILE_BYTES,
    MAX_SPEC_FILES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    LoadExpired,
)
from reconciler.spec.model import API_VERSION, SPEC_MODELS, Document, Metadata

# libyaml's parser when PyYAML was built with it (the wheels are): ~4x faster than the pure-Python one,
# same nodes and marks (lines) for error messages.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_INT, _FLOAT, _STR = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:str"

Loc = tuple[str | int, ...]


def spec_files(directory: Path) -> list[Path]:
    """The *.yaml and *.yml regular files under the directory, sorted; links are not followed, and no more than
    MAX_SPEC_DIR_ENTRIES entries of any kind are looked at."""
    if not directory.is_dir():
        why = "spec directory does not exist"
        if directory.is_file():  # `reconciler validate specs/etcd.yaml`
            why = f"is a file; give the directory of specs it is in ({directory.parent}): every *.yaml there is read"
        elif directory.exists():
            why = "is not a directory"
        raise SpecError([SpecIssue(str(directory), 0, "", why)])
    found: list[Path] = []
    pending, seen = [directory], 0
    try:
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > MAX_SPEC_DIR_ENTRIES:
                        raise SpecError(
                            [
                                SpecIssue(
                                    str(directory),
                                    0,
                                    "",
                                    f"more than {MAX_SPEC_DIR_ENTRIES} files "
                                    "and directories under the spec directory (limit "
                                    "MAX_SPEC_DIR_ENTRIES)",
                                )
                            ]
                        )
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                    elif entry.name.endswith((".yaml", ".yml")) and _regular(entry):
                        found.append(Path(entry.path))
    except OSError as exc:  # a path past PATH_MAX, a directory that went away
        raise SpecError(
            [SpecIssue(str(directory), 0, "", f"cannot list the spec files: {type(exc).__name__}")]
        ) from None
    return sorted(found)


def _regular(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=True)
    except OSError:  # a link to itself
        return False


def read_spec_file(path: Path, display: str, budget: int = MAX_SPEC_BYTES) -> tuple[str | None, SpecIssue | None]:
    """A spec file's text, read no further than the limits allow (a 10 GB file costs nothing)."""
    try:  # O_NONBLOCK: a file swapped for a fifo after it was listed is refused, not waited on forever
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None, SpecIssue(display, 0, "", "not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(min(MAX_SPEC_FILE_BYTES, budget) + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        return None, SpecIssue(display, 0, "", f"cannot read: {exc.strerror or type(exc).__name__}")
    if len(data) > MAX_SPEC_FILE_BYTES:
        return None, SpecIssue(display, 0, "", f"larger than {MAX_SPEC_FILE_BYTES} bytes (limit MAX_SPEC_FILE_BYTES)")
    if len(data) > budget:
        return None, SpecIssue(
            display, 0, "", f"the spec files together are larger than {MAX_SPEC_BYTES} bytes (limit MAX_SPEC_BYTES)"
        )
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, SpecIssue(display, line, "", f"not UTF-8 text (byte {exc.start})")


class _TooBig(Exception):
    """A document went past one of the YAML limits; carries the line where it happened."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


class _Builder:
    """YAML nodes -> Python values with the line of every field, counting values as aliases expand them.

    One per load, so MAX_YAML_NODES bounds the whole directory; scalars are built by YAML's safe rules with a
    constructor that lives for one document only (a shared SafeLoader keeps every node it ever built in
    `constructed_objects`, with the file text behind them: the daemon leaked ~300 KB per edit that way).
    """

    def __init__(self) -> None:
        self.nodes = 0

    def document(self, node: yaml.Node, lines: dict[Loc, int], issues: list[SpecIssue], file: str) -> Any:
        self.lines, self.issues, self.file = lines, issues, file
        self.loader = yaml.SafeLoader("")
        return self._value(node, (), 0)

    def _value(self, node: yaml.Node, loc: Loc, depth: int) -> Any:
        self._count(node)
        if depth > MAX_YAML_DEPTH:
            raise _TooBig(
                node.start_mark.line + 1,
                f"lists and maps nested deeper than {MAX_YAML_DEPTH} levels (limit MAX_YAML_DEPTH)",
            )
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                self._count(key_node)  # keys are values too (duplicates and aliases included)
                if not isinstance(key_node, yaml.ScalarNode):
                    self.issues.append(
                        SpecIssue(self.file, key_node.start_mark.line + 1, _dotted(loc), "mapping keys must be scalars")
                    )
                    continue
                key = self._scalar(key_node)
                if not isinstance(key, (str, int, float, bool)):
                    self.issues.append(
                        SpecIssue(self.file, key_node.start_mark.line + 1, _dotted(loc), "mapping keys must be scalars")
                    )
                    continue
                key = str(key) if not isinstance(key, str) else key
                if key in out:
                    self.issues.append(
                        SpecIssue(self.file, key_node.start_mark.line + 1, _dotted(loc + (key[:100],)), "duplicate key")
                    )
                    continue
                self.lines[loc + (key,)] = key_node.start_mark.line + 1
                out[key] = self._value(value_node, loc + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(item, loc + (i,), depth + 1) for i, item in enumerate(node.value)]
        if _kept_as_written(loc) and isinstance(node, yaml.ScalarNode) and not node.style:  # plain: None or ""
            return node.value if loc == ("spec", "mode") else self._as_written(node)
        return self._scalar(node)

    def _as_written(self, node: yaml.ScalarNode) -> Any:
        """An unquoted env value, where the text is what the user means: YAML 1.1 reads `0644`
        as 420, `1:30` as 90, `on` as true, `1e3` as 1000.0 and an empty value as null; the text is kept unless
        the value reads as itself (`100`, `true`, `1.5`)."""
        value = self._scalar(node)
        if isinstance(value, bool):
            return value if node.value in ("true", "false") else node.value
        if isinstance(value, int | float) and str(value) == node.value:
            return value
        return node.value

    def _count(self, node: yaml.Node) -> None:
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES:
            raise _TooBig(
                node.start_mark.line + 1,
                f"more than {MAX_YAML_NODES} YAML values in the spec directory "
                "(aliases count each time they are used; limit MAX_YAML_NODES)",
            )

    def _scalar(self, node: yaml.Node) -> Any:
        """A scalar by YAML's safe rules; a number longer than any spec needs is refused before it is built
        (YAML 1.1's base-60 integers `1:59:59:...` are built in quadratic time)."""
        if node.tag == _STR and isinstance(node, yaml.ScalarNode):
            return node.value  # what the safe constructor gives for a string, without its bookkeeping
        if node.tag in (_INT, _FLOAT) and len(str(node.value)) > MAX_NUMBER_CHARS:
            raise _TooBig(
                node.start_mark.line + 1,
                f"a number of more than {MAX_NUMBER_CHARS} characters (limit MAX_NUMBER_CHARS)",
            )
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # e.g. Python's limit on digits of an int
            raise _TooBig(node.start_mark.line + 1, f"YAML value not allowed: {type(exc).__name__}") from None


def _kept_as_written(loc: Loc) -> bool:
    """Where an unquoted value keeps the text written: a File's env values and any document's mode."""
    return loc == ("spec", "mode") or (len(loc) == 3 and loc[:2] == ("spec", "env"))


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_documents(text: str, display: str, builder: _Builder | None = None) -> tuple[list[Document], list[SpecIssue]]:
    """Parse one YAML file's text into documents (envelope and spec validated). Never raises but LoadExpired
    (located at the file): whatever goes wrong, however hostile the text, is a located issue."""
    try:
        return _parsed_or_reported(text, display, builder or _Builder())
    except LoadExpired as exc:  # caught out here: it may fire in a handler below, or while freeing nodes
        exc.locate(display, 0, "", "reading this file: ")
        raise


def _parsed_or_reported(text: str, display: str, builder: _Builder) -> tuple[list[Document], list[SpecIssue]]:
    try:
        return _parse_documents(text, display, builder)
    except _TooBig as exc:
        return [], [SpecIssue(display, exc.line, "", str(exc))]
    except MemoryError:
        return [], [
            SpecIssue(
                display, 0, "", "reading it needs more memory than a spec load may use (limit MAX_LOAD_MEMORY_BYTES)"
            )
        ]
    except RecursionError:
        return [], [SpecIssue(display, 0, "", "too deeply nested to read (RecursionError)")]
    except Exception as exc:  # a parser bug must not stop the daemon: the file is reported, never trusted
        return [], [SpecIssue(display, 0, "", f"cannot read: {type(exc).__name__}")]


def _parse_documents(text: str, display: str, builder: _Builder) -> tuple[list[Document], list[SpecIssue]]:
    issues: list[SpecIssue] = []
    docs: list[Document] = []
    try:
        _count_events(text, builder)
        nodes = list(yaml.compose_all(text, Loader=_COMPOSER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        return [], [SpecIssue(display, line, "", f"YAML syntax error: {exc.problem or type(exc).__name__}")]
    except yaml.YAMLError as exc:
        return [], [SpecIssue(display, 0, "", f"cannot read: {type(exc).__name__}")]
    for node in nodes:
        if node is None:
            continue
        lines: dict[Loc, int] = {}
        try:
            raw = builder.document(node, lines, issues, display)
        except yaml.YAMLError as exc:  # e.g. a bare "=" resolves to a tag the safe loader cannot build
            mark = getattr(exc, "problem_mark", None) or node.start_mark
            issues.append(
                SpecIssue(display, mark.line + 1, "", f"YAML value not allowed: {getattr(exc, 'problem', exc)}")
            )
            continue
        doc = _document(raw, lines, display, node.start_mark.line + 1, issues)
        if doc is not None:
            docs.append(doc)
    return docs, issues


_VALUE_EVENTS = frozenset({yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent, yaml.AliasEvent})


def _count_events(text: str, builder: _Builder) -> None:
    """Refuses a file with more YAML values than the limit leaves before composing it (composing builds every
    node first: a 4 MB flow list of 1.9M items took ~11 s and ~620 MB); stops counting at the limit (~0.1 s).
    Past it, the directory is over the limit: the files after this one are not read (one error, not one each)."""
    if builder.nodes + len(text) <= MAX_YAML_NODES:
        return  # a value takes at least one character
    events = builder.nodes
    for event in yaml.parse(text, Loader=_COMPOSER):
        if type(event) in _VALUE_EVENTS:
            events += 1
            if events > MAX_YAML_NODES:
                builder.nodes = events
                raise _TooBig(
                    event.start_mark.line + 1 if event.start_mark else 0,
                    f"more than {MAX_YAML_NODES} YAML values in the spec directory (limit MAX_YAML_NODES)",
                )


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


def spec_digest(directory: Path) -> str:
    """sha256 over the spec files' relative paths and bytes (what operators keep the same on every master);
    "" when a file cannot be read."""
    digest = hashlib.sha256()
    budget = MAX_SPEC_BYTES
    for path in spec_files(directory):
        text, problem = read_spec_file(path, str(path), budget)
        if text is None:
            return ""
        budget -= len(text.encode())
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


def load_documents(directory: Path, cache: SpecCache | None = None) -> list[Document]:
    """All documents in the directory; raises SpecError listing every problem.

    With a cache, a file whose text is unchanged since the last load is not parsed again (its values still
    count towards MAX_YAML_NODES).
    """
    issues: list[SpecIssue] = []
    docs: list[Document] = []
    base = directory.parent
    parsed: dict[str, tuple[str, Any]] = {}
    files = spec_files(directory)
    if len(files) > MAX_SPEC_FILES:
        raise SpecError(
            [SpecIssue(str(directory), 0, "", f"more than {MAX_SPEC_FILES} spec files (limit MAX_SPEC_FILES)")]
        )
    budget = MAX_SPEC_BYTES
    builder = _Builder()
    for path in files:
        display = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        text, problem = read_spec_file(path, display, budget)
        if text is None:
            issues.append(problem)  # type: ignore[arg-type]
            continue
        budget -= len(text.encode())
        if builder.nodes > MAX_YAML_NODES:
            continue  # the directory is past the limit: reported once, at the file that crossed it
        known = cache.parsed.get(display) if cache else None
        if known and known[0] == text:
            found, problems, nodes = known[1]
            builder.nodes += nodes
            if builder.nodes > MAX_YAML_NODES:
                found, problems = (
                    [],
                    [
                        SpecIssue(
                            display,
                            0,
                            "",
                            f"more than {MAX_YAML_NODES} YAML values in the spec directory (limit MAX_YAML_NODES)",
                        )
                    ],
                )
        else:
            before = builder.nodes
            found, problems = parse_documents(text, display, builder)
            nodes = builder.nodes - before
        if builder.nodes <= MAX_YAML_NODES:  # a file's result depends on the others only past the limit
            reused = known is not None and known[0] == text
            parsed[display] = known if reused else (text, (found, problems, nodes))  # type: ignore[assignment]
        docs.extend(found)
        issues.extend(problems)
    if cache is not None:
        cache.parsed = parsed
    if issues:
        raise SpecError(issues)
    if not docs:
        raise SpecError([SpecIssue(str(directory), 0, "", "no spec documents found (*.yaml, *.yml)")])
    return docs
