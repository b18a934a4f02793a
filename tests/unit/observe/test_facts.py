"""Observation parsing on recorded output of the observe script."""

from __future__ import annotations

import base64
import datetime

import pytest

from reconciler.observe.facts import observe_argv, parse_observation, parse_timestamp
from reconciler.spec.desired import DesiredCheck

RECORDED = "\n".join(
    [
        "@@F /etc/etcd/etcd.conf",
        "644 root root 1795718912.791771851 19",
        base64.b64encode(b"ETCD_NAME=master-1\n").decode(),
        "@@F /etc/kubernetes/config",
        "@@MISSING",
        "@@H etcd 0 200",
        "@@H kube-apiserver 7 000",
        "@@H kube-scheduler 0 500",
        "@@U",
        "Id=etcd.service",
        "LoadState=loaded",
        "ActiveState=active",
        "SubState=running",
        "UnitFileState=enabled",
        "ActiveEnterTimestamp=Thu 2026-11-26 23:40:01.123456 UTC",
        "MainPID=42",
        "NeedDaemonReload=no",
        "FragmentPath=/etc/systemd/system/etcd.service",
        "",
        "Id=kube-scheduler.service",
        "LoadState=not-found",
        "ActiveState=inactive",
        "SubState=dead",
        "UnitFileState=",
        "ActiveEnterTimestamp=",
        "MainPID=0",
        "NeedDaemonReload=no",
        "FragmentPath=",
        "@@END",
        "",
    ]
)

CHECKS = [
    DesiredCheck("etcd", 3, url="https://x:2379/health"),
    DesiredCheck("kube-apiserver", 3, url="http://x:8080/healthz"),
    DesiredCheck("kube-scheduler", 3, url="http://127.0.0.1:10251/healthz"),
]


def test_parse_recorded_observation() -> None:
    snap = parse_observation("master-1", RECORDED, CHECKS)
    conf = snap.files["/etc/etcd/etcd.conf"]
    assert conf.exists and conf.mode == 0o644 and conf.content == b"ETCD_NAME=master-1\n"
    assert conf.mtime == pytest.approx(1795718912.791771851)
    assert not snap.files["/etc/kubernetes/config"].exists
    etcd = snap.units["etcd.service"]
    assert etcd.active and etcd.enabled and etcd.main_pid == 42
    assert etcd.active_enter == pytest.approx(parse_timestamp("Thu 2026-11-26 23:40:01.123456 UTC"))
    sched = snap.units["kube-scheduler.service"]
    assert not sched.active and not sched.enabled and sched.active_enter is None
    assert [(c.name, c.ok, c.detail) for c in snap.checks] == [
        ("etcd", True, "HTTP 200"),
        ("kube-apiserver", False, "connection refused"),
        ("kube-scheduler", False, "HTTP 500, expected 200"),
    ]


def test_truncated_output_is_an_error() -> None:
    with pytest.raises(ValueError, match="truncated"):
        parse_observation("m", RECORDED.replace("@@END", ""), CHECKS)


def test_values_travel_as_arguments_not_script_text() -> None:
    hostile = "/etc/a';rm -rf /;'"
    argv = observe_argv([hostile], ["x.service"], [DesiredCheck("c", 1, url="http://$(reboot)/")])
    assert hostile not in argv[2] and "$(reboot)" not in argv[2]
    assert argv[argv.index("F") + 1] == hostile


def _pem(not_after: datetime.datetime, *names: tuple[str, str]) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from reconciler.transport.fake import self_signed

    oids = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME}
    name = x509.Name([x509.NameAttribute(oids[k], v) for k, v in names])
    return self_signed(name, not_after - datetime.timedelta(days=365), not_after)


def test_certificates_are_parsed_here_missing_and_errors() -> None:
    from reconciler.observe.facts import parse_cert

    end = datetime.datetime(2036, 11, 6, 12, tzinfo=datetime.UTC)
    pem = _pem(end, ("O", "k8s"), ("CN", "kubernetes"))
    ok = parse_cert("/c.pem", ["stamp 1:2:3:4:5", *pem.splitlines()], now=100.0)
    assert ok.exists and ok.subject == "O = k8s, CN = kubernetes" and ok.not_after == 2109585600.0  # openssl's words
    assert ok.stamp == "1:2:3:4:5"  # changed long before the observation (@@NOW): trusted
    assert ok.state(2109585600.0 - 40 * 86400, 30) == "ok" and ok.state(2109585600.0 - 5 * 86400, 30) == "expiring"
    assert ok.state(2109585600.0 + 1, 30) == "expired" and ok.days_left(2109585600.0 - 86400) == 1.0
    assert parse_cert("/m.pem", ["missing"]).state(0, 30) == "missing"
    bad = parse_cert("/b.pem", ["error not a regular file"])
    assert bad.exists and bad.error == "not a regular file" and bad.state(0, 30) == "unreadable"
    garbage = ["stamp 1:2:3:4:5", "-----BEGIN CERTIFICATE-----", "AAAA", "-----END CERTIFICATE-----"]
    assert parse_cert("/g.pem", garbage).error == "not a readable PEM certificate"
    assert parse_cert("/e.pem", ["stamp 1:2:3:4:5"]).error == "not a readable PEM certificate"  # no block at all


def test_certificate_section_of_the_observation() -> None:
    from reconciler.observe.facts import observe_argv, parse_observation

    paths = ["/etc/kubernetes/ssl/ca.pem", "/etc/kubernetes/ssl/admin.pem"]
    argv = observe_argv([], [], [], paths)
    assert argv[-6:] == ["C", paths[0], "-", "C", paths[1], "-"]  # no stamp known: parse both
    pem = _pem(datetime.datetime(2036, 11, 24, tzinfo=datetime.UTC), ("CN", "test-ca"))
    out = f"@@NOW 2000000000.0\n@@C {paths[0]}\nstamp 1:2:900:1000.0:1000.0\n{pem}\n@@C {paths[1]}\nmissing\n@@END\n"
    snap = parse_observation("m1", out, certificates=paths)
    assert snap.certificates[paths[0]].subject == "CN = test-ca"
    assert snap.certificates[paths[0]].stamp == "1:2:900:1000.0:1000.0"
    assert not snap.certificates[paths[1]].exists


@pytest.mark.parametrize(
    "said",
    [
        "Thu 2026-11-26T23:40:01 UTC",  # ISO forms systemd never prints
        "Thu 2026-11-26 23:40:01+01:00 UTC",
        "Thu 2026-11-26 23:40:01.123456",  # not UTC
        "2026-11-26 23:40:01 UTC",
        "Thu \x1b[31mred\x1b[0m UTC",
        "Thu " + "9" * 10_000 + " UTC",
    ],
)
def test_a_unit_timestamp_not_in_systemds_form_is_refused_without_quoting_it(said: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_timestamp(said)
    assert str(exc.value) == "a unit timestamp that is not systemd's UTC form"


def test_unit_timestamps_with_and_without_microseconds() -> None:
    assert parse_timestamp("Thu 2026-11-26 23:40:01.500000 UTC") == parse_timestamp("Thu 2026-11-26 23:40:01 UTC") + 0.5
    assert parse_timestamp("") is None and parse_timestamp("n/a") is None
