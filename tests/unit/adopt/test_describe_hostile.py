"""adopt.describe on what it must not copy: a symlink, a file too large or not text, a path or unit name a spec cannot
hold, units that differ in state, a host value that would be a template, a work directory that is no directory.
Each is a problem import names (nothing written without --force), never a crash or a silently different file."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adopt.describe import HostInfo, describe
from reconciler.adopt.discover import (
    MAX_FILE,
)
from reconciler.adopt.emit import spec_files
from reconciler.errors import SpecError
from reconciler.spec.isolate import load_desired
from reconciler.spec.model import unit_name
from tests.support.masters import (
    add_unit,
    address,
    adopt,
    fleet,
    hand_made,
    put,
)
from tests.support.rendering import rendered
from tests.support.seed import KUBE_UNIT_DIR


def test_a_symlinked_or_large_file_is_a_problem_not_a_copy(tmp_path: Path) -> None:
    masters = fleet()
    masters[1].links.add("/etc/kubernetes/scheduler")
    masters[2].files["/etc/kubernetes/config"].content = b"#" * (MAX_FILE + 10)
    masters[0].dir_links["/etc/etcd"] = "/srv/etcd"  # /etc/etcd is a link to /srv/etcd
    imported = adopt(masters, tmp_path)
    problems = imported.adoption.problems
    assert "master-2: /etc/kubernetes/scheduler is a symlink (import follows no link)" in problems
    assert f"master-3: /etc/kubernetes/config is larger than {MAX_FILE} bytes" in problems
    assert any(p.startswith("master-1: /etc/etcd/etcd.conf is reached through a symlinked") for p in problems)
    assert not any(
        d["spec"]["path"] == "/etc/kubernetes/config" and "master-3" in str(d["spec"]["hosts"])
        for d in imported.docs("File")
    )


def test_a_unit_file_that_is_not_text_is_a_problem(tmp_path: Path) -> None:
    masters = fleet()
    masters[0].files[f"{KUBE_UNIT_DIR}/kube-scheduler.service"].content = b"[Service]\nExecStart=/bin/\xff\xfe\n"
    masters[1].files[f"{KUBE_UNIT_DIR}/kube-scheduler.service"].content = b"[Service]\x00\nExecStart=/bin/true\n"
    imported = adopt(masters, tmp_path)
    assert any(p.startswith("master-1: ") and "not UTF-8" in p for p in imported.adoption.problems)
    assert any(p.startswith("master-2: ") and "NUL" in p for p in imported.adoption.problems)


@pytest.mark.parametrize(
    "path",
    ["relative", "/etc/my file", "/etc/../etc/shadow", "/etc/x\n/etc/y", "/etc/{{ 7*7 }}", "/", "/etc//x", "/é"],
)
def test_describe_on_a_path_a_spec_cannot_name_never_yields_a_loading_spec_for_it(path: str, tmp_path: Path) -> None:
    found = {"m1": hand_made("m1", {path: b"x\n"}, {"x.service": (path,)})}
    adoption = describe([HostInfo("m1", "198.18.0.1", {}, {"address": "198.18.0.1"})], found)
    files = spec_files(adoption, "m1")
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    try:
        desired = load_desired(tmp_path)
    except SpecError:
        return
    assert path not in desired.hosts["m1"].files


@pytest.mark.parametrize("unit", ["my_app.service", "getty@tty1.service", "MyApp.service", "a" * 70 + ".service"])
def test_a_unit_a_spec_cannot_name_is_a_problem_not_another_unit(unit: str, tmp_path: Path) -> None:
    masters = fleet(1)
    add_unit(masters[0], unit, b"[Service]\nExecStart=/usr/bin/sleep inf\n")
    imported = adopt(masters, tmp_path, (unit,))
    names = {unit_name(d["metadata"]["name"]) for d in imported.docs("Unit")}
    assert names <= set(masters[0].units)
    assert unit in names or any(unit in p for p in imported.adoption.problems)


def test_units_that_differ_in_state_are_a_problem(tmp_path: Path) -> None:
    masters = fleet()
    scheduler = masters[1].units["kube-scheduler.service"]
    scheduler.active = scheduler.enabled = False  # inactive, disabled
    imported = adopt(masters, tmp_path)
    assert any(p.startswith("unit kube-scheduler.service differs") for p in imported.adoption.problems)
    assert "kube-scheduler" not in {d["metadata"]["name"] for d in imported.docs("Unit")}


def test_a_hostile_advertise_url_is_never_rendered_as_a_template(tmp_path: Path) -> None:
    masters = fleet()
    for m in masters:
        m.files["/etc/etcd/etcd.conf"].content = m.files["/etc/etcd/etcd.conf"].content.replace(
            f'ETCD_ADVERTISE_CLIENT_URLS="https://{address(m)}:2379"'.encode(),
            b'ETCD_ADVERTISE_CLIENT_URLS="https://{{7*7}}{% raw %}:2379"',
        )
    imported = adopt(masters, tmp_path)
    with pytest.raises(SpecError) as exc:  # refused as a URL: not one once it is escaped
        imported.load()
    assert "spec.http.url" in str(exc.value) and "49" not in str(exc.value)
    check = next(d for d in imported.docs("HealthCheck") if d["metadata"]["name"] == "etcd")
    assert rendered(check["spec"]["http"]["url"], ["master-1"]) == {"master-1": "https://{{7*7}}{% raw %}:2379/health"}


def test_a_work_directory_that_is_not_a_directory_is_a_problem(tmp_path: Path) -> None:
    masters = fleet()
    del masters[0].dirs["/var/lib/etcd"]
    put(masters[0], "/var/lib/etcd", b"a file\n")
    masters[1].links.add("/var/lib/etcd/default.etcd")
    imported = adopt(masters, tmp_path)
    assert any(p.startswith("master-1: /var/lib/etcd ") for p in imported.adoption.problems)
    assert any(p.startswith("master-2: /var/lib/etcd/default.etcd is a symlink") for p in imported.adoption.problems)


def test_a_directory_whose_owner_cannot_be_read_is_a_problem(tmp_path: Path) -> None:
    masters = fleet()
    for m in masters:
        m.dirs["/var/lib/etcd/default.etcd"] = (0o700, "domain user", "etcd")
    imported = adopt(masters, tmp_path)
    assert any("/var/lib/etcd/default.etcd" in p for p in imported.adoption.problems)
