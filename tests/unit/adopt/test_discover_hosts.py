"""adopt.discover on masters built by hand in memory (tests/support/masters.py): what it reads and what it never
reads (keys, units not asked for), what a hostile host's answers cannot make it believe (another unit's file, an
alias), which files it marks sensitive."""

from __future__ import annotations

import posixpath
from pathlib import Path

from reconciler.adopt.discover import (
    MAX_PATHS,
)
from tests.support.masters import (
    AWS_ENV,
    DROP_IN,
    PLAIN_ENV,
    add_unit,
    adopt,
    app_host,
    fleet,
    found_hosts,
)
from tests.support.seed import KUBE_UNIT_DIR, SSL_DIR


def test_key_files_are_never_read_copied_or_named(tmp_path: Path) -> None:
    masters = fleet()
    imported = adopt(masters, tmp_path)
    text = imported.text()
    assert b"TOPSECRETKEYMATERIAL" not in text.encode() and "PRIVATE KEY" not in text
    for m in masters:
        keys = {p for p in m.files if p.endswith("-key.pem")}
        assert not keys & set(m.read), m.read  # never read
        assert not keys & set(m.probed)  # not even their first line
        assert all(p in m.read or p.startswith(SSL_DIR) for p in m.probed)
    assert not any("key" in p for d in imported.docs("Certificate") for p in d["spec"]["paths"])
    assert not any(d["spec"]["path"].endswith("-key.pem") for d in imported.docs("File"))


def test_a_hostile_canonical_path_never_gives_a_unit_another_units_file(tmp_path: Path) -> None:
    masters = fleet(1)
    m = masters[0]
    m.canonical_answer = (
        f"/x\n/etc/systemd/system/etcd.service\n{KUBE_UNIT_DIR}/kube-apiserver.service\n"
        f"{KUBE_UNIT_DIR}/kube-controller-manager.service\n{KUBE_UNIT_DIR}/kube-scheduler.service\n"
    )
    found = found_hosts(masters)["master-1"]
    for name, unit in found.units.items():
        assert posixpath.basename(unit.fragment_path) == name, (name, unit.fragment_path)


def test_discover_describes_only_wanted_and_loaded_units_and_bounds_what_it_reads() -> None:
    masters = fleet(1)
    m = masters[0]
    add_unit(m, "evil.service", b"[Service]\nExecStart=/bin/true\n")  # not asked for: never read
    env = "".join(f"EnvironmentFile=-/etc/many/{i}\n" for i in range(MAX_PATHS + 20))
    scheduler = m.files[f"{KUBE_UNIT_DIR}/kube-scheduler.service"]
    scheduler.content = f"[Service]\n{env}ExecStart=/bin/kube-scheduler\n".encode()
    found = found_hosts(masters)["master-1"]
    assert "evil.service" not in found.units and "/etc/systemd/system/evil.service" not in m.read
    assert len([p for p in m.read if p.startswith("/etc/many/")]) <= MAX_PATHS
    assert any(f"more than {MAX_PATHS} paths" in p for p in found.problems)


def test_a_unit_answered_under_another_id_is_described_or_a_problem() -> None:
    masters = fleet(1)
    m = masters[0]
    m.units["etcd-member.service"] = m.units.pop("etcd.service")  # its file still /etc/systemd/system/etcd.service
    m.aliases["etcd.service"] = "etcd-member.service"  # asked as etcd.service, systemd answers Id=etcd-member.service
    found = found_hosts(masters)["master-1"]
    assert "etcd.service" in found.units or any("etcd" in p for p in found.problems)


def test_a_file_only_its_owner_may_read_is_sensitive_whatever_it_holds(tmp_path: Path) -> None:
    host = app_host()
    host.files[PLAIN_ENV].mode = 0o600
    host.files[AWS_ENV].mode = 0o644
    host.files[AWS_ENV].content = b"AWS_REGION=eu-central-1\n"
    found = found_hosts([host], ("app.service",))["m1"]
    assert found.sensitive >= {PLAIN_ENV, DROP_IN} and AWS_ENV not in found.sensitive
