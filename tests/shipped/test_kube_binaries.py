"""The real Kubernetes binaries scripts/build-kube builds (issue 29): kube-apiserver, kube-controller-manager and
kube-scheduler v1.20.2 from Debian's source with the Go toolchain from PyPI, and Debian's kubectl, cached by version
under /var/cache/reconciler/kube/v1.20.2/bin (or $RECONCILER_CACHE's). scripts/test builds them before pytest; a
machine without them fails here, naming the script, rather than passing without them.

What is pinned: each binary is the version it claims and what SHA256SUMS says it is; the apiserver knows the flags
the seed starts it with; and the real apiserver, started on loopback against a local etcd (Debian's 3.4) with the
testbed's PKI, answers /readyz "ok"."""

from __future__ import annotations

import hashlib
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reconciler.components.etcd_versions import binary_version
from reconciler.components.flags import FlagBook
from reconciler.observe.programs import SCRIPT, _learn
from testbed import pki
from tests.support.etcd import free_port, local_etcd

pytestmark = pytest.mark.host

VERSION = "v1.20.2"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
BIN = Path(os.environ.get("RECONCILER_CACHE", "/var/cache/reconciler")) / "kube" / VERSION / "bin"


@pytest.fixture(scope="module")
def kube_bin() -> Path:
    missing = [n for n in (*COMPONENTS, "kubectl", "SHA256SUMS") if not (BIN / n).is_file()]
    if missing:
        pytest.fail(
            f"the real Kubernetes binaries are missing from {BIN} ({', '.join(missing)}): run `bash scripts/build-kube`"
        )
    return BIN


def run(*argv: str | Path) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_binaries_are_what_sha256sums_says(kube_bin: Path) -> None:
    proc = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=kube_bin, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(line.split()[1] for line in (kube_bin / "SHA256SUMS").read_text().splitlines()) == sorted(
        (*COMPONENTS, "kubectl")
    )


@pytest.mark.parametrize("name", COMPONENTS)
def test_each_component_says_its_version(kube_bin: Path, name: str) -> None:
    assert run(kube_bin / name, "--version").strip() == f"Kubernetes {VERSION}"


def test_kubectl_is_debians_1_20(kube_bin: Path) -> None:
    assert run(kube_bin / "kubectl", "version", "--client", "--short").strip() == f"Client Version: {VERSION}"


def test_the_binaries_know_the_seeds_flags(kube_bin: Path) -> None:
    """A few of the flags the seed starts each component with, as each binary's own --help lists them."""
    wanted = {
        "kube-apiserver": ("--etcd-servers", "--etcd-cafile", "--tls-cert-file", "--service-account-key-file"),
        "kube-controller-manager": ("--master", "--leader-elect", "--service-account-private-key-file"),
        "kube-scheduler": ("--master", "--leader-elect"),
    }
    for name, flags in wanted.items():
        helptext = run(kube_bin / name, "--help")
        assert [f for f in flags if f"{f} " not in helptext and f"{f}=" not in helptext] == [], name


def test_the_real_apiserver_is_ready_on_loopback(kube_bin: Path, tmp_path: Path) -> None:
    """kube-apiserver on 127.0.0.1 (a free port, its insecure port off) against a local etcd, serving the testbed
    PKI's kubernetes.pem: /readyz answers "ok" (its post-start hooks done, etcd reached), then SIGTERM stops it."""
    ssl_dir = pki.generate(tmp_path / "ssl", [], [])
    port = free_port()
    with local_etcd(tmp_path / "etcd") as etcd_url:
        log = (tmp_path / "apiserver.log").open("w")
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                str(kube_bin / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                # Only data here (the kubernetes Service's endpoint, which may not be loopback): nothing dials it
                "--advertise-address=198.18.0.1",
                f"--secure-port={port}",
                "--insecure-port=0",
                f"--cert-dir={tmp_path / 'certs'}",
                f"--tls-cert-file={ssl_dir / 'kubernetes.pem'}",
                f"--tls-private-key-file={ssl_dir / 'kubernetes-key.pem'}",
                f"--client-ca-file={ssl_dir / 'ca.pem'}",
                f"--service-account-key-file={ssl_dir / 'kubernetes-key.pem'}",
                f"--service-account-signing-key-file={ssl_dir / 'kubernetes-key.pem'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.254.0.0/16",
                "--authorization-mode=RBAC",
                "--profiling=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            context = ssl.create_default_context(cafile=str(ssl_dir / "ca.pem"))
            answer, deadline = "", started + 60
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=context, timeout=2) as r:
                        answer = r.read().decode()
                        if r.status == 200 and answer == "ok":
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                    answer = str(e)
                time.sleep(0.1)
            ready = time.monotonic() - started
            assert answer == "ok", (
                f"/readyz after {ready:.1f} s: {answer!r}; exit {proc.poll()}\n"
                + (tmp_path / "apiserver.log").read_text()[-4000:]
            )
            print(f"kube-apiserver {VERSION}: /readyz ok {ready:.1f} s after start")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def ask_book(binary: Path, probes: list[str]) -> FlagBook:
    """What observe.programs learns of a binary: programs.sh run with bash here, as on a host."""
    script = ["bash", "-c", SCRIPT, "reconciler-programs"]
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    book = FlagBook()
    for args in (["+help"], probes):
        _learn(book, run(*script, "ask", binary, digest, *args))
    return book


def test_the_real_apiserver_refuses_a_removed_flag_and_accepts_deprecated_ones_its_help_hides(kube_bin: Path) -> None:
    """The seed's --experimental-bootstrap-token-auth is gone from v1.20 (--enable-bootstrap-token-auth took its
    place); the seed's --kubelet-https, --insecure-bind-address and --enable-swagger-ui are deprecated and hidden,
    still accepted: its help does not list them, a probe says so (--admission-control and --allow-privileged,
    deprecated too, are listed)."""
    hidden = ["kubelet-https", "insecure-bind-address", "enable-swagger-ui"]
    book = ask_book(kube_bin / "kube-apiserver", ["experimental-bootstrap-token-auth", *hidden])
    assert book.version == f"Kubernetes {VERSION}" and len(book.visible) > 100
    assert {"etcd-servers", "enable-bootstrap-token-auth", "v", "logtostderr", "admission-control"} <= book.visible
    assert not set(hidden) & book.visible
    assert book.probed == {"experimental-bootstrap-token-auth": False, **dict.fromkeys(hidden, True)}


@pytest.mark.parametrize("name", ["kube-controller-manager", "kube-scheduler"])
def test_the_real_controller_manager_and_scheduler_list_their_flags(kube_bin: Path, name: str) -> None:
    book = ask_book(kube_bin / name, ["no-such-flag", "experimental-bootstrap-token-auth"])
    assert book.lists_flags and {"master", "leader-elect", "kubeconfig", "address"} <= book.visible
    assert book.probed == {"no-such-flag": False, "experimental-bootstrap-token-auth": False}


ETCD_3_5 = Path(os.environ.get("RECONCILER_CACHE", "/var/cache/reconciler")) / "etcd/v3.5/bin/etcd"


@pytest.mark.parametrize(("binary", "minor"), [(Path("/usr/bin/etcd"), (3, 4)), (ETCD_3_5, (3, 5))])
def test_debians_etcd_lists_its_flags_refuses_an_unknown_one_and_says_its_version(
    binary: Path, minor: tuple[int, int]
) -> None:
    """etcd's usage text is its own (not pflag's), and Go's flag package refuses what it does not define; its
    version is what the upgrade rules read (bookworm's 3.4, and trixie's 3.5 from scripts/fetch-etcd)."""
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `bash scripts/fetch-etcd` (scripts/test does)")
    book = ask_book(binary, ["no-such-flag", "heartbeat-interval"])
    version = binary_version(book.version)
    assert version is not None and version[:2] == minor, book.version
    assert {"heartbeat-interval", "election-timeout"} <= book.visible and book.lists_flags
    assert book.probed == {"no-such-flag": False, "heartbeat-interval": True}
