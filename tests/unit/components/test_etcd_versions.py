"""etcd's upgrade rules (components.etcd_versions): a member runs its cluster's minor version or the next one."""

from __future__ import annotations

import pytest

from reconciler.components.etcd_versions import binary_version, cluster_minor, refused

V34 = "etcd Version: 3.4.23"
V35 = "etcd Version: 3.5.16"
V36 = "etcd Version: 3.6.0"


def test_versions_are_read_from_what_etcd_prints() -> None:
    assert binary_version(V35) == (3, 5, 16)
    assert binary_version("etcd Version: 3.4.23\nGit SHA: Not provided") == (3, 4, 23)
    assert binary_version("Kubernetes v1.20.2") is None and binary_version("") is None
    assert cluster_minor("3.4.0") == (3, 4) and cluster_minor("3.5") == (3, 5)
    assert cluster_minor(None) is None and cluster_minor("not_decided") is None and cluster_minor("3.4.0; x") is None


@pytest.mark.parametrize(
    ("binary", "cluster"),
    [(V34, "3.4.0"), (V35, "3.4.0"), (V35, "3.5.0"), (V36, "3.5.0"), (V34, None), ("", "3.5.0"), ("garbage", "3.4.0")],
)
def test_allowed(binary: str, cluster: str | None) -> None:
    assert refused("etcd.service", "/usr/bin/etcd", "master-1", binary, cluster) is None


def test_a_downgrade_once_the_cluster_runs_the_new_version_is_refused() -> None:
    said = refused("etcd.service", "/usr/bin/etcd", "master-2", V34, "3.5.0")
    assert said is not None
    assert said.startswith("etcd.service on master-2 would run /usr/bin/etcd (etcd 3.4.23), older than the cluster")
    assert "version 3.5" in said and "restore from a snapshot" in said


def test_skipping_a_minor_version_is_refused() -> None:
    said = refused("etcd.service", "/opt/etcd/etcd", "master-1", V36, "3.4.0")
    assert said is not None and "one minor version at a time (every member on 3.5 first)" in said
