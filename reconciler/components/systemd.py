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
    for path in [unit_path, *drop_ins(unit_path, files)]:
        for d in unit_directives(files.get(path, "")):
            if d.section == "Service" and d.key == "ExecStart":
                found = d.value.lstrip("-@:+!")
    if found.startswith("$"):
        return None
    words = _split(found)
    return words[0].rsplit("/", 1)[-1] if words else ""


def service(unit_path: str, files: dict[str, str]) -> Service:
    """The service defined by the unit at `unit_path` and its drop-ins (`drop_ins`), both among `files` (path ->
    text), with the env files it names that are in `files` too (others are not ours)."""
    texts = [unit_path, *drop_ins(unit_path, files)]
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


UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)


def drop_ins(unit_path: str, files: dict[str, str]) -> list[str]:
    """Of `files`, the drop-ins systemd reads for the unit at `unit_path`, in the order it applies them: each
    `<directory>/<unit>.d/*.conf` of the unit directories (a unit in /usr/lib/systemd/system, where the seed puts
    the kube units, takes the operator's drop-ins from /etc/systemd/system) and of the unit file's own directory;
    by file name, a name in two directories read from the one first in UNIT_DIRS only (it masks the other)."""
    directory, _, name = unit_path.rpartition("/")
    chosen: dict[str, str] = {}
    for parent in sorted({directory, *UNIT_DIRS}, key=lambda d: UNIT_DIRS.index(d) if d in UNIT_DIRS else -1):
        for path in sorted(p for p in files if p.rpartition("/")[0] == f"{parent}/{name}.d" and p.endswith(".conf")):
            chosen.setdefault(path.rpartition("/")[2], path)
    return [chosen[n] for n in sorted(chosen)]


def is_drop_in(path: str, unit: str) -> bool:
    """Whether `path` is a drop-in of `unit` (`<unit directory>/<unit>.d/<name>.conf`), which systemd reads as
    part of the unit: its change needs a daemon-reload like the unit file's."""
    directory, _, name = path.rpartition("/")
    parent, _, own = directory.rpartition("/")
    return own == f"{unit}.d" and parent in UNIT_DIRS and name.endswith(".conf")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NEWLINE, _SPACE, _NEED_ESCAPE = "\n\r", " \t\n\r", '"\\`$'


def environment_of(text: str, *, comment_continues: bool) -> dict[str, str]:
    """The environment a service gets from an EnvironmentFile= of this text: systemd's own state machine
    (env-file.c, parse_env_file_internal), then its clean-up (invalid names and values dropped, the last of a
    name wins). `comment_continues`: a comment ending in a backslash swallows the next line (systemd < 254)."""
    pairs: list[tuple[str, str]] = []
    key: list[str] = []
    value: list[str] = []
    key_ws = value_ws = -1  # where trailing whitespace of the key / of an unquoted value begins (-1: none)
    state = "pre_key"

    def push(chomp: bool) -> None:
        k = "".join(key[:key_ws] if key_ws >= 0 else key)
        pairs.append((k, "".join(value[:value_ws] if chomp and value_ws >= 0 else value)))

    for c in text:
        if state == "pre_key":
            if c in "#;":
                state = "comment"
            elif c not in _SPACE:
                state, key, key_ws = "key", [c], -1
        elif state == "key":
            if c in _NEWLINE:
                state, key = "pre_key", []
            elif c == "=":
                state, value, value_ws = "pre_value", [], -1
            else:
                if c not in _SPACE:
                    key_ws = -1
                elif key_ws < 0:
                    key_ws = len(key)
                key.append(c)
        elif state in ("pre_value", "value"):
            if c in _NEWLINE:
                push(chomp=state == "value")
                state, key = "pre_key", []
            elif c == "\\":
                state, value_ws = "value_escape", -1
            elif state == "pre_value" and c == "'":
                state = "single"
            elif state == "pre_value" and c == '"':
                state = "double"
            elif state == "pre_value" and c in _SPACE:
                pass
            else:
                if state == "value" and c in _SPACE:
                    value_ws = len(value) if value_ws < 0 else value_ws
                else:
                    value_ws = -1
                state = "value"
                value.append(c)
        elif state == "value_escape":
            state = "value"
            if c not in _NEWLINE:
                value.append(c)
        elif state == "single":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value.append(c)
        elif state == "double_escape":
            state = "double"
            if c in _NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value += ["\\", c]
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in _NEWLINE:
                state = "pre_key"
        elif state == "comment_escape":
            state = "comment" if comment_continues or c not in _NEWLINE else "pre_key"
    if state not in ("pre_key", "key", "comment", "comment_escape"):
        push(chomp=state == "value")
    env: dict[str, str] = {}
    for k, v in pairs:  # as loaded: a later assignment replaces an earlier one, valid or not
        env.pop(k, None)
        env[k] = v
    return {k: v for k, v in env.items() if _NAME.fullmatch(k)}  # then invalid names are dropped


def _odd(env: dict[str, str]) -> bool:
    """A value with a control character other than tab and newline: systemd versions differ on keeping it."""
    return any(ord(ch) < 32 and ch not in "\t\n" or ord(ch) == 127 for v in env.values() for ch in v)


def same_environment(old: bytes, new: bytes) -> bool:
    """Whether a service reading either text as its EnvironmentFile= gets the same environment, whichever systemd
    reads it (before and since 254). Text that is not UTF-8 is never the same: systemd refuses to load it."""
    try:
        a, b = old.decode("utf-8"), new.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for continues in (False, True):
        env_a, env_b = environment_of(a, comment_continues=continues), environment_of(b, comment_continues=continues)
        if env_a != env_b or _odd(env_a) or _odd(env_b):
            return False
    return True


def _unit_assignments(text: str, *, skip_comments_in_continuation: bool) -> tuple[tuple[str, str, str], ...]:
    """(section, key, value) of every assignment of a unit file, in order, as systemd's config parser reads it
    (conf-parser.c): a line ending in an unescaped backslash continues (the backslash becomes a space), lines are
    stripped, `#`/`;` lines are comments, `[Section]` opens a section, a line without `=` is ignored."""
    out: list[tuple[str, str, str]] = []
    section = ""
    continuation: str | None = None
    for raw in text.removeprefix("\ufeff").split("\n"):
        if continuation is not None and skip_comments_in_continuation and raw.lstrip(" \t")[:1] in ("#", ";"):
            continue
        line = raw if continuation is None else continuation + raw
        escaped = False
        for c in line:
            escaped = not escaped and c == "\\"
        if escaped:
            continuation = line[:-1] + " "
            continue
        continuation = None
        line = line.strip(" \t\n\r")
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            section = line[1:-1] if line.endswith("]") else "\0invalid"
            continue
        key, sep, value = line.partition("=")
        if sep:
            out.append((section, key.strip(" \t\n\r"), value.strip(" \t\n\r")))
    if continuation is not None:  # the last line ended in a backslash
        line = continuation.strip(" \t\n\r")
        key, sep, value = line.partition("=")
        if line and line[0] not in "#;[" and sep:
            out.append((section, key.strip(" \t\n\r"), value.strip(" \t\n\r")))
    return tuple(out)


def same_unit(old: bytes, new: bytes) -> bool:
    """Whether systemd reads the same unit from either text (comments, blank lines, whitespace at the ends of lines
    and around `=` aside), whichever systemd reads it. Not UTF-8, or a carriage return anywhere: never the same."""
    try:
        a, b = old.decode("utf-8"), new.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if "\r" in a or "\r" in b:
        return a == b
    return all(
        _unit_assignments(a, skip_comments_in_continuation=v) == _unit_assignments(b, skip_comments_in_continuation=v)
        for v in (False, True)
    )
