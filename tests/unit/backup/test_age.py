"""Snapshots encrypted at rest (backup.age, with the age command of this machine): an EtcdBackup with age recipients
keeps `.db.age` files whose plain bytes never touch the disk and that decrypt, with the operator's identity, to the
very snapshot the member gave; a copy cut short is still never kept; a restore of one needs the identity (refused
without it, or with another's); the spec must say how snapshots are kept, and only age public keys pass."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from reconciler.backup import age, store
from reconciler.backup.take import take
from reconciler.engine.restore import RestoreRefused, checked
from reconciler.errors import SpecError
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.etcd_members import fleet
from tests.support.specs import copy_specs

pytestmark = pytest.mark.host


def keypair(where: Path) -> tuple[Path, str]:
    identity = where / "backup.key"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True)
    return identity, public.stdout.strip()


def backed_up(specs: Path, directory: Path, encryption: str) -> Path:
    (specs / "backup.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: EtcdBackup\nmetadata: {name: etcd}\n"
        f"spec: {{encryption: {encryption}, intervalSeconds: 3600, directory: {directory}}}\n"
    )
    return specs


async def test_kept_encrypted_and_decrypted_to_the_members_snapshot(tmp_path: Path) -> None:
    identity, public = keypair(tmp_path)
    specs = backed_up(copy_specs(tmp_path / "specs", ha=False), tmp_path / "snaps", f"{{ageRecipients: [{public}]}}")
    hosts: dict[str, SimHost] = fleet(leader="master-1")
    kept = await take(Session(fake_connector(hosts)), load_desired(specs), tmp_path / "snaps")
    data = hosts["master-2"].etcd_snapshot[0]  # type: ignore[index]
    on_disk = Path(kept.path).read_bytes()
    assert kept.path.endswith("-r42.db.age") and kept.encrypted == "age"
    assert on_disk.startswith(b"age-encryption.org/v1") and data[:64] not in on_disk  # never the plain bytes
    assert kept.sha256 == hashlib.sha256(data).hexdigest()
    assert store.listed(tmp_path / "snaps") == [kept]
    assert checked(Path(kept.path), identity) == (data, kept.sha256)  # what a restore rebuilds from
    with pytest.raises(RestoreRefused, match="encrypted with age: give the identity file"):
        checked(Path(kept.path))
    other, _ = keypair(tmp_path / "snaps")
    with pytest.raises(RestoreRefused, match="age could not decrypt it"):
        checked(Path(kept.path), other)


async def test_a_copy_cut_short_is_not_kept_encrypted_either(tmp_path: Path) -> None:
    _, public = keypair(tmp_path)
    specs = backed_up(copy_specs(tmp_path / "specs", ha=False), tmp_path / "snaps", f"{{ageRecipients: [{public}]}}")
    hosts = fleet(leader="master-1")
    data, status = hosts["master-2"].etcd_snapshot  # type: ignore[misc]
    hosts["master-2"].etcd_snapshot = (data[:-100], status)
    kept = await take(Session(fake_connector(dict[str, SimHost](hosts))), load_desired(specs), tmp_path / "snaps")
    assert kept.member == "master-3" and len(list((tmp_path / "snaps").iterdir())) == 2


@pytest.mark.parametrize(
    ("encryption", "said"),
    [
        (None, "spec.encryption: missing field"),
        ("{}", "say exactly one"),
        ("{unencrypted: true, ageRecipients: [age1qqqq]}", "not an age public key"),
        ("{ageRecipients: ['age1$(reboot)']}", "not an age public key"),
        ("{ageRecipients: [ssh-ed25519 AAAA]}", "not an age public key"),
    ],
)
def test_the_spec_says_how_snapshots_are_kept(tmp_path: Path, encryption: str | None, said: str) -> None:
    specs = copy_specs(tmp_path / "specs", ha=False)
    (specs / "backup.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: EtcdBackup\nmetadata: {name: etcd}\n"
        + (f"spec: {{encryption: {encryption}}}\n" if encryption else "spec: {intervalSeconds: 3600}\n")
    )
    with pytest.raises(SpecError) as failed:
        load_desired(specs)
    assert said in str(failed.value), failed.value.issues


def test_a_missing_age_command_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(age.AgeError, match="not installed"):
        age.Encrypting(1, ("age1x",))
