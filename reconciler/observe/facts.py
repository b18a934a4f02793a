"""Facts about a host, gathered in one round trip: files, systemd units, health probes, certificates.

A fact is a command plus a pure parser (pyinfra's shape): `observe_argv` builds the argv of one
constant bash script whose inputs are positional arguments (never spliced into the script text),
`parse_observation` turns its stdout into a `HostSnapshot`. `observe_host` runs both over a Connection.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

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


# Inputs arrive as "$@" in groups: F <path> <max bytes> | U <unit> | H <name> <timeout> <url> <ca> <cert> <key> |
# T <name> <timeout> <host> <port> | C <path> (a certificate: its end date and subject)
# A managed path is never followed if it is a symlink: its target is reported (base64), not read; any other
# non-regular file (directory, fifo, socket, device) is reported by its type. A regular file is read with
# O_NOFOLLOW (dd iflag=nofollow), and only when it is not larger than the limit given for it.
_OBSERVE_SCRIPT = r"""
export LC_ALL=C
units=()
declare -A canon  # each managed file's directory -> its real path, from one realpath for all of them
dirs=(); for ((i = 1; i <= $#; i++)); do if [ "${!i}" = F ]; then j=$((i + 1)); dirs+=("${!j%/*}"); fi; done
if [ ${#dirs[@]} -gt 0 ]; then
  mapfile -t real < <(realpath -m -- "${dirs[@]}")
  for ((i = 0; i < ${#dirs[@]}; i++)); do canon[${dirs[i]}]=${real[i]}; done
fi
while [ $# -gt 0 ]; do
  case "$1" in
  F)
    printf '@@F %s\n' "$2"
    if [ "${canon[${2%/*}]}" != "${2%/*}" ]; then
      echo '@@OTHER path through a symlinked directory'
    elif [ -L "$2" ]; then
      printf '@@LINK %s\n' "$(readlink -n -- "$2" | base64 -w0)"
    elif [ -f "$2" ]; then
      if ! meta=$(stat -c '%a %U %G %.9Y %s' -- "$2"); then echo '@@ERR unreadable'
      elif [ "${meta##* }" -gt "$3" ]; then printf '%s\n@@BIG\n' "$meta"
      else
        printf '%s\n' "$meta"
        dd if="$2" iflag=nofollow,count_bytes count=$(($3 + 1)) bs=1M status=none | base64
        [ "${PIPESTATUS[0]}" = 0 ] || echo '@@ERR unreadable'
      fi
    elif [ -e "$2" ]; then
      printf '@@OTHER %s\n' "$(stat -c '%F' -- "$2")"
    else
      echo '@@MISSING'
    fi
    shift 3 ;;
  U) units+=("$2"); shift 2 ;;
  C)
    printf '@@C %s\n' "$2"
    if [ ! -e "$2" ]; then echo 'missing'
    elif [ ! -f "$2" ]; then echo 'error not a regular file'
    elif [ "$(stat -L -c %s -- "$2")" -gt 65536 ]; then echo 'error larger than 64 KiB, not a certificate'
    elif ! command -v openssl >/dev/null; then echo 'error no openssl on the host'
    else timeout 10 openssl x509 -noout -enddate -subject -in "$2" 2>/dev/null || echo 'error not a readable PEM certificate'
    fi
    shift 2 ;;
  H)
    # -q first: no ~/.curlrc; --noproxy: no proxy from the environment answers for the component
    opts=(@CURL_SAFE@ -o /dev/null -w '%{http_code}' --max-time "$3")
    [ "$5" != - ] && opts+=(--cacert "$5")
    [ "$6" != - ] && opts+=(--cert "$6" --key "$7")
    code=$(timeout -k 1 "$3" curl "${opts[@]}" -- "$4"); rc=$?  # curl opens a fifo CA file before --max-time counts
    printf '@@H %s %s %s\n' "$2" "$rc" "$code"
    shift 7 ;;
  T)
    timeout "$3" bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$4" "$5" 2>/dev/null; rc=$?
    printf '@@H %s %s -\n' "$2" "$rc"
    shift 5 ;;
  *) echo "@@ERR bad argument $1"; exit 2 ;;
  esac
done
if [ ${#units[@]} -gt 0 ]; then
  echo '@@U'
  systemctl show --timestamp=us+utc -p PROPS -- "${units[@]}"
fi
echo '@@END'
""".replace("PROPS", ",".join(UNIT_PROPERTIES))
OBSERVE_SCRIPT = _OBSERVE_SCRIPT.replace("@CURL_SAFE@", shlex.join(CURL_SAFE))

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
) -> list[str]:
    """The observe command; `paths` maps each file to the most bytes worth reading (READ_LIMIT when a list)."""
    limits = paths if isinstance(paths, Mapping) else {p: READ_LIMIT for p in paths}
    argv = ["bash", "-c", OBSERVE_SCRIPT, "reconciler-observe"]
    for path in certificates:
        argv += ["C", path]
    for path, limit in limits.items():
        argv += ["F", path, str(limit)]
    for unit in units:
        argv += ["U", unit]
    for check in checks:
        argv += check_args(check)
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


def parse_timestamp(value: str) -> float | None:
    """systemd's `--timestamp=us+utc` form, e.g. 'Thu 2026-11-26 23:40:01.123456 UTC'; empty when never active."""
    value = value.strip()
    if not value or value == "n/a":
        return None
    stamp = datetime.strptime(value, "%a %Y-%m-%d %H:%M:%S.%f UTC")
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


def parse_cert(path: str, lines: list[str]) -> CertFact:
    """`openssl x509 -noout -enddate -subject` output (or the script's missing/error line) -> CertFact."""
    if lines[:1] == ["missing"]:
        return CertFact(path, exists=False)
    if lines and lines[0].startswith("error "):
        return CertFact(path, True, error=lines[0][6:])
    props = dict(line.split("=", 1) for line in lines if "=" in line)
    try:
        end = datetime.strptime(" ".join(props.get("notAfter", "").split()), "%b %d %H:%M:%S %Y GMT")
    except ValueError:
        return CertFact(path, True, error="cannot read its end date")
    return CertFact(path, True, end.replace(tzinfo=UTC).timestamp(), props.get("subject", "").strip())


def parse_observation(
    host: str, stdout: str, checks: Iterable[DesiredCheck] = (), paths: Iterable[str] | None = None
) -> HostSnapshot:
    """Pure: the observe script's output -> HostSnapshot. Raises ValueError on a truncated or garbled output
    (however hostile the host, nothing else); with `paths`, facts about other paths are ignored."""
    try:
        return _parse_observation(host, stdout, checks, None if paths is None else set(paths))
    except ObservationError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:  # the message would quote the host
        raise ObservationError(f"observation output is garbled ({type(exc).__name__})") from None


class ObservationError(ValueError):
    """The observe script's output is not what it prints: truncated, garbled, or a file it could not read."""


def _file_fact(path: str, header: str, body: list[str]) -> FileFact:
    if header == "@@MISSING":
        return FileFact(path, exists=False)
    if header.startswith("@@LINK "):
        target = base64.b64decode(header[7:], validate=True).decode("utf-8", errors="replace")
        return FileFact(path, True, kind="symbolic link", target=target)
    if header.startswith("@@OTHER "):
        return FileFact(path, True, kind=header[8:].strip()[:40] or "special file")
    if header.startswith("@@ERR"):
        raise ObservationError(f"cannot read {path}")
    mode, owner, group, mtime, size = header.split(" ")
    if int(size) < 0:
        raise ValueError("negative size")
    content = b"" if body == ["@@BIG"] else base64.b64decode("".join(body), validate=True)
    return FileFact(path, True, int(mode, 8), owner, group, float(mtime), content, int(size))


def _parse_observation(host: str, stdout: str, checks: Iterable[DesiredCheck], paths: set[str] | None) -> HostSnapshot:
    by_name = {c.name: c for c in checks}
    files: dict[str, FileFact] = {}
    results: list[CheckResult] = []
    units: dict[str, UnitFact] = {}
    certs: dict[str, CertFact] = {}
    lines = stdout.split("\n")
    if "@@END" not in lines:
        raise ObservationError("observation output is truncated (no @@END)")
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
            if paths is None or path in paths:
                files[path] = _file_fact(path, header, body)
            continue
        if line.startswith("@@C "):
            path, cert_lines = line[4:], []
            i += 1
            while i < len(lines) and not lines[i].startswith("@@"):
                cert_lines.append(lines[i])
                i += 1
            certs[path] = parse_cert(path, cert_lines)
            continue
        if line.startswith("@@H "):
            _, name, rc, code = line.split(" ", 3)
            results.append(_check_result(name, int(rc), code[:20], by_name))
        elif line == "@@U":
            end = lines.index("@@END", i)
            units = parse_units("\n".join(lines[i + 1 : end]))
            i = end
            continue
        i += 1
    answered = {r.name for r in results}
    results += [CheckResult(name, False, "no result") for name in by_name if name not in answered]
    return HostSnapshot(host, files, units, tuple(results), certs)


async def observe_host(conn: Connection, desired: DesiredHost, *, with_checks: bool = True) -> HostSnapshot:
    """One round trip: every managed file, every managed unit and (optionally) every health check."""
    checks = desired.checks if with_checks else ()
    certs = [c.path for c in desired.certificates] if with_checks else []
    limits = {path: max(len(f.content), READ_LIMIT) for path, f in sorted(desired.files.items())}
    argv = observe_argv(limits, [u.name for u in desired.units], checks, certs)
    # What an honest host can answer: base64 of every file read (4/3, newlines), plus units, checks, certificates.
    most = sum(limits.values()) * 3 // 2 + 64 * 1024 * (1 + len(desired.units) + len(certs) + len(checks))
    result = await conn.run(argv, timeout=60 + sum(c.timeout for c in checks), max_output=most)
    try:
        return parse_observation(desired.name, result.stdout.decode("utf-8", errors="replace"), checks, limits)
    except ValueError as exc:  # the exit status only: what the host wrote to stderr is not worth quoting here
        raise TransientHostError(
            f"{desired.name}: observation failed ({exc}); {argv[0]} exited {result.exit_status}"
        ) from exc


async def probe(conn: Connection, host: str, check: DesiredCheck) -> CheckResult:
    """Run one health check on a host (used by rollouts to gate restarts)."""
    snapshot = await conn.run(observe_argv((), (), (check,)), timeout=30 + check.timeout)
    parsed = parse_observation(host, snapshot.stdout.decode("utf-8", errors="replace"), (check,))
    return parsed.checks[0] if parsed.checks else CheckResult(check.name, False, "no result")
