"""SpecCache: what a long-running process keeps from one spec load to the next, so a reload costs what changed.

Parsed files by their text (an unchanged file is not parsed again) and renderings by template text and
host (dropped whole when any host's context changes: templates may loop over every host). Entries a
load did not use are dropped after it. Filled by `spec.load` and `spec.render`; the daemon holds one.
Without it a reload of 1000 hosts whose templates loop over `hosts` costs O(hosts^2) renderings. It also
holds the last answer, so a reload that changed nothing is not sent back and unpickled again.
"""

from __future__ import annotations

from typing import Any


class SpecCache:
    def __init__(self) -> None:
        self.parsed: dict[str, tuple[str, Any]] = {}  # file -> (its text, what parsing it gave)
        self.hosts_key = ""
        self.rendered: dict[tuple[str, str], str] = {}  # (template text, host) -> rendering
        self._used: dict[tuple[str, str], str] = {}
        # The last load's answer, (kind, value), and the digest of it pickled: a child whose answer has the same
        # digest says only so (`spec.isolate`), and the parent neither reads nor unpickles it again.
        self.answer: tuple[str, Any] | None = None
        self.answer_digest = b""

    def begin_render(self, hosts_key: str) -> None:
        if hosts_key != self.hosts_key:
            self.hosts_key, self.rendered = hosts_key, {}
        self._used = {}

    def rendering(self, key: tuple[str, str]) -> str | None:
        """This load's rendering (a template that reads neither host nor vars: the first host's), else the last's."""
        found = self._used.get(key)
        return found if found is not None else self.rendered.get(key)

    def keep(self, key: tuple[str, str], text: str) -> None:
        self._used[key] = text

    def end_render(self) -> None:
        self.rendered, self._used = self._used, {}
