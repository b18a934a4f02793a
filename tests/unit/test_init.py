"""`reconciler init DIR` (reconciler/init.py): the example specs written into a new spec directory, and the
daemon's systemd unit for it, running the reconciler that printed it. The installed wheel's side (its copy of the
examples, the unit naming the installed executable) is tests/shipped/test_wheel.py."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import init
from reconciler.cli import main
from tests.support.specs import BUNDLED, REPO

SHIPPED_UNIT = REPO / "deploy/systemd/reconciler.service"


def spec_tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix in (".yaml", ".yml")
    }


def unit_lines(unit: str) -> dict[str, list[str]]:
    """key -> its values, in order (a key such as SystemCallFilter may appear more than once)."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_init_writes_the_bundled_specs_and_prints_a_unit_running_this_reconciler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "etc/specs"  # its parent is created too
    assert main(["init", str(target)]) == 0
    assert spec_tree(target) == spec_tree(BUNDLED)
    assert "ha/haproxy.yaml" in spec_tree(target)
    out, err = capsys.readouterr()
    assert f"{target}: wrote the example specs: " in err and "inventory.yaml" in err
    assert f"reconciler validate {target}" in err and f"save it as /etc/systemd/system/{init.UNIT_NAME}" in err
    exec_start = shlex.split(unit_lines(out)["ExecStart"][0])
    this = (Path(sys.executable).parent / "reconciler").resolve()  # the checkout's virtualenv's console script
    assert exec_start == [
        str(this),
        "--log-format",
        "json",
        "run",
        "--specs",
        str(target),
        "--listen",
        "127.0.0.1:9479",
    ]
    assert "/opt/reconciler" not in out and "/etc/reconciler/specs" not in out


def test_the_written_specs_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "specs"
    assert main(["init", str(target)]) == 0
    capsys.readouterr()
    assert main(["validate", str(target)]) == 0
    assert "valid (3 host(s))" in capsys.readouterr().out


def test_the_unit_is_the_shipped_one_but_for_what_init_fills_in(tmp_path: Path) -> None:
    shipped = SHIPPED_UNIT.read_text()
    printed = init.render_unit(shipped, ["/opt/tools/bin/reconciler"], Path("/etc/reconciler/specs"))
    ours, theirs = unit_lines(printed), unit_lines(shipped)
    assert ours.pop("ExecStart") == [
        "/opt/tools/bin/reconciler --log-format json run --specs /etc/reconciler/specs --listen 127.0.0.1:9479"
    ]
    theirs.pop("ExecStart")
    assert ours == theirs  # the hardening, the watchdog, the user, ReadOnlyPaths=/etc/reconciler: as shipped
    assert printed.startswith("# The reconciler daemon, as `reconciler init` printed it: it runs /opt/tools/")
    assert "[Unit]" in printed and printed.rstrip().endswith("WantedBy=multi-user.target")


def test_a_spec_directory_elsewhere_is_named_and_readable_in_the_unit() -> None:
    unit = unit_lines(init.render_unit(SHIPPED_UNIT.read_text(), ["/usr/local/bin/reconciler"], Path("/srv/specs")))
    assert unit["ExecStart"][0].split()[:6] == [
        "/usr/local/bin/reconciler",
        "--log-format",
        "json",
        "run",
        "--specs",
        "/srv/specs",
    ]
    assert unit["Description"] == ["reconciler: keep Kubernetes masters converged on /srv/specs"]
    assert unit["ReadOnlyPaths"] == ["-/etc/reconciler /srv/specs"]  # /etc/reconciler may not exist: no failure


@pytest.mark.parametrize(
    ("program", "spec_dir", "exec_start"),
    [
        (
            "/opt/my tools/bin/reconciler",
            "/srv/specs 100%",
            '"/opt/my tools/bin/reconciler" --log-format json run --specs "/srv/specs 100%%" --listen',
        ),
        ("/opt/a$b/reconciler", "/srv/s", "/opt/a$$b/reconciler --log-format json run --specs /srv/s --listen"),
        ('/opt/q"uote/reconciler', "/srv/s", '"/opt/q\\"uote/reconciler" --log-format json run --specs /srv/s'),
    ],
)
def test_paths_are_quoted_and_escaped_as_systemd_reads_them(program: str, spec_dir: str, exec_start: str) -> None:
    """Spaces quote a word; `%` (a specifier) is doubled; `$` (a variable) is doubled in ExecStart."""
    unit = unit_lines(init.render_unit(SHIPPED_UNIT.read_text(), [program], Path(spec_dir)))
    assert unit["ExecStart"][0].startswith(exec_start)


def test_a_control_character_in_a_path_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "spe\ncs"
    assert init.init_command(target, command=["/opt/r/bin/reconciler"]) == 1
    assert not target.exists()
    out, err = capsys.readouterr()
    assert out == "" and "a control character cannot be written in a systemd unit" in err


@pytest.mark.parametrize("kind", ["non-empty directory", "file"])
def test_init_refuses_what_is_not_a_new_or_empty_directory_and_changes_nothing(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "specs"
    if kind == "file":
        target.write_text("mine\n")
    else:
        target.mkdir()
        (target / "inventory.yaml").write_text("mine\n")
    assert main(["init", str(target)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and f"{target} exists and is not an empty directory" in err
    assert (target if kind == "file" else target / "inventory.yaml").read_text() == "mine\n"
    assert len(list(tmp_path.rglob("*"))) == (1 if kind == "file" else 2)


def test_init_fills_an_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "specs"
    target.mkdir()  # as `install -d -m 0750 -g reconciler /etc/reconciler/specs` leaves it
    assert main(["init", str(target), "--log-format", "json"]) == 0  # the global flags after the command too
    assert spec_tree(target) == spec_tree(BUNDLED)


def test_unit_only_writes_nothing_and_prints_the_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "specs"
    target.mkdir()
    (target / "inventory.yaml").write_text("mine\n")  # already set up: --unit-only does not mind
    assert main(["init", "--unit-only", str(target)]) == 0
    out, err = capsys.readouterr()
    assert f"--specs {target} " in unit_lines(out)["ExecStart"][0]
    assert "wrote" not in err and [p.name for p in target.iterdir()] == ["inventory.yaml"]


def test_the_unit_warns_of_what_its_sandbox_would_hide() -> None:
    """ProtectHome=yes hides /root, /home and /run/user; PrivateTmp=yes /tmp and /var/tmp; the unit's user
    `reconciler` could not read a root-only home either: a pipx install in root's home, a specs copy in /tmp."""
    notes = init.hidden_from_the_unit(
        {
            "the program": Path("/root/.local/bin/reconciler"),
            "the spec directory": Path("/tmp/specs"),
            "its Python": Path("/usr/bin/python3"),
        }
    )
    assert len(notes) == 2
    assert notes[0].startswith("warning: the unit cannot reach the program /root/.local/bin/reconciler: it is under")
    assert "ProtectHome=yes" in notes[0] and "a virtualenv under /opt" in notes[0]
    assert "the spec directory /tmp/specs" in notes[1] and "PrivateTmp=yes" in notes[1]
    assert "/etc/reconciler/specs" in notes[1]
    assert init.hidden_from_the_unit({"the program": Path("/opt/reconciler/bin/reconciler")}) == []


def test_a_link_into_a_hidden_place_is_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/usr/local/bin/reconciler linking into root's pipx virtualenv is still root's."""
    monkeypatch.setattr(init, "HIDDEN", (Path("/root"),))  # the link itself is in /tmp, hidden too
    link = tmp_path / "reconciler"
    link.symlink_to("/root/.local/pipx/venvs/reconciler/bin/reconciler")
    notes = init.hidden_from_the_unit({"the program": link})
    assert any("/root/.local/pipx/venvs/reconciler/bin/reconciler: it is under /root" in n for n in notes)


def test_the_executable_is_the_console_script_this_process_was_started_as(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "bin/reconciler"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    link = tmp_path / "reconciler"
    link.symlink_to(script)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["./reconciler", "init", "x"])
    assert init.executable() == [str(script)]  # absolute, its links resolved
    monkeypatch.setattr(sys, "argv", ["/usr/lib/python3/pytest", "init", "x"])  # not the console script
    assert init.executable() == [str((Path(sys.executable).parent / "reconciler").resolve())]


def test_without_a_console_script_the_unit_runs_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / "python3"
    python.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "argv", ["-m"])
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert init.executable() == [str(python), "-m", "reconciler.cli"]


def test_a_checkout_reads_the_examples_from_the_tree() -> None:
    """No wheel was built here: specs/ and deploy/systemd/reconciler.service are read where they are."""
    specs, unit = init.examples()
    assert Path(str(specs)) == BUNDLED and unit == SHIPPED_UNIT.read_text()
    assert {name for name, _ in init.spec_files(specs)} == set(spec_tree(BUNDLED))


def test_the_files_written_follow_the_umask_as_cp_does(tmp_path: Path) -> None:
    """init writes with the caller's umask, as cp does: under 0077 nothing is readable by others."""
    old = os.umask(0o077)
    try:
        init.write_specs(BUNDLED, tmp_path / "specs")
    finally:
        os.umask(old)
    assert all(p.stat().st_mode & 0o077 == 0 for p in (tmp_path / "specs").rglob("*"))


@pytest.mark.host
def test_systemd_reads_the_printed_unit_as_written(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit for a program and a spec directory whose paths need quoting: systemd
    finds the program (a wrong split would name a program that does not exist)."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: scripts/install-deps installs systemd-container (and systemd)")
    program = tmp_path / "my tools 100%" / "reconciler"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / init.UNIT_NAME
    unit.write_text(init.render_unit(SHIPPED_UNIT.read_text(), [str(program)], tmp_path / "spec $dir"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "is not executable" not in proc.stderr, proc.stderr
