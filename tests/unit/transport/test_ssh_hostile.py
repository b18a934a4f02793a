"""A host's known_hosts and identity files are as untrusted as a spec (transport.ssh): a known_hosts pointing at any
file is an error that never quotes it; a private key others can read is refused as ssh refuses it.
(test_ssh_attacks.py attacks them harder.)
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from reconciler.errors import PermanentHostError
from reconciler.spec.desired import Target
from reconciler.transport.ssh import _connect
from tests.support.hostile_files import SHADOW, with_secret

pytestmark = pytest.mark.host


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    return with_secret(tmp_path, SHADOW)


def test_known_hosts_pointing_at_any_file_never_quotes_it(host_dir: Path) -> None:
    target = Target("h", "127.0.0.1", port=1, known_hosts=str(host_dir / "secret"))
    with pytest.raises(PermanentHostError) as err:
        asyncio.run(_connect(target))
    assert "s3cret" not in str(err.value) and "root:" not in str(err.value)
    assert "known_hosts file" in str(err.value) and "cannot be used" in str(err.value)


@pytest.mark.parametrize("mode, refused", [(0o666, True), (0o644, True), (0o640, True), (0o600, False), (0o400, False)])
def test_private_keys_others_can_read_are_refused_like_ssh_refuses_them(
    tmp_path: Path, mode: int, refused: bool
) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    key.chmod(mode)
    known = tmp_path / "known_hosts"
    known.write_text("")
    target = Target("h", "127.0.0.1", port=1, identity_file=str(key), known_hosts=str(known))
    with pytest.raises(Exception) as err:
        asyncio.run(_connect(target))  # port 1: an accepted key fails later, on connecting
    if refused:
        assert isinstance(err.value, PermanentHostError) and "too open" in str(err.value), err.value
        assert "PRIVATE KEY" not in str(err.value)
    else:
        assert "too open" not in str(err.value)
