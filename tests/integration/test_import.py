"""`reconciler import` on masters built by hand as the seed builds them: the imported directory is exact (plan
finds nothing to change), keeps each host's own drift, and edits to it restart exactly what they should. The
guide leaves token.csv 0644: import takes it as it is (sensitive, its mode kept) and says how to tighten it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.seed import KUBE_UNIT_DIR, TOKEN_CSV
from tests.support.specs import BUNDLED as SPECS

from .handbuilt import HAND_BUILT_DIFFERENCES, TOKEN_MODE, build_by_hand

pytestmark = pytest.mark.testbed


DROP_IN = "/etc/systemd/system/kube-scheduler.service.d/10-limits.conf"
DROP_IN_YAML = "    [Service]\n    LimitNOFILE=65536\n"  # its content as import writes it


@pytest.fixture(scope="module")
def hand_built(converged: Testbed) -> Iterator[Testbed]:
    build_by_hand(converged)
    for h in converged.hosts:  # and, as people do, a drop-in
        h.ssh(
            f"mkdir -p {DROP_IN.rsplit('/', 1)[0]} && printf '[Service]\\nLimitNOFILE=65536\\n' > {DROP_IN} && "
            "systemctl daemon-reload && systemctl restart kube-scheduler"
        )
    yield converged
    for h in converged.hosts:
        h.ssh(f"rm -rf {DROP_IN.rsplit('/', 1)[0]} && systemctl daemon-reload")
    result = reconciler("apply", str(SPECS))  # the testbed as the bundled specs have it, for the tests after these
    assert result.code == 0, result.out + result.err


@pytest.fixture(scope="module")
def imported(hand_built: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("import") / "adopted"
    result = reconciler("import", "--inventory", str(SPECS / "inventory.yaml"), str(out))
    assert result.code == 0, result.out + result.err
    assert "finds nothing to change on any host" in result.out
    assert TOKEN_CSV.split(",")[0] not in result.out + result.err  # the secret is written, never printed
    # the guide's 0644 token.csv: imported as it is, and said loudly, with the one line that tightens it
    warning = next(line for line in result.err.splitlines() if "/etc/kubernetes/token.csv" in line)
    assert warning.startswith("warning: master-1, master-2, master-3: ") and f"(mode {TOKEN_MODE})" in warning
    assert 'mode: "0600"' in warning and "one attrs change, no restart" in warning
    return out


def documents(spec_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    return [d for f in sorted(spec_dir.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def restarts(apply_out: str) -> list[tuple[str, str]]:
    """(host, unit) of every restart the apply output reports."""
    found, host = [], ""
    for line in apply_out.splitlines():
        if re.match(r"^master-\d+: ", line):
            host = line.split(":")[0]
        m = re.search(r" restart (\S+\.service)", line)
        if m:
            found.append((host, m.group(1)))
    return found


def test_the_imported_directory_is_exact(imported: Path) -> None:
    assert reconciler("validate", str(imported)).code == 0
    plan = reconciler("plan", str(imported))
    assert plan.code == 0, plan.out + plan.err  # 0: nothing to change on any host (2 would mean changes)


def test_each_hosts_own_drift_is_kept_in_a_document_for_that_host_alone(imported: Path) -> None:
    docs = documents(imported)
    for d in HAND_BUILT_DIFFERENCES.values():
        files = [x for x in docs if x["kind"] == "File" and x["spec"]["path"] == d.path]
        assert len(files) == 3, [f["metadata"]["name"] for f in files]  # one per host: they differ by more than values
        for f in files:
            host = f["spec"]["hosts"]["matchLabels"]["host"]
            assert (d.text in f["spec"]["content"]) == (host == d.host), (d, f["metadata"]["name"])
        assert any(
            "by more than name and address" in line for line in (imported / "kubernetes.yaml").read_text().splitlines()
        )
    hosts = {x["metadata"]["name"]: x for x in docs if x["kind"] == "Host"}
    assert all(h["metadata"]["labels"]["host"] == name for name, h in hosts.items())
    assert all(h["metadata"]["labels"]["etcd"] == "member" for h in hosts.values())


def test_units_files_certificates_checks_and_tuning_are_described(imported: Path) -> None:
    docs = documents(imported)
    units = {x["metadata"]["name"]: x["spec"] for x in docs if x["kind"] == "Unit"}
    assert set(units) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    assert units["kube-apiserver"]["path"] == f"{KUBE_UNIT_DIR}/kube-apiserver.service"  # where the guide puts it
    assert "path" not in units["etcd"]  # /etc/systemd/system/etcd.service, the default
    assert units["etcd"]["rollout"]["healthCheck"] == "etcd"
    assert "kubernetes-token-csv" in units["kube-apiserver"]["restartOn"]  # a flag's file restarts its reader
    drop_in = next(x for x in docs if x["kind"] == "File" and x["spec"]["path"] == DROP_IN)
    assert drop_in["spec"]["content"] == "[Service]\nLimitNOFILE=65536\n"
    assert drop_in["metadata"]["name"] in units["kube-scheduler"]["restartOn"]
    token = next(x for x in docs if x["kind"] == "File" and x["spec"]["path"] == "/etc/kubernetes/token.csv")
    assert token["spec"]["sensitive"] is True and token["spec"]["mode"] == TOKEN_MODE  # as the host has it
    assert token["spec"]["wideMode"] is True
    sensitive = [x["spec"]["path"] for x in docs if x["kind"] == "File" and x["spec"].get("sensitive")]
    assert sensitive == ["/etc/kubernetes/token.csv"]  # the guide's env files hold names, paths and switches only
    assert (imported / "kubernetes.yaml").stat().st_mode & 0o077 == 0  # it holds the token: its owner's only
    checks = {x["metadata"]["name"]: x["spec"]["http"] for x in docs if x["kind"] == "HealthCheck"}
    assert checks["etcd"]["url"] == "https://{{ host.address }}:2379/health" and checks["etcd"]["keyFile"]
    assert checks["kube-apiserver"]["url"] == "http://{{ host.address }}:8080/healthz"
    certs = next(x for x in docs if x["kind"] == "Certificate")["spec"]["paths"]
    assert "/etc/kubernetes/ssl/ca.pem" in certs and not any("key" in p for p in certs)
    assert not any("PRIVATE KEY" in f.read_text() for f in imported.glob("*.yaml"))
    tuning = next(x for x in docs if x["kind"] == "EtcdTuning")["spec"]
    assert tuning == {"unit": "etcd", "file": "etcd-conf"}
    dirs = {x["spec"]["path"]: x["spec"] for x in docs if x["kind"] == "Directory"}
    assert set(dirs) == {"/var/lib/etcd", "/var/lib/etcd/default.etcd"}  # etcd's WorkingDirectory= and data dir
    assert dirs["/var/lib/etcd/default.etcd"]["mode"] == "0700"  # as etcd made it


def test_a_real_edit_restarts_its_reader_and_a_format_only_edit_restarts_nothing(
    imported: Path, hand_built: Testbed, tmp_path: Path
) -> None:
    specs = tmp_path / "specs"
    shutil.copytree(imported, specs)
    kube = specs / "kubernetes.yaml"
    kube.write_text(
        kube.read_text()
        .replace("--event-ttl=1h", "--event-ttl=2h")
        .replace(DROP_IN_YAML, DROP_IN_YAML.replace("65536", "4096"))
    )
    (specs / "logs.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Directory\nmetadata: {name: kube-logs}\n"
        "spec: {path: /var/log/kubernetes/audit, mode: '0750', group: adm}\n"
    )
    result = reconciler("apply", str(specs))
    assert result.code == 0, result.out + result.err
    assert sorted(restarts(result.out)) == [
        (h, u)
        for h in ("master-1", "master-2", "master-3")
        for u in ("kube-apiserver.service", "kube-scheduler.service")
    ]
    assert result.out.count("daemon-reload: unit file changed: " + DROP_IN) == 3  # a drop-in is part of its unit
    for h in hand_built.hosts:
        assert h.ssh("systemctl show -p LimitNOFILE --value kube-scheduler").stdout.strip() == "4096"
    for h in hand_built.hosts:  # a directory the seed makes by hand: created with its parent, restarting nothing
        assert h.ssh("stat -c %F:%a:%U:%G /var/log/kubernetes/audit /var/log/kubernetes").stdout.split() == [
            "directory:750:root:adm",
            "directory:755:root:root",
        ]

    etcd_pids = [h.ssh("systemctl show -p MainPID --value etcd").stdout.strip() for h in hand_built.hosts]
    etcd = specs / "etcd.yaml"
    text = etcd.read_text()
    assert "    ETCD_HEARTBEAT_INTERVAL=100\n" in text
    etcd.write_text(
        text.replace(
            "    ETCD_HEARTBEAT_INTERVAL=100\n", "    # adopted by reconciler\n    ETCD_HEARTBEAT_INTERVAL=100\n"
        )
    )
    result = reconciler("apply", str(specs))
    assert result.code == 0, result.out + result.err
    assert restarts(result.out) == [] and result.out.count("format only") == 3, result.out
    assert [h.ssh("systemctl show -p MainPID --value etcd").stdout.strip() for h in hand_built.hosts] == etcd_pids
    assert all(b"# adopted by reconciler\n" in (h.root / "etc/etcd/etcd.conf").read_bytes() for h in hand_built.hosts)


def test_the_guides_token_file_is_tightened_by_one_spec_line_one_attrs_change_and_no_restart(
    hand_built: Testbed, tmp_path: Path
) -> None:
    specs = tmp_path / "specs"  # imported afresh: the hosts as they are now (tests before may have changed them)
    result = reconciler("import", "--inventory", str(SPECS / "inventory.yaml"), str(specs))
    assert result.code == 0 and 'mode: "0600"' in result.err, result.out + result.err
    kube = specs / "kubernetes.yaml"
    text = kube.read_text()
    assert text.count(f'  mode: "{TOKEN_MODE}"\n') == 1  # the token's: no other File here keeps a mode
    kube.write_text(text.replace(f'  mode: "{TOKEN_MODE}"\n', '  mode: "0600"\n'))
    plan = reconciler("plan", str(specs))
    assert plan.code == 2, plan.out + plan.err  # 2: changes to make
    for h in ("master-1", "master-2", "master-3"):
        assert f"{h}: 1 change(s)" in plan.out, plan.out
    attrs = [line.strip() for line in plan.out.splitlines() if line.strip().startswith("~ attrs ")]
    assert attrs == [f"~ attrs /etc/kubernetes/token.csv: {TOKEN_MODE} root:root -> 0600 root:root"] * 3, plan.out
    assert "restart" not in plan.out and TOKEN_CSV.split(",")[0] not in plan.out + plan.err


def test_import_writes_nothing_where_it_cannot_be_exact(hand_built: Testbed, tmp_path: Path) -> None:
    m1, m2 = hand_built.hosts[0], hand_built.hosts[1]
    out = tmp_path / "adopted"
    # a file edited after its unit started: the running process may not be what the file says
    m1.ssh("touch /etc/kubernetes/scheduler")
    # a managed path that is a symlink: never followed
    m2.ssh(
        "mv /etc/kubernetes/controller-manager /etc/kubernetes/cm.real && ln -s cm.real /etc/kubernetes/controller-manager"
    )
    try:
        result = reconciler("import", "--inventory", str(SPECS / "inventory.yaml"), str(out))
        assert result.code == 1 and not out.exists(), result.out + result.err
        assert "master-2: /etc/kubernetes/controller-manager is a symlink (import follows no link)" in result.err
        assert re.search(r"plan on master-1: .*restart kube-scheduler\.service", result.err), result.err
        assert "nothing written" in result.err
        forced = reconciler("import", "--force", "--inventory", str(SPECS / "inventory.yaml"), str(out))
        assert forced.code == 0 and (out / "kubernetes.yaml").exists(), forced.out + forced.err
        assert "written anyway (--force)" in forced.err
    finally:
        m2.ssh("rm /etc/kubernetes/controller-manager && mv /etc/kubernetes/cm.real /etc/kubernetes/controller-manager")
        m1.ssh("systemctl restart kube-scheduler")


def test_hosts_given_on_the_command_line(hand_built: Testbed, tmp_path: Path) -> None:
    keys = ["--identity-file", str(hand_built.key_path), "--known-hosts", str(hand_built.known_hosts_path)]
    out = tmp_path / "all"
    hosts = [a for h in hand_built.hosts for a in ("--host", f"{h.name}={h.address}")]
    result = reconciler("import", *hosts, *keys, str(out))
    assert result.code == 0, result.out + result.err
    host = next(d for d in documents(out) if d["kind"] == "Host")
    assert host["metadata"]["labels"] == {"role": "master", "etcd": "member", "host": "master-1"}
    assert host["spec"]["identityFile"] == str(hand_built.key_path)
    assert reconciler("plan", str(out)).code == 0
    assert reconciler("import", *hosts, *keys, str(out)).code == 1  # never over a directory

    # one member alone: its etcd.conf names members the directory does not declare
    one = reconciler("import", "--host", "master-2=198.18.0.12", *keys, str(tmp_path / "one"))
    assert one.code == 1 and not (tmp_path / "one").exists()
    assert "not exact: validate: one/etcd.yaml:" in one.err and "initial cluster must list every member" in one.err


def test_an_unknown_host_key_is_refused(hand_built: Testbed, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = reconciler(
        "import",
        "--host",
        "master-1=198.18.0.11",
        "--identity-file",
        str(hand_built.key_path),
        "--known-hosts",
        str(empty),
        "--connect-attempts",
        "1",
        str(tmp_path / "out"),
    )
    assert result.code == 1 and "master-1: cannot be read" in result.err and not (tmp_path / "out").exists()


SUDO_USER_SETUP = """
id {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {user}
install -d -m 700 -o {user} -g {user} /home/{user}/.ssh
install -m 600 -o {user} -g {user} /root/.ssh/authorized_keys /home/{user}/.ssh/authorized_keys
"""


def test_a_non_root_user_with_sudo(hand_built: Testbed, tmp_path: Path) -> None:
    """Masters reached as `ops` with passwordless sudo: import, plan and apply all run every command as root
    through `sudo -n` (a real edit restarts what it changes, a format-only one nothing); a user without it is
    refused at once with the reason."""
    for h in hand_built.hosts:
        h.ssh(SUDO_USER_SETUP.format(user="ops") + SUDO_USER_SETUP.format(user="nosudo"))
        h.ssh("echo 'ops ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/ops && chmod 440 /etc/sudoers.d/ops")
    inventory = tmp_path / "inventory.yaml"
    docs = list(yaml.safe_load_all((SPECS / "inventory.yaml").read_text()))
    for d in docs:
        d["spec"].update(user="ops", become="sudo")
        for key in ("identityFile", "knownHosts"):
            d["spec"][key] = str((SPECS / d["spec"][key]).resolve())
    inventory.write_text(yaml.safe_dump_all(docs))
    out = tmp_path / "adopted"
    result = reconciler("import", "--inventory", str(inventory), str(out))
    assert result.code == 0, result.out + result.err
    hosts = [d for d in documents(out) if d["kind"] == "Host"]
    assert all(h["spec"]["user"] == "ops" and h["spec"]["become"] == "sudo" for h in hosts)
    assert reconciler("plan", str(out)).code == 0

    kube = out / "kubernetes.yaml"
    kube.write_text(kube.read_text().replace("--apiserver-count=3", "--apiserver-count=4"))
    applied = reconciler("apply", str(out))
    assert applied.code == 0, applied.out + applied.err
    assert sorted(restarts(applied.out)) == [
        (h, "kube-apiserver.service") for h in ("master-1", "master-2", "master-3")
    ]
    m1 = hand_built.hosts[0]
    assert m1.ssh("stat -c %U:%G:%a /etc/kubernetes/apiserver").stdout.split() == ["root:root:644"]
    assert b"--apiserver-count=4" in (m1.root / "etc/kubernetes/apiserver").read_bytes()

    # a format-only edit through sudo: etcd.conf rewritten on every member (as root), nothing restarted
    etcd_pids = [h.ssh("systemctl show -p MainPID --value etcd").stdout.strip() for h in hand_built.hosts]
    owner = m1.ssh("stat -c %U:%G:%a /etc/etcd/etcd.conf").stdout.split()
    etcd = out / "etcd.yaml"
    text = etcd.read_text()
    assert "    ETCD_HEARTBEAT_INTERVAL=100\n" in text
    etcd.write_text(
        text.replace("    ETCD_HEARTBEAT_INTERVAL=100\n", "    # via sudo\n    ETCD_HEARTBEAT_INTERVAL=100\n")
    )
    formatted = reconciler("apply", str(out))
    assert formatted.code == 0, formatted.out + formatted.err
    assert restarts(formatted.out) == [] and formatted.out.count("format only") == 3, formatted.out
    assert [h.ssh("systemctl show -p MainPID --value etcd").stdout.strip() for h in hand_built.hosts] == etcd_pids
    assert all(b"# via sudo\n" in (h.root / "etc/etcd/etcd.conf").read_bytes() for h in hand_built.hosts)
    assert m1.ssh("stat -c %U:%G:%a /etc/etcd/etcd.conf").stdout.split() == owner  # not ops's

    for d in docs:
        d["spec"]["user"] = "nosudo"
    inventory.write_text(yaml.safe_dump_all(docs))
    refused = reconciler("import", "--inventory", str(inventory), str(tmp_path / "refused"))
    assert refused.code == 1 and "needs passwordless sudo" in refused.err, refused.out + refused.err
    assert refused.err.count("cannot be read") == 3 and "connect retry" not in refused.err  # permanent: no retries
