"""An external signer run here: the shipped cfssl wrapper (deploy/signers/cfssl-sign) with Debian's cfssl, signing
with the CA's files and through a `cfssl serve` on loopback, issues what the template says for the key a hostile
request proves (never its names); a signer that signs the request as it is, refuses, says nothing, says too much,
hangs (its whole process group killed), cannot be started, signs with SHA-1 or for ten years: refused, saying why."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reconciler.certs import external
from reconciler.certs.authority import CertError, Template, requested_key
from tests.support.etcd import free_port
from tests.support.pki import ca_files, csr

pytestmark = pytest.mark.host

WRAPPER = Path(__file__).resolve().parents[2] / "deploy/signers/cfssl-sign"
SUBJECT = x509.Name(  # the seed's kubernetes.pem
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "BeiJing"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "BeiJing"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "k8s"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "System"),
        x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes"),
    ]
)
TEMPLATE = Template(SUBJECT, ("kubernetes", "master-1"), ("127.0.0.1", "198.18.0.11"), server=True, client=True)
YEAR = datetime.timedelta(days=365)


@pytest.fixture(scope="module")
def cfssl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA as cfssl keeps it: its two files and a config with a one-year `kubernetes` profile and a ten-year one."""
    if shutil.which("cfssl") is None:
        pytest.fail("cfssl is not installed: scripts/install-deps installs Debian's golang-cfssl")
    where = tmp_path_factory.mktemp("cfssl")
    ca_files(where, days=7300)  # twenty years: a ten-year leaf is refused for its lifetime, not for its CA's
    usages = ["signing", "key encipherment", "server auth", "client auth"]
    profiles = {"kubernetes": {"usages": usages, "expiry": "8760h"}, "decade": {"usages": usages, "expiry": "87600h"}}
    (where / "config.json").write_text(json.dumps({"signing": {"default": {"expiry": "8760h"}, "profiles": profiles}}))
    return where


def local(ca: Path, profile: str = "kubernetes") -> list[str]:
    return [str(WRAPPER), "-config", f"{ca}/config.json", "-profile", profile, "-ca", f"{ca}/ca.pem", "-ca-key", f"{ca}/ca-key.pem"]  # fmt: skip


async def signed(ca: Path, command: Sequence[str], request: bytes | None = None) -> x509.Certificate:
    request = request or csr("evil", sans=["master-2", "kubernetes.default"])  # a hostile master's wishes
    ca_cert = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
    key = requested_key(request)
    return await external.issue(command, ca_cert, request, key, TEMPLATE, YEAR, host="master-1", path="/k.pem")


def names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))}


async def test_the_cfssl_wrapper_issues_the_templates_subject_and_names_never_the_requests(cfssl: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = await signed(cfssl, local(cfssl), csr("evil", sans=["master-2"], key=key))
    assert sorted(cert.subject, key=str) == sorted(SUBJECT, key=str)  # cfssl's own order, the same attributes
    assert names(cert) == {"kubernetes", "master-1", "127.0.0.1", "198.18.0.11"}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.public_key() == key.public_key()


@pytest.fixture
def cfssl_serve(cfssl: Path) -> Iterator[str]:
    """`cfssl serve` on loopback, with the CA's files: the signer a team runs on a machine of its own."""
    port = free_port()
    argv = ["cfssl", "serve", "-address", "127.0.0.1", "-port", str(port), "-loglevel", "2"]
    argv += ["-ca", f"{cfssl}/ca.pem", "-ca-key", f"{cfssl}/ca-key.pem", "-config", f"{cfssl}/config.json"]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else b""
                assert time.monotonic() < deadline, "cfssl serve did not listen within 30 s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


async def test_the_cfssl_wrapper_signs_through_a_cfssl_serve(cfssl: Path, cfssl_serve: str) -> None:
    cert = await signed(cfssl, [str(WRAPPER), "-remote", cfssl_serve, "-profile", "kubernetes"])
    assert sorted(cert.subject, key=str) == sorted(SUBJECT, key=str)
    assert names(cert) == {"kubernetes", "master-1", "127.0.0.1", "198.18.0.11"}


async def test_a_signer_that_signs_the_request_as_it_is_gets_nothing_installed(cfssl: Path) -> None:
    """A signer that reads the names from the request (cfssl sign without -hostname or a subject): a master asking
    for another's name is refused by what reconciler checks of the answer, whatever the signer let through."""
    as_asked = f"cfssl sign -loglevel 2 -ca {cfssl}/ca.pem -ca-key {cfssl}/ca-key.pem -config {cfssl}/config.json -profile kubernetes - | cfssljson -bare -stdout"  # fmt: skip
    hostile = csr("kubernetes", sans=["kubernetes", "master-1", "master-2"])
    with pytest.raises(CertError, match="names other hosts than asked: it adds master-2"):
        await signed(cfssl, ["/bin/bash", "-c", as_asked], hostile)
    ours = csr("x")  # reconciler's own request names nothing: signed as it is, it names none of the host's names
    with pytest.raises(CertError, match="names other hosts than asked: it lacks 127.0.0.1"):
        await signed(cfssl, ["/bin/bash", "-c", as_asked], ours)


async def test_a_signer_that_refuses_or_oversteps_is_refused_saying_why(cfssl: Path, tmp_path: Path) -> None:
    broken = [str(WRAPPER), "-config", f"{cfssl}/config.json", "-ca", f"{cfssl}/ca.pem", "-ca-key", f"{tmp_path}/none"]
    with pytest.raises(CertError, match=r"the signer .*cfssl-sign refused \(exit status 1\): .*none"):
        await signed(cfssl, broken)
    with pytest.raises(CertError, match=r"refused \(exit status 1\): .*policy disallows issuing CA certificate"):
        await signed(cfssl, local(cfssl), csr("evil", ca=True))  # cfssl's own policy, its reason said
    with pytest.raises(CertError, match="past the 365-day lifetime"):
        await signed(cfssl, local(cfssl, "decade"))
    sha1 = f"openssl x509 -req -sha1 -days 30 -CA {cfssl}/ca.pem -CAkey {cfssl}/ca-key.pem -in /dev/stdin 2>/dev/null"
    with pytest.raises(CertError, match="signed with sha1"):
        await signed(cfssl, ["/bin/bash", "-c", sha1])


async def test_the_signers_run_is_bounded(tmp_path: Path) -> None:
    env = external.environment(TEMPLATE, YEAR, "master-1", "/k.pem")
    with pytest.raises(CertError, match="could not be started: No such file"):
        await external.run([f"{tmp_path}/no-signer"], b"", env)
    with pytest.raises(CertError, match="holds no PEM certificate"):
        external.certificate_of(await external.run(["/bin/true"], b"x" * 1_000_000, env))  # unread stdin: no hang
    with pytest.raises(CertError, match="answered more than 64 KiB"):
        await external.run(["/usr/bin/head", "-c", "10000000", "/dev/zero"], b"", env)
    pid_file = tmp_path / "pid"
    hangs = ["/bin/bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    began = time.monotonic()
    with pytest.raises(CertError, match="did not answer within 1 s"):
        await external.run(hangs, b"", env, timeout=1)
    assert time.monotonic() - began < 10
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # its whole process group killed: no signer left behind
        for _ in range(50):
            os.kill(child, 0)
            time.sleep(0.1)
    said = await external.run(["/bin/bash", "-c", "env | grep ^RECONCILER_ | sort"], b"", env)
    assert f"RECONCILER_SANS={','.join([*TEMPLATE.dns, *TEMPLATE.ips])}\n" in said.decode()
    assert str(ipaddress.ip_address("198.18.0.11")) in said.decode()


def test_a_spec_names_only_a_signer_the_operator_installed(tmp_path: Path) -> None:
    """A spec cannot make reconciler's machine run anything but a signer installed in the signers' directory: a
    regular file there, it and the directory changeable by root or reconciler's user only."""
    signers = tmp_path / "signers"
    signers.mkdir(mode=0o755)
    good = signers / "cfssl-sign"
    shutil.copy(WRAPPER, good)
    good.chmod(0o755)
    assert external.program_problem(str(good), str(signers)) == ""
    assert "is not in" in external.program_problem("/bin/sh", str(signers))
    link = signers / "sh"
    link.symlink_to("/bin/sh")
    assert "is not a regular file (a link is not followed)" in external.program_problem(str(link), str(signers))
    good.chmod(0o775)
    assert "may be changed by another user" in external.program_problem(str(good), str(signers))
    good.chmod(0o644)
    assert "is not executable" in external.program_problem(str(good), str(signers))
    good.chmod(0o755)
    signers.chmod(0o777)
    assert "may be changed by another user" in external.program_problem(str(good), str(signers))
    signers.chmod(0o755)
    assert "No such file" in external.program_problem(str(signers / "absent"), str(signers))


async def test_a_flooding_or_lingering_signer_is_still_bounded(tmp_path: Path) -> None:
    env = external.environment(TEMPLATE, YEAR, "master-1", "/k.pem")
    for flood in (["/usr/bin/yes"], ["/bin/sh", "-c", "yes >&2"]):  # its pipes full when the time is up
        began = time.monotonic()
        with pytest.raises(CertError, match="did not answer within 1 s"):
            await asyncio.wait_for(external.run(flood, b"", env, timeout=1), 30)
        assert time.monotonic() - began < 5
    pid_file = tmp_path / "child"
    lingers = ["/bin/bash", "-c", f"sleep 300 & echo $! > {pid_file}; echo answer"]  # exits, its child holds stdout
    assert await asyncio.wait_for(external.run(lingers, b"", env, timeout=10), 30) == b"answer\n"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    with pytest.raises(ProcessLookupError):  # killed with its group once the signer is done
        while time.monotonic() < deadline:
            os.kill(child, 0)
            time.sleep(0.05)
    said = (await external.run(["/usr/bin/env"], b"", env)).decode()
    assert "SSH_AUTH_SOCK" not in said and "RECONCILER_HOST=master-1" in said and "PATH=" in said
