"""What a secret looks like in text, and text with the secrets taken out.

Pure. `secret_name` says whether `name=value` looks like a secret by its name (`VAULT_TOKEN`,
`AWS_SECRET_ACCESS_KEY`, `--db-password`, `*_KEY`), unless the value is empty, a switch or a path
(`ETCD_KEY_FILE=/etc/ssl/k.pem` names a file); `url_password` finds `scheme://user:password@`. `scrub` takes the
values of such names, URL passwords and any word of known secret content out of a line of text, keeping its shape:
what a failing service wrote to its journal, or a line of a file, before it goes into a message, a log or /status.
Used by `adopt.secrets` (which files import marks sensitive) and `engine.rollback` (what a rollback reports).
Every pattern is linear in the text: a host's file or journal may hold a megabyte-long word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "PRIVATE_KEY", "ACCESS_KEY", "API_KEY")
_LAST = ("KEY", "PASS", "PWD", "PW", "PSK", "AUTH")  # DB_PASS, WIFI_PSK, APP_KEY: the name's last word
_PATHS = ("FILE", "FILES", "PATH", "PATHS", "DIR", "DIRS", "TTL", "TIMEOUT", "EXPIRY")  # a file or a duration
_TRIGGER = re.compile("|".join(_WORDS + _LAST).replace("_", "[^A-Za-z0-9]*"), re.IGNORECASE)
_NOT_SECRET = ("INITIAL_CLUSTER_TOKEN",)  # etcd's cluster id: in every member's flags
_SWITCH = {"", "true", "false", "yes", "no", "on", "off", "0", "1", "enabled", "disabled"}
_PATH_VALUE = re.compile(r"/[\w.@-]+(/[\w.@-]+)+")  # an absolute path of two or more parts: names a file
_URL_PASSWORD = re.compile(r"(://[^\s/:@]{1,256}:)[^\s/@]{1,256}@")  # scheme://user:password@
# name=value, name: value, "name": "value", --name=value, --name value (a value quoted or up to a space or comma)
# a name and what joins it to its value; a name starts where a word does (after a separator or "-"): inside a
# megabyte-long word there is one place to try, not a million
_NAME = re.compile(
    r"""(?<![A-Za-z0-9_.])(?P<name>[A-Za-z_][A-Za-z0-9_.-]{0,127})(?P<sep>["']?\s{0,3}[=:]\s{0,3}|\s{1,3}(?=[^\s=:-]))"""
)
_VALUE = re.compile(r""""[^"\n]{0,4096}"?|'[^'\n]{0,4096}'?|[^\s,;"'}\]=-][^\s,;"'}\]]{0,4095}""")  # not a flag
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[^\s,;=:\"'`(){}\[\]<>]{8,}")  # a word of secret content worth looking for: 8 or more characters
REDACTED = "<redacted>"
MAX_KNOWN_WORDS = 10000


def secret_name(name: str, value: str) -> bool:
    """Whether `name=value` looks like a secret: by the name, unless the value is empty, a switch or a path."""
    if not _TRIGGER.search(name):  # most names: nothing to look at further
        return False
    words = [w for w in re.split(r"[^A-Z0-9]+", _CAMEL.sub(r"\1_\2", name).upper()) if w]  # apiKey: API, KEY
    key = "_".join(words)
    if not words or words[-1].endswith(_PATHS) or any(key == n or key.endswith(f"_{n}") for n in _NOT_SECRET):
        return False
    value = value.strip()
    if value.strip("\"'").lower() in _SWITCH or _PATH_VALUE.fullmatch(value):
        return False
    return any(w in key for w in _WORDS) or words[-1] in _LAST


def url_password(text: str) -> bool:
    """Whether the text holds a URL with a password in it (`scheme://user:password@host`)."""
    return bool(_URL_PASSWORD.search(text))


def known_words(contents: Iterable[bytes]) -> frozenset[str]:
    """The words of secret contents (a sensitive file's) that `scrub` takes out wherever they appear: every run of
    8 or more characters between separators, at most MAX_KNOWN_WORDS of them (the longest first)."""
    words: set[str] = set()
    for content in contents:
        words.update(_WORD.findall(content.decode(errors="replace")))
    return frozenset(sorted(words, key=len, reverse=True)[:MAX_KNOWN_WORDS])


def scrub(text: str, known: frozenset[str] = frozenset()) -> str:
    """`text` with every secret-looking value, URL password and known secret word replaced by REDACTED."""
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text)

    spans: list[tuple[int, int]] = []
    for m in _NAME.finditer(text):  # the values are looked at, not consumed: "vault: VAULT_TOKEN=x" has two names
        if not _TRIGGER.search(m.group("name")):
            continue
        value = _VALUE.match(text, m.end())
        if value and not value.group().startswith(REDACTED):
            if secret_name(m.group("name"), value.group().strip("\"'")) and (
                not spans or value.start() >= spans[-1][1]
            ):
                spans.append(value.span())
    if spans:  # put together in one go: many values in a long text would copy it once each
        pieces, at = [], 0
        for start, end in spans:
            pieces += [text[at:start], REDACTED]
            at = end
        text = "".join([*pieces, text[at:]])
    if known:
        text = _WORD.sub(
            lambda m: REDACTED if any(k in m.group(0) for k in known if len(k) <= len(m.group(0))) else m.group(0), text
        )
    return text
