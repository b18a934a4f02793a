"""Turning what several hosts hold into one template: literal text escaped, host values made `{{ host.* }}`.

Pure. `template_for` returns a template that renders, for every host, exactly the text that host holds, or None
when the hosts differ by more than their own name and address. Used by `adopt.describe`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

ADDRESS_EXPR = "{{ host.address }}"
NAME_EXPR = "{{ host.name }}"


def literal(text: str) -> str:
    """`text` as a template that renders to itself: as is without a `{`, else one raw block; where a raw block
    cannot hold it (it says `endraw`, or has a carriage return, which Jinja turns into a newline in template
    text) every `{` and carriage return becomes an expression that prints it."""
    if "{" not in text:
        return text
    if "endraw" not in text and "\r" not in text:
        return "{% raw %}" + text + "{% endraw %}"
    return text.replace("{", '{{ "{" }}').replace("\r", '{{ "\\r" }}')


def _value_pattern(value: str) -> re.Pattern[str]:
    """`value` where it stands alone: not inside a longer name, number or dotted name."""
    return re.compile(r"(?<![A-Za-z0-9_.-])" + re.escape(value) + r"(?![A-Za-z0-9_-]|\.[A-Za-z0-9])")


def _line_template(line: str, name: str, address: str) -> str:
    """One line with the host's address and name as expressions and everything else literal."""
    marks: list[tuple[int, int, str]] = []
    for value, expr in ((address, ADDRESS_EXPR), (name, NAME_EXPR)):
        if not value:
            continue
        for m in _value_pattern(value).finditer(line):
            if not any(s < m.end() and m.start() < e for s, e, _ in marks):
                marks.append((m.start(), m.end(), expr))
    out, pos = [], 0
    for start, end, expr in sorted(marks):
        out.append(_escape_piece(line[pos:start]))
        out.append(expr)
        pos = end
    out.append(_escape_piece(line[pos:]))
    return "".join(out)


def _escape_piece(text: str) -> str:
    return text.replace("{", '{{ "{" }}')  # next to an expression a raw block would read worse than this


def template_for(texts: Mapping[str, str], hosts: Mapping[str, tuple[str, str]], *, switch: bool = False) -> str | None:
    """One template for every host's text (`hosts`: host -> (name, address)); None when there is none.

    Lines the hosts all hold alike stay literal; a line that differs must differ only by each host's own
    address and name. With `switch`, a line that differs otherwise is chosen by host name instead
    (`{% if host.name == "a" %}...{% elif ... %}...{% endif %}`), and so is the whole text when the hosts'
    texts do not have the same number of lines."""
    if not texts:
        return None
    values = list(texts.values())
    if all(v == values[0] for v in values):
        return literal(values[0])
    if any("\r" in v for v in values):  # Jinja turns "\r\n" into "\n" in a template
        return None
    split = {h: t.split("\n") for h, t in texts.items()}
    if len({len(lines) for lines in split.values()}) != 1:
        return _switch({h: literal(t) for h, t in texts.items()}) if switch else None
    out: list[str] = []
    alike: list[str] = []  # a run of lines all hosts hold alike: one literal (one raw block, not a tag per brace)
    for row in zip(*split.values(), strict=True):
        if all(line == row[0] for line in row):
            alike.append(row[0])
            continue
        if alike:
            out.append(literal("\n".join(alike)))
            alike = []
        candidates = {_line_template(line, *hosts[h]) for h, line in zip(split, row, strict=True)}
        if len(candidates) == 1:
            out.append(candidates.pop())
        elif switch:
            out.append(_switch({h: _line_template(line, *hosts[h]) for h, line in zip(split, row, strict=True)}))
        else:
            return None
    if alike:
        out.append(literal("\n".join(alike)))
    return "\n".join(out)


def _switch(choices: Mapping[str, str]) -> str:
    """The template that is `choices[host.name]` for each host (its values already templates)."""
    hosts = sorted(choices)
    parts = []
    for i, h in enumerate(hosts):
        if i == len(hosts) - 1:
            parts.append("{% else %}" + choices[h])
        else:
            parts.append(("{% if" if i == 0 else "{% elif") + f' host.name == "{h}" %}}' + choices[h])
    return "".join(parts) + "{% endif %}"
