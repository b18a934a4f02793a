"""What `reconciler import` reads from a host built by hand: its units, the files they read, its certificates.

Owns the read-only commands import runs (a few round trips per host, never a write) and their pure parsers.
Every path asked for is one a spec could name (`spec.model.PATH_RE`); a symlink, a path reached through one, or
a file larger than MAX_FILE is reported, never followed or read. All it reads from one host fits MAX_HOST_BYTES:
the host is told what is left and stops there, and the transport reads no further than that could take (a host
that goes on anyway is cut off), so a host holding gigabytes costs import megabytes. Also decides which files are
sensitive (adopt.secrets). Called by `adopt.importer`.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from reconciler.adopt.secrets import env_file_secrets, unit_file_secrets, url_password
from reconciler.components.systemd import Service, service, unit_directives
from reconciler.errors import PermanentHostError, TransientHostError
from reconciler.spec.model import is_spec_path
from reconciler.transport.base import Connection

SEED_UNITS = ("etcd.service", "kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service")
CERT_DIR = "/etc/kubernetes/ssl"
MAX_FILE = 1024 * 1024  # a config file import copies: larger is refused (the read stops just past it)
MAX_PATHS = 256  # paths one host may make import read
MIB = 1024 * 1024
MAX_HOST_BYTES = 16 * MIB  # all import reads from one host: file contents and the other commands' output
_ANSWER_OVERHEAD = 2048  # per path asked: the read script's header line (path, size, mode, owner, group)
_UNIT_FIELDS = "Id,LoadState,ActiveState,UnitFileState,FragmentPath,DropInPaths"

# Flags naming a config file the component reads (copied; sensitive ones marked so), and flags naming a
# certificate (reported as Certificate documents, never copied). Flags naming keys are never read at all.
CONFIG_FLAGS = {
    "token-auth-file": True,  # value: sensitive
    "basic-auth-file": True,
    "encryption-provider-config": True,
    "kubeconfig": True,
    "authentication-token-webhook-config-file": True,
    "authorization-webhook-config-file": True,
    "authorization-policy-file": False,
    "audit-policy-file": False,
    "admission-control-config-file": False,
}
CERT_FLAGS = (
    "tls-cert-file",
    "client-ca-file",
    "etcd-cafile",
    "etcd-certfile",
    "cluster-signing-cert-file",
    "root-ca-file",
    "requestheader-client-ca-file",
    "proxy-client-cert-file",
    "kubelet-client-certificate",
    "kubelet-certificate-authority",
    "cert-file",
    "trusted-ca-file",
    "peer-cert-file",
    "peer-trusted-ca-file",
)

_LIST_SCRIPT = r"""
fields=$1; dir=$2; shift 2
systemctl show -p "$fields" -- "$@" | sed -n '1,4000p'
echo @@CERTS
for f in "$dir"/*.pem "$dir"/*.crt; do
  if [ -f "$f" ] && [ ! -L "$f" ] && [ "$(dd if="$f" iflag=nofollow bs=27 count=1 status=none)" = "-----BEGIN CERTIFICATE-----" ]; then
    printf '%s\n' "$f"
  fi
done | head -n 256
"""

# Its first argument is the budget left (bytes of file content); then one line per path asked, in order:
# "@@F <path> <state>", for a regular file or a directory followed by "<size> <mode> <base64 owner> <base64 group>"
# (names may hold anything: NSS), and for a regular file then a line with, in base64, its content when it is at
# most MAX_FILE bytes (nothing otherwise): at most the size stat gave plus one byte (a file growing meanwhile is
# seen, never sent whole). A file the budget cannot take ends the answer: "@@BUDGET <path>". Never through a
# symlink (the path's or a directory's).
_READ_SCRIPT = r"""
left=$1; shift
for p in "$@"; do
  d=$(dirname -- "$p")
  if [ "$(realpath -m -- "$d")" != "$d" ]; then echo "@@F $p dirlink"; continue; fi
  if [ -L "$p" ]; then echo "@@F $p link"; continue; fi
  if [ ! -e "$p" ]; then echo "@@F $p missing"; continue; fi
  if [ -d "$p" ]; then kind=dir; elif [ -f "$p" ]; then kind=file; else echo "@@F $p notfile"; continue; fi
  if ! st=$(stat -c '%s %a' -- "$p") || ! u=$(stat -c %U -- "$p") || ! g=$(stat -c %G -- "$p"); then
    echo "@@F $p unreadable"; continue
  fi
  size=${st%% *}
  read_it=no
  if [ "$kind" = file ] && [ "$size" -le @MAX@ ]; then
    if [ "$size" -gt "$left" ]; then echo "@@BUDGET $p"; exit 0; fi
    left=$((left - size)); read_it=yes
  fi
  echo "@@F $p $kind $st $(printf %s "$u" | base64 -w0) $(printf %s "$g" | base64 -w0)"
  if [ "$read_it" = yes ]; then
    dd if="$p" iflag=nofollow bs=65536 count=$((size / 65536 + 1)) status=none | head -c $((size + 1)) | base64 -w0
  fi
  if [ "$kind" = file ]; then echo; fi
done
""".replace("@MAX@", str(MAX_FILE))

# Each unit file's path with its directory as the kernel resolves it: systemd may report a unit under a
# directory that is a link (Debian's merged /usr: /lib -> usr/lib); a spec names where the file really is.
_CANONICAL_SCRIPT = r"""
for p in "$@"; do printf '%s/%s\0' "$(realpath -e -- "$(dirname -- "$p")")" "$(basename -- "$p")"; done
"""

# Whether each path holds a certificate: its first line, read without following a link (a key's first line
# says only that it is a key; nothing more of it is read).
_CERT_SCRIPT = r"""
for p in "$@"; do
  if [ -f "$p" ] && [ ! -L "$p" ] && [ "$(dd if="$p" iflag=nofollow bs=27 count=1 status=none)" = "-----BEGIN CERTIFICATE-----" ]; then
    printf '%s\n' "$p"
  fi
done
"""


@dataclass(frozen=True)
class FoundUnit:
    name: str
    load_state: str
    active_state: str
    unit_file_state: str
    fragment_path: str
    drop_ins: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        return self.load_state == "loaded" and bool(self.fragment_path)


@dataclass(frozen=True)
class FoundFile:
    path: str
    state: str  # "file", "dir" (no content), or why it was not read: link, dirlink, missing, notfile, large, budget
    content: bytes = b""
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"

    @property
    def ok(self) -> bool:
        return self.state == "file"

    def why(self) -> str:
        return {
            "link": "is a symlink (import follows no link)",
            "dirlink": "is reached through a symlinked directory (import follows no link)",
            "missing": "does not exist",
            "notfile": "is not a regular file",
            "dir": "is a directory",
            "large": f"is larger than {MAX_FILE} bytes",
            "budget": f"is past import's budget of {MAX_HOST_BYTES // MIB} MiB per host (MAX_HOST_BYTES)",
        }.get(self.state, self.state)


class OverBudget(PermanentHostError):
    """A host holds more for import to read than MAX_HOST_BYTES: nothing of it is imported."""

    def __init__(self, host: str, at: str = ""):
        where = f"; it ran out at {at[:200]}" if at else ""
        super().__init__(
            f"more to read than import's budget of {MAX_HOST_BYTES // MIB} MiB per host (MAX_HOST_BYTES{where}): "
            "not read further"
        )
        self.host = host


@dataclass
class FoundHost:
    """What one host has: units by name, files by path (unit files and the files they read), certificates."""

    name: str
    units: dict[str, FoundUnit] = field(default_factory=dict)
    files: dict[str, FoundFile] = field(default_factory=dict)
    reads: dict[str, tuple[str, ...]] = field(default_factory=dict)  # unit -> config files it reads, in order
    sensitive: set[str] = field(default_factory=set)
    unit_secrets: dict[str, str] = field(default_factory=dict)  # unit file -> what looks secret in it (no value)
    read_bytes: int = 0  # of MAX_HOST_BYTES
    certificates: tuple[str, ...] = ()
    services: dict[str, Service] = field(default_factory=dict)  # unit -> what its process sees
    directories: dict[str, tuple[str, ...]] = field(default_factory=dict)  # unit -> the directories it works in
    problems: list[str] = field(default_factory=list)

    def texts(self) -> dict[str, str]:
        return {p: f.content.decode("utf-8", "replace") for p, f in self.files.items() if f.ok}


def parse_units(text: str) -> list[FoundUnit]:
    """`systemctl show` of several units: one FoundUnit per block, in the order asked."""
    units: list[FoundUnit] = []
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        drop_ins = tuple(p for p in props.get("DropInPaths", "").split() if p)
        units.append(
            FoundUnit(
                props.get("Id", ""),
                props.get("LoadState", ""),
                props.get("ActiveState", ""),
                props.get("UnitFileState", ""),
                props.get("FragmentPath", ""),
                drop_ins,
            )
        )
    return units


_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]{0,30}\$?")


def parse_reads(text: str, asked: Sequence[str]) -> dict[str, FoundFile]:
    """The read script's answers, taken strictly in the order the paths were asked: an answer for another path,
    or out of step, makes it and every later path unreadable (a host cannot give one path another's content).
    Where the host says the budget ran out, that path and every later one are "budget"."""
    found: dict[str, FoundFile] = {}
    lines = text.split("\n")
    i = 0
    for n, path in enumerate(asked):
        words = lines[i].split(" ") if i < len(lines) else []
        i += 1
        if words[:1] == ["@@BUDGET"]:
            found.update({p: FoundFile(p, "budget") for p in asked[n:]})
            break
        if len(words) < 3 or words[:2] != ["@@F", path]:
            found.update({p: FoundFile(p, "answered out of order") for p in asked[n:]})
            break
        state = words[2]
        if state not in ("file", "dir"):
            found[path] = FoundFile(path, state if len(words) == 3 and state != "budget" else "unreadable")
            continue
        body = lines[i] if state == "file" and i < len(lines) else ""
        i += state == "file"
        found[path] = _read_answer(path, state, words[3:], body)
    return found


def _read_answer(path: str, state: str, fields: list[str], body: str) -> FoundFile:
    if len(fields) != 4:
        return FoundFile(path, "unreadable stat output")
    try:
        size, mode = int(fields[0]), int(fields[1], 8)
        owner, group = (base64.b64decode(f, validate=True).decode() for f in fields[2:])
        content = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return FoundFile(path, "unreadable answer")
    if not (_ACCOUNT.fullmatch(owner) and _ACCOUNT.fullmatch(group)):
        return FoundFile(path, "owned by a user or group whose name a spec cannot hold")
    if size > MAX_FILE:
        return FoundFile(path, "large")
    if len(content) > size:
        return FoundFile(path, "changed while it was read")
    return FoundFile(path, state, content, mode, owner, group)


def _canonical_ok(path: str, real: str, host: FoundHost) -> bool:
    """A resolved unit file path is believed only as the same file name in a directory a spec can name."""
    return posixpath.basename(real) == posixpath.basename(path) and bool(_valid_paths([real], host, "unit file"))


def _valid_paths(paths: Iterable[str], host: FoundHost, why: str) -> list[str]:
    out: list[str] = []
    for p in dict.fromkeys(paths):
        if is_spec_path(p):
            out.append(p)
        else:
            host.problems.append(f"{why} {p[:200]!r} is not a path a spec can name; not imported")
    if len(out) > MAX_PATHS:
        host.problems.append(f"more than {MAX_PATHS} paths to read ({why}); the rest were not imported")
    return out[:MAX_PATHS]


class _Reader:
    """import's commands on one host, within the host's byte budget (MAX_HOST_BYTES)."""

    def __init__(self, conn: Connection, host: FoundHost):
        self.conn = conn
        self.host = host

    @property
    def left(self) -> int:
        return MAX_HOST_BYTES - self.host.read_bytes

    async def run(self, script: str, args: list[str], max_output: int = 4 * MIB) -> str:
        """A small command's answer (unit lists, paths): at most `max_output`, counted against the budget."""
        if self.left <= 0:
            raise OverBudget(self.host.name)
        result = await self.conn.run(
            ["sh", "-c", script, "reconciler-import", *args], timeout=60, max_output=min(max_output, self.left)
        )
        if not result.ok:
            raise TransientHostError(f"import's read failed: {result.describe()}")
        self.host.read_bytes += len(result.stdout)
        return result.stdout.decode("utf-8", "replace")

    async def read(self, paths: list[str]) -> None:
        """The files at `paths` (at most what the budget has left; OverBudget when they need more)."""
        if not paths:
            return
        left = self.left
        # the host answers at most `left` bytes of content, in base64 (4 characters for every 3 bytes, at most 4
        # more per file), each after one header line; a host sending more is cut off by the transport
        headers = sum(2 * len(p) + _ANSWER_OVERHEAD for p in paths)
        cap = (left + len(paths)) * 4 // 3 + headers
        result = await self.conn.run(
            ["sh", "-c", _READ_SCRIPT, "reconciler-import", str(left), *paths], timeout=60, max_output=cap
        )
        if not result.ok:
            raise TransientHostError(f"import's read failed: {result.describe()}")
        sent = len(result.stdout)
        found = parse_reads(result.stdout.decode("utf-8", "replace"), paths)
        del result
        # what it sent counts, kept or not: content refused (larger than its stat said) is not read again for free
        self.host.read_bytes += max(sum(len(f.content) for f in found.values()), (sent - headers) * 3 // 4)
        over = next((p for p in paths if found[p].state == "budget"), None)
        if over is not None or self.host.read_bytes > MAX_HOST_BYTES:
            raise OverBudget(self.host.name, over or "")
        self.host.files.update(found)


def environment_files(unit_text: str, drop_ins: list[str]) -> list[str]:
    """EnvironmentFile= paths of a unit and its drop-ins, in systemd's order (an empty assignment resets)."""
    paths: list[str] = []
    for text in [unit_text, *drop_ins]:
        for d in unit_directives(text):
            if d.section == "Service" and d.key == "EnvironmentFile":
                paths = paths + [d.value.lstrip("-")] if d.value else []
    return paths


def etcd_options(svc: Service) -> dict[str, str]:
    """etcd's options as it takes them: a flag wins over its ETCD_* variable."""
    flags = {k: s.value for k, s in svc.flags().items()}
    env = {
        k[len("ETCD_") :].lower().replace("_", "-"): s.value
        for k, s in svc.environment.items()
        if k.startswith("ETCD_")
    }
    return {**env, **flags}


def work_directories(unit_text: str, svc: Service) -> tuple[str, ...]:
    """The directories a unit works in that a person creates by hand: WorkingDirectory= (an absolute one) and
    etcd's data directory (`--data-dir` / ETCD_DATA_DIR)."""
    found = [
        d.value.lstrip("-").rstrip("/") or "/"
        for d in unit_directives(unit_text)
        if d.section == "Service" and d.key == "WorkingDirectory" and d.value.lstrip("-").startswith("/")
    ]
    if svc.program == "etcd" and etcd_options(svc).get("data-dir", "").startswith("/"):
        found.append(etcd_options(svc)["data-dir"].rstrip("/"))
    return tuple(dict.fromkeys(d for d in found if d != "/"))


def referenced(svc: Service) -> tuple[dict[str, bool], list[str]]:
    """Config files (path -> sensitive) and certificates the service's flags and etcd options name. A config file
    in a directory that holds one of the service's keys is sensitive too (whatever sits beside keys is)."""
    configs: dict[str, bool] = {}
    certs: list[str] = []
    key_dirs: set[str] = set()
    options = etcd_options(svc) if svc.program == "etcd" else {k: s.value for k, s in svc.flags().items()}
    for name, value in options.items():
        if not value.startswith("/"):
            continue
        if name in CONFIG_FLAGS:
            configs[value] = CONFIG_FLAGS[name]
        elif name in CERT_FLAGS:
            certs.append(value)
        elif "key" in name:
            key_dirs.add(value.rsplit("/", 1)[0])
    return {p: secret or p.rsplit("/", 1)[0] in key_dirs for p, secret in configs.items()}, certs


async def discover(conn: Connection, name: str, extra_units: tuple[str, ...] = ()) -> FoundHost:
    """Read one host: five round trips, nothing written, at most MAX_HOST_BYTES read (OverBudget otherwise)."""
    host = FoundHost(name)
    reader = _Reader(conn, host)
    wanted = list(dict.fromkeys(SEED_UNITS + extra_units))
    text = await reader.run(_LIST_SCRIPT, [_UNIT_FIELDS, CERT_DIR, *wanted])
    units_text, _, certs_text = text.partition("@@CERTS\n")
    for asked, u in zip(wanted, parse_units(units_text), strict=False):
        if u.name != asked and u.present:  # an alias: systemd answers with the unit's own name
            host.problems.append(f"{asked} is another name for {u.name}; import it by its own name (--unit {u.name})")
        elif u.name == asked and u.present:
            host.units[asked] = u
    paths = [u.fragment_path for u in host.units.values()] + [p for u in host.units.values() for p in u.drop_ins]
    paths = _valid_paths(paths, host, "unit file")
    answer = (await reader.run(_CANONICAL_SCRIPT, paths)).split("\0") if paths else [""]
    if len(answer) != len(paths) + 1:  # one NUL-ended answer per path, or none is believed
        host.problems.append("the unit files' directories could not be resolved")
        answer = paths + [""]
    real = {p: r for p, r in zip(paths, answer, strict=False) if r == p or _canonical_ok(p, r, host)}
    for name, u in list(host.units.items()):
        host.units[name] = replace(
            u,
            fragment_path=real.get(u.fragment_path, u.fragment_path),
            drop_ins=tuple(real.get(p, p) for p in u.drop_ins),
        )
    await reader.read([real.get(p, p) for p in paths])
    env_paths: dict[str, list[str]] = {}
    for u in host.units.values():
        unit = host.files.get(u.fragment_path)
        if unit is None or not unit.ok:
            continue
        drop_ins = [host.files[p].content.decode("utf-8", "replace") for p in u.drop_ins if p in host.files]
        env_paths[u.name] = environment_files(unit.content.decode("utf-8", "replace"), drop_ins)
    await reader.read(_valid_paths((p for ps in env_paths.values() for p in ps), host, "environment file"))
    texts = host.texts()
    configs: dict[str, bool] = {}
    cert_paths = [line for line in certs_text.splitlines() if line]
    for u in host.units.values():
        if u.fragment_path not in texts:
            continue
        # service() reads drop-ins by their names; systemd's own order (DropInPaths) kept by numbered names instead
        texts_with_drop_ins = {p: text for p, text in texts.items() if p not in u.drop_ins}
        for i, p in enumerate(u.drop_ins):
            if p in texts:
                texts_with_drop_ins[f"{u.fragment_path}.d/{i:04d}.conf"] = texts[p]
        svc = host.services[u.name] = service(u.fragment_path, texts_with_drop_ins)
        host.directories[u.name] = work_directories(texts[u.fragment_path], svc)
        mine, certs = referenced(svc)
        configs.update(mine)
        cert_paths += certs
        host.reads[u.name] = tuple(dict.fromkeys(list(u.drop_ins) + env_paths.get(u.name, []) + list(mine)))
    del texts
    dirs = {d for ds in host.directories.values() for d in ds}
    wanted_paths = [p for p in list(configs) + sorted(dirs) if p not in host.files]
    await reader.read(_valid_paths(wanted_paths, host, "config file or directory"))
    _mark_sensitive(host, {p for ps in env_paths.values() for p in ps}, {p for p, secret in configs.items() if secret})
    certs = _valid_paths(cert_paths, host, "certificate")
    if certs:
        found = await reader.run(_CERT_SCRIPT, certs)
        host.certificates = tuple(sorted(set(found.split()) & set(certs)))
    return host


def _mark_sensitive(host: FoundHost, env_files: set[str], secret_configs: set[str]) -> None:
    """The files the units read that import marks sensitive: named by a flag as secret (or beside a key), kept
    from others on the host, or an env file or drop-in holding a secret-looking name (adopt.secrets). A unit
    file cannot be a sensitive File: what looks secret in one is noted in `unit_secrets` (names, never values)."""
    drop_ins = {p for u in host.units.values() for p in u.drop_ins}
    host.sensitive = set(secret_configs)
    for path in {p for ps in host.reads.values() for p in ps}:
        f = host.files.get(path)
        if f is None or not f.ok:
            continue
        text = f.content.decode("utf-8", "replace")
        if (
            not f.mode & 0o004  # kept from others on the host: whatever it holds, its owner meant it so
            or (path in env_files and env_file_secrets(text))
            or (path in drop_ins and unit_file_secrets(text))
            or url_password(text)
        ):
            host.sensitive.add(path)
    for u in host.units.values():
        f = host.files.get(u.fragment_path)
        if f is None or not f.ok:
            continue
        names = unit_file_secrets(f.content.decode("utf-8", "replace"))
        if names:
            host.unit_secrets[u.fragment_path] = "holds " + ", ".join(names)
        elif not f.mode & 0o004:
            host.unit_secrets[u.fragment_path] = f"is kept from others on the host (mode {f.mode:04o})"
