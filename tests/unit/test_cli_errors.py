"""No traceback reaches a user (issue 28, items 2, 6 and 8): usage errors exit 64, a file problem is one line, an
internal error is one line plus the report file it wrote; global flags work after the command too."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import cli
from tests.support.cli import reconciler


def test_a_typo_is_a_usage_error_with_its_own_exit_code(specs: Path) -> None:
    typo = reconciler("plan", str(specs), "--hots", "x")
    assert typo.code == 64 and "unrecognized arguments: --hots x" in typo.err, typo  # not plan's 2 (changes pending)
    unknown = reconciler("plan", str(specs), "--host", "nosuch")
    assert unknown.code == 64 and "--host nosuch: no such host in the specs (they have master-1" in unknown.err


def test_global_flags_work_after_the_command(specs: Path) -> None:
    after = reconciler("validate", str(specs), "--log-format", "json", "--log-level", "debug")
    assert after.code == 0, after
    before = reconciler("--log-format", "json", "validate", str(specs))
    assert before.code == 0 and before.out == after.out


def test_a_file_problem_is_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("")
    result = reconciler("tuning", "clear", "--state-dir", str(not_a_dir))
    assert result.code == 1 and result.err == f"reconciler: {not_a_dir}/etcd-tuning.json: Not a directory\n", result


def test_a_spec_file_given_for_the_directory_says_so(specs: Path) -> None:
    result = reconciler("validate", str(specs / "etcd.yaml"))
    assert result.code == 1 and f"is a file; give the directory of specs it is in ({specs})" in result.err, result


def test_an_internal_error_is_one_line_and_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: object) -> int:
        raise RuntimeError("the bug's own words\nand a second line")

    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(cli, "_main", broken)
    assert cli.main(["validate", "specs"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    reports = list(tmp_path.glob("crash-*.txt"))
    assert len(reports) == 1 and reports[0].stat().st_mode & 0o077 == 0
    assert (
        err
        == f"reconciler: internal error: RuntimeError: the bug's own words; full report in {reports[0]} (please report it)\n"
    )
    assert "Traceback" in reports[0].read_text() and "broken" in reports[0].read_text()
    assert cli.main(["--log-level", "debug", "validate", "specs"]) == 70
    assert "Traceback" in capsys.readouterr().err  # asked for: the traceback on stderr too


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "--workers", "0"], ["--workers: Input should be greater than or equal to 1"]),
        (["run", "--listen", "bad"], ["--listen 'bad': expected HOST:PORT"]),
        (
            ["run", "--resync", "-1", "--backoff-cap", "0"],
            ["--resync: Input should be greater than 0", "--backoff-cap:"],
        ),
        (["plan", "specs", "--connect-attempts", "0"], ["argument --connect-attempts: 0 is below 1"]),
        (["import", "out", "--connect-attempts", "-3"], ["argument --connect-attempts: -3 is below 1"]),
        (["apply", "specs", "--wait", "-3"], ["argument --verify-wait/--wait: -3 is below 0"]),
        (["import", "out", "--host", "m1=root@:22"], ["--host 'm1=root@:22': expected NAME=[USER@]ADDRESS[:PORT]"]),
    ],
)
def test_a_bad_setting_is_one_line_per_setting_and_a_usage_error(args: list[str], said: list[str]) -> None:
    result = reconciler(*args)
    assert result.code == 64, result
    assert all(s in result.err for s in said), result.err
    assert "pydantic" not in result.err and "validation error" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == len(said), result.err


def test_one_spelling_across_commands() -> None:
    """The spec dir is positional for run as for plan (--specs still works); apply takes the daemon's
    --verify-wait; import's --host takes USER@ and :PORT in the address."""
    parsed = cli._parser().parse_args(["run", "elsewhere"])
    assert cli._daemon_settings(cli._settings_defaults(parsed)).spec_dir == Path("elsewhere")
    parsed = cli._parser().parse_args(["run", "--specs", "flagged"])
    assert cli._daemon_settings(cli._settings_defaults(parsed)).spec_dir == Path("flagged")
    assert cli._parser().parse_args(["apply", "--verify-wait", "7"]).wait == 7.0
    assert cli._host_port("127.0.0.1:2222", 22) == ("127.0.0.1", 2222)
    assert cli._host_port("[fd00::1]:2222", 22) == ("fd00::1", 2222)
    assert cli._host_port("fd00::1", 22) == ("fd00::1", 22)
    assert cli._host_port("10.0.0.1:99999", 22)[1] is None


def test_status_takes_what_listen_takes() -> None:
    result = reconciler("status", "--url", "127.0.0.1:1")
    assert result.code == 3 and "http://127.0.0.1:1/status" in result.err and "unknown url type" not in result.err


@pytest.mark.host
def test_a_user_who_may_not_write_the_state_dir_gets_one_line(tmp_path: Path) -> None:
    """`tuning clear` as a user who cannot remove the overlay (root's state dir): one line, no PermissionError trace."""
    import os
    import subprocess
    import sys

    assert os.geteuid() == 0, "runs the command as nobody: needs root (CI is root)"
    state = tmp_path / "state"
    state.mkdir()
    (state / "etcd-tuning.json").write_text("{}")
    tmp_path.chmod(0o755)
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "reconciler.cli"]
        + ["tuning", "clear", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        cwd=Path(cli.__file__).parents[1],
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stderr == f"reconciler: {state}/etcd-tuning.json: Permission denied\n", proc
