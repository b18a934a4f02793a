"""Masters built by hand, as the seed's field guide builds them, out of a converged testbed.

`build_by_hand(bed)` rewrites every host with plain shell over ssh (heredocs, `systemctl daemon-reload`,
`enable`, restarts), never through reconciler's code. What it leaves is what an operator following the guide
leaves:

- the four env files under /etc/kubernetes with the guide's own comments and commented-out lines, values in
  double quotes, /etc/kubernetes/token.csv (mode 0644, TOKEN_MODE: the guide writes it with `cat >` under umask
  022 and never tightens it), and /etc/etcd/etcd.conf in the etcd package's style
  (`#[member]`, `#[cluster]`, `#[security]` sections, commented-out defaults, the heartbeat lines appended
  at the end as the guide adds them);
- the three kube units at /usr/lib/systemd/system/kube-*.service, the guide's location (KUBE_UNIT_DIR, where
  the bundled specs put them too). On the Debian 12 image that is a real directory: the merged-/usr link is
  /lib -> usr/lib, so /lib/systemd/system is the same directory seen through the link; any
  /etc/systemd/system/kube-*.service (and its enablement link) that would shadow it is removed. The script
  checks it is still a real directory and stops otherwise (no silent fallback to /etc);
- etcd's unit at /etc/systemd/system/etcd.service (ETCD_UNIT_PATH): Debian's etcd-server package owns
  /usr/lib/systemd/system/etcd.service, which ours must override, not overwrite.

The texts are the guide's, kept once in tests/support/seed.py (the in-memory masters of import's unit tests
are built from them too); their values are the bundled specs' (specs/etcd.yaml, specs/kubernetes.yaml), so the
cluster keeps running as it did: same addresses, ports, certificates, data dir (/var/lib/etcd/default.etcd, so
etcd keeps its data) and heartbeat/election timeouts. Besides each host's own name and address, the hosts differ
the way hand-built hosts drift apart: HAND_BUILT_DIFFERENCES, applied here to the guide's texts.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed import Testbed, TestHost
from tests.support.seed import KUBE_UNIT_DIR, KUBE_UNITS, SSL_DIR, UNITS, guide_files

TOKEN_MODE = "0644"  # as the guide leaves token.csv (a new file under umask 022; the guide has no chmod)
WAIT_SECONDS = 60


@dataclass(frozen=True)
class HandDifference:
    """One host's own drift: `text` occurs in `path` on `host` and in that file on no other host."""

    host: str
    path: str
    what: str
    text: str


HAND_BUILT_DIFFERENCES: dict[str, HandDifference] = {
    d.host: d
    for d in (
        HandDifference(
            "master-1",
            "/etc/kubernetes/controller-manager",
            "a trailing blank line after KUBE_CONTROLLER_MANAGER_ARGS",
            '--leader-elect=true"\n\n',
        ),
        HandDifference(
            "master-2",
            "/etc/kubernetes/scheduler",
            "an extra comment line above KUBE_SCHEDULER_ARGS",
            "# tuned by hand 2017-10-03\n",
        ),
        HandDifference(
            "master-3",
            "/etc/kubernetes/config",
            'KUBE_LOG_LEVEL="--v=2" where the others say --v=0',
            'KUBE_LOG_LEVEL="--v=2"\n',
        ),
    )
}


def file_on(bed: Testbed, host_name: str, path: str) -> bytes:
    """The bytes of `path` on host `host_name`, read through its root as seen from this machine."""
    return (bed.host(host_name).root / path.lstrip("/")).read_bytes()


def _with_drift(host: TestHost, path: str, text: str) -> str:
    """The guide's text for `path` as this host's operator left it (HAND_BUILT_DIFFERENCES)."""
    difference = HAND_BUILT_DIFFERENCES.get(host.name)
    if difference is None or difference.path != path:
        return text
    if path == "/etc/kubernetes/config":
        return text.replace('KUBE_LOG_LEVEL="--v=0"\n', difference.text)
    if path == "/etc/kubernetes/controller-manager":
        return text + "\n"
    assert path == "/etc/kubernetes/scheduler", difference
    return text.replace("KUBE_SCHEDULER_ARGS=", difference.text + "KUBE_SCHEDULER_ARGS=")


def hand_built_files(bed: Testbed, release: str = "v1.8") -> dict[str, dict[str, str]]:
    """Host name -> path -> the text build_by_hand writes there (pure: nothing is read from the hosts)."""
    members = {h.name: h.address for h in bed.hosts}
    files = {
        host.name: {
            path: _with_drift(host, path, text)
            for path, text in guide_files(host.name, host.address, members, release).items()
        }
        for host in bed.hosts
    }
    for d in HAND_BUILT_DIFFERENCES.values():  # the differences are what was written, and only there
        if d.host in files:
            assert all((d.text in by_path[d.path]) == (name == d.host) for name, by_path in files.items()), d
    return files


# --- the shell, as an operator types it ---------------------------------------------------------------


def _heredoc(path: str, text: str) -> str:
    assert text.endswith("\n") and "\nEOF\n" not in "\n" + text, path
    return f"cat > {path} <<'EOF'\n{text}EOF\n"


def _write_script(files: dict[str, str]) -> str:
    shadowing = " ".join(
        f"/etc/systemd/system/{u}.service /etc/systemd/system/multi-user.target.wants/{u}.service" for u in KUBE_UNITS
    )
    writes = "".join(_heredoc(path, text) for path, text in files.items())
    return (
        "set -eu\n"
        "umask 022\n"
        f"if [ -L {KUBE_UNIT_DIR} ] || [ ! -d {KUBE_UNIT_DIR} ]; then\n"
        f"  echo '{KUBE_UNIT_DIR} is not a real directory here; not written' >&2; exit 4\n"
        "fi\n"
        f"rm -f {shadowing}\n"
        "mkdir -p /etc/kubernetes /etc/etcd\n"
        f"{writes}"
        f"chmod {TOKEN_MODE} /etc/kubernetes/token.csv\n"  # whatever mode an earlier owner gave it
        "systemctl daemon-reload\n"
        f"systemctl enable {' '.join(UNITS)}\n"
    )


def _wait_etcd(addresses: list[str]) -> str:
    """Shell: wait (at most WAIT_SECONDS in all) until etcd at every address answers /health."""
    return (
        f"deadline=$(( $(date +%s) + {WAIT_SECONDS} ))\n"
        f"for addr in {' '.join(addresses)}; do\n"
        f"  until curl -sf --max-time 3 --cacert {SSL_DIR}/ca.pem --cert {SSL_DIR}/kubernetes.pem "
        f'--key {SSL_DIR}/kubernetes-key.pem "https://$addr:2379/health" >/dev/null; do\n'
        f'    if [ "$(date +%s)" -ge "$deadline" ]; then echo "etcd at $addr not healthy after {WAIT_SECONDS} s" >&2; '
        "exit 1; fi\n"
        "    sleep 1\n"
        "  done\n"
        "done\n"
    )


def _restart_etcd_script(host: TestHost, bed: Testbed) -> str:
    others = [h.address for h in bed.hosts if h is not host]
    return f"set -eu\n{_wait_etcd(others)}systemctl restart etcd\n{_wait_etcd([host.address])}"


def _restart_kube_script() -> str:
    return (
        "set -eu\n"
        "systemctl restart kube-apiserver\n"
        "systemctl restart kube-controller-manager\n"
        "systemctl restart kube-scheduler\n"
        f"deadline=$(( $(date +%s) + {WAIT_SECONDS} ))\n"
        f"for u in {' '.join(KUBE_UNITS)}; do\n"
        '  until systemctl is-active --quiet "$u"; do\n'
        '    if [ "$(date +%s)" -ge "$deadline" ]; then echo "$u not active" >&2; systemctl status --no-pager "$u" >&2; '
        "exit 1; fi\n"
        "    sleep 0.5\n"
        "  done\n"
        "done\n"
    )


def build_by_hand(bed: Testbed, release: str = "v1.8") -> None:
    """Turn the running, converged testbed into masters built by hand (see the module docstring), with the guide's
    texts for its Kubernetes (v1.8: the stand-ins accept any flag) or as changed for v1.20 (the real binaries).

    Every host's files are written, the units reloaded and enabled; then etcd restarts one member at a time,
    each waiting for the other members' health first and its own after (quorum is never lost); then each
    host's kube-apiserver, kube-controller-manager and kube-scheduler restart until active.
    """
    files = hand_built_files(bed, release)
    for host in bed.hosts:
        host.ssh(_write_script(files[host.name]))
    for host in bed.hosts:
        host.ssh(_restart_etcd_script(host, bed), timeout=3 * WAIT_SECONDS + 120)
    for host in bed.hosts:
        host.ssh(_restart_kube_script(), timeout=WAIT_SECONDS + 120)
