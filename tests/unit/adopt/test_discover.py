"""adopt.discover's pure parts under hostile output: the unit list, the read script's answers (taken strictly in
the order asked, base64 that cannot forge an answer), the paths a spec can name, the files and certificates a
service's flags name (keys never)."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adopt.discover import (
    CERT_FLAGS,
    CONFIG_FLAGS,
    MAX_FILE,
    MAX_PATHS,
    FoundFile,
    FoundHost,
    FoundUnit,
    _valid_paths,
    environment_files,
    parse_reads,
    parse_units,
    referenced,
)
from reconciler.components.systemd import service
from reconciler.spec.model import PATH_RE, FileSpec


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def read_entry(path: str, content: bytes, mode: str = "644", owner: str = "root", group: str = "root") -> str:
    head = f"@@F {path} file {len(content)} {mode} {b64(owner)} {b64(group)}"
    return f"{head}\n{base64.b64encode(content).decode()}\n"


def answered(text: str) -> list[str]:
    """The paths an honest host's answers are for, in order (what import asked)."""
    return [line.split(" ")[1] for line in text.split("\n") if line.startswith("@@F ") and len(line.split(" ")) > 2]


def parse(text: str) -> dict[str, FoundFile]:
    return parse_reads(text, answered(text))


def test_parse_units_reads_each_block() -> None:
    text = (
        "Id=etcd.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n"
        "FragmentPath=/etc/systemd/system/etcd.service\nDropInPaths=/a.conf /b.conf\n\n"
        "Id=kube-apiserver.service\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\nFragmentPath=\n"
        "DropInPaths=\n"
    )
    units = {u.name: u for u in parse_units(text)}
    assert units["etcd.service"].present and units["etcd.service"].drop_ins == ("/a.conf", "/b.conf")
    assert not units["kube-apiserver.service"].present


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n\n\n",
        "LoadState=loaded\nFragmentPath=/etc/x\n",  # no Id
        "garbage without equals\n\n===\n\nId\n",
        "Id=\nLoadState=loaded\nFragmentPath=/x\n",
        "Id=a=b=c\nLoadState==loaded\n",
        "\x00Id=x\n\udcff=\n",
    ],
)
def test_parse_units_never_raises_on_garbage(text: str) -> None:
    for unit in parse_units(text):
        assert isinstance(unit, FoundUnit)


def test_parse_units_with_huge_drop_in_paths_is_bounded_by_valid_paths() -> None:
    paths = " ".join(f"/etc/systemd/system/etcd.service.d/{i}.conf" for i in range(5000))
    text = f"Id=etcd.service\nLoadState=loaded\nFragmentPath=/etc/systemd/system/etcd.service\nDropInPaths={paths}\n"
    t0 = time.process_time()
    unit = parse_units(text)[0]
    host = FoundHost("m")
    assert len(_valid_paths(unit.drop_ins, host, "unit file")) == MAX_PATHS
    assert any(f"more than {MAX_PATHS}" in p for p in host.problems)
    assert time.process_time() - t0 < 2


def test_parse_units_answers_in_the_order_asked() -> None:
    text = "Id=etcd.service\nFragmentPath=/a\nLoadState=loaded\n\nId=etcd.service\nFragmentPath=/b\nLoadState=loaded\n"
    assert [u.fragment_path for u in parse_units(text)] == ["/a", "/b"]


def test_parse_reads_round_trips_files_and_states() -> None:
    text = (
        read_entry("/etc/a", b"hello\n", "600", "etcd", "etcd")
        + read_entry("/etc/empty", b"")
        + "@@F /etc/l link\n@@F /etc/d dirlink\n@@F /etc/m missing\n@@F /etc/n notfile\n"
        + read_entry("/etc/bin", bytes(range(256)))
    )
    found = parse(text)
    assert found["/etc/a"] == FoundFile("/etc/a", "file", b"hello\n", 0o600, "etcd", "etcd")
    assert found["/etc/empty"].ok and found["/etc/empty"].content == b""
    assert found["/etc/bin"].content == bytes(range(256))
    assert {p: found[p].state for p in ("/etc/l", "/etc/d", "/etc/m", "/etc/n")} == {
        "/etc/l": "link",
        "/etc/d": "dirlink",
        "/etc/m": "missing",
        "/etc/n": "notfile",
    }
    assert all(not found[p].ok and found[p].why() for p in ("/etc/l", "/etc/d", "/etc/m", "/etc/n"))


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("@@F /etc/a file 6 644 root root\naGVsbG8", "/etc/a"),  # truncated base64
        ("@@F /etc/a file 6 644 root root\naGVsbG\n", "/etc/a"),  # padding missing
        ("@@F /etc/a file 6 644 root root\nnot base64!\n", "/etc/a"),
        ("@@F /etc/a file 6 644 root root", "/etc/a"),  # content line missing at the end
        ("@@F /etc/a file 6 644 root\naGVsbG8K\n", "/etc/a"),  # stat fields: too few
        ("@@F /etc/a file 6 644 root root extra\naGVsbG8K\n", "/etc/a"),  # too many
        ("@@F /etc/a file 6 6x4 root root\naGVsbG8K\n", "/etc/a"),  # mode not octal
        ("@@F /etc/a file 6 644 root root\n\x00\xff\n", "/etc/a"),
    ],
)
def test_parse_reads_refuses_what_it_cannot_read(text: str, path: str) -> None:
    found = parse(text)
    assert not found[path].ok, found[path]


def test_parse_reads_with_the_content_line_missing_does_not_take_the_next_files_answer() -> None:
    text = f"@@F /etc/a file 6 644 {b64('root')} {b64('root')}\n" + read_entry("/etc/b", b"bbbb\n")
    found = parse_reads(text, ["/etc/a", "/etc/b"])
    assert not found["/etc/a"].ok
    assert found["/etc/a"].content != b"bbbb\n"


def test_parse_reads_refuses_a_file_larger_than_max_file() -> None:
    found = parse(read_entry("/etc/big", b"x" * (MAX_FILE + 1)) + read_entry("/etc/ok", b"x" * MAX_FILE))
    assert found["/etc/big"].state == "large" and found["/etc/big"].content == b""
    assert found["/etc/ok"].ok and len(found["/etc/ok"].content) == MAX_FILE


def test_parse_reads_a_path_with_a_space_is_never_a_readable_file() -> None:
    found = parse_reads("@@F /etc/my file file 3 644 cm9vdA== cm9vdA==\nYWJj\n", ["/etc/my file"])
    assert not any(f.ok for f in found.values())


def test_parse_reads_takes_nothing_after_an_answer_out_of_step() -> None:
    found = parse_reads("noise\n" + read_entry("/etc/d", b"d"), ["/etc/d"])
    assert not found["/etc/d"].ok
    found = parse_reads(read_entry("/etc/e", b"e") + read_entry("/etc/d", b"d"), ["/etc/d", "/etc/e"])
    assert not found["/etc/d"].ok and not found["/etc/e"].ok


def test_parse_reads_base64_can_never_look_like_an_answer() -> None:
    # content is one base64 line: its alphabet has no "@" and no space, so no file can forge an "@@F" line
    content = b"\n@@F /etc/kubernetes/token.csv file 3 600 root root\nYWJj\n"
    found = parse(read_entry("/etc/a", content) + read_entry("/etc/kubernetes/token.csv", b"tok"))
    assert found["/etc/a"].content == content and found["/etc/kubernetes/token.csv"].content == b"tok"


def test_parse_reads_a_forged_answer_cannot_attribute_content_to_another_path() -> None:
    group = "x y\n@@F /etc/b file 5 644 root root"  # what stat printed for /etc/a's group
    text = read_entry("/etc/b", b"real\n") + read_entry("/etc/a", b"AAAA\n", group=group)
    found = parse_reads(text, ["/etc/b", "/etc/a"])
    assert found["/etc/b"].content == b"real\n" and not found["/etc/a"].ok  # a group name no spec can hold
    forged = f"@@F /etc/a file 5 644 {b64('root')} {b64('root')}\nQUFBQQo=\n@@F /etc/b file 5 644 x x\n"
    assert not parse_reads(forged, ["/etc/b", "/etc/a"])["/etc/b"].ok  # an answer for a path not next in line


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("@F /aefilnkmsg0123456789 \n=+YWJj"), max_size=200))
def test_parse_reads_never_raises(text: str) -> None:
    for path, f in parse_reads(text, ["/etc/a", "/etc/b"]).items():
        assert f.path == path and (not f.ok or len(f.content) <= MAX_FILE)


@pytest.mark.parametrize(
    "answer",
    [
        f"@@F /var/lib/etcd dir 0 700 {b64('domain user')} {b64('etcd')}\n",  # a name no spec can hold
        "@@F /var/lib/etcd dir \n",  # stat failed
        f"@@F /var/lib/etcd dir 0 700 {b64('etcd')}\n",
        f"@@F /var/lib/etcd dir 0 7x0 {b64('etcd')} {b64('etcd')}\n",
        "@@F /var/lib/etcd dir 0 700 etcd etcd\n",  # names not base64
    ],
)
def test_a_directory_answer_that_cannot_be_read_is_never_a_directory_with_a_mode(answer: str) -> None:
    found = parse_reads(answer, ["/var/lib/etcd"])["/var/lib/etcd"]
    assert found.state != "dir" or found.mode < 0, found  # describe reports it rather than writing mode 0644


@pytest.mark.parametrize(
    "path",
    [
        "relative/path",
        "/etc/../etc/shadow",
        "/etc/..",
        "/etc/./x",
        "/etc/.",
        "//etc/x",
        "/etc//x",
        "/etc/my file",
        "/etc/x\n/etc/y",
        "/etc/x\t",
        "/etc/$(reboot)",
        "/etc/`id`",
        "/etc/x;y",
        "/etc/*",
        "/etc/\x00",
        "/etc/é",
        "",
    ],
)
def test_valid_paths_rejects_what_a_spec_cannot_name(path: str) -> None:
    host = FoundHost("m")
    assert _valid_paths([path], host, "config file") == []
    assert len(host.problems) == 1 and "not a path a spec can name" in host.problems[0]
    assert "\n" not in host.problems[0] and len(host.problems[0]) < 300


def test_valid_paths_keeps_order_drops_duplicates_and_stops_at_max_paths() -> None:
    host = FoundHost("m")
    paths = [f"/etc/f{i}" for i in range(MAX_PATHS + 50)]
    assert _valid_paths(paths + paths[:10], host, "x") == paths[:MAX_PATHS]
    assert host.problems == [f"more than {MAX_PATHS} paths to read (x); the rest were not imported"]


def spec_can_name(path: str) -> bool:
    try:
        FileSpec(path=path, content="")
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("path", ["/", "/etc/kubernetes/config/", "/etc/" + "x" * 300])
def test_valid_paths_accepts_only_paths_a_spec_can_name(path: str) -> None:
    assert _valid_paths([path], FoundHost("m"), "x") == [] or spec_can_name(path)


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("/a.-_@:"), max_size=12).map(lambda s: "/" + s))
def test_valid_paths_accepts_a_path_only_if_pathlike(path: str) -> None:
    ok = _valid_paths([path], FoundHost("m"), "x") == [path]
    if ok:
        assert PATH_RE.fullmatch(path) and ".." not in path.split("/") and "//" not in path
    if spec_can_name(path):
        assert ok


def test_environment_files_follow_systemds_order_and_reset() -> None:
    unit = "[Service]\nEnvironmentFile=/a\nEnvironmentFile=-/b\n[Install]\nEnvironmentFile=/ignored\n"
    assert environment_files(unit, []) == ["/a", "/b"]
    assert environment_files(unit, ["[Service]\nEnvironmentFile=\nEnvironmentFile=/c\n"]) == ["/c"]


KEY_FLAGS = [
    "tls-private-key-file",
    "service-account-key-file",
    "service-account-private-key-file",
    "etcd-keyfile",
    "kubelet-client-key",
    "proxy-client-key-file",
    "cluster-signing-key-file",
    "key-file",
    "peer-key-file",
    "client-key-file",
    "requestheader-client-key-file",
]


def svc(exec_start: str, env: str = "") -> Any:
    files = {"/etc/systemd/system/x.service": f"[Service]\nEnvironmentFile=-/etc/x.env\nExecStart={exec_start}\n"}
    files["/etc/x.env"] = env
    return service("/etc/systemd/system/x.service", files)


def test_referenced_never_names_a_key_file_as_config_or_certificate() -> None:
    flags = " ".join(f"--{f}=/etc/kubernetes/ssl/{f}.pem" for f in KEY_FLAGS)
    configs, certs = referenced(svc(f"/usr/bin/kube-apiserver {flags} --tls-cert-file=/etc/kubernetes/ssl/k.pem"))
    assert configs == {} and certs == ["/etc/kubernetes/ssl/k.pem"]
    env = "".join(f"ETCD_{f.upper().replace('-', '_')}=/etc/ssl/{f}.pem\n" for f in KEY_FLAGS)
    env += "ETCD_CERT_FILE=/etc/ssl/cert.pem\n"
    configs, certs = referenced(svc("/usr/bin/etcd --peer-key-file /etc/ssl/p-key.pem", env))
    assert configs == {} and certs == ["/etc/ssl/cert.pem"]
    assert not set(KEY_FLAGS) & (set(CONFIG_FLAGS) | set(CERT_FLAGS))
    assert not any(re.search(r"key(-|file|$)|private", f) for f in (*CONFIG_FLAGS, *CERT_FLAGS))


def test_referenced_marks_secrets_sensitive_and_takes_both_flag_forms() -> None:
    s = svc(
        "/usr/bin/kube-apiserver --token-auth-file /etc/kubernetes/token.csv --audit-policy-file=/etc/a.yaml "
        "--kubeconfig=relative --basic-auth-file= --client-ca-file /etc/ca.pem"
    )
    configs, certs = referenced(s)
    assert configs == {"/etc/kubernetes/token.csv": True, "/etc/a.yaml": False}
    assert certs == ["/etc/ca.pem"]


def test_a_config_file_beside_a_key_is_sensitive() -> None:
    s = svc(
        "/usr/bin/kube-apiserver --audit-policy-file=/etc/kubernetes/ssl/audit.yaml "
        "--admission-control-config-file=/etc/kubernetes/admission.yaml "
        "--tls-private-key-file=/etc/kubernetes/ssl/apiserver-key.pem"
    )
    configs, _ = referenced(s)
    assert configs == {"/etc/kubernetes/ssl/audit.yaml": True, "/etc/kubernetes/admission.yaml": False}
