"""The lost-quorum runbook on the testbed: `--break-glass` is refused while etcd answers; with two of three etcd
members stopped, `apply` will not restart the
third (no restart lock without quorum, and it says to break the glass, writing nothing of that turn);
`apply --break-glass` restarts and starts the members on the new config and etcd has its quorum back."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.specs import BUNDLED as SPECS

pytestmark = pytest.mark.testbed

EDIT = ("    ETCD_ELECTION_TIMEOUT: 1000\n", "    ETCD_ELECTION_TIMEOUT: 1000\n    ETCD_MAX_SNAPSHOTS: 7\n")


def test_a_lost_quorum_is_repaired_only_by_breaking_the_glass(converged: Testbed, spec_copy: Path) -> None:
    first, *rest = converged.hosts
    (spec_copy / "etcd.yaml").write_text((spec_copy / "etcd.yaml").read_text().replace(*EDIT))
    conf = "etc/etcd/etcd.conf"
    healthy = reconciler("apply", str(spec_copy), "--break-glass", "--host", first.name)
    assert healthy.code == 1 and "refusing --break-glass: etcd answers through" in healthy.err
    assert b"ETCD_MAX_SNAPSHOTS" not in (first.root / conf).read_bytes()  # a quorum to lose: nothing done
    try:
        for h in rest:
            h.ssh("systemctl stop etcd")  # two of three: no quorum
        refused = reconciler("apply", str(spec_copy), "--host", first.name, "--wait", "5")
        assert refused.code == 1
        said = refused.out + refused.err
        assert "cannot take the cluster-wide restart lock, etcd did not answer" in said and "--break-glass" in said
        assert b"ETCD_MAX_SNAPSHOTS" not in (first.root / conf).read_bytes()  # its turn wrote nothing

        repaired = reconciler("apply", str(spec_copy), "--break-glass", "--wait", "120")
        assert repaired.code == 0, repaired.out + repaired.err
        assert "break glass" in repaired.err
        for h in converged.hosts:
            assert b"ETCD_MAX_SNAPSHOTS=7" in (h.root / conf).read_bytes()
            assert h.ssh("systemctl is-active etcd").stdout.strip() == "active"
        checked = reconciler("check", str(spec_copy))
        assert checked.code == 0, checked.out + checked.err  # every member healthy: quorum is back
    finally:
        for h in rest:
            h.ssh("systemctl start --no-block etcd", check=False)
        restored = reconciler("apply", str(SPECS))
        assert restored.code == 0, restored.out + restored.err
