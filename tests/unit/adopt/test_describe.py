"""adopt.describe, the core guarantee end to end: whatever masters built by hand hold (tests/support/masters.py), the
spec directory import writes, once loaded by the real loader (`load_desired`) and rendered by the real renderer,
gives every host exactly the bytes it holds: one document where hosts agree, a template where they differ by their
own name and address, one document per host otherwise."""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.adopt.describe import HostInfo, describe, doc_name, file_doc_name
from reconciler.adopt.emit import spec_files
from reconciler.components.etcd import ELECTION_KEY, HEARTBEAT_KEY
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost
from tests.support.masters import (
    TOKEN,
    add_unit,
    address,
    adopt,
    assert_exact,
    fleet,
    found_hosts,
    hand_made,
    put,
)
from tests.support.rendering import HOSTS, OWN_ADDRESS, OWN_NAME, OWN_ONLY, texts_of
from tests.support.seed import KUBE_UNIT_DIR, SCHEDULER_UNIT, SSL_DIR

HB, EL = HEARTBEAT_KEY, ELECTION_KEY


def test_a_fleet_built_by_hand_imports_exactly(tmp_path: Path) -> None:
    masters = fleet()
    imported = adopt(masters, tmp_path)
    assert imported.adoption.problems == []
    desired = assert_exact(masters, imported)
    files = {d["metadata"]["name"]: d["spec"] for d in imported.docs("File")}
    # one document each: the env files differ only by each host's own name and address
    assert set(files) == {
        "etcd-conf",
        "kubernetes-config",
        "kubernetes-apiserver",
        "kubernetes-controller-manager",
        "kubernetes-scheduler",
        "kubernetes-token-csv",
    }
    assert "{{ host.address }}" in files["etcd-conf"]["content"] and "{{ host.name }}" in files["etcd-conf"]["content"]
    assert files["etcd-conf"]["mode"] == "0640" and files["etcd-conf"]["group"] == "etcd"
    assert files["kubernetes-token-csv"]["sensitive"] is True and "mode" not in files["kubernetes-token-csv"]
    units = {d["metadata"]["name"]: d["spec"] for d in imported.docs("Unit")}
    assert units["kube-apiserver"]["path"] == f"{KUBE_UNIT_DIR}/kube-apiserver.service"  # where the file really is
    assert "path" not in units["etcd"] and units["etcd"]["rollout"]["healthCheck"] == "etcd"
    assert "kubernetes-token-csv" in units["kube-apiserver"]["restartOn"]
    assert [d["spec"] for d in imported.docs("EtcdTuning")] == [{"unit": "etcd", "file": "etcd-conf"}]
    assert desired.tuning is not None and desired.tuning.spec_values == {HB: 100, EL: 1000}
    certs = [p for d in imported.docs("Certificate") for p in d["spec"]["paths"]]
    assert sorted(certs) == [f"{SSL_DIR}/ca.pem", f"{SSL_DIR}/kubernetes.pem"]
    hosts = {d["metadata"]["name"]: d for d in imported.docs("Host")}
    assert all(h["metadata"]["labels"] == {"role": "master", "etcd": "member"} for h in hosts.values())


def test_each_hosts_own_drift_is_kept_exactly(tmp_path: Path) -> None:
    masters = fleet()
    m1, m2, m3 = masters
    m2.files["/etc/kubernetes/scheduler"].content = m2.files["/etc/kubernetes/scheduler"].content.replace(
        b"KUBE_SCHEDULER_ARGS", b"# tuned by hand 2017-10-03\nKUBE_SCHEDULER_ARGS"
    )
    m3.files["/etc/kubernetes/config"].content = m3.files["/etc/kubernetes/config"].content.replace(b"--v=0", b"--v=2")
    m1.files["/etc/kubernetes/apiserver"].content = m1.files["/etc/kubernetes/apiserver"].content.replace(
        b"--event-ttl=1h", b"--event-ttl=1h --audit-policy-file=/etc/kubernetes/audit.yaml"
    )
    put(m1, "/etc/kubernetes/audit.yaml", b"apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
    unit_file = m2.files[f"{KUBE_UNIT_DIR}/kube-scheduler.service"]
    unit_file.content += b"# local note\n"  # a unit that differs: chosen by host
    imported = adopt(masters, tmp_path)
    assert imported.adoption.problems == []
    assert_exact(masters, imported)
    files = imported.docs("File")
    scheduler = [d for d in files if d["spec"]["path"] == "/etc/kubernetes/scheduler"]
    assert len(scheduler) == 3 and all(set(d["spec"]["hosts"]["matchLabels"]) == {"host"} for d in scheduler)
    config = [d for d in files if d["spec"]["path"] == "/etc/kubernetes/config"]
    assert len(config) == 3
    audit = [d for d in files if d["spec"]["path"] == "/etc/kubernetes/audit.yaml"]
    assert len(audit) == 1 and audit[0]["spec"]["hosts"] == {"matchLabels": {"host": "master-1"}}
    assert "only on master-1" in imported.files["kubernetes.yaml"]
    apiserver = [d for d in files if d["spec"]["path"] == "/etc/kubernetes/apiserver"]
    assert len(apiserver) == 3  # master-1's differs by more than its name and address
    units = {d["metadata"]["name"]: d["spec"] for d in imported.docs("Unit")}
    assert '{% if host.name == "master-1" %}' in units["kube-scheduler"]["content"]
    hosts = {d["metadata"]["name"]: d["metadata"]["labels"] for d in imported.docs("Host")}
    assert all(labels["host"] == name for name, labels in hosts.items())


def test_a_file_on_one_host_only_differs_by_address_elsewhere(tmp_path: Path) -> None:
    masters = fleet(2)
    masters[0].files["/etc/kubernetes/apiserver"].content += b"# only here: 198.18.0.11\n"
    masters[0].files["/etc/etcd/etcd.conf"].content += b"\n"  # a trailing blank line
    imported = adopt(masters, tmp_path)
    assert_exact(masters, imported)
    assert not imported.docs("EtcdTuning")  # two etcd.conf documents: not tunable in place
    assert any("no EtcdTuning document" in n for n in imported.adoption.notes)


AWKWARD_FILES = [
    "",
    "\n",
    "\n\n\n",
    "  leading spaces\n",
    "trailing spaces   \n",
    "\tA=1\n",
    "---\nA=1\n...\n",
    "# just a comment",
    "A={{ host.address }}\nB={% raw %}x{% endraw %}\nC={# c #}\n",
    "D={% endraw %}\n",
    "E=é∂ƒ漢字😀\n",
    "F=" + "x" * 100_000 + "\n",
    "G={\nH=}}\n",
    "I=\u2028\u2029\n",
    "J='\"\\\n",
    "K=\x1b[31mred\n",
]


def awkward_fleet(by_address: bool) -> list[SimHost]:
    """A unit reading many env files of awkward text: the same on every host, or differing by address."""
    masters = fleet()
    env_files = [f"/etc/awkward/f{i}" for i in range(len(AWKWARD_FILES))]
    unit = "[Service]\n" + "".join(f"EnvironmentFile=-{p}\n" for p in env_files) + "ExecStart=/usr/bin/sleep inf\n"
    for m in masters:
        add_unit(m, "awkward.service", unit.encode())
        for p, text in zip(env_files, AWKWARD_FILES, strict=True):
            put(m, p, ((f"ADDR={address(m)}\n" if by_address else "") + text).encode())
    return masters


@pytest.mark.parametrize("by_address", [False, True])
def test_awkward_contents_import_exactly(tmp_path: Path, by_address: bool) -> None:
    masters = awkward_fleet(by_address)
    imported = adopt(masters, tmp_path, ("awkward.service",))
    assert imported.adoption.problems == []
    assert_exact(masters, imported)
    awkward = [d for d in imported.docs("File") if d["spec"]["path"].startswith("/etc/awkward/")]
    assert len(awkward) == len(AWKWARD_FILES)  # one document each: shared, or a template over host.address
    assert "units.yaml" in imported.files


def test_each_host_differs_in_awkward_ways_and_still_imports_exactly(tmp_path: Path) -> None:
    masters = awkward_fleet(False)
    for i, m in enumerate(masters):
        for j, p in enumerate(sorted(p for p in m.files if p.startswith("/etc/awkward/"))):
            m.files[p].content = m.files[p].content + ["{%", " {{ x }}", "\n\n"][(i + j) % 3].encode()
    imported = adopt(masters, tmp_path, ("awkward.service",))
    assert imported.adoption.problems == []
    assert_exact(masters, imported)


def test_a_file_holding_nel_imports_exactly(tmp_path: Path) -> None:
    masters = fleet()
    for m in masters:
        m.files["/etc/kubernetes/scheduler"].content += "# caf\u00e9\x85\n".encode()
    assert_exact(masters, adopt(masters, tmp_path))


def test_a_crlf_file_with_a_brace_imports_exactly(tmp_path: Path) -> None:
    masters = fleet()
    for m in masters:
        m.files["/etc/kubernetes/scheduler"].content = b'KUBE_SCHEDULER_ARGS="--config={}"\r\n'
    assert_exact(masters, adopt(masters, tmp_path))


def test_a_crlf_file_without_a_brace_imports_exactly(tmp_path: Path) -> None:
    masters = fleet()
    windows = b'# edited on windows\r\nKUBE_SCHEDULER_ARGS="--leader-elect=true"\r\n'
    for m in masters:
        m.files["/etc/kubernetes/scheduler"].content = windows
    masters[0].files["/etc/kubernetes/config"].content += b"X=1\r\n"
    imported = adopt(masters, tmp_path)
    assert_exact(masters, imported)


def test_a_template_injection_in_a_hosts_file_is_copied_not_run(tmp_path: Path) -> None:
    masters = fleet()
    evil = "{{ hosts[1].address }}{% for h in hosts %}{{ h.name }}{% endfor %}{{ vars }}{% endraw %}\n"
    for m in masters:
        m.files["/etc/kubernetes/scheduler"].content += f"# {address(m)} {evil}".encode()
    masters[0].files["/etc/kubernetes/config"].content += evil.encode()
    imported = adopt(masters, tmp_path)
    assert_exact(masters, imported)


def test_different_paths_get_different_document_names(tmp_path: Path) -> None:
    masters = fleet(1)
    extra = ["/srv/kubernetes/config", "/etc/kubernetes/token-csv"]
    m = masters[0]
    m.files[f"{KUBE_UNIT_DIR}/kube-scheduler.service"].content = SCHEDULER_UNIT.replace(
        "EnvironmentFile=-/etc/kubernetes/scheduler\n",
        "EnvironmentFile=-/etc/kubernetes/scheduler\n" + "".join(f"EnvironmentFile=-{p}\n" for p in extra),
    ).encode()
    for p in extra:
        put(m, p, b"X=1\n")
    imported = adopt(masters, tmp_path)
    names = [d["metadata"]["name"] for d in imported.docs("File")]
    assert len(names) == len(set(names)), names
    assert_exact(masters, imported)


def test_doc_names_are_always_valid_names() -> None:
    for text in ["", "/", "...", "-", "A_B", "é", "a" * 300, "/etc/x/.hidden", "x..y", "/etc/kubernetes/ssl/ca.pem"]:
        name = doc_name(text)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 63
    assert file_doc_name("/etc/kubernetes/apiserver") == "kubernetes-apiserver"
    assert file_doc_name("/etc/etcd/etcd.conf") == "etcd-conf"


@pytest.mark.parametrize("timings", [(0, 1000), (100, 400)])
def test_timings_the_loader_refuses_give_no_etcd_tuning(timings: tuple[int, int], tmp_path: Path) -> None:
    masters = fleet()
    for m in masters:
        m.files["/etc/etcd/etcd.conf"].content = (
            m.files["/etc/etcd/etcd.conf"]
            .content.replace(b"INTERVAL=100\n", f"INTERVAL={timings[0]}\n".encode())
            .replace(b"TIMEOUT=1000\n", f"TIMEOUT={timings[1]}\n".encode())
        )
    imported = adopt(masters, tmp_path)
    assert not imported.docs("EtcdTuning")  # left out, with a note (etcd itself may refuse such timings: validate says)
    assert any("no EtcdTuning document" in n for n in imported.adoption.notes)


def test_a_unit_drop_in_is_described_exactly(tmp_path: Path) -> None:
    masters = fleet()
    drop_in = "/etc/systemd/system/etcd.service.d/override.conf"
    for m in masters:
        m.units["etcd.service"].drop_ins = (drop_in,)
        put(m, drop_in, f"[Service]\nNice=5\n# {address(m)}\n".encode())
    imported = adopt(masters, tmp_path)
    assert imported.adoption.problems == []
    desired = assert_exact(masters, imported)
    assert all(desired.hosts[m.name].files[drop_in].content == m.files[drop_in].content for m in masters)


def test_many_files_are_described_with_work_linear_in_their_number() -> None:
    """200 files on each of 3 hosts are described (each a template over host values); the work grows linearly with the
    files: counted in function calls (deterministic, unlike time on a loaded machine), 4 x the files costs
    about 4 x the calls (a quadratic step would cost 16 x)."""

    def described(n: int) -> tuple[Any, dict[str, str], int]:
        found = {}
        for h, a in list(HOSTS.items()):
            files = {f"/etc/many/f{i}": f"# file {i}\nADDR={a}\nNAME={h}\nX={{{i}}}\n".encode() for i in range(n)}
            found[h] = hand_made(h, files, {"many.service": tuple(files)})
        calls = [0]

        def count(frame: Any, event: str, arg: Any) -> None:
            if event in ("call", "c_call"):
                calls[0] += 1

        sys.setprofile(count)
        try:
            adoption = describe([HostInfo(h, a, {}, {"address": a}) for h, a in HOSTS.items()], found)
            written = spec_files(adoption, "x")
        finally:
            sys.setprofile(None)
        return adoption, written, calls[0]

    _, _, small = described(50)
    adoption, written, large = described(200)
    assert large <= 5 * small, (small, large)
    docs = [d for d in adoption.files["units.yaml"] if d.kind == "File"]
    assert len(docs) == 200 and all("{{ host.address }}" in d.spec["content"] for d in docs)
    assert adoption.problems == [] and "units.yaml" in written


def test_a_file_missing_on_one_host_is_given_only_to_the_others(tmp_path: Path) -> None:
    masters = fleet()
    del masters[2].files["/etc/kubernetes/scheduler"]  # EnvironmentFile=-: optional
    for m in masters:  # a secret that names each host's own address: a sensitive template
        m.files["/etc/kubernetes/token.csv"].content = TOKEN + f"node-token,{address(m)},10002\n".encode()
    imported = adopt(masters, tmp_path)
    assert imported.adoption.problems == []
    desired = assert_exact(masters, imported)
    assert "/etc/kubernetes/scheduler" not in desired.hosts["master-3"].files
    token = [d for d in imported.docs("File") if d["spec"]["path"] == "/etc/kubernetes/token.csv"]
    assert len(token) == 1 and token[0]["spec"]["sensitive"] is True
    assert "node-token,{{ host.address }},10002" in token[0]["spec"]["content"]


def without_etcd(masters: list[SimHost], host: SimHost) -> None:
    del host.units["etcd.service"]
    for p in ("/etc/etcd/etcd.conf", "/etc/systemd/system/etcd.service"):
        del host.files[p]
    for m in masters:  # the apiservers and the members name the members left
        m.files["/etc/kubernetes/apiserver"].content = m.files["/etc/kubernetes/apiserver"].content.replace(
            f",https://{address(host)}:2379".encode(), b""
        )
        if "/etc/etcd/etcd.conf" in m.files:
            m.files["/etc/etcd/etcd.conf"].content = m.files["/etc/etcd/etcd.conf"].content.replace(
                f",{host.name}=https://{address(host)}:2380".encode(), b""
            )


def test_etcd_on_two_of_three_hosts_is_given_to_its_members_only(tmp_path: Path) -> None:
    masters = fleet()
    without_etcd(masters, masters[2])
    imported = adopt(masters, tmp_path)
    desired = assert_exact(masters, imported)
    assert not any("etcd" in p for p in desired.hosts["master-3"].files)
    labels = {d["metadata"]["name"]: d["metadata"]["labels"] for d in imported.docs("Host")}
    assert "etcd" not in labels["master-3"] and labels["master-1"]["etcd"] == "member"


def test_an_inventory_label_does_not_give_etcd_to_a_host_without_it(tmp_path: Path) -> None:
    masters = fleet()
    without_etcd(masters, masters[2])
    found = found_hosts(masters)
    hosts = [
        HostInfo(m.name, address(m), {"role": "master", "etcd": "member"}, {"address": address(m)}) for m in masters
    ]
    files = spec_files(describe(hosts, found), "x")
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    desired = load_desired(tmp_path)
    assert not any("etcd" in p for p in desired.hosts["master-3"].files)


def test_the_directories_units_work_in_are_described_as_they_are(tmp_path: Path) -> None:
    masters = fleet()
    masters[1].dirs["/var/lib/etcd/default.etcd"] = (0o750, "etcd", "root")  # one host's own
    masters[2].dirs["/var/lib/etcd"] = (0o1777, "root", "root")  # sticky: said so
    imported = adopt(masters, tmp_path)
    assert imported.adoption.problems == []
    desired = assert_exact(masters, imported)
    assert all(set(desired.hosts[m.name].directories) == set(m.dirs) for m in masters)
    dirs = imported.docs("Directory")
    assert any(d["spec"].get("specialBits") is True and d["spec"]["mode"] == "1777" for d in dirs)


def test_the_tuners_overlay_raises_the_two_lines_of_the_imported_file_and_nothing_else(tmp_path: Path) -> None:
    masters = fleet()
    imported = adopt(masters, tmp_path)
    desired = load_desired(imported.directory, {HB: 300, EL: 3000})
    assert desired.tuning is not None and desired.tuning.effective == {HB: 300, EL: 3000}
    for m in masters:
        want = m.files["/etc/etcd/etcd.conf"].content.replace(
            b"\nETCD_HEARTBEAT_INTERVAL=100\n", b"\nETCD_HEARTBEAT_INTERVAL=300\n"
        )
        want = want.replace(b"\nETCD_ELECTION_TIMEOUT=1000\n", b"\nETCD_ELECTION_TIMEOUT=3000\n")
        assert want != m.files["/etc/etcd/etcd.conf"].content
        assert desired.hosts[m.name].files["/etc/etcd/etcd.conf"].content == want
    lower = load_desired(imported.directory, {HB: 50, EL: 500})  # never lowered
    assert all(
        lower.hosts[m.name].files["/etc/etcd/etcd.conf"].content == m.files["/etc/etcd/etcd.conf"].content
        for m in masters
    )


content_pieces = st.sampled_from(
    ["x", " ", "  ", "\t", "\n", "\r\n", "#", "---", "...", ":", "|", '"', "'", "\\", "é", "😀", "\u2028", "\ufeff"]
    + ["{", "}", "{{", "}}", "{%", "%}", "{#", "#}", "{% raw %}", "{% endraw %}", "endraw", "\x1b"]
    + list(HOSTS)
    + list(HOSTS.values())
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(content_pieces | st.sampled_from([OWN_NAME, OWN_ADDRESS, OWN_ONLY]), max_size=20),
    st.lists(st.sampled_from(list(HOSTS)), min_size=1, max_size=3, unique=True),
    st.booleans(),
)
def test_any_contents_on_any_hosts_load_back_as_each_hosts_bytes(
    tokens: list[Any], names: list[str], sens: bool
) -> None:
    """The core guarantee as a property: describe -> spec_files -> load_desired gives every host its own text."""
    texts = texts_of(tokens, names)
    path = "/etc/app/app.conf"
    found = {}
    for n in names:
        found[n] = hand_made(n, {path: texts[n].encode()}, {"app.service": (path,)})
        if sens:  # as a careful admin keeps it (0644 for a secret is a spec error: not this test's subject)
            found[n].sensitive = {path}
            found[n].files[path] = replace(found[n].files[path], mode=0o600)
    adoption = describe([HostInfo(n, HOSTS[n], {}, {"address": HOSTS[n]}) for n in names], found)
    assert adoption.problems == []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in spec_files(adoption, "x").items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        desired = load_desired(Path(tmp))
    for n in names:
        got = desired.hosts[n].files[path]
        assert got.content == texts[n].encode() and got.sensitive == sens, (n, texts[n])


def test_timings_with_leading_zeros_import_exactly(tmp_path: Path) -> None:
    masters = fleet()
    for m in masters:
        m.files["/etc/etcd/etcd.conf"].content = m.files["/etc/etcd/etcd.conf"].content.replace(
            b"INTERVAL=100\n", b"INTERVAL=0100\n"
        )
    assert_exact(masters, adopt(masters, tmp_path))
