"""Where a value on a host was written in the specs: a line of a File's or Unit's `content`, or a key of a File's
`env`, back to the spec file and line.

Owns `Origin` (a File or Unit document's file, the line of its `content:` key, the lines of its `env` keys) and
`locate`: a value's file and line on the host (`components.systemd.Setting`) to (spec file, line, field). Built by
`spec.render`; read where a component's rule or a host's binary refuses a value (`spec.checks`, plan-time flag
checks), so both name the same place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.components.systemd import Setting


@dataclass(frozen=True)
class Origin:
    file: str  # the spec file
    content_line: int  # the line of the document's `content:` key (its first content line is the next)
    env_lines: dict[str, int] = field(default_factory=dict)  # an env File's keys -> their lines


def locate(setting: Setting, origin: Origin | None) -> tuple[str, int, str] | None:
    """(spec file, line, field) of a value written at `setting` (a host file's path and line) by the document
    `origin` describes; None without one. The line within a templated content is the rendered line's: close, as
    a loop can move it."""
    if origin is None:
        return None
    if setting.key and setting.key in origin.env_lines:
        return origin.file, origin.env_lines[setting.key], f"spec.env.{setting.key}"
    return origin.file, origin.content_line + setting.line, "spec.content"
