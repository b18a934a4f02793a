"""How systemd reads a service: unit files with drop-ins, EnvironmentFile=, Environment= and ExecStart=.

Owns turning a unit's text (plus its drop-ins and the env files it names) into what its process sees:
the environment and the argv, every value with the file and line it came from. Pure: callers hand in
file texts by path; nothing here reads a host or knows about specs. Used by the component rules
(`components.etcd`, `components.kube`) through `components.check`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import lru_cache

_SIMPLE_ASSIGNMENT = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(?:\"([^\"\\\n]*)\"[ \t]*|([^\"'\\\n]*))(?=\n|\Z)"
)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Setting:
    """A value and where it was written: the file on the host and the line in it (1-based)."""

    value: str
    path: str
    line: int
    key: str = ""  # the environment variable it was given in, if any (its line is that assignment's)
    name: str = ""  # what the component calls it: `--heartbeat-interval`, `ETCD_HEARTBEAT_INTERVAL`

    @property
    def label(self) -> str:
        return self.name or self.key


@dataclass(frozen=True)
class Directive:
    section: str
    key: str
    value: str
    line: int


@lru_cache(maxsize=512)  # unit files are mostly the same text on every host
def unit_directives(text: str) -> tuple[Directive, ...]:
    """`Key=Value` lines of a unit file with their section and first line; continuation lines joined."""
    out: list[Directive] = []
    section = ""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep:
            out.append(Directive(section, key.strip(), value.strip(), start))
    return tuple(out)


def parse_environment_file(text: str, path: str = "") -> dict[str, Setting]:
    """KEY=value assignments as systemd's EnvironmentFile= reads them (systemd.exec): `#`/`;` comments, double
    quotes with backslash escapes, single quotes, a trailing backslash continuing the line, no `$VAR` expansion."""
    out: dict[str, Setting] = {}
    i, n, line = 0, len(text), 1
    while i < n:
        while i < n and text[i] in " \t\r\n":
            line += text[i] == "\n"
            i += 1
        if i >= n:
            break
        simple = _SIMPLE_ASSIGNMENT.match(text, i)  # most lines: no backslashes, quotes around all or nothing
        if simple:
            key = simple.group(1)
            found = simple.group(2) if simple.group(2) is not None else simple.group(3).rstrip(" \t")  # greedy, then
            out[key] = Setting(found, path, line, key)  # trimmed: a lazy match backtracked quadratically on spaces
            i = simple.end()
            continue
        if text[i] in "#;":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        start_line = line
        key_start = i
        while i < n and text[i] not in "=\n":
            i += 1
        if i >= n or text[i] == "\n":
            continue  # not an assignment: systemd skips it
        key = text[key_start:i].strip()
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        value: list[str] = []
        kept = 0  # characters up to the end of the last quoted part: never stripped
        while i < n and text[i] != "\n":
            c = text[i]
            if c == '"':
                i += 1
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\`$\n':
                        if text[i + 1] == "\n":
                            line += 1
                        else:
                            value.append(text[i + 1])
                        i += 2
                        continue
                    line += text[i] == "\n"
                    value.append(text[i])
                    i += 1
                i += 1
                kept = len(value)
            elif c == "'":
                end = text.find("'", i + 1)
                end = n if end < 0 else end
                line += text.count("\n", i, end)
                value.append(text[i + 1 : end])
                i = end + 1
                kept = len(value)
            elif c == "\\" and i + 1 < n:
                if text[i + 1] == "\n":
                    line += 1
                else:
                    value.append(text[i + 1])
                    kept = len(value)  # an escaped character is kept, even a space
                i += 2
            else:
                value.append(c)
                i += 1
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            out[key] = Setting("".join(value[:kept]) + "".join(value[kept:]).rstrip(" \t"), path, start_line, key)
    return out


@dataclass(frozen=True)
class Service:
    """What the process of a service sees, with provenance."""

    environment: dict[str, Setting]
    argv: list[Setting]  # ExecStart=, after $VAR / ${VAR} expansion

    @property
    def program(self) -> str:
        return self.argv[0].value.rsplit("/", 1)[-1] if self.argv else ""

    def flags(self) -> dict[str, Setting]:
        """`--name=value` and `--name value` arguments by name (the last one wins, as Go's flag package does)."""
        out: dict[str, Setting] = {}
        words = self.argv[1:]
        for i, word in enumerate(words):
            if not word.value.startswith("-"):
                continue
            name, sep, value = word.value.lstrip("-").partition("=")
            if not sep and i + 1 < len(words) and not words[i + 1].value.startswith("-"):
                value = words[i + 1].value
            out[name] = Setting(value, word.path, word.line, word.key, f"--{name}")
        return out


def program(unit_path: str, files: dict[str, str]) -> str | None:
    """The program a unit runs (ExecStart's binary, its drop-ins included) when that can be told without
    expanding variables; None when ExecStart starts with a variable."""
    found = ""
    for path in [unit_path] + sorted(p for p in files if p.startswith(unit_path + ".d/") and p.endswith(".conf")):
        for d in unit_directives(files.get(path, "")):
            if d.section == "Service" and d.key == "ExecStart":
                found = d.value.lstrip("-@:+!")
    if found.startswith("$"):
        return None
    words = _split(found)
    return words[0].rsplit("/", 1)[-1] if words else ""


def service(unit_path: str, files: dict[str, str]) -> Service:
    """The service defined by the unit at `unit_path` and its drop-ins (`<unit_path>.d/*.conf`), both among
    `files` (path -> text), with the env files it names that are in `files` too (others are not ours)."""
    texts = [unit_path] + sorted(p for p in files if p.startswith(unit_path + ".d/") and p.endswith(".conf"))
    env: dict[str, Setting] = {}
    env_files: list[str] = []
    exec_start: Directive | None = None
    exec_path = unit_path
    for path in texts:
        for d in unit_directives(files.get(path, "")):
            if d.section != "Service":
                continue
            if d.key == "Environment":
                for word in _split(d.value):
                    key, sep, value = word.partition("=")
                    if sep:
                        env[key] = Setting(value, path, d.line, key)
            elif d.key == "EnvironmentFile":
                if d.value:
                    env_files.append(d.value.lstrip("-"))
                else:
                    env_files = []
            elif d.key == "ExecStart":
                exec_start, exec_path = (d, path) if d.value else (None, path)
    for env_file in env_files:  # read after Environment=, so they override it (systemd.exec)
        if env_file in files:
            env.update(parse_environment_file(files[env_file], env_file))
    argv: list[Setting] = []
    if exec_start is not None:
        for word in _split(exec_start.value.lstrip("-@:+!")):
            for value in _expand(word, env):
                path, line, key = _origin(word, env, exec_path, exec_start.line)
                argv.append(Setting(value, path, line, key))
    return Service(env, argv)


def _split(value: str) -> list[str]:
    if not any(c in value for c in "\"'\\"):
        return value.split()
    try:
        return shlex.split(value, posix=True)
    except ValueError:  # an unbalanced quote: systemd refuses the line; keep the words we can
        return value.split()


def _expand(word: str, env: dict[str, Setting]) -> list[str]:
    """systemd's rules: a lone `$VAR` becomes the value's words (none when empty); `${VAR}` is one word."""
    whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
    if whole:
        setting = env.get(whole.group(1))
        return setting.value.split() if setting else []
    return [_VAR.sub(lambda m: env[m.group(1) or m.group(2)].value if (m.group(1) or m.group(2)) in env else "", word)]


def _origin(word: str, env: dict[str, Setting], path: str, line: int) -> tuple[str, int, str]:
    """Where a word's value was written: the assignment of the variable it came from, else the unit's line."""
    m = _VAR.search(word)
    if m and (m.group(1) or m.group(2)) in env:
        setting = env[m.group(1) or m.group(2)]
        return setting.path, setting.line, setting.key
    return path, line, ""
