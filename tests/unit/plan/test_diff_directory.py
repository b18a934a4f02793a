"""The Directory kind: validated, planned (create, fix mode/owner, never replace a file), carried out by its script
(run here with sh, as on a host) and converged on in-process hosts."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from reconciler.apply.executor import DIRECTORY_SCRIPT
from reconciler.engine.converge import converge
from reconciler.errors import SpecError
from reconciler.observe.snapshot import FileFact, HostSnapshot
from reconciler.plan.actions import Kind
from reconciler.plan.diff import plan_host
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.specs import copy_specs

REPO = Path(__file__).resolve().parents[3]
USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
DOC = """
apiVersion: reconciler/v1
kind: Directory
metadata: {name: etcd-data}
spec:
  path: /var/lib/etcd
  hosts: {matchLabels: {etcd: member}}
  mode: "0700"
  owner: etcd
"""


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    d = copy_specs(tmp_path / "specs")
    (d / "dirs.yaml").write_text(DOC)
    return d


def test_a_directory_is_rendered_for_the_hosts_it_selects(specs: Path) -> None:
    desired = load_desired(specs)
    d = desired.hosts["master-1"].directories["/var/lib/etcd"]
    assert (d.mode, d.owner, d.group, d.source) == (0o700, "etcd", "root", "Directory/etcd-data")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('  mode: "4755"\n', "sets setuid, setgid or sticky bits"),
        ("  path: /etc/etcd/etcd.conf\n", "is also File/etcd-conf"),
        ("  path: /var/lib/../lib/etcd\n", "is not normalised"),
    ],
)
def test_bad_directories_are_located_errors(specs: Path, extra: str, message: str) -> None:
    key = extra.split(":")[0].strip()
    text = "\n".join(line for line in DOC.splitlines() if not line.strip().startswith(f"{key}:")) + "\n" + extra
    (specs / "dirs.yaml").write_text(text)
    with pytest.raises(SpecError) as err:
        load_desired(specs)
    assert any(message in str(i) and i.file.endswith("dirs.yaml") for i in err.value.issues), err.value.issues


def test_the_plan_creates_fixes_and_names_what_is_in_the_way(specs: Path) -> None:
    host = load_desired(specs).hosts["master-1"]
    path = "/var/lib/etcd"

    def plan_with(fact: FileFact | None) -> list[tuple[Kind, str, str]]:
        files = {path: fact} if fact else {}
        return [(a.kind, a.target, a.reason) for a in plan_host(host, HostSnapshot("master-1", files)).actions]

    created = plan_with(None)
    assert created[0] == (Kind.DIRECTORY, path, "create, 0700 etcd:root (Directory/etcd-data)")  # before any file
    right = FileFact(path, True, 0o700, "etcd", "root", kind="directory")
    assert not [a for a in plan_with(right) if a[0] is Kind.DIRECTORY]
    wrong = FileFact(path, True, 0o755, "root", "root", kind="directory")
    assert (Kind.DIRECTORY, path, "0755 root:root -> 0700 etcd:root") in plan_with(wrong)
    link = FileFact(path, True, kind="symbolic link", target="/tmp/x")
    assert any("is a symlink to '/tmp/x' (not followed): want a directory" in a[2] for a in plan_with(link))


async def test_converged_on_in_process_hosts_then_nothing_to_do(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = {name: SimHost(name) for name in desired.hosts}
    result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {o.status for o in result.outcomes.values()} == {"converged"}
    assert hosts["master-2"].dirs["/var/lib/etcd"] == (0o700, "etcd", "root")
    again = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert all(not o.applied for o in again.outcomes.values())


def run_script(path: Path, mode: str = "0750") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", DIRECTORY_SCRIPT, "d", str(path), mode, f"{USER}:{GROUP}"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_script_creates_with_parents_and_fixes_mode(tmp_path: Path) -> None:
    target = tmp_path / "a/b/data"
    assert run_script(target).returncode == 0
    assert target.is_dir() and oct(target.stat().st_mode & 0o7777) == "0o750"
    assert oct((tmp_path / "a/b").stat().st_mode & 0o777) == "0o755"
    target.chmod(0o777)
    assert run_script(target, "0700").returncode == 0
    assert oct(target.stat().st_mode & 0o7777) == "0o700"


def test_the_script_replaces_a_link_but_never_a_file_and_never_goes_through_a_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(0o755)
    link = tmp_path / "data"
    link.symlink_to(elsewhere)
    assert run_script(link, "0700").returncode == 0
    assert link.is_dir() and not link.is_symlink() and oct(elsewhere.stat().st_mode & 0o777) == "0o755"

    afile = tmp_path / "file"
    afile.write_text("keep me\n")
    result = run_script(afile)
    assert result.returncode == 4 and "is not a directory" in result.stderr and afile.read_text() == "keep me\n"

    (tmp_path / "via").symlink_to(elsewhere)
    result = run_script(tmp_path / "via/sub")
    assert result.returncode == 4 and "goes through a symlink" in result.stderr
    assert not (elsewhere / "sub").exists()
