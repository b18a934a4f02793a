"""What `reconciler import` takes for a secret in a file it copies: names that look like secrets, with a value.

Pure. Import marks a File `sensitive` when its host keeps it from others (mode & 0o004 == 0), when a flag names
it as a secret (adopt.discover), or when these find something: an environment key or a flag whose name says
secret with a value (`reconciler.secrets.secret_name`: `VAULT_TOKEN`, `--db-password`, not `ETCD_KEY_FILE=/a/b`),
or a URL carrying a password (`postgres://user:password@db`). Only names are returned, never a value: callers say which names made a
file sensitive. Used by `adopt.discover`.
"""

from __future__ import annotations

import re

from reconciler.components.systemd import parse_environment_file, unit_directives
from reconciler.secrets import secret_name, url_password

_WORD = re.compile(r"""(?:[^\s'"\\]+|'[^']*'?|"(?:[^"\\]|\\.)*"?|\\.?)+""")  # a shell word, quotes and all
_UNQUOTE = re.compile(r"""\\(.)|["']""")
_COMMENT = re.compile(r"^[ \t]*(?:[#;][#; \t]*|export[ \t]+)", re.MULTILINE)  # what starts a skipped line


def _flags(value: str) -> list[str]:
    """Secret-looking `--name=value` and `--name value` flags among the words of a value."""
    words = _split(value)
    out = []
    for i, word in enumerate(words):
        if not word.startswith("-"):
            continue
        name, sep, flag_value = word.lstrip("-").partition("=")
        if not sep:
            flag_value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("-") else ""
        if secret_name(name, flag_value):
            out.append(f"--{name}")
    return out


def _split(value: str) -> list[str]:
    """The words of a value as a shell would split them, near enough to read names and values (linear: shlex
    takes seconds on a long word, and a host's file may hold one)."""
    return [_UNQUOTE.sub(lambda m: m.group(1) or "", w) for w in _WORD.findall(value)]


def _uncommented(text: str) -> str:
    """The lines systemd skips, as it would read them if they were not: a secret commented out (or after an
    `export`) is still in the file, and in any diff of it."""
    return _COMMENT.sub("", text)


def env_file_secrets(text: str) -> list[str]:
    """The secret-looking names an EnvironmentFile= holds: keys, flags in values, or a URL with a password; in
    its comments too."""
    out: list[str] = []
    for source in (text, _uncommented(text)):
        for key, setting in parse_environment_file(source).items():
            if secret_name(key, setting.value) or url_password(setting.value):
                out.append(key)
            out += _flags(setting.value)
    if not out and url_password(text):  # e.g. on a line systemd does not take as an assignment
        out.append("a URL with a password")
    return list(dict.fromkeys(out))


def unit_file_secrets(text: str) -> list[str]:
    """The secret-looking names a unit file or drop-in holds: Environment= keys and flags of its commands; in its
    comments too."""
    out: list[str] = []
    for source in (text, _uncommented(text)):
        for d in unit_directives(source):
            if d.key == "Environment":
                for word in _split(d.value):
                    key, sep, value = word.partition("=")
                    if sep and (secret_name(key, value) or url_password(value)):
                        out.append(key)
            elif d.key.startswith("Exec"):
                out += _flags(d.value)
    if not out and url_password(text):
        out.append("a URL with a password")
    return list(dict.fromkeys(out))
