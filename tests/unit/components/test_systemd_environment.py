"""Restart only when what the process sees changes: systemd's own reading of EnvironmentFile= and of unit files.

`environment_of` is systemd's env-file state machine (env-file.c) plus its clean-up; the cases below are the
rules it implements. tests/integration/test_format_only.py checks the same texts against a real systemd.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.apply.executor import WRITE_SCRIPT
from reconciler.components.systemd import environment_of, same_environment, same_unit
from reconciler.plan.actions import Kind
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredHost
from tests.support.formats import ENV_CASES, UNIT_TEXT
from tests.support.scripts import GROUP, USER
from tests.support.snapshots import STARTED, converged, desired, edit


@pytest.mark.parametrize("text, env", ENV_CASES)
def test_environment_as_systemd_reads_it(text: str, env: dict[str, str]) -> None:
    assert environment_of(text, comment_continues=False) == env
    assert environment_of(text, comment_continues=True) == env


def test_a_comment_ending_in_a_backslash_differs_between_systemd_versions() -> None:
    text = "# note \\\nA=1\n"
    assert environment_of(text, comment_continues=False) == {"A": "1"}  # systemd >= 254
    assert environment_of(text, comment_continues=True) == {}  # Debian 12's 252: the comment goes on
    assert not same_environment(b"A=1\n", text.encode())  # either could read it: not the same


SEED_SCHEDULER = b"""###
# kubernetes scheduler config

# default config should be adequate

# Add your own!
KUBE_SCHEDULER_ARGS="--leader-elect=true --address=127.0.0.1"
"""


@pytest.mark.parametrize(
    "old, new, same",
    [
        (SEED_SCHEDULER, b"KUBE_SCHEDULER_ARGS='--leader-elect=true --address=127.0.0.1'\n", True),
        (SEED_SCHEDULER, b"KUBE_SCHEDULER_ARGS=--leader-elect=true\\ --address=127.0.0.1", True),
        (b"A=1\nB=2\n", b"\n# reordered\nB=2\n\nA=1\n", True),
        (b'A="1"\n', b"A=1 \n", True),
        (SEED_SCHEDULER, SEED_SCHEDULER.replace(b"127.0.0.1", b"0.0.0.0"), False),
        (b"A=1\n", b"A=1\nB=\n", False),  # an empty variable is still a variable
        (b"A=1\n", b"A='1 '\n", False),
        (b"A=1\n", b"A=1\n#\xff\n", False),  # not UTF-8: systemd would refuse the file
        (b"A=\x01\n", b"A='\x01'\n", False),  # a control character: versions differ on keeping it
    ],
)
def test_same_environment(old: bytes, new: bytes, same: bool) -> None:
    assert same_environment(old, new) is same


@pytest.mark.parametrize(
    "new, same",
    [
        (b"# managed\n" + UNIT_TEXT.replace(b"\n\n", b"\n\n\n") + b"; trailing comment\n", True),
        (UNIT_TEXT.replace(b"Restart=on-failure", b"Restart = on-failure   "), True),
        (UNIT_TEXT.replace(b"Restart=on-failure", b"Restart=always"), False),
        (UNIT_TEXT.replace(b"            $KUBE", b"  $KUBE"), False),  # inside a value: not ours to judge
        (
            UNIT_TEXT.replace(b"Restart=on-failure\n", b"") + b"\n\nRestart=on-failure\n",
            True,
        ),  # same section, same order
        (
            UNIT_TEXT.replace(b"Restart=on-failure\n", b"").replace(b"[Service]\n", b"[Service]\nRestart=on-failure\n"),
            False,
        ),
        (UNIT_TEXT.replace(b"\n", b"\r\n"), False),
    ],
)
def test_same_unit(new: bytes, same: bool) -> None:
    assert same_unit(UNIT_TEXT, new) is same


def respecified(host: DesiredHost, path: str, content: bytes) -> DesiredHost:
    """The host as a spec edit would render it: `path` with new content."""
    return replace(host, files={**host.files, path: replace(host.files[path], content=content)})


def test_a_format_only_spec_edit_is_written_keeping_the_mtime_and_restarts_nothing() -> None:
    host = desired()
    path = "/etc/kubernetes/scheduler"
    reformatted = b"# edited\n" + host.files[path].content.replace(b'"', b"'") + b"\n\n"
    plan = plan_host(respecified(host, path, reformatted), converged(host))
    assert [(a.kind, a.target, a.keep_mtime) for a in plan.actions] == [(Kind.WRITE, path, True)]
    assert "format only, no restart: kube-scheduler.service" in plan.actions[0].reason


def test_a_real_spec_edit_still_restarts_and_a_token_file_is_never_format_only() -> None:
    host = desired()
    path = "/etc/kubernetes/scheduler"
    plan = plan_host(respecified(host, path, b'KUBE_SCHEDULER_ARGS="--leader-elect=false"\n'), converged(host))
    assert [(a.kind, a.keep_mtime) for a in plan.actions] == [(Kind.WRITE, False), (Kind.RESTART, False)]
    token = "/etc/kubernetes/token.csv"  # not an env file: any byte counts
    plan = plan_host(respecified(host, token, host.files[token].content + b"\n"), converged(host))
    assert [a.kind for a in plan.actions] == [Kind.WRITE, Kind.RESTART]


def test_a_format_only_unit_file_edit_needs_neither_reload_nor_restart() -> None:
    host = desired()
    path = "/usr/lib/systemd/system/kube-scheduler.service"
    plan = plan_host(respecified(host, path, b"# hand-made\n" + host.files[path].content), converged(host))
    assert [(a.kind, a.keep_mtime) for a in plan.actions] == [(Kind.WRITE, True)]


def test_a_host_file_reformatted_after_its_unit_started_is_still_restarted_once() -> None:
    """The level rule cannot tell a reformat from a pass cut short between a real write and its restart (the
    unit may run an older config): a file newer than the unit's start restarts it, format or not."""
    host = desired()
    path = "/etc/kubernetes/scheduler"
    snap = edit(converged(host), path, b"# x\n" + host.files[path].content, mtime=STARTED + 5)
    kinds = [(a.kind, a.keep_mtime) for a in plan_host(host, snap).actions]
    assert kinds == [(Kind.WRITE, True), (Kind.RESTART, False)]


def test_the_kept_mtime_is_what_spares_the_next_pass_a_restart() -> None:
    """After a format-only write the file has the desired content and its old mtime: nothing to do. Had the write
    taken a new mtime, the level rule (a file changed after its unit started) would restart the unit next pass."""
    host = desired()
    path = "/etc/kubernetes/scheduler"
    kept = edit(converged(host), path, host.files[path].content, mtime=STARTED - 10)
    assert plan_host(host, kept).empty
    fresh = edit(converged(host), path, host.files[path].content, mtime=STARTED + 5)
    assert [(a.kind, a.target) for a in plan_host(host, fresh).actions] == [(Kind.RESTART, "kube-scheduler.service")]


def test_the_write_script_keeps_the_replaced_file_s_mtime_when_asked(tmp_path: Path) -> None:
    import hashlib
    import os

    path = tmp_path / "env"
    path.write_bytes(b"A=1\n")
    os.utime(path, ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    for keep, expect_kept in (("keep-mtime", True), ("-", False)):
        content = f"# {keep}\nA=1\n".encode()
        argv = [str(path), "0644", USER, GROUP, str(tmp_path / "bak"), f"s{keep}", "5"]
        argv += [hashlib.sha256(content).hexdigest(), keep]
        proc = subprocess.run(["bash", "-c", WRITE_SCRIPT, "w", *argv], input=content, capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert path.read_bytes() == content
        assert (path.stat().st_mtime_ns == 1_000_000_000_123_456_789) is expect_kept
