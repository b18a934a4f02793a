"""Flags checked against the binary the host runs (observe.programs), on in-process hosts: a start or restart of a
component with a flag its binary does not accept is a located plan-time error and the host is left untouched; a
deprecated flag its help hides is accepted; a binary that is not there is said so; a binary is asked once per
checksum for the whole fleet; a stand-in whose help lists no flags is not checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.engine.converge import converge, plan_all
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.fake_programs import SimProgram
from reconciler.transport.session import Session

APISERVER = "/usr/local/bin/kube-apiserver"
LISTED = (
    "advertise-address bind-address etcd-servers service-cluster-ip-range authorization-mode runtime-config "
    "token-auth-file service-node-port-range tls-cert-file tls-private-key-file client-ca-file "
    "service-account-key-file etcd-cafile etcd-certfile etcd-keyfile apiserver-count audit-log-maxage "
    "audit-log-maxbackup audit-log-maxsize audit-log-path event-ttl logtostderr enable-bootstrap-token-auth "
    "service-account-issuer service-account-signing-key-file shutdown-delay-duration"
).split()
HIDDEN = frozenset(
    {"insecure-bind-address", "kubelet-https", "enable-swagger-ui", "allow-privileged", "admission-control"}
)
HELP = (
    "Usage:\n  kube-apiserver [flags]\n\nGeneric flags:\n\n"
    + "".join(f"      --{name} string   what it does\n" for name in LISTED)
    + "  -v, --v Level   number for the log level verbosity\n"
)
V1_20 = SimProgram(help=HELP, version="Kubernetes v1.20.2", hidden=HIDDEN)


pytestmark = pytest.mark.usefixtures("no_flag_books")  # nothing learnt of any binary before a test


def fleet(names: list[str], program: SimProgram | None = V1_20) -> dict[str, SimHost]:
    hosts = {n: SimHost(n) for n in names}
    for h in hosts.values():
        h.programs[APISERVER] = program
    return hosts


def as_the_seed(specs: Path) -> None:
    """The seed's v1.8 flag where the bundled specs have its v1.20 successor: an operator who copied the seed."""
    spec = specs / "kubernetes.yaml"
    spec.write_text(spec.read_text().replace(" --enable-bootstrap-token-auth", " --experimental-bootstrap-token-auth"))


def seed_line(specs: Path, text: str) -> int:
    return next(i for i, line in enumerate((specs / "kubernetes.yaml").read_text().splitlines(), 1) if text in line)


async def test_a_flag_the_binary_does_not_know_is_a_located_error_before_anything_is_touched(specs: Path) -> None:
    as_the_seed(specs)
    desired = load_desired(specs)
    hosts = fleet(list(desired.hosts))
    result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    for name, outcome in result.outcomes.items():
        assert outcome.status == "failed", outcome
        assert outcome.plan is not None and outcome.plan.actions and not outcome.applied
        assert hosts[name].changes == 0 and not hosts[name].files  # not one file written
        line = seed_line(specs, "KUBE_API_ARGS=")
        rendered = desired.hosts[name].files["/etc/kubernetes/apiserver"].content.decode().splitlines()
        on_host = next(i for i, text in enumerate(rendered, 1) if text.startswith("KUBE_API_ARGS="))
        assert outcome.error == (
            f"--experimental-bootstrap-token-auth is not a flag {APISERVER} (Kubernetes v1.20.2) on {name} accepts "
            f"(kube-apiserver.service would not start): given by specs/kubernetes.yaml:{line} (spec.content), "
            f"KUBE_API_ARGS in /etc/kubernetes/apiserver line {on_host}"
        )
        assert "--kubelet-https" not in outcome.error and "--admission-control" not in outcome.error  # hidden, known


async def test_the_plan_says_it_too_and_the_successor_flag_converges(specs: Path) -> None:
    as_the_seed(specs)
    desired = load_desired(specs)
    hosts = fleet(list(desired.hosts))
    planned = await plan_all(desired, Session(fake_connector(hosts)))
    assert {o.status for o in planned.outcomes.values()} == {"failed"}
    assert all("--experimental-bootstrap-token-auth" in o.error for o in planned.outcomes.values())
    spec = specs / "kubernetes.yaml"
    spec.write_text(spec.read_text().replace("--experimental-bootstrap-token-auth", "--enable-bootstrap-token-auth"))
    result = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {o.status for o in result.outcomes.values()} == {"converged"}, result.outcomes
    assert hosts["master-1"].units["kube-apiserver.service"].active


async def test_one_binary_is_asked_once_for_the_whole_fleet(specs: Path) -> None:
    spec = specs / "kubernetes.yaml"
    desired = load_desired(specs)
    hosts = fleet(list(desired.hosts))
    await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    asked = [(n, q) for n, h in hosts.items() for path, q in h.asked if path == APISERVER]
    assert [q for _, q in asked if "+help" in q] == [("+help",)]  # its help, from one host
    assert sorted(n for _, q in asked if q != ("+help",) for n in q) == sorted(HIDDEN)  # each hidden flag, once
    spec.write_text(spec.read_text().replace("--v=0", "--v=2"))  # a restart of every component, on each host
    before = sum(len(h.asked) for h in hosts.values())
    result = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {o.status for o in result.outcomes.values()} == {"converged"}
    assert sum(len(h.asked) for h in hosts.values()) == before  # known by checksum: only the checksums asked


async def test_a_binary_that_is_not_there_is_said_so(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = fleet(list(desired.hosts), program=None)
    result = await plan_all(desired, Session(fake_connector(hosts)))
    assert result.outcomes["master-2"].status == "failed"
    assert result.outcomes["master-2"].error == (
        f"kube-apiserver.service would run {APISERVER}, which is not an executable file on master-2"
    )


async def test_a_stand_in_whose_help_lists_no_flags_is_not_checked(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = {n: SimHost(n) for n in desired.hosts}  # every binary a stand-in
    result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {o.status for o in result.outcomes.values()} == {"converged"}
    assert all(q == ("+help",) for h in hosts.values() for _, q in h.asked)  # its help only: no probes


async def test_a_flag_from_a_sensitive_file_is_not_named(specs: Path) -> None:
    as_the_seed(specs)
    spec = specs / "kubernetes.yaml"
    text = spec.read_text().replace(
        "  name: kube-apiserver-env\nspec:\n", "  name: kube-apiserver-env\nspec:\n  sensitive: true\n"
    )
    spec.write_text(text)
    desired = load_desired(specs)
    result = await plan_all(desired, Session(fake_connector(fleet(list(desired.hosts)))))
    error = result.outcomes["master-1"].error
    assert "experimental" not in error and "a flag (its name withheld: the file is sensitive)" in error


async def test_a_word_that_cannot_be_a_flag_is_refused_without_asking_the_host(specs: Path) -> None:
    """Spec values never reach the host's shell: a flag name outside [A-Za-z0-9._-] is refused here, unasked."""
    spec = specs / "kubernetes.yaml"
    spec.write_text(spec.read_text().replace(" --event-ttl=1h", " --event-ttl=1h --$(touch${IFS}/tmp/owned)=1"))
    desired = load_desired(specs)
    hosts = fleet(list(desired.hosts))
    result = await plan_all(desired, Session(fake_connector(hosts)))
    assert "--$(touch${IFS}/tmp/owned) is not a flag" in result.outcomes["master-1"].error
    assert not [q for h in hosts.values() for _, q in h.asked if any("touch" in w for w in q)]


async def test_a_hostile_host_that_lies_about_a_binary_affects_only_itself(specs: Path) -> None:
    """A host whose binary's help lists every flag but answers every probe "unknown" refuses its own plan only: what
    it said is kept under its own binary's checksum, never under the others'."""
    as_the_seed(specs)
    desired = load_desired(specs)
    hosts = fleet(list(desired.hosts))
    liar = SimProgram(help=HELP + "      --experimental-bootstrap-token-auth   listed\n", version="lies", hidden=HIDDEN)
    hosts["master-3"].programs[APISERVER] = liar
    result = await plan_all(desired, Session(fake_connector(hosts)))
    assert result.outcomes["master-3"].status == "pending"  # its binary says it knows the flag: believed, for itself
    assert result.outcomes["master-1"].status == result.outcomes["master-2"].status == "failed"
