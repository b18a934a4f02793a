"""certs/cert_renew.sh run with bash and openssl here, on a certificate pair in a directory of the test's: `csr` makes
a key (mode 0600) in a staged directory beside the certificate and a request for it; `install` refuses a staged
directory elsewhere, a certificate for another key, a certificate not yet valid by this host's clock, and a link in
place of the pair; installed, the pair keeps its owner and mode, the old one kept beside it; `rollback` puts it back."""

from __future__ import annotations

import datetime
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from reconciler.certs.authority import Template, issue, load
from reconciler.engine.cert_renewal import SCRIPT
from tests.support.pki import ca_files, name

pytestmark = pytest.mark.host


def run(*args: str, data: bytes = b"") -> str:
    done = subprocess.run(
        ["bash", "-c", SCRIPT, "reconciler-cert-renew", *args], input=data, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    ssl = tmp_path / "ssl"
    ssl.mkdir()
    cert, key = ssl / "kubernetes.pem", ssl / "kubernetes-key.pem"
    cert.write_text("old cert\n")
    key.write_text("old key\n")
    key.chmod(0o600)
    return cert, key


def signed(tmp_path: Path, csr: str, now: datetime.datetime | None = None) -> bytes:
    ca = load(*ca_files(tmp_path / "ca"))
    t = Template(name("kubernetes"), ("kubernetes",), (), True, True)
    when = now or datetime.datetime.now(datetime.UTC)
    return issue(ca, csr.encode(), t, datetime.timedelta(days=30), when).public_bytes(serialization.Encoding.PEM)


def staged_csr(cert: Path) -> tuple[str, str]:
    first, _, csr = run("csr", "ecdsa-p256", str(cert)).partition("\n")
    assert first.startswith("@@STAGED ") and "BEGIN CERTIFICATE REQUEST" in csr
    return first.removeprefix("@@STAGED "), csr


def test_a_key_made_beside_installed_with_the_old_pair_kept_and_put_back(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    staged, csr = staged_csr(cert)
    assert Path(staged).parent == cert.parent and oct(Path(staged, "key.pem").stat().st_mode)[-3:] == "600"
    pem = signed(tmp_path, csr)
    said = run("install", str(cert), str(key), staged, str(int(time.time()) - 300), data=pem)
    assert said.strip() == "@@INSTALLED", said
    assert cert.read_bytes() == pem and b"PRIVATE KEY" in key.read_bytes() and oct(key.stat().st_mode)[-3:] == "600"
    assert Path(f"{cert}.before-renew").read_text() == "old cert\n" and not Path(staged).exists()
    assert run("rollback", str(cert), str(key)).strip() == "@@ROLLEDBACK"
    assert cert.read_text() == "old cert\n" and key.read_text() == "old key\n"


def test_a_certificate_not_yet_valid_here_or_for_another_key_is_refused(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    ahead = str(int(time.time()) + 3 * 3600)  # this host's clock hours behind the certificate's start
    assert "clock" in run("install", str(cert), str(key), staged, ahead, data=pem)
    _, other_csr = staged_csr(cert)
    other = signed(tmp_path, other_csr)
    assert "not for the staged key" in run("install", str(cert), str(key), staged, "0", data=other)
    assert cert.read_text() == "old cert\n" and key.read_text() == "old key\n"  # nothing installed


def test_a_staged_directory_elsewhere_and_a_link_for_the_pair_are_refused(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    elsewhere = tmp_path / ".reconciler-renew.x"
    elsewhere.mkdir()
    assert "is not a staged renewal" in run("install", str(cert), str(key), str(elsewhere), "0", data=pem)
    assert "is not a staged renewal" in run("install", str(cert), str(key), "/etc", "0", data=pem)
    key.unlink()
    key.symlink_to(tmp_path / "elsewhere-key.pem")
    assert "is not a regular file" in run("install", str(cert), str(key), staged, "0", data=pem)
    assert cert.read_text() == "old cert\n"
