"""engine.cert_schedule: the daemon's renewals on in-memory hosts (their certificate read through cert_renew.sh's
`read`; the renewal itself is the testbed's): a certificate not yet due is left, with its moment in /status; one
past its moment is renewed (here: tried, and its failure counted, said and retried with backoff, never at once);
each certificate's jitter is its own, the same at every look, within 5% of its lifetime and 6 hours."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from reconciler.certs.authority import Template, issue, load
from reconciler.engine.cert_schedule import JITTER_CAP_S, Renewals, jitter
from reconciler.spec.isolate import load_desired
from reconciler.status.metrics import Metrics
from reconciler.transport.fake import SimFile, SimHost, fake_connector
from tests.support.pki import ca_files, csr, name
from tests.support.simhosts import converged_fleet
from tests.support.specs import copy_specs

PATH = "/etc/kubernetes/ssl/kubernetes.pem"


def specs(tmp_path: Path, ca: tuple[Path, Path]) -> Path:
    s = copy_specs(tmp_path / "specs", ha=False)
    (s / "certificates.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Certificate\nmetadata: {name: kubernetes}\nspec:\n"
        f"  hosts: {{matchLabels: {{role: master}}}}\n  paths: [{PATH}]\n"
        f"  renew: {{keyFile: /etc/kubernetes/ssl/kubernetes-key.pem, caFile: {ca[0]}, caKeyFile: {ca[1]}, "
        "lifetimeDays: 30, restart: [etcd]}\n"
    )
    return s


def certificate(ca: tuple[Path, Path], issued: datetime.datetime, host: str) -> bytes:
    template = Template(name("kubernetes"), ("kubernetes", host), (), True, True)
    made = issue(load(*ca), csr(), template, datetime.timedelta(days=30), issued)
    return made.public_bytes(serialization.Encoding.PEM)


async def test_a_certificate_is_left_until_due_then_renewed_and_a_failure_retried_later(tmp_path: Path) -> None:
    ca = ca_files(tmp_path / "ca")
    spec_dir = specs(tmp_path, ca)
    hosts = await converged_fleet(spec_dir, {n: SimHost(n) for n in ("master-1", "master-2", "master-3")})
    now = datetime.datetime.now(datetime.UTC)
    for h in hosts.values():
        h.files[PATH] = SimFile(certificate(ca, now - datetime.timedelta(days=1), h.name))  # fresh: due in ~19 days
    metrics = Metrics()
    renewals = Renewals(metrics, fake_connector(hosts), leading=None)
    desired = load_desired(spec_dir)
    wait = await renewals.step(desired)
    entries = renewals.status()["certificates"]
    assert renewals.status()["enabled"] and len(entries) == 3 and all(e["error"] is None for e in entries)
    assert all(now.timestamp() + 18 * 86400 < e["due_at"] < now.timestamp() + 21 * 86400 for e in entries)
    assert wait == 600  # nothing due: the next look

    hosts["master-2"].files[PATH] = SimFile(certificate(ca, now - datetime.timedelta(days=25), "master-2"))  # past 2/3
    await renewals.step(desired)
    entry = next(e for e in renewals.status()["certificates"] if e["host"] == "master-2")
    assert entry["failures"] == 1 and "not emulated" in entry["error"]  # tried: the fake makes no key
    assert metrics.cert_renewals.labels(result="failed")._value.get() == 1
    assert entry["due_at"] > now.timestamp() + 30  # retried with backoff, not at the next look
    await renewals.step(desired)
    assert metrics.cert_renewals.labels(result="failed")._value.get() == 1


def test_each_certificate_has_a_jitter_of_its_own_within_its_bounds() -> None:
    month = 30 * 86400.0
    shares = {jitter(f"master-{i}", PATH, 7, month) for i in (1, 2, 3)}
    assert len(shares) == 3 and all(0 <= s <= 0.05 * month for s in shares)
    assert jitter("master-1", PATH, 7, month) == jitter("master-1", PATH, 7, month)  # the same at every look
    assert jitter("master-1", PATH, 7, 10 * 365 * 86400.0) <= JITTER_CAP_S


@pytest.mark.parametrize("leading", [False])
async def test_a_replica_that_does_not_lead_renews_nothing(tmp_path: Path, leading: bool) -> None:
    ca = ca_files(tmp_path / "ca")
    spec_dir = specs(tmp_path, ca)
    hosts = {n: SimHost(n) for n in ("master-1", "master-2", "master-3")}

    async def follower() -> bool:
        return leading

    renewals = Renewals(Metrics(), fake_connector(hosts), leading=follower)
    assert await renewals.step(load_desired(spec_dir)) == 600 and renewals.status()["certificates"] == []


def test_plan_says_a_due_renewal_with_its_reason_and_nothing_of_the_others(tmp_path: Path) -> None:
    from reconciler.engine.cert_schedule import moment, planned
    from reconciler.observe.snapshot import CertFact

    host = load_desired(specs(tmp_path, ca_files(tmp_path / "ca"))).hosts["master-1"]
    day, now = 86400.0, datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC).timestamp()

    def fact(start: float, serial: int = 7) -> dict[str, CertFact]:
        return {PATH: CertFact(PATH, True, start + 30 * day, "CN = kubernetes", not_before=start, serial=serial)}

    assert planned(host, fact(now - day), now) == []  # fresh
    said = planned(host, fact(now - 25 * day), now)  # past 2/3 of 30 days (and its jitter: at most 6 hours)
    assert len(said) == 1 and said[0].startswith(f"  ~ renew {PATH} (67% of its lifetime gone at 2026-12-02 ")
    assert "expires 2026-12-12 00:00 UTC): the daemon renews it, or `reconciler certs renew --host master-1 kubernetes`" in said[0]  # fmt: skip
    assert planned(host, fact(now - 31 * day), now)[0].startswith(f"  ~ renew {PATH} (expired 2026-12-06 00:00 UTC)")
    assert planned(host, {}, now) == [] and planned(host, {PATH: CertFact(PATH, False)}, now) == []
    renew = host.certificates[0].renew
    assert renew is not None  # the daemon's own moment: the same jitter for the same serial, another for another
    start = now - 25 * day
    assert moment("master-1", PATH, 7, start, start + 30 * day, renew) == moment("master-1", PATH, 7, start, start + 30 * day, renew)  # fmt: skip
    assert moment("master-1", PATH, 7, start, start + 30 * day, renew) != moment("master-1", PATH, 8, start, start + 30 * day, renew)  # fmt: skip


async def test_plan_observes_the_renewed_certificates_and_prints_the_due_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan (no health checks) observes the certificates reconciler renews, and prints the due one after the plan.
    The in-memory hosts answer a fixed certificate (CN=emulated, 2026-2036): its dates are made due here."""
    from dataclasses import replace

    from reconciler import cli
    from reconciler.engine.converge import plan_all
    from reconciler.observe.snapshot import CertFact
    from reconciler.outcome import RunResult
    from reconciler.transport.session import Session

    spec_dir = specs(tmp_path, ca_files(tmp_path / "ca"))
    hosts = await converged_fleet(spec_dir, {n: SimHost(n) for n in ("master-1", "master-2", "master-3")})
    desired = load_desired(spec_dir)
    session = Session(fake_connector(hosts))
    result = await plan_all(desired, session)
    await session.close()
    planned_2 = result.outcomes["master-2"]
    assert planned_2.snapshot is not None and planned_2.snapshot.certificates[PATH].serial == 1  # observed
    capsys.readouterr()
    now = datetime.datetime.now(datetime.UTC).timestamp()
    due = CertFact(PATH, True, now + 5 * 86400, "CN = kubernetes", not_before=now - 25 * 86400, serial=1)
    shown = replace(planned_2, snapshot=replace(planned_2.snapshot, certificates={PATH: due}))
    cli._print_result(RunResult({"master-2": shown}), "plan", desired)
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ~ renew")]
    assert len(said) == 1 and said[0].startswith(f"  ~ renew {PATH} (67% of its lifetime gone at "), said
    assert said[0].endswith("`reconciler certs renew --host master-2 kubernetes`")
