"""Facts about a host, gathered in one round trip: files, systemd units, health probes, certificates.

A fact is a command plus a pure parser (pyinfra's shape): `observe_argv` builds the argv of one
constant bash script whose inputs are positional arguments (never spliced into the script text),
`parse_observation` turns its stdout into a `HostSnapshot`. `observe_host` runs both over a Connection.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from weakref import WeakKeyDictionary

from reconciler.errors import TransientHostError
from reconciler.observe.snapshot import CertFact, CheckResult, FileFact, HostSnapshot, UnitFact
from reconciler.spec.desired import DesiredCheck, DesiredHost
from reconciler.transport.base import Connection

UNIT_PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "ActiveEnterTimestamp",
    "MainPID",
    "NeedDaemonReload",
    "FragmentPath",
)

# How every probe and scrape runs curl on a host (the observe script's H checks, the tuner's /metrics scrape):
# -q first (no ~/.curlrc), no proxy from the environment answering for the component, no URL globs, http(s)
# only, a bounded body.
CURL_SAFE = ("-q", "-s", "-g", "--noproxy", "*", "--proto", "=http,https", "--max-filesize", "1048576")


def curl_tls(ca_file: str | None, cert_file: str | None, key_file: str | None) -> list[str]:
    """The TLS options of a check's files, as the observe script builds them too."""
    out = ["--cacert", ca_file] if ca_file else []
    return out + (["--cert", cert_file, "--key", key_file] if cert_file and key_file else [])


# The observe script (observe.sh beside this module) says what it takes and answers in its own header.
SCRIPT_FILE = "observe.sh"  # beside this module, shipped in the package


def shipped_script(name: str, package: str = "reconciler.observe") -> str:
    """A script shipped in `package` (beside this module by default) as it is sent: its comment lines left out (it
    travels with every call)."""
    text = resources.files(package).joinpath(name).read_text()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")) + "\n"


def _script() -> str:
    text = shipped_script(SCRIPT_FILE)
    return text.replace("@CURL_SAFE@", shlex.join(CURL_SAFE)).replace("@PROPS@", ",".join(UNIT_PROPERTIES))


OBSERVE_SCRIPT = _script()

MAX_SETTLE = 10.0  # seconds a look waits on the host for its checks to pass, at most

# A managed file is read whole only up to the larger of its desired size and this; past it, it differs anyway.
READ_LIMIT = 1024 * 1024


def check_args(check: DesiredCheck) -> list[str]:
    timeout = f"{check.timeout:g}"
    if check.url is not None:
        return [
            "H",
            check.name,
            timeout,
            check.url,
            check.ca_file or "-",
            check.cert_file or "-",
            check.key_file or "-",
        ]
    return ["T", check.name, timeout, str(check.tcp_host), str(check.tcp_port)]


def observe_argv(
    paths: Iterable[str] | Mapping[str, int],
    units: Iterable[str],
    checks: Iterable[DesiredCheck],
    certificates: Iterable[str] = (),
    known: HostSnapshot | None = None,
    addresses: Mapping[str, str] | None = None,
    settle: float = 0.0,
) -> list[str]:
    """The observe command; `paths` maps each file to the most bytes worth reading (READ_LIMIT when a list).
    With `known` (the host's last snapshot), a file or certificate whose stamp is unchanged is not read again.
    With `settle` seconds, the host probes again every 50 ms while a check fails, until then: the answer comes as
    soon as every check passes (a unit just restarted), or with the last probes' results. A check that passed is
    not asked again within that look: each check's answer is its last, at most `settle` old."""
    limits = paths if isinstance(paths, Mapping) else {p: READ_LIMIT for p in paths}
    checks = tuple(checks)
    files = known.files if known else {}
    certs = known.certificates if known else {}
    argv = ["bash", "-c", OBSERVE_SCRIPT, "reconciler-observe"]
    for path in certificates:
        seen = certs.get(path)
        argv += ["C", path, seen.stamp if seen and seen.stamp else "-"]
    for path, limit in limits.items():
        was = files.get(path)
        argv += ["F", path, str(limit), was.stamp if was and was.stamp and was.complete else "-"]
    for name, address in (addresses or {}).items():
        argv += ["A", name, address]
    for unit in units:
        argv += ["U", unit]
    for check in checks:
        argv += check_args(check)
        if settle > 0 and check.url is not None:
            argv += ["E", check.name, str(check.expect_status)]
    if settle > 0 and checks:
        argv += ["S", str(round(min(settle, MAX_SETTLE) * 1_000_000))]
    return argv


_CURL_ERRORS = {
    6: "cannot resolve host",
    7: "connection refused",
    28: "timed out",
    35: "TLS handshake failed",
    52: "empty reply",
    56: "connection reset",
    58: "client certificate problem",
    60: "certificate not trusted",
    77: "cannot read CA file",
    124: "timed out",  # timeout(1) ended curl (it can come first on a slow start, or a CA file that is a fifo)
}


def _check_result(name: str, rc: int, code: str, checks: dict[str, DesiredCheck]) -> CheckResult:
    check = checks.get(name)
    if check is not None and check.url is None:  # TCP
        return CheckResult(
            name, rc == 0, "port open" if rc == 0 else ("timed out" if rc == 124 else "connection refused")
        )
    if rc != 0:
        return CheckResult(name, False, _CURL_ERRORS.get(rc, f"curl exit {rc}"))
    expect = check.expect_status if check else 200
    return CheckResult(
        name, code == str(expect), f"HTTP {code}" + ("" if code == str(expect) else f", expected {expect}")
    )


_SYSTEMD_UTC = re.compile(r"[A-Z][a-z]{2} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})? UTC", re.ASCII)


def parse_timestamp(value: str) -> float | None:
    """systemd's `--timestamp=us+utc` form, e.g. 'Thu 2026-11-26 23:40:01.123456 UTC'; empty when never active."""
    value = value.strip()
    if not value or value == "n/a":
        return None
    # the form checked first, then fromisoformat (C: strptime was a tenth of a no-op pass's CPU); never quoted
    if not _SYSTEMD_UTC.fullmatch(value):
        raise ValueError("a unit timestamp that is not systemd's UTC form")
    try:
        stamp = datetime.fromisoformat(value[4:-4])
    except ValueError:  # e.g. month 13
        raise ValueError("a unit timestamp that is not systemd's UTC form") from None
    return stamp.replace(tzinfo=UTC).timestamp()


def parse_units(text: str) -> dict[str, UnitFact]:
    units: dict[str, UnitFact] = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" not in props:
            continue
        units[props["Id"]] = UnitFact(
            name=props["Id"],
            load_state=props.get("LoadState", ""),
            active_state=props.get("ActiveState", ""),
            sub_state=props.get("SubState", ""),
            unit_file_state=props.get("UnitFileState", ""),
            active_enter=parse_timestamp(props.get("ActiveEnterTimestamp", "")),
            main_pid=int(props.get("MainPID") or 0),
            need_daemon_reload=props.get("NeedDaemonReload") == "yes",
            fragment_path=props.get("FragmentPath", ""),
        )
    return units


def parse_cert(path: str, lines: list[str], now: float | None = None, known: CertFact | None = None) -> CertFact:
    """What the observe script says of a certificate -> CertFact: `missing`, `error <why>`, `same <stamp>` (the
    `known` fact holds), or `stamp <stamp>` and the file's CERTIFICATE block, parsed here (cryptography)."""
    first = lines[0] if lines else ""
    if first == "missing":
        return CertFact(path, exists=False)
    if first.startswith("error "):
        return CertFact(path, True, error=first[6:][:200])
    word, _, stamp = first.partition(" ")
    if word == "same":
        if known is None or not known.stamp or known.stamp != stamp:
            raise ObservationError(f"{path}: the host answered 'unchanged' for a certificate it was not asked about")
        return known
    if word != "stamp":
        raise ObservationError(f"{path}: the certificate's answer is garbled")
    from cryptography import x509  # asyncssh's own dependency; here, not at import: `validate` needs no SSH

    try:
        cert = x509.load_pem_x509_certificate("\n".join(lines[1:]).encode())
        not_after = cert.not_valid_after_utc.timestamp()
        subject = _subject(cert)
    except Exception:  # anything a host's bytes make the parser raise: the file is just not a certificate
        return CertFact(path, True, error="not a readable PEM certificate")
    not_before, serial = cert.not_valid_before_utc.timestamp(), cert.serial_number
    return CertFact(path, True, not_after, subject, stamp=_trusted(stamp, now), not_before=not_before, serial=serial)


def _subject(cert: Any) -> str:
    """The subject in `openssl x509 -subject`'s words ("O = k8s, CN = kubernetes"), control characters escaped."""
    parts = []
    for rdn in cert.subject.rdns:
        for attr in rdn:
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            parts.append(f"{attr.rfc4514_attribute_name} = {value}")
    text = ", ".join(parts)[:1000]
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def parse_observation(
    host: str,
    stdout: str,
    checks: Iterable[DesiredCheck] = (),
    paths: Iterable[str] | None = None,
    *,
    certificates: Iterable[str] | None = None,
    known: HostSnapshot | None = None,
    addresses: Iterable[str] | None = None,
) -> HostSnapshot:
    """Pure: the observe script's output -> HostSnapshot. Raises ValueError on a truncated or garbled output
    (however hostile the host, nothing else); with `paths`, facts about other paths are ignored. `certificates`
    and `known` are what `observe_argv` was given: what the host answers unchanged is taken from `known`."""
    try:
        return _parse_observation(
            host,
            stdout,
            checks,
            None if paths is None else set(paths),
            None if certificates is None else set(certificates),
            known or HostSnapshot(host),
            None if addresses is None else set(addresses),
        )
    except ObservationError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:  # the message would quote the host
        raise ObservationError(f"observation output is garbled ({type(exc).__name__})") from None


class ObservationError(ValueError):
    """The observe script's output is not what it prints: truncated, garbled, or a file it could not read."""


# A stamp is trusted (the file not read again while it stays the same) only when the file's last change (ctime) is
# this much older than the observation: a write within the same clock tick as the stamp's would leave it unchanged
# ("racy git"), so a file changed just now is read once more on the next observation.
RACY_SECONDS = 2.0


def _trusted(stamp: str, now: float | None) -> str:
    """The stamp if the file last changed well before `now` (the host's clock), else "" (read it again next time)."""
    if stamp == "-":  # the host found it changeable by someone other than root: never pinned
        return ""
    changed = float(stamp.rsplit(":", 1)[-1])
    return stamp if now is not None and changed < now - RACY_SECONDS else ""


def _file_fact(path: str, header: str, body: list[str], now: float | None, known: HostSnapshot) -> FileFact:
    if header == "@@MISSING":
        return FileFact(path, exists=False)
    if header == "@@SAME":
        was = known.files.get(path)
        if was is None or not was.stamp:
            raise ObservationError(f"{path}: the host answered 'unchanged' for a file it was not asked about")
        return was
    if header.startswith("@@LINK "):
        target = base64.b64decode(header[7:], validate=True).decode("utf-8", errors="replace")
        return FileFact(path, True, kind="symbolic link", target=target)
    if header.startswith("@@DIR "):
        mode, owner, group = header[6:].split(" ")
        return FileFact(path, True, int(mode, 8), owner, group, kind="directory")
    if header.startswith("@@OTHER "):
        return FileFact(path, True, kind=header[8:].strip()[:40] or "special file")
    if header.startswith("@@ERR"):
        raise ObservationError(f"cannot read {path}")
    mode, owner, group, mtime, size, *stamp = header.split(" ")
    if int(size) < 0 or len(stamp) > 1:
        raise ValueError("bad header")
    content = b"" if body == ["@@BIG"] else base64.b64decode("".join(body), validate=True)
    trusted = _trusted(stamp[0], now) if stamp else ""
    return FileFact(path, True, int(mode, 8), owner, group, float(mtime), content, int(size), stamp=trusted)


def _parse_observation(
    host: str,
    stdout: str,
    checks: Iterable[DesiredCheck],
    paths: set[str] | None,
    certificates: set[str] | None,
    known: HostSnapshot,
    addresses: set[str] | None = None,
) -> HostSnapshot:
    by_name = {c.name: c for c in checks}
    files: dict[str, FileFact] = {}
    results: dict[str, CheckResult] = {}
    units: dict[str, UnitFact] = {}
    certs: dict[str, CertFact] = {}
    held_by: dict[str, bool] = {}
    lines = stdout.split("\n")
    if "@@END" not in lines:
        raise ObservationError("observation output is truncated (no @@END)")
    now: float | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("@@F "):
            path, header = line[4:], lines[i + 1]
            i += 2
            body: list[str] = []
            while i < len(lines) and (not lines[i].startswith("@@") or lines[i] == "@@BIG"):
                body.append(lines[i])
                i += 1
            if i < len(lines) and lines[i].startswith("@@ERR"):  # dd failed after the file's header
                raise ObservationError(f"cannot read {path}")
            if path in files:
                raise ObservationError(f"{path} was answered twice")
            if paths is None or path in paths:
                files[path] = _file_fact(path, header, body, now, known)
            continue
        if line.startswith("@@NOW "):
            now = float(line[6:]) if line[6:].strip() else None  # empty: a bash older than 5 (no stamps trusted)
        elif line.startswith("@@C "):
            path, block = line[4:], []
            while i + 1 < len(lines) and not lines[i + 1].startswith("@@"):
                i += 1
                block.append(lines[i].rstrip("\r"))
            if path in certs:
                raise ObservationError(f"{path} was answered twice")
            if certificates is None or path in certificates:
                certs[path] = parse_cert(path, block, now, known.certificates.get(path))
        elif line.startswith("@@A "):
            _, name, held = line.split(" ", 2)
            if name in held_by:
                raise ObservationError(f"address {name} was answered twice")
            if addresses is None or name in addresses:  # a VirtualIP it was not asked about is not its to report
                held_by[name] = held == "1"
        elif line.startswith("@@H "):
            _, name, rc, code = line.split(" ", 3)
            # a name answered twice fails: the second line could only be spoofed (e.g. by a unit's property)
            twice = name in results
            results[name] = (
                CheckResult(name, False, "answered twice")
                if twice
                else _check_result(name, int(rc), code[:20], by_name)
            )
        elif line == "@@U":
            end = next((j for j in range(i, len(lines)) if lines[j] in ("@@UEND", "@@END")), None)
            if end is None:
                raise ObservationError("observation output is truncated (units without an end)")
            units = parse_units("\n".join(lines[i + 1 : end]))
            i = end + (lines[end] == "@@UEND")
            continue
        i += 1
    ordered = [results.get(name) or CheckResult(name, False, "no result") for name in by_name]
    return HostSnapshot(host, files, units, tuple(ordered), certs, held_by)


# Each open connection's last snapshot: what its host's files and certificates were, by stamp. It lives as long as
# the connection (a reconnect starts afresh) and holds only what the host's desired state names.
_LAST: WeakKeyDictionary[Connection, tuple[HostSnapshot, int]] = WeakKeyDictionary()
FULL_READ_EVERY = 20  # and every this many observations of a connection, everything is read anyway


async def observe_host(
    conn: Connection, desired: DesiredHost, *, with_checks: bool = True, settle: float = 0.0, renewed: bool = False
) -> HostSnapshot:
    """One round trip: every managed file, every managed unit and (optionally) every health check and certificate
    (`renewed`: the certificates reconciler renews, without the checks: what `plan` says of them).
    A file or certificate unchanged since this connection's last observation is not read or parsed again. With
    `settle`, failing checks are probed again on the host until they pass or that many seconds went by."""
    checks = desired.checks if with_checks else ()
    settle = min(settle, MAX_SETTLE) if settle > 0 else 0.0
    certs = [c.path for c in desired.certificates if with_checks or (renewed and c.renew is not None)]
    limits = {path: max(len(f.content), READ_LIMIT) for path, f in sorted(desired.files.items())}
    limits.update({path: 0 for path in desired.directories})  # a directory's stat; a file there is not read
    limits.update({u.reload_stamp: 0 for u in desired.units if u.reload_on})  # only its mtime counts
    # a reloadOn path no File writes (a Certificate's, e.g. a CA bundle): its mtime against the reload stamp
    limits.update({p: 0 for u in desired.units for p in u.reload_on if p not in limits})
    previous, count = _LAST.get(conn, (None, 0))
    # belt and braces: whatever a pinned stamp could miss is seen within FULL_READ_EVERY observations
    known = None if count % FULL_READ_EVERY == FULL_READ_EVERY - 1 else previous
    addresses = desired.addresses if with_checks else {}
    argv = observe_argv(limits, [u.name for u in desired.units], checks, certs, known, addresses, settle)
    # What an honest host can answer: base64 of every file read (4/3, newlines), plus units, checks, certificates.
    most = sum(limits.values()) * 3 // 2 + 64 * 1024 * (1 + len(desired.units) + len(certs) + len(checks))
    longest = max((c.timeout for c in checks), default=0)
    result = await conn.run(argv, timeout=60 + longest + settle, max_output=most)
    try:
        text = result.stdout.decode("utf-8", errors="replace")
        snapshot = parse_observation(
            desired.name, text, checks, limits, certificates=certs, known=known, addresses=addresses
        )
    except ValueError as exc:  # the exit status only: what the host wrote to stderr is not worth quoting here
        raise TransientHostError(
            f"{desired.name}: observation failed ({exc}); {argv[0]} exited {result.exit_status}"
        ) from exc
    # Content the host has as desired is kept as the desired bytes (one copy in memory, not two).
    files, kept_desired = dict(snapshot.files), False
    for path, fact in snapshot.files.items():
        want = desired.files.get(path)
        if want is not None and fact.content is not want.content and fact.content == want.content:
            files[path], kept_desired = replace(fact, content=want.content), True
    if kept_desired:
        snapshot = replace(snapshot, files=files)
    certs_now = snapshot.certificates if with_checks else previous.certificates if previous else {}
    kept = HostSnapshot(  # only what can be answered "unchanged": files and certificates with a trusted stamp
        desired.name,
        {p: f for p, f in files.items() if f.stamp},
        certificates={p: c for p, c in certs_now.items() if c.stamp},
    )
    _LAST[conn] = (kept, count + 1)
    return snapshot


async def probe(conn: Connection, host: str, check: DesiredCheck) -> CheckResult:
    """Run one health check on a host (used by rollouts to gate restarts)."""
    snapshot = await conn.run(observe_argv((), (), (check,)), timeout=30 + check.timeout)
    parsed = parse_observation(host, snapshot.stdout.decode("utf-8", errors="replace"), (check,))
    return parsed.checks[0] if parsed.checks else CheckResult(check.name, False, "no result")
