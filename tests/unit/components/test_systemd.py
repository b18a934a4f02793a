"""The components' own startup rules, refused at validate time with the file, line and field of the value.

Pure: the bundled specs (the seed's masters) edited the way an operator would, loaded with `load_desired`;
plus the systemd reading they rest on (EnvironmentFile= parsing, ExecStart= expansion, drop-ins).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.components.systemd import drop_ins, parse_environment_file, service, unit_directives
from reconciler.errors import SpecError
from reconciler.spec.isolate import load_desired
from reconciler.spec.render import env_line

REPO_SPECS = Path(__file__).resolve().parents[3] / "specs"


def bundled(tmp_path: Path, tuning: bool = False) -> Path:
    d = tmp_path / "specs"
    shutil.copytree(REPO_SPECS, d)
    if not tuning:  # without an EtcdTuning document, as a new user starts
        etcd = (d / "etcd.yaml").read_text()
        (d / "etcd.yaml").write_text(etcd[: etcd.index("# When etcd logs")].rstrip().removesuffix("---"))
    return d


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def issues(d: Path) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_desired(d)
    return [str(i) for i in exc.value.issues]


def test_the_bundled_specs_pass_every_component_rule(tmp_path: Path) -> None:
    load_desired(bundled(tmp_path))
    load_desired(bundled(tmp_path / "t", tuning=True))


def test_heartbeat_420_with_election_1000_is_refused_at_its_line(tmp_path: Path) -> None:
    d = bundled(tmp_path)
    edit(d / "etcd.yaml", "ETCD_HEARTBEAT_INTERVAL: 100", "ETCD_HEARTBEAT_INTERVAL: 420")
    found = issues(d)
    assert len(found) == 3  # one per member
    assert all(
        i.startswith("specs/etcd.yaml:29: spec.env.ETCD_ELECTION_TIMEOUT: ETCD_ELECTION_TIMEOUT=1000 on host ")
        and "below 5 x the heartbeat interval 420 ms: etcd refuses to start" in i
        for i in found
    ), found


def test_a_flag_in_the_unit_wins_over_the_env_file_and_is_located_in_the_unit(tmp_path: Path) -> None:
    d = bundled(tmp_path)
    edit(
        d / "etcd.yaml", "ExecStart={{ vars.etcd_binary }}", "ExecStart={{ vars.etcd_binary }} --election-timeout=60000"
    )
    found = issues(d)
    assert found and all(
        i.startswith("specs/etcd.yaml:55: spec.content: --election-timeout=60000 on host ")
        and "above etcd's limit of 50000 ms" in i
        for i in found
    ), found


def test_a_drop_in_that_changes_one_members_heartbeat_is_refused(tmp_path: Path) -> None:
    d = bundled(tmp_path)
    (d / "dropin.yaml").write_text("""\
apiVersion: reconciler/v1
kind: File
metadata: {name: etcd-dropin}
spec:
  path: /etc/systemd/system/etcd.service.d/timing.conf
  hosts: {matchLabels: {etcd: member, slow: "yes"}}
  content: |
    [Service]
    ExecStart=
    ExecStart=/usr/bin/etcd --heartbeat-interval=150 --election-timeout=1500
""")
    inventory = (d / "inventory.yaml").read_text()
    first = inventory.index("labels:")
    (d / "inventory.yaml").write_text(
        inventory[:first] + 'labels: {slow: "yes", ' + inventory[first + 8 :].lstrip(" {")
    )
    found = issues(d)
    assert any(
        "specs/dropin.yaml:10: spec.content: --heartbeat-interval=150 on host 'master-1': heartbeat/election "
        "150/1500 ms differ from the other members' 100/1000 ms" in i
        for i in found
    ), found


@pytest.mark.parametrize(
    "old, new, expect",
    [
        ('ETCD_NAME: "{{ host.name }}"', "ETCD_NAME: same", "member name 'same' is used by 3 members"),
        (
            "{% for h in hosts if h.labels.get('etcd') == 'member' %}{{ h.name }}=https://{{ h.address }}:2380",
            "{% for h in hosts if h.labels.get('etcd') == 'member' and h.name != 'master-3' %}{{ h.name }}=https://{{ h.address }}:2380",
            "initial cluster must list every member exactly once (missing master-3)",
        ),
        (
            'ETCD_ADVERTISE_CLIENT_URLS: "https://{{ host.address }}:2379"',
            'ETCD_ADVERTISE_CLIENT_URLS: "{{ host.address }}:2379"',
            "needs an http:// or https:// scheme",
        ),
        (
            'ETCD_LISTEN_PEER_URLS: "https://{{ host.address }}:2380"',
            'ETCD_LISTEN_PEER_URLS: "https://{{ host.address }}"',
            "needs a host and a port",
        ),
        (
            "ETCD_ELECTION_TIMEOUT: 1000",
            "ETCD_ELECTION_TIMEOUT: 1s",
            "must be a whole number of milliseconds, not '1s'",
        ),
    ],
)
def test_etcd_rules(tmp_path: Path, old: str, new: str, expect: str) -> None:
    d = bundled(tmp_path)
    edit(d / "etcd.yaml", old, new)
    found = issues(d)
    assert found and all(i.startswith("specs/etcd.yaml:") and " spec.env.ETCD_" in i for i in found), found
    assert any(expect in i for i in found), found


def test_service_ranges_must_match_between_apiserver_and_controller_manager(tmp_path: Path) -> None:
    d = bundled(tmp_path)
    text = (d / "kubernetes.yaml").read_text()
    assert text.count("--service-cluster-ip-range=10.254.0.0/16") == 2
    (d / "kubernetes.yaml").write_text(
        text.replace("--service-cluster-ip-range=10.254.0.0/16", "--service-cluster-ip-range=10.96.0.0/12", 1)
    )
    found = issues(d)
    assert len(found) == 3 and all(
        "must use the same range on every master" in i and "spec.content" in i for i in found
    )


def test_etcd_servers_must_name_declared_members(tmp_path: Path) -> None:
    d = bundled(tmp_path)
    edit(
        d / "kubernetes.yaml",
        "https://{{ h.address }}:2379{{ '' if loop.last else ',' }}{% endfor %}",
        "https://{{ h.address }}:2379,{% endfor %}https://198.18.0.99:2379",
    )
    found = issues(d)
    assert found and all(
        "--etcd-servers names 'https://198.18.0.99:2379', which no declared etcd member serves" in i for i in found
    ), found


def test_environment_file_parsing_follows_systemd() -> None:
    text = (
        '# comment\n; also\nA=plain\nB="double \\"quoted\\" \\\\ $x"\nC=\'single $y\'\n'
        "D=continued \\\n  line\n  E = spaced  \nnot an assignment\nF=\n"
    )
    env = {k: s.value for k, s in parse_environment_file(text).items()}
    assert env == {
        "A": "plain",
        "B": 'double "quoted" \\ $x',
        "C": "single $y",
        "D": "continued   line",
        "E": "spaced",
        "F": "",
    }
    assert parse_environment_file(text)["E"].line == 8


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"), max_size=40))
def test_what_reconciler_writes_systemd_reads_back(value: str) -> None:
    assert parse_environment_file(env_line("K", value) + "\n")["K"].value == value


def test_exec_start_expansion_and_drop_in_reset() -> None:
    files = {
        "/etc/systemd/system/x.service": "[Service]\nEnvironmentFile=-/etc/x.env\nExecStart=/usr/bin/x $ARGS ${ONE} --z=1\n",
        "/etc/x.env": 'ARGS="--a=1 --b 2"\nONE="with space"\n',
        "/etc/systemd/system/x.service.d/10.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/y --c=3\n",
    }
    svc = service("/etc/systemd/system/x.service", files)
    assert [a.value for a in svc.argv] == ["/usr/bin/y", "--c=3"] and svc.program == "y"
    del files["/etc/systemd/system/x.service.d/10.conf"]
    svc = service("/etc/systemd/system/x.service", files)
    assert [a.value for a in svc.argv] == ["/usr/bin/x", "--a=1", "--b", "2", "with space", "--z=1"]
    flags = svc.flags()
    assert flags["b"].value == "2" and flags["a"].path == "/etc/x.env" and flags["a"].key == "ARGS"
    assert flags["z"].path == "/etc/systemd/system/x.service" and flags["z"].line == 3
    assert [d.key for d in unit_directives("[Unit]\nA=1 \\\n  2\n[Service]\nB=3\n")] == ["A", "B"]


def test_a_unit_in_usr_lib_takes_the_operators_drop_ins_from_etc_by_name_the_first_directory_masking() -> None:
    """The seed's kube units live in /usr/lib/systemd/system; an operator's drop-in goes in /etc/systemd/system."""
    unit = "/usr/lib/systemd/system/x.service"
    files = {
        unit: "[Service]\nExecStart=/usr/bin/x --a=1\n",
        "/usr/lib/systemd/system/x.service.d/10-vendor.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/x --vendor\n",
        "/usr/lib/systemd/system/x.service.d/20-mine.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/x --masked\n",
        "/etc/systemd/system/x.service.d/20-mine.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/x --mine\n",
        "/etc/systemd/system/x.service.d/sub/30.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/x --nested\n",
        "/etc/systemd/system/y.service.d/40.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/x --other-unit\n",
    }
    assert drop_ins(unit, files) == [
        "/usr/lib/systemd/system/x.service.d/10-vendor.conf",
        "/etc/systemd/system/x.service.d/20-mine.conf",
    ]
    assert [a.value for a in service(unit, files).argv] == ["/usr/bin/x", "--mine"]
