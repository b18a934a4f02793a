"""Rendering a document's templates for a host: Jinja2 in the bounded sandbox, cached, each failure located.

Owns the template context (`host`, `hosts`, `vars`), the render cache's use, MAX_RENDERED_TOTAL_BYTES, and
what a failed rendering says (never a sensitive File's content). Used by `spec.render` per host and field.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from reconciler.errors import SpecIssue
from reconciler.spec.cache import SpecCache
from reconciler.spec.limits import MAX_RENDERED_TOTAL_BYTES, LoadExpired
from reconciler.spec.model import Document, HostSpec
from reconciler.spec.sandbox import BoundedEnvironment, RenderLimitError


class Renderer:
    """Renders templates per host within the limits: each rendering is bounded (spec.sandbox), all of one load
    together too, and a template that failed for one host is not tried again for the others."""

    def __init__(self, hosts: list[Document], cache: SpecCache | None = None):
        self.env = BoundedEnvironment()
        self.hosts = [self._host_context(h) for h in hosts]
        self.by_name = {h["name"]: h for h in self.hosts}
        self._templates: dict[str, jinja2.Template] = {}
        self.failed: dict[str, str] = {}  # template text -> why it failed (reported once, for the first host)
        self._failures: dict[tuple[str, int, str, str], list[str]] = {}  # where and why -> the hosts it failed for
        self.total_bytes = 0
        self.cache = cache or SpecCache()
        # pickle keeps one copy of what YAML aliases share (repr would expand 10k aliases of a 1 MB string)
        self.cache.begin_render(hashlib.sha256(pickle.dumps(self.hosts)).hexdigest())

    @staticmethod
    def _host_context(doc: Document) -> dict[str, Any]:
        spec: HostSpec = doc.spec
        return {  # plain dicts: the sandbox's fast paths are for exact builtin types (a subclass costs 3x)
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
            return utf8(text)
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
            rendered = utf8(self.env.render(template, host=me, hosts=self.hosts, vars=me["vars"]))
        self._count(rendered)
        self.cache.keep(key, rendered)
        return rendered

    def located(self, text: str, host: Document, doc: Document, loc: tuple[str, ...], issues: list[SpecIssue]) -> str:
        """The text rendered for the host, or "" with the failure added to `issues` at the document's field (once
        per template: a template that failed for one host is not tried again for the others)."""
        try:
            return self._rendered_or_reported(text, host, doc, loc, issues)
        except LoadExpired as exc:  # the whole load's wall clock, most likely spent in this template (or in
            # freeing what it built, or in reporting it: so caught out here)
            exc.locate(doc.file, doc.line_of(*loc), ".".join(loc), f"rendering for host {host.metadata.name!r}: ")
            raise

    def _rendered_or_reported(
        self, text: str, host: Document, doc: Document, loc: tuple[str, ...], issues: list[SpecIssue]
    ) -> str:
        if text in self.failed:  # reported for the first host it failed on; not worth trying again
            return ""
        sensitive = doc.kind == "File" and doc.spec.sensitive
        try:
            return self.render(text, host)
        except jinja2.TemplateSyntaxError as exc:
            key_line = doc.line_of(*loc)
            block = "\n" in text and key_line != doc.line  # a `key: |` block starts on the line after its key
            line = key_line + (exc.lineno if block else 0)
            self.failed[text] = "template syntax error" + (
                " (details withheld: the file is sensitive)" if sensitive else f": {exc.message}"
            )
            issues.append(SpecIssue(doc.file, line, ".".join(loc), self.failed[text]))
        except Exception as exc:  # whatever a template raises is the template's error, located, never a crash
            why = render_failure(exc, sensitive=sensitive, text=text)
            self._failures.setdefault((doc.file, doc.line_of(*loc), ".".join(loc), why), []).append(host.metadata.name)
            if isinstance(exc, (RenderLimitError, RecursionError, MemoryError)):  # costly: once is enough
                self.failed[text] = why
        return ""

    def report(self, issues: list[SpecIssue]) -> None:
        """Each failed rendering once, with the hosts it failed for (a template missing a var fails for all)."""
        for (file, line, field, why), hosts in self._failures.items():
            if len(hosts) == 1:
                whom = f"host {hosts[0]!r}"
            else:
                shown = ", ".join(hosts[:5]) + (f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")
                whom = f"{len(hosts)} hosts ({shown})"
            issues.append(SpecIssue(file, line, field, f"rendering for {whom}: {why}"))
        self._failures.clear()

    def _count(self, text: str) -> None:
        self.total_bytes += len(text) if text.isascii() else 4 * len(text)  # UTF-8: at most 4 bytes a character
        if self.total_bytes > MAX_RENDERED_TOTAL_BYTES:
            raise RenderLimitError(
                f"the renderings of all documents for all hosts exceed {MAX_RENDERED_TOTAL_BYTES} "
                "bytes together (limit MAX_RENDERED_TOTAL_BYTES)"
            )


def utf8(text: str) -> str:
    """`text` if it can be written as UTF-8 (a YAML escape or a template can make a lone surrogate, which cannot)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not writable as UTF-8: a lone surrogate at character {exc.start}") from None
    return text


def render_failure(exc: Exception, *, sensitive: bool, text: str = "") -> str:
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
    if isinstance(exc, jinja2.UndefinedError):
        return undefined_words(str(exc), text)[:200]
    if isinstance(exc, SecurityError):
        return str(exc)[:200]
    return f"{type(exc).__name__}: {str(exc)[:200]}"


_NO_KEY = re.compile(r"'(\w+) object' has no attribute '([^'\n]{1,200})'")
_UNDEFINED = re.compile(r"'([^'\n]{1,200})' is undefined")
_OWNER = re.compile(r"([A-Za-z_][\w.]{0,80}?)\s*(?:\.\s*|\[\s*['\"])$")


def undefined_words(message: str, text: str) -> str:
    """Jinja's words for an undefined name in the operator's: `'dict object' has no attribute 'nmae'` is said as
    `vars.nmae is not set for this host` (the owner read off the template where the name is used: a bounded
    look-behind, never a scan of the whole text), `'nmae' is undefined` as what a template can see."""
    if m := _UNDEFINED.fullmatch(message):
        return f"{m.group(1)!r} is not defined (a template sees host, hosts and vars)"
    m = _NO_KEY.fullmatch(message)
    if m is None:
        return message
    name = m.group(2)
    at = text.find(name)
    for _ in range(20):  # the first uses of the name, each looked behind by 100 characters at most
        if at == -1:
            break
        owner = _OWNER.search(text, max(0, at - 100), at)
        if owner is not None:
            return f"{owner.group(1)}.{name} is not set for this host"
        at = text.find(name, at + len(name))
    return f"{name!r} is not set for this host (a {m.group(1)} without that key)"
