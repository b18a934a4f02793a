"""etcd's own startup rules, checked before anything is written: what etcd would refuse, we refuse first.

Owns the knowledge of etcd's configuration (flags and their ETCD_* environment twins, defaults) and of
what makes a member refuse to start or a cluster refuse to form: election >= 5 x heartbeat, election <=
50000 ms, heartbeat and election the same on every member, unique member names, an initial cluster that
lists every member exactly once, well-formed URLs. Pure; called by `components.check`.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from reconciler.components.systemd import Service, Setting

OPTIONS = (
    "name",
    "heartbeat-interval",
    "election-timeout",
    "initial-cluster",
    "listen-peer-urls",
    "listen-client-urls",
    "initial-advertise-peer-urls",
    "advertise-client-urls",
    "data-dir",
)
DEFAULTS = {"name": "default", "heartbeat-interval": "100", "election-timeout": "1000"}
URL_OPTIONS = ("listen-peer-urls", "listen-client-urls", "initial-advertise-peer-urls", "advertise-client-urls")
MAX_ELECTION_MS = 50000  # etcd: "election-timeout ... is too long, and should be set less than 50 seconds"
MIN_ELECTION_FACTOR = 5  # etcd: the election timeout must be at least 5 x the heartbeat interval
HEARTBEAT_KEY, ELECTION_KEY = "ETCD_HEARTBEAT_INTERVAL", "ETCD_ELECTION_TIMEOUT"  # what the tuner raises


@dataclass(frozen=True)
class Problem:
    host: str
    setting: Setting | None  # None: a default etcd uses; located at the unit's ExecStart
    message: str


def env_name(option: str) -> str:
    return "ETCD_" + option.upper().replace("-", "_")


def member_config(svc: Service, options: tuple[str, ...] = OPTIONS) -> dict[str, Setting]:
    """The options a member runs with: a flag wins over its ETCD_* variable (etcd warns and takes the flag)."""
    flags = svc.flags()
    out: dict[str, Setting] = {}
    for option in options:
        if option in flags:
            out[option] = flags[option]
        elif env_name(option) in svc.environment:
            setting = svc.environment[env_name(option)]
            out[option] = Setting(setting.value, setting.path, setting.line, setting.key, env_name(option))
    return out


def serving(svc: Service, cert_path: str) -> list[tuple[str, int]] | None:
    """(host, port) of each https URL a member presents the certificate at `cert_path` on: its advertised client
    URLs when its cert-file is that file, its advertised peer URLs when its peer-cert-file is. None when the member's
    files name neither certificate file (what it serves is not known here)."""
    pairs = (("cert-file", "advertise-client-urls"), ("peer-cert-file", "initial-advertise-peer-urls"))
    config = member_config(svc, tuple(o for pair in pairs for o in pair))
    if not any(cert in config for cert, _ in pairs):
        return None
    out: list[tuple[str, int]] = []
    for cert, urls in pairs:
        if cert in config and posixpath.normpath(config[cert].value) == posixpath.normpath(cert_path):
            found = len(out)
            for url in config[urls].value.split(",") if urls in config else []:
                try:
                    parts = urlsplit(url.strip())
                    if parts.scheme == "https" and parts.hostname and parts.port and (parts.hostname, parts.port) not in out:  # fmt: skip
                        out.append((parts.hostname, parts.port))
                except ValueError:
                    continue
            if len(out) == found:  # served, but where is not said (no https URL advertised): not known here
                return None
    return out


def _number(host: str, config: dict[str, Setting], option: str, problems: list[Problem]) -> int | None:
    setting = config.get(option)
    value = setting.value if setting else DEFAULTS[option]
    try:
        number = int(value)
    except ValueError:
        problems.append(Problem(host, setting, f"must be a whole number of milliseconds, not {value[:40]!r}"))
        return None
    if number <= 0:
        problems.append(Problem(host, setting, "must be positive"))
        return None
    return number


def check_url(value: str) -> str | None:
    """Why `value` is not a URL etcd accepts (scheme http/https/unix(s), a host, a port where needed)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return f"not a well-formed URL ({exc})"
    if parts.scheme not in ("http", "https", "unix", "unixs"):
        return "needs an http:// or https:// scheme"
    if parts.scheme in ("http", "https") and (not parts.hostname or port is None):
        return "needs a host and a port"
    if parts.path not in ("", "/") and parts.scheme in ("http", "https"):
        return "must not have a path"
    return None


def parse_initial_cluster(value: str) -> list[tuple[str, str]]:
    return [(name.strip(), url.strip()) for name, _, url in (p.partition("=") for p in value.split(",") if p.strip())]


def check_members(members: dict[str, dict[str, Setting]]) -> list[Problem]:
    """Every member's own rules, then the rules that span members. `members`: host -> `member_config`."""
    problems: list[Problem] = []
    timing: dict[str, tuple[int, int]] = {}
    for host, config in sorted(members.items()):
        heartbeat = _number(host, config, "heartbeat-interval", problems)
        election = _number(host, config, "election-timeout", problems)
        where = config.get("election-timeout") or config.get("heartbeat-interval")
        if heartbeat and election:
            timing[host] = (heartbeat, election)
            if election < 5 * heartbeat:
                problems.append(
                    Problem(
                        host,
                        where,
                        f"election timeout {election} ms is below 5 x the heartbeat interval "
                        f"{heartbeat} ms: etcd refuses to start (--election-timeout should "
                        "be at least as 5 times as --heartbeat-interval)",
                    )
                )
            if election > MAX_ELECTION_MS:
                problems.append(
                    Problem(
                        host,
                        config.get("election-timeout"),
                        f"election timeout {election} ms is above etcd's limit of {MAX_ELECTION_MS} ms",
                    )
                )
        for option in URL_OPTIONS:
            setting = config.get(option)
            for url in setting.value.split(",") if setting else []:
                why = check_url(url.strip())
                if why:
                    problems.append(Problem(host, setting, f"{url.strip()[:100]!r}: {why}"))
    if len(set(timing.values())) > 1:
        common, _ = Counter(timing.values()).most_common(1)[0]
        for host, values in sorted(timing.items()):
            if values != common:
                problems.append(
                    Problem(
                        host,
                        members[host].get("heartbeat-interval") or members[host].get("election-timeout"),
                        f"heartbeat/election {values[0]}/{values[1]} ms differ from the other members' "
                        f"{common[0]}/{common[1]} ms: every member must run with the same values",
                    )
                )
    names = {host: config["name"].value if "name" in config else DEFAULTS["name"] for host, config in members.items()}
    for name, count in Counter(names.values()).items():
        if count > 1:
            for host in sorted(h for h, n in names.items() if n == name):
                problems.append(
                    Problem(host, members[host].get("name"), f"member name {name!r} is used by {count} members")
                )
    for host, config in sorted(members.items()):
        setting = config.get("initial-cluster")
        if setting is None:
            continue
        listed = parse_initial_cluster(setting.value)
        counts = Counter(name for name, _ in listed)
        missing = sorted(set(names.values()) - set(counts))
        doubled = sorted(name for name, n in counts.items() if n > 1)
        unknown = sorted(set(counts) - set(names.values()))
        if missing or doubled or unknown:
            why = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"listed twice: {', '.join(doubled)}" if doubled else "",
                    f"not a member: {', '.join(unknown)}" if unknown else "",
                )
                if part
            )
            problems.append(Problem(host, setting, f"initial cluster must list every member exactly once ({why})"))
        for name, url in listed:
            why = check_url(url)
            if why:
                problems.append(Problem(host, setting, f"{name}={url[:100]}: {why}"))
    return problems


def client_urls(config: dict[str, Setting]) -> set[tuple[str, str, int]]:
    """(scheme, host, port) a member serves clients on: its advertised and listened client URLs."""
    out: set[tuple[str, str, int]] = set()
    for option in ("advertise-client-urls", "listen-client-urls"):
        setting = config.get(option)
        for url in setting.value.split(",") if setting else []:
            try:
                parts = urlsplit(url.strip())
                if parts.hostname and parts.port:
                    out.add((parts.scheme, parts.hostname, parts.port))
            except ValueError:
                continue
    return out
