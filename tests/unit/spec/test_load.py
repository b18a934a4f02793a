"""Spec validation: every error names file, line and field; valid specs render per host."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.errors import SpecError
from reconciler.spec.isolate import load_desired

REPO_SPECS = Path(__file__).resolve().parents[3] / "specs"

HOST = """\
apiVersion: reconciler/v1
kind: Host
metadata: {name: m1, labels: {role: master}}
spec: {address: 198.18.0.11, vars: {x: one}}
---
apiVersion: reconciler/v1
kind: Host
metadata: {name: m2}
spec: {address: 198.18.0.12, vars: {x: two}}
"""


def write(tmp_path: Path, **files: str) -> Path:
    d = tmp_path / "specs"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(textwrap.dedent(text))
    return d


def issues(d: Path) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_desired(d)
    return [str(i) for i in exc.value.issues]


def test_bundled_specs_are_valid_and_render_per_host() -> None:
    desired = load_desired(REPO_SPECS)
    assert sorted(desired.hosts) == ["master-1", "master-2", "master-3"]
    conf = desired.hosts["master-2"].files["/etc/etcd/etcd.conf"].content.decode()
    assert "ETCD_NAME=master-2\n" in conf
    assert "ETCD_LISTEN_PEER_URLS=https://198.18.0.12:2380\n" in conf
    assert (
        "ETCD_INITIAL_CLUSTER=master-1=https://198.18.0.11:2380,master-2=https://198.18.0.12:2380,"
        "master-3=https://198.18.0.13:2380\n"
    ) in conf
    api = desired.hosts["master-1"].files["/etc/kubernetes/apiserver"].content.decode()
    assert '--insecure-bind-address=198.18.0.11"' in api
    units = [u.name for u in desired.hosts["master-1"].units]
    assert units == [
        "etcd.service",
        "kube-apiserver.service",
        "kube-controller-manager.service",
        "kube-scheduler.service",
    ]
    assert desired.hosts["master-1"].files["/etc/kubernetes/token.csv"].sensitive


def test_unknown_field_wrong_type_and_missing_field_are_located(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        hosts=HOST,
        files="""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: f}
        spec:
          path: /etc/a
          content: hi
          colour: blue
        ---
        apiVersion: reconciler/v1
        kind: Unit
        metadata: {name: u}
        spec:
          content: "[Service]\\n"
          enabled: maybe
        ---
        apiVersion: reconciler/v1
        kind: HealthCheck
        metadata: {name: c}
        spec:
          tcp: {host: 127.0.0.1}
        """,
    )
    found = issues(d)
    assert "specs/files.yaml:7: spec.colour: unknown field" in found
    assert any(i.startswith("specs/files.yaml:14: spec.enabled: Input should be a valid boolean") for i in found)
    assert "specs/files.yaml:20: spec.tcp.port: missing field" in found


def test_duplicate_names_dangling_references_and_path_conflicts(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        hosts=HOST,
        a="""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: f}
        spec: {path: /etc/a, content: x}
        ---
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: f}
        spec: {path: /etc/b, content: x}
        ---
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: g}
        spec: {path: /etc/a, content: y, hosts: {matchLabels: {role: master}}}
        ---
        apiVersion: reconciler/v1
        kind: Unit
        metadata: {name: u}
        spec:
          content: "[Service]\\n"
          restartOn: [f, nope]
          rollout: {healthCheck: missing}
        """,
    )
    found = issues(d)
    assert any(
        i.startswith("specs/a.yaml:8: metadata.name: duplicate File name 'f' (first at specs/a.yaml:3)") for i in found
    )
    assert "specs/a.yaml:14: spec.path: /etc/a on host 'm1' is also written by File/f" in found
    assert not any("on host 'm2'" in i for i in found)  # g does not select m2
    assert "specs/a.yaml:21: spec.restartOn[1]: no File named 'nope'" in found
    assert "specs/a.yaml:22: spec.rollout.healthCheck: no HealthCheck named 'missing'" in found


@pytest.mark.parametrize(
    "path,why",
    [
        ("etc/a", "must be absolute"),
        ("/etc/../a", "not normalised"),
        ("/etc//a", "not normalised"),
        ("/etc/a/", "not normalised"),
        ("/etc/a b", "characters outside"),
    ],
)
def test_relative_and_unnormalised_paths_are_rejected(tmp_path: Path, path: str, why: str) -> None:
    d = write(
        tmp_path,
        hosts=HOST,
        a=f"""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {{name: f}}
        spec:
          content: x
          path: "{path}"
        """,
    )
    [issue] = issues(d)
    assert issue.startswith("specs/a.yaml:6: spec.path:") and why in issue


def test_undefined_template_variable_is_an_error_naming_the_host(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        hosts=HOST,
        a="""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: f}
        spec:
          path: /etc/a
          env:
            A: "{{ vars.x }}"
            B: "{{ vars.nope }}"
        """,
    )
    found = issues(d)
    assert found == [
        "specs/a.yaml:8: spec.env.B: rendering for 2 hosts (m1, m2): vars.nope is not set for this host",
    ]


def test_env_values_are_quoted_when_needed(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        hosts=HOST,
        a="""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: f}
        spec:
          path: /etc/a
          env: {PLAIN: "{{ vars.x }}", SPACED: 'a "b" c', NUM: 6000, FLAG: true}
        """,
    )
    body = load_desired(d).hosts["m2"].files["/etc/a"].content.decode()
    assert body.splitlines()[1:] == ["PLAIN=two", 'SPACED="a \\"b\\" c"', "NUM=6000", "FLAG=true"]


def test_yaml_syntax_error_and_duplicate_keys_are_located(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        hosts=HOST,
        bad="""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: f}
        spec:
          path: /etc/a
          path: /etc/b
          content: x
        """,
        broken="kind: [unclosed\n",
    )
    found = issues(d)
    assert "specs/bad.yaml:6: spec.path: duplicate key" in found
    assert any(i.startswith("specs/broken.yaml:2: YAML syntax error") for i in found)


def test_validate_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO_SPECS)]) == 0
    d = write(tmp_path, hosts=HOST, a="apiVersion: reconciler/v1\nkind: Nope\nmetadata: {name: x}\nspec: {}\n")
    assert main(["validate", str(d)]) == 1
    err = capsys.readouterr().err
    assert "specs/a.yaml:2: kind: unknown kind 'Nope'" in err


def test_sensitive_files_default_to_0600_and_refuse_wider_modes(tmp_path: Path) -> None:
    import shutil

    from reconciler.errors import SpecError
    from reconciler.spec.isolate import load_desired

    spec_dir = tmp_path / "specs"
    shutil.copytree(Path(__file__).resolve().parents[3] / "specs", spec_dir)
    kube = spec_dir / "kubernetes.yaml"
    kube.write_text(kube.read_text().replace('  mode: "0600"\n  sensitive: true', "  sensitive: true"))
    assert load_desired(spec_dir).hosts["master-1"].files["/etc/kubernetes/token.csv"].mode == 0o600
    kube.write_text(kube.read_text().replace("  sensitive: true", '  sensitive: true\n  mode: "0640"'))
    with pytest.raises(SpecError) as err:
        load_desired(spec_dir)
    assert any("kubernetes.yaml:" in str(i) and "readable by its owner only" in str(i) for i in err.value.issues)
    assert any("wideMode: true" in str(i) for i in err.value.issues)  # the way to keep what a host has
    kube.write_text(kube.read_text().replace('  mode: "0640"', '  mode: "0644"\n  wideMode: true'))
    kept = load_desired(spec_dir).hosts["master-1"].files["/etc/kubernetes/token.csv"]
    assert kept.mode == 0o644 and kept.sensitive


def test_spec_cache_gives_the_same_state_and_follows_every_input(tmp_path: Path) -> None:
    from reconciler.spec.cache import SpecCache

    peers = """\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: peers}
        spec:
          path: /etc/peers
          content: "{{ host.name }}:{% for h in hosts %} {{ h.address }}{% endfor %}\\n"
        ---
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: var}
        spec: {path: /etc/var, content: "{{ vars.x }}\\n"}
        """
    d = write(tmp_path, hosts=HOST, files=peers)
    cache = SpecCache()
    first = load_desired(d, cache=cache)
    assert first == load_desired(d)
    assert first.hosts["m1"].files["/etc/peers"].content == b"m1: 198.18.0.11 198.18.0.12\n"
    assert len(cache.rendered) == 4  # two templates x two hosts
    text, (found, problems, nodes) = cache.parsed["specs/hosts.yaml"]
    marked = found[0].model_copy(update={"spec": found[0].spec.model_copy(update={"identity_file": "/from/cache"})})
    cache.parsed["specs/hosts.yaml"] = (text, ([marked, *found[1:]], problems, nodes))

    # another template's text changes: only its renderings are new, the other one still comes from the cache
    write(tmp_path, files=peers.replace("{{ vars.x }}", "x={{ vars.x }}"))
    cache.rendered[("{{ host.name }}:{% for h in hosts %} {{ h.address }}{% endfor %}\n", "m1")] = "from the cache\n"
    second = load_desired(d, cache=cache)
    assert second.hosts["m1"].files["/etc/var"].content == b"x=one\n"
    assert second.hosts["m1"].files["/etc/peers"].content == b"from the cache\n"
    assert second.hosts["m1"].target.identity_file == "/from/cache"  # the unchanged file was not parsed again

    # any host's context changes (m2's address): every rendering is redone, `hosts` loops included
    write(tmp_path, hosts=HOST.replace("198.18.0.12", "198.18.0.22"))
    third = load_desired(d, cache=cache)
    assert third == load_desired(d)
    assert third.hosts["m1"].files["/etc/peers"].content == b"m1: 198.18.0.11 198.18.0.22\n"
    assert len(cache.rendered) == 4  # entries of the old texts and contexts are gone


def test_a_template_that_reads_neither_host_nor_vars_renders_once_for_every_host(tmp_path: Path) -> None:
    from reconciler.spec.cache import SpecCache

    files = """\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: members}
        spec:
          path: /etc/members
          content: "{% for h in hosts if h.labels.get('role') == 'master' %}{{ h.name }} {% endfor %}\\n"
        ---
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: mine}
        spec: {path: /etc/mine, content: "{{ vars.x }}{% for h in hosts %}.{% endfor %}\\n"}
        """
    d = write(tmp_path, hosts=HOST, files=files)
    cache = SpecCache()
    state = load_desired(d, cache=cache)
    assert {h.files["/etc/members"].content for h in state.hosts.values()} == {b"m1 \n"}
    assert [h.files["/etc/mine"].content for h in state.hosts.values()] == [b"one..\n", b"two..\n"]
    assert sorted(host for _, host in cache.rendered) == ["", "m1", "m2"]  # /etc/members once, /etc/mine per host


def test_the_sandbox_fast_paths_still_refuse_what_the_sandbox_refuses(tmp_path: Path) -> None:
    for template in (
        "{{ vars.update({'x': 1}) }}",
        "{{ vars.__class__ }}",
        "{{ host.labels.setdefault('a', 1) }}",
        "{{ ''.join.__self__ }}",
        "{{ hosts.append(1) }}",
    ):
        d = write(
            tmp_path,
            hosts=HOST,
            files=f"""\
            apiVersion: reconciler/v1
            kind: File
            metadata: {{name: f}}
            spec: {{path: /etc/f, content: "{template}"}}
            """,
        )
        found = issues(d)
        assert found and all("spec.content: rendering for " in i for i in found), (template, found)


def test_env_values_and_modes_keep_the_text_written(tmp_path: Path) -> None:
    """YAML 1.1 reads unquoted `0644` as 420, `1:30` as 90, `on` as true, `1e3` as 1000.0 and an empty value as null;
    an env file line and a mode are text, so they keep what the user wrote (issue 28, item 8)."""
    d = write(
        tmp_path,
        hosts=HOST,
        env="""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: yaml11}
        spec:
          path: /etc/x.env
          mode: 640
          env: {OCTAL: 0644, TIME: 1:30, SWITCH: on, SCI: 1e3, EMPTY: , PLAIN: 100, FLAG: true, FRACTION: 1.50, Q: "0644"}
        ---
        apiVersion: reconciler/v1
        kind: Directory
        metadata: {name: d}
        spec: {path: /etc/d, mode: 0750}
        """,
    )
    host = load_desired(d).hosts["m1"]
    f = host.files["/etc/x.env"]
    assert f.mode == 0o640 and host.directories["/etc/d"].mode == 0o750
    assert f.content.decode().splitlines()[1:] == [
        "OCTAL=0644",
        "TIME=1:30",
        "SWITCH=on",
        "SCI=1e3",
        "EMPTY=",
        "PLAIN=100",
        "FLAG=true",
        "FRACTION=1.50",
        "Q=0644",
    ]


def test_hosts_by_name_and_a_selector_that_selects_nobody(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        hosts=HOST,
        files="""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: named}
        spec: {path: /etc/named, content: "x", hosts: [m2]}
        ---
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: nobody}
        spec: {path: /etc/nobody, content: "x", hosts: {matchLabels: {role: mastr}}}
        """,
    )
    desired = load_desired(d)
    assert "/etc/named" in desired.hosts["m2"].files and "/etc/named" not in desired.hosts["m1"].files
    assert desired.warnings == (
        "no Host is labelled role=mastr: 1 document(s) select no host: File/nobody (specs/files.yaml:9)",
    )
    (d / "files.yaml").write_text((d / "files.yaml").read_text().replace("hosts: [m2]", "hosts: [m2, m3]"))
    assert issues(d) == ["specs/files.yaml:4: spec.hosts[1]: no Host named 'm3'"]
    (d / "files.yaml").write_text((d / "files.yaml").read_text().replace("hosts: [m2, m3]", "hosts: 7"))
    assert issues(d) == [
        'specs/files.yaml:4: spec.hosts: hosts: "all", {matchLabels: {KEY: VALUE}} or a list of host names ([master-1, master-2])'
    ]


def test_validate_prints_the_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write(
        tmp_path,
        hosts=HOST,
        files="""\
        apiVersion: reconciler/v1
        kind: Unit
        metadata: {name: u}
        spec: {content: "[Service]\\nExecStart=/bin/true\\n", hosts: {matchLabels: {role: nobody}}}
        """,
    )
    assert main(["validate", str(d)]) == 0
    assert "warning: no Host is labelled role=nobody: 1 document(s) select no host: Unit/u (specs/files.yaml:4)" in (
        capsys.readouterr().err
    )


def test_a_host_group_says_once_what_hosts_share_and_a_host_keeps_its_own(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        hosts="""\
        apiVersion: reconciler/v1
        kind: HostGroup
        metadata: {name: everyone}
        spec:
          identityFile: keys/id_ed25519
          knownHosts: /etc/reconciler/known_hosts
          user: deploy
          become: sudo
          vars: {token: shared, region: eu}
        ---
        apiVersion: reconciler/v1
        kind: HostGroup
        metadata: {name: masters}
        spec: {hosts: {matchLabels: {role: master}}, port: 2222, vars: {role_var: m}}
        ---
        apiVersion: reconciler/v1
        kind: Host
        metadata: {name: m1, labels: {role: master}}
        spec: {address: 198.18.0.11, vars: {region: us}}
        ---
        apiVersion: reconciler/v1
        kind: Host
        metadata: {name: m2}
        spec: {address: 198.18.0.12, user: admin}
        """,
        files="""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: f}
        spec: {path: /etc/f, content: "{{ vars.token }} {{ vars.region }} {{ vars.role_var | default('-') }}"}
        """,
    )
    desired = load_desired(d)
    m1, m2 = desired.hosts["m1"], desired.hosts["m2"]
    assert (
        m1.target.identity_file == str(d / "keys/id_ed25519") and m1.target.known_hosts == "/etc/reconciler/known_hosts"
    )
    assert (m1.target.user, m1.target.port, m1.target.become) == ("deploy", 2222, "sudo")
    assert (m2.target.user, m2.target.port) == ("admin", 22)  # its own user; not in the masters group
    assert m1.files["/etc/f"].content == b"shared us m" and m2.files["/etc/f"].content == b"shared eu -"


def test_two_groups_giving_a_host_different_values_is_an_error(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        hosts=HOST,
        groups="""\
        apiVersion: reconciler/v1
        kind: HostGroup
        metadata: {name: a}
        spec: {port: 2222, vars: {x: kept-on-the-host, y: one}}
        ---
        apiVersion: reconciler/v1
        kind: HostGroup
        metadata: {name: b}
        spec: {hosts: [m1], port: 2200, vars: {y: two}}
        """,
    )
    assert issues(d) == [
        "specs/groups.yaml:9: spec.port: host 'm1' is given another port by HostGroup/a (specs/groups.yaml:4): "
        "give it once, or on the Host",
        "specs/groups.yaml:9: spec.vars.y: host 'm1' is given another y by HostGroup/a (specs/groups.yaml:4): "
        "give it once, or on the Host",
    ]


def test_a_template_error_is_in_the_users_words_once_for_all_its_hosts(tmp_path: Path) -> None:
    many = "".join(
        f"---\napiVersion: reconciler/v1\nkind: Host\nmetadata: {{name: h{i}}}\nspec: {{address: 198.18.1.{i}}}\n"
        for i in range(1, 8)
    )
    d = write(
        tmp_path,
        hosts=many,
        a="""\
        apiVersion: reconciler/v1
        kind: File
        metadata: {name: f}
        spec: {path: /etc/a, content: "{{ host.nmae }} {{ nmae }}"}
        """,
    )
    assert issues(d) == [
        "specs/a.yaml:4: spec.content: rendering for 7 hosts (h1, h2, h3, h4, h5 and 2 more): "
        "host.nmae is not set for this host"
    ]
    (d / "a.yaml").write_text(
        (d / "a.yaml").read_text().replace("{{ host.nmae }} ", "{{ vars.where | default('ok') }} ")
    )
    assert issues(d) == [  # a var named like an attribute is still a var; an unknown name says what there is
        "specs/a.yaml:4: spec.content: rendering for 7 hosts (h1, h2, h3, h4, h5 and 2 more): "
        "'nmae' is not defined (a template sees host, hosts and vars)"
    ]


def test_the_rewording_of_an_undefined_name_is_bounded() -> None:
    """A name used a million times in a megabyte of text costs no more than a few uses (a hostile template)."""
    import time

    from reconciler.spec.templates import undefined_words

    text = "a" * 1_000_000 + "{{ vars.a }}"
    began = time.process_time()
    said = undefined_words("'dict object' has no attribute 'a'", text)
    assert time.process_time() - began < 0.5 and said == "'a' is not set for this host (a dict without that key)"
    assert undefined_words("'dict object' has no attribute 'nmae'", "{{ host.labels.nmae }}") == (
        "host.labels.nmae is not set for this host"
    )
