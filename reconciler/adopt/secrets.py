"""What `reconciler import` takes for a secret in a file it copies: names that look like secrets, with a value.

Pure. Import marks a File `sensitive` when its host keeps it from others (mode & 0o004 == 0), when a flag names
it as a secret (adopt.discover), or when `secret_names` finds something here: an environment key or a flag whose
name says secret (`VAULT_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `--db-password`, `*_KEY`) with a value that is not a
path, a switch or empty (`ETCD_KEY_FILE=/etc/ssl/k.pem` names a file: not a secret), or a URL carrying a
password (`postgres://user:password@db`). Only names are returned, never a value: callers say which names made a
file sensitive. Used by `adopt.discover`.
"""

from __future__ import annotations

import re

from reconciler.components.systemd import parse_environment_file, unit_directives

_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "PRIVATE_KEY", "ACCESS_KEY", "API_KEY")
_LAST = ("KEY", "PASS", "PWD", "PW", "PSK", "AUTH")  # DB_PASS, WIFI_PSK, APP_KEY: the name's last word
_PATHS = ("FILE", "FILES", "PATH", "PATHS", "DIR", "DIRS", "TTL", "TIMEOUT", "EXPIRY")  # a file or a duration
_TRIGGER = re.compile("|".join(_WORDS + _LAST).replace("_", "[^A-Za-z0-9]*"), re.IGNORECASE)
_NOT_SECRET = ("INITIAL_CLUSTER_TOKEN",)  # etcd's cluster id: in every member's flags
_SWITCH = {"", "true", "false", "yes", "no", "on", "off", "0", "1", "enabled", "disabled"}
_PATH_VALUE = re.compile(r"/[\w.@-]+(/[\w.@-]+)+")  # an absolute path of two or more parts: names a file
_URL_PASSWORD = re.compile(r"://[^\s/:@]{1,256}:[^\s/@]{1,256}@")  # scheme://user:password@: linear in the text
_WORD = re.compile(r"""(?:[^\s'"\\]+|'[^']*'?|"(?:[^"\\]|\\.)*"?|\\.?)+""")  # a shell word, quotes and all
_UNQUOTE = re.compile(r"""\\(.)|["']""")
_COMMENT = re.compile(r"^[ \t]*(?:[#;][#; \t]*|export[ \t]+)", re.MULTILINE)  # what starts a skipped line


def secret_name(name: str, value: str) -> bool:
    """Whether `name=value` looks like a secret: by the name, unless the value is empty, a switch or a path."""
    if not _TRIGGER.search(name):  # most names: nothing to look at further
        return False
    words = [w for w in re.split(r"[^A-Z0-9]+", name.upper()) if w]
    key = "_".join(words)
    if not words or words[-1].endswith(_PATHS) or any(key == n or key.endswith(f"_{n}") for n in _NOT_SECRET):
        return False
    value = value.strip()
    if value.strip("\"'").lower() in _SWITCH or _PATH_VALUE.fullmatch(value):
        return False
    return any(w in key for w in _WORDS) or words[-1] in _LAST


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


def url_password(text: str) -> bool:
    """Whether the text holds a URL with a password in it (`scheme://user:password@host`)."""
    return bool(_URL_PASSWORD.search(text))


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
