"""certs/cert_renew.sh run with bash and openssl here, on a certificate pair in a directory of the test's: `csr` makes
a key (mode 0600) in a staged directory beside the certificate and a request for it; `install` refuses a staged
directory elsewhere, a certificate for another key, one not valid by this host's clock (not yet, or no longer), a key
file that is not the certificate's key (nothing replaced), and a link in place of the pair; installed, the pair keeps
its owner and mode, the old one kept beside it; `rollback` puts it back, `done` removes it; a chain is not read; a
kubeconfig that embeds the pair is rewritten with it (and refused when it does not embed it); a connection lost
between the renames never splits the pair; a trust file is replaced whole (the CA rotation's modes)."""

from __future__ import annotations

import base64
import datetime
import os
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
    """The master's current pair: a key and a self-signed certificate for it (what matters here is that they match)."""
    ssl = tmp_path / "ssl"
    ssl.mkdir()
    cert, key = ssl / "kubernetes.pem", ssl / "kubernetes-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=old",
         "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def signed(tmp_path: Path, csr: str, now: datetime.datetime | None = None) -> bytes:
    ca = load(*ca_files(tmp_path / "ca"))
    t = Template(name("kubernetes"), ("kubernetes",), (), True, True)
    when = now or datetime.datetime.now(datetime.UTC)
    return issue(ca, csr.encode(), t, datetime.timedelta(days=30), when).public_bytes(serialization.Encoding.PEM)


def valid(pem: bytes) -> tuple[str, str]:
    from cryptography import x509

    c = x509.load_pem_x509_certificate(pem)
    return str(int(c.not_valid_before_utc.timestamp())), str(int(c.not_valid_after_utc.timestamp()))


def staged_csr(cert: Path) -> tuple[str, str]:
    first, _, csr = run("csr", "ecdsa-p256", str(cert)).partition("\n")
    assert first.startswith("@@STAGED ") and "BEGIN CERTIFICATE REQUEST" in csr
    return first.removeprefix("@@STAGED "), csr


def test_a_key_made_beside_installed_with_the_old_pair_kept_and_put_back(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    old_cert, old_key = cert.read_bytes(), key.read_bytes()
    staged, csr = staged_csr(cert)
    assert Path(staged).parent == cert.parent and oct(Path(staged, "key.pem").stat().st_mode)[-3:] == "600"
    pem = signed(tmp_path, csr)
    said = run("install", str(cert), str(key), staged, *valid(pem), data=pem)
    assert said.strip() == "@@INSTALLED", said
    assert cert.read_bytes() == pem and key.read_bytes() != old_key and oct(key.stat().st_mode)[-3:] == "600"
    assert Path(f"{cert}.before-renew").read_bytes() == old_cert and not Path(staged).exists()
    assert run("rollback", str(cert), str(key)).strip() == "@@ROLLEDBACK"
    assert cert.read_bytes() == old_cert and key.read_bytes() == old_key
    assert run("rollback", str(cert), str(key)).startswith("@@ERR no pair kept")  # twice: said, nothing moved


def test_done_removes_the_old_private_key(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    assert run("install", str(cert), str(key), staged, *valid(pem), data=pem).strip() == "@@INSTALLED"
    assert Path(f"{key}.before-renew").exists()
    assert run("done", str(cert), str(key)).strip() == "@@DONE"
    assert not Path(f"{key}.before-renew").exists() and not Path(f"{cert}.before-renew").exists()


def test_a_key_file_that_is_not_the_certificates_key_is_never_replaced(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    """A spec naming another file as keyFile (the service-account key, another certificate's key) loses nothing."""
    cert, _ = pair
    sa_key = cert.parent / "sa.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", str(sa_key)], check=True, capture_output=True)
    before = sa_key.read_bytes()
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    said = run("install", str(cert), str(sa_key), staged, *valid(pem), data=pem)
    assert "is not the key of" in said and sa_key.read_bytes() == before


def test_a_chain_is_not_read_for_renewal(pair: tuple[Path, Path]) -> None:
    cert, _ = pair
    cert.write_bytes(cert.read_bytes() * 2)
    assert "more than one certificate" in run("read", str(cert))


def test_a_certificate_not_yet_valid_here_or_for_another_key_is_refused(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    old_cert = cert.read_bytes()
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    now = int(time.time())
    behind = (str(now + 3 * 3600), str(now + 86400))  # this host's clock hours behind the certificate's start
    assert "clock" in run("install", str(cert), str(key), staged, *behind, data=pem)
    expired = ("0", str(now - 60))  # or past its end (a signer whose clock is a year behind)
    assert "clock" in run("install", str(cert), str(key), staged, *expired, data=pem)
    _, other_csr = staged_csr(cert)
    other = signed(tmp_path, other_csr)
    assert "not for the staged key" in run("install", str(cert), str(key), staged, *valid(other), data=other)
    assert cert.read_bytes() == old_cert  # nothing installed


def test_a_staged_directory_elsewhere_and_a_link_for_the_pair_are_refused(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    old_cert = cert.read_bytes()
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    elsewhere = tmp_path / ".reconciler-renew.x"
    elsewhere.mkdir()
    assert "is not a staged renewal" in run("install", str(cert), str(key), str(elsewhere), *valid(pem), data=pem)
    assert "is not a staged renewal" in run("install", str(cert), str(key), "/etc", *valid(pem), data=pem)
    key.unlink()
    key.symlink_to(tmp_path / "elsewhere-key.pem")
    assert "is not a regular file" in run("install", str(cert), str(key), staged, *valid(pem), data=pem)
    assert cert.read_bytes() == old_cert


def test_a_connection_lost_between_the_two_renames_never_splits_the_pair(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    """reconciler cut off mid-install: sshd hangs up the script (SIGHUP) right after the key's rename, a moment before
    the certificate's (an `mv` on PATH that does the rename, then hangs up the script that called it). The pair
    installed is whole: the new certificate is for the new key; the same for a rollback cut at the same point."""
    cert, key = pair
    old_cert, old_key = cert.read_bytes(), key.read_bytes()
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "mv").write_text(  # the rename onto the key path hangs up its caller; every other mv is plain
        f'#!/bin/bash\n/bin/mv "$@"\nstatus=$?\nif [ "${{*: -1}}" = "{key}" ]; then kill -HUP "$PPID"; '
        'kill -INT "$PPID"; fi\nexit $status\n'
    )
    (shims / "mv").chmod(0o755)
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    cut = subprocess.run(
        ["bash", "-c", SCRIPT, "reconciler-cert-renew", "install", str(cert), str(key), staged, *valid(pem)],
        input=pem, capture_output=True, timeout=60, env={"PATH": f"{shims}:/usr/bin:/bin"},
    )  # fmt: skip
    assert b"@@INSTALLED" in cut.stdout, cut.stdout + cut.stderr
    assert cert.read_bytes() == pem and key.read_bytes() != old_key
    same = (
        subprocess.run(
            ["openssl", "x509", "-noout", "-pubkey", "-in", str(cert)], capture_output=True, check=True
        ).stdout
        == subprocess.run(["openssl", "pkey", "-pubout", "-in", str(key)], capture_output=True, check=True).stdout
    )
    assert same  # the new certificate with its own key: every handshake from now on works

    back = subprocess.run(
        ["bash", "-c", SCRIPT, "reconciler-cert-renew", "rollback", str(cert), str(key)],
        capture_output=True, timeout=60, env={"PATH": f"{shims}:/usr/bin:/bin"},
    )  # fmt: skip
    assert b"@@ROLLEDBACK" in back.stdout, back.stdout + back.stderr
    assert cert.read_bytes() == old_cert and key.read_bytes() == old_key


def test_a_trust_file_is_replaced_whole_keeping_what_the_rotation_began_from(tmp_path: Path) -> None:
    """bundle-write: the new bundle takes the old file's mode; the file as it was before the rotation is kept (a phase
    run again keeps the first); bundle-rollback puts it back, bundle-done removes it; a link is refused."""
    ssl = tmp_path / "ssl"
    ssl.mkdir()
    ca = ssl / "ca.pem"
    ca.write_bytes(b"old\n")
    ca.chmod(0o640)
    assert run("bundle-read", str(ca)) == "old\n"
    assert run("bundle-write", str(ca), data=b"old\nnew\n").strip() == "@@WRITTEN"
    assert ca.read_bytes() == b"old\nnew\n" and oct(ca.stat().st_mode)[-3:] == "640"
    assert run("bundle-write", str(ca), data=b"new\n").strip() == "@@WRITTEN"  # the same phase run again
    assert Path(f"{ca}.before-rotate").read_bytes() == b"old\n"  # still what it began from
    assert run("bundle-rollback", str(ca)).strip() == "@@ROLLEDBACK" and ca.read_bytes() == b"old\n"
    assert run("bundle-rollback", str(ca)).startswith("@@ERR no file kept")
    assert run("bundle-write", str(ca), data=b"new\n").strip() == "@@WRITTEN"
    assert run("bundle-done", str(ca)).strip() == "@@DONE" and not Path(f"{ca}.before-rotate").exists()
    assert not list(ssl.glob(".reconciler-rotate.*"))  # no temporary file left
    link = ssl / "link.pem"
    link.symlink_to(ca)
    assert "is not a regular file" in run("bundle-write", str(link), data=b"x\n")
    assert "is not a regular file" in run("bundle-read", str(link))
    assert ca.read_bytes() == b"new\n"


def kubeconfig(cert: bytes, key: bytes, other: bytes = b"b3RoZXI=") -> bytes:
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return (
        "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n"
        f"    client-certificate-data: {b64(cert)}\n    client-key-data: {b64(key)}\n"
        f"- name: someone-else\n  user:\n    client-certificate-data: {other.decode()}\n"
        "    client-key-data: b3RoZXIta2V5\n"
    ).encode()


def test_a_kubeconfig_embedding_the_pair_is_rewritten_with_it_and_put_back_with_it(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    """Every embedded copy of the old pair replaced by the new one, what else the kubeconfig says left as it was
    (another user's data); its mode kept; a rollback puts it back with the pair; done removes the copy kept."""
    cert, key = pair
    kc = tmp_path / "ssl" / "admin.kubeconfig"
    before = kubeconfig(cert.read_bytes(), key.read_bytes())
    kc.write_bytes(before)
    kc.chmod(0o600)
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    said = run("install", str(cert), str(key), staged, *valid(pem), str(kc), data=pem)
    assert said.strip() == "@@INSTALLED", said
    after = kc.read_bytes()
    assert after == kubeconfig(pem, key.read_bytes()) and oct(kc.stat().st_mode)[-3:] == "600"
    assert b"client-certificate-data: b3RoZXI=\n" in after  # someone else's, untouched
    assert run("rollback", str(cert), str(key), str(kc)).strip() == "@@ROLLEDBACK"
    assert kc.read_bytes() == before
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    assert run("install", str(cert), str(key), staged, *valid(pem), str(kc), data=pem).strip() == "@@INSTALLED"
    assert run("done", str(cert), str(key), str(kc)).strip() == "@@DONE"
    assert not Path(f"{kc}.before-renew").exists() and not Path(f"{key}.before-renew").exists()


def test_a_kubeconfig_that_does_not_embed_the_pair_is_refused_nothing_replaced(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    old_cert = cert.read_bytes()
    kc = tmp_path / "ssl" / "other.kubeconfig"
    kc.write_bytes(kubeconfig(b"not this certificate", key.read_bytes()))  # its key, another certificate
    staged, csr = staged_csr(cert)
    pem = signed(tmp_path, csr)
    said = run("install", str(cert), str(key), staged, *valid(pem), str(kc), data=pem)
    assert said.startswith("@@ERR") and "does not embed both" in said, said
    assert cert.read_bytes() == old_cert and kc.read_bytes() == kubeconfig(b"not this certificate", key.read_bytes())


FAKE_SYSTEMCTL = """#!/bin/sh
# is-active -- UNIT: active unless UNIT is "stopped.service"; show ... -- UNIT: its start time ($STARTED, UTC)
case "$1" in
is-active) [ "$3" = stopped.service ] && { echo inactive; exit 3; }; echo active ;;
show) echo "$STARTED" ;;
esac
"""


def test_reloaded_says_stale_until_a_reader_started_or_was_reloaded_after_the_file_changed(tmp_path: Path) -> None:
    """The CA rotation's look at a unit that reloads on a trust file (its reloadOn): a reload stamp older than the
    file, or none, with a start before it, is stale; a newer stamp or start is fresh; a stopped unit is not asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    trust, stamp = tmp_path / "ca.pem", tmp_path / "reloaded" / "haproxy.service"
    trust.write_text("bundle\n")
    stamp.parent.mkdir()

    def reloaded(*units: str, started: str = "Mon 2020-01-06 10:00:00.000000 UTC") -> str:
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STARTED": started}
        argv = ["bash", "-c", SCRIPT, "reconciler-cert-renew", "reloaded", str(trust)]
        for u in units:
            argv += [u, str(stamp)]
        done = subprocess.run(argv, capture_output=True, timeout=30, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    assert reloaded("haproxy.service").startswith("@@STALE haproxy.service not reloaded since")  # no stamp, old start
    stamp.write_text("")  # reloaded after the file changed
    assert reloaded("haproxy.service") == "@@FRESH\n"
    old = time.time() - 3600
    os.utime(stamp, (old, old))  # the last reload before the file changed
    assert reloaded("haproxy.service").startswith("@@STALE")
    assert reloaded("haproxy.service", started=time.strftime("%a %Y-%m-%d %H:%M:%S.000000 UTC", time.gmtime(time.time() + 5))) == "@@FRESH\n"  # fmt: skip
    assert reloaded("stopped.service") == "@@FRESH\n"  # not running: it reads the file when it starts
    stamp.unlink()
    stamp.symlink_to(trust)  # a link for a stamp counts for nothing
    assert reloaded("haproxy.service").startswith("@@STALE")
