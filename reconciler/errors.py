"""The error taxonomy that crosses the engine: spec errors, transient and permanent host failures.

Raised at the edges (spec loading, transport); the engine turns them into per-host outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.terminal import printable

MAX_ISSUES = 1000  # issues one SpecError keeps


@dataclass(frozen=True)
class SpecIssue:
    """One problem in the spec directory, located as file:line and field."""

    file: str
    line: int
    field: str
    message: str

    def __post_init__(self) -> None:
        # a file name, a key or a value may carry ESC sequences or newlines (forged issue lines): shown escaped;
        # and no issue is longer than a person reads (a message quoting a 30 MB value was 30 MB)
        for name, most in (("file", 4200), ("field", 300), ("message", 2000)):
            text = getattr(self, name)
            if len(text) > most:
                text = text[:most] + f"... ({len(text) - most} more characters)"
            object.__setattr__(self, name, printable(text).replace("\n", "\\n"))

    def __str__(self) -> str:
        field = f" {self.field}:" if self.field else ""
        return f"{self.file}:{self.line}:{field} {self.message}"


class SpecError(Exception):
    """The spec directory is invalid; carries every issue found, not just the first."""

    def __init__(self, issues: list[SpecIssue]):
        issues = sorted(issues, key=lambda i: (i.file, i.line, i.field, i.message))
        if len(issues) > MAX_ISSUES:  # the first ones say what is wrong; 91,200 of them said nothing more
            more = len(issues) - MAX_ISSUES
            issues = issues[:MAX_ISSUES] + [SpecIssue(issues[MAX_ISSUES].file, 0, "", f"... and {more} more issues")]
        self.issues = issues
        super().__init__("\n".join(str(i) for i in self.issues))


class HostError(Exception):
    """A host could not be observed or changed. `ssh` marks failures of the connection itself."""

    transient = False

    def __init__(self, message: str, *, ssh: bool = False):
        super().__init__(message)
        self.ssh = ssh


class TransientHostError(HostError):
    """Worth retrying later: connection refused or lost, timeouts."""

    transient = True


class PermanentHostError(HostError):
    """Retrying will not help until someone acts: wrong host key, authentication refused."""


class NotLeader(HostError):
    """This replica stopped leading mid-pass: it touches nothing more, rollbacks included (the leader decides)."""
