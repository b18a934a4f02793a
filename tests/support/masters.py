"""Masters built by hand, in memory: `transport.fake.SimHost`s holding what the seed's guide leaves on a host (its
texts from tests/support/seed.py), for import's unit tests. The host import reads is the host `plan` then
observes: one object. Also what import makes of them: the hosts read (`found_hosts`), the spec directory written
(`adopt`), and the check that it gives every host exactly its own bytes (`assert_exact`).

The fleet's addressing plan: master-N is 198.18.0.(10 + N) (`address`). Its files were written at BUILT_AT and
its units started after them, so nothing has changed since a unit started.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.adopt.describe import Adoption, HostInfo, describe
from reconciler.adopt.discover import FoundFile, FoundHost, discover
from reconciler.adopt.emit import spec_files
from reconciler.spec.desired import DesiredState
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import FakeConnection, SimFile, SimHost, SimUnit
from tests.support.seed import ETCD_UNIT_PATH, KUBE_UNIT_DIR, KUBE_UNITS, SSL_DIR, TOKEN_CSV, guide_files

BUILT_AT = 1_750_000_000.0  # when every file of a built master was written
STARTED_AT = BUILT_AT + 50  # when its units started
SYSTEMD_LIB = "/lib/systemd/system"  # where systemd reports the kube units: /lib -> usr/lib (Debian's merged /usr)
TOKEN = TOKEN_CSV.encode()
CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----\n"
KEY_PEM = b"-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END RSA PRIVATE KEY-----\n"


def address(host: SimHost | str) -> str:
    """The host's address in the fleet's plan: master-N (or any name ending in N) is 198.18.0.(10 + N)."""
    name = host if isinstance(host, str) else host.name
    number = re.search(r"[0-9]+$", name)
    assert number is not None, name
    return f"198.18.0.{10 + int(number.group())}"


def put(host: SimHost, path: str, content: bytes, mode: int = 0o644, owner: str = "root", group: str = "root") -> None:
    """A file as the person building the host wrote it (at BUILT_AT)."""
    host.files[path] = SimFile(content, mode, owner, group, mtime=BUILT_AT, ctime=BUILT_AT)


def add_unit(host: SimHost, name: str, content: bytes | None = None, path: str = "") -> SimUnit:
    """A unit installed by hand: its file (`content` at `path`, /etc/systemd/system/<name> by default; None: the
    file is already there), then daemon-reload, enable and start."""
    path = path or f"/etc/systemd/system/{name}"
    if content is not None:
        put(host, host.real(path), content)
    unit = SimUnit(active=True, enabled=True, active_enter=STARTED_AT, loaded_mtime=BUILT_AT, path=path)
    unit.pid = 100 + len(host.units)
    host.units[name] = unit
    return unit


def fleet(n: int = 3) -> list[SimHost]:
    """Masters built by hand as the seed's guide builds them; they differ only by their own name and address. The
    apiserver's env file says `{ not a template }` in its header (text import must not take for a template);
    token.csv is 0600, etcd.conf 0640 root:etcd."""
    members = {f"master-{i}": address(f"master-{i}") for i in range(1, n + 1)}
    hosts = []
    for name, a in members.items():
        host = SimHost(name)
        host.dir_links[SYSTEMD_LIB] = KUBE_UNIT_DIR
        for path, text in guide_files(name, a, members).items():
            put(host, path, text.encode())
        apiserver = host.files["/etc/kubernetes/apiserver"]
        header = b"## kubernetes system config\n"
        apiserver.content = apiserver.content.replace(header, header[:-1] + b" { not a template }\n", 1)
        host.files["/etc/kubernetes/token.csv"].mode = 0o600
        etcd_conf = host.files["/etc/etcd/etcd.conf"]
        etcd_conf.mode, etcd_conf.group = 0o640, "etcd"
        for pem in ("ca", "kubernetes"):
            put(host, f"{SSL_DIR}/{pem}.pem", CERT_PEM)
            put(host, f"{SSL_DIR}/{pem}-key.pem", KEY_PEM)
        host.dirs.update(
            {"/var/lib/etcd": (0o755, "root", "root"), "/var/lib/etcd/default.etcd": (0o700, "etcd", "etcd")}
        )
        add_unit(host, "etcd.service", path=ETCD_UNIT_PATH)
        for unit in KUBE_UNITS:
            add_unit(host, f"{unit}.service", path=f"{SYSTEMD_LIB}/{unit}.service")
        hosts.append(host)
    return hosts


def guide_fleet(n: int = 3) -> list[SimHost]:
    """The fleet as the seed's guide leaves it: token.csv written under umask 022 and never tightened (0644)."""
    hosts = fleet(n)
    for h in hosts:
        h.files["/etc/kubernetes/token.csv"].mode = 0o644
    return hosts


def heavy_master(files: int = 256, size: int = 1024 * 1024) -> SimHost:
    """A master whose scheduler reads `files` env files of `size` bytes each."""
    host = fleet(1)[0]
    env = "".join(f"EnvironmentFile=-/etc/big/{i}.env\n" for i in range(files))
    scheduler = host.files[f"{KUBE_UNIT_DIR}/kube-scheduler.service"]
    scheduler.content = scheduler.content.replace(b"[Service]\n", f"[Service]\n{env}".encode())
    for i in range(files):
        put(host, f"/etc/big/{i}.env", (b"X=" + b"x" * (size - 3) + b"\n")[:size])
    return host


# An application with secrets: a token in a drop-in and keys in an env file (both 0600), a 0644 env file without one.
VAULT = "s.Zq8SECRETvaultTOKEN4711"
AWS = "wJalrXUtnFEMI+K7MDENG+bPxRfiCYSECRETKEY"
APP_UNIT = "/etc/systemd/system/app.service"
DROP_IN = "/etc/systemd/system/app.service.d/10-vault.conf"
AWS_ENV = "/etc/app/aws.env"
PLAIN_ENV = "/etc/app/plain.env"


def app_host() -> SimHost:
    """A host (m1) whose app.service reads a token from a drop-in and keys from an env file, both 0600, and a 0644
    env file with no secret in it."""
    host = SimHost("m1")
    unit = f"[Service]\nEnvironmentFile={AWS_ENV}\nEnvironmentFile=-{PLAIN_ENV}\nExecStart=/usr/bin/app\n"
    add_unit(host, "app.service", unit.encode(), APP_UNIT).drop_ins = (DROP_IN,)
    put(host, DROP_IN, f"[Service]\nEnvironment=VAULT_ADDR=https://vault:8200 VAULT_TOKEN={VAULT}\n".encode(), 0o600)
    put(host, AWS_ENV, f"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nAWS_SECRET_ACCESS_KEY={AWS}\n".encode(), 0o600)
    plain = (
        b"LOG_LEVEL=info\nAPP_KEY_FILE=/etc/app/tls.key\nETCD_KEY_FILE=/etc/ssl/etcd-key.pem\nTOKEN_TTL=3600\n"
        b"ETCD_INITIAL_CLUSTER_TOKEN=k8s-etcd-cluster\nDEBUG=false\n"
    )
    put(host, PLAIN_ENV, plain)
    return host


# --- what import makes of them --------------------------------------------------------------------------------


def found_hosts(hosts: list[SimHost], units: tuple[str, ...] = ()) -> dict[str, FoundHost]:
    """What import reads of each host (adopt.discover over the host's own connection)."""

    async def all_of() -> list[FoundHost]:
        return list(await asyncio.gather(*(discover(FakeConnection(h), h.name, units) for h in hosts)))

    return {f.name: f for f in asyncio.run(all_of())}


def infos(hosts: list[SimHost]) -> list[HostInfo]:
    return [HostInfo(h.name, address(h), {"role": "master"}, {"address": address(h)}) for h in hosts]


def hand_made(name: str, files: dict[str, bytes], reads: dict[str, tuple[str, ...]]) -> FoundHost:
    """What import would have read of a host holding `files`, its units reading `reads` (no host needed)."""
    host = FoundHost(name)
    host.files = {p: FoundFile(p, "file", c) for p, c in files.items()}
    host.reads = reads
    return host


@dataclass
class Imported:
    adoption: Adoption
    files: dict[str, str]  # spec file name -> YAML text
    directory: Path
    found: dict[str, FoundHost]

    def docs(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = [d for text in self.files.values() for d in yaml.safe_load_all(text) if d]
        return [d for d in out if kind is None or d["kind"] == kind]

    def load(self) -> DesiredState:
        return load_desired(self.directory)

    def text(self) -> str:
        return "".join(self.files.values())


def adopt(hosts: list[SimHost], tmp_path: Path, units: tuple[str, ...] = ()) -> Imported:
    """What `reconciler import` does before its plan: read, describe, write the directory."""
    found = found_hosts(hosts, units)
    adoption = describe(infos(hosts), found)
    files = spec_files(adoption, ", ".join(h.name for h in hosts))
    directory = tmp_path / "adopted"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return Imported(adoption, files, directory, found)


def assert_exact(hosts: list[SimHost], imported: Imported, desired: DesiredState | None = None) -> DesiredState:
    """Every file the spec writes on a host is that host's own bytes (and owner and mode); every unit and every
    file a unit reads is described; nothing is written anywhere else."""
    desired = desired or imported.load()
    assert set(desired.hosts) == {h.name for h in hosts}
    for h in hosts:
        host = desired.hosts[h.name]
        for path, df in host.files.items():
            assert path in h.files, (h.name, path)
            f = h.files[path]
            assert df.content == f.content, (h.name, path, df.source)
            if df.source.startswith("File/"):
                assert (df.mode, df.owner, df.group) == (f.mode, f.owner, f.group), (h.name, path)
        assert {u.name for u in host.units} == set(h.units)
        for u in host.units:
            assert u.path == h.real(h.unit_properties(u.name)["FragmentPath"]), (h.name, u.name)
            assert host.files[u.path].source == f"Unit/{u.spec_name}"
        read = {p for ps in imported.found[h.name].reads.values() for p in ps if p in h.files}
        assert read <= set(host.files), (h.name, read - set(host.files))
        for path, dd in host.directories.items():
            assert (dd.mode, dd.owner, dd.group) == h.dirs[path], (h.name, path)
        worked_in = {d for ds in imported.found[h.name].directories.values() for d in ds if d in h.dirs}
        assert worked_in == set(host.directories), (h.name, worked_in)
    return desired
