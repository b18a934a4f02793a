"""What an operator sees while `plan`/`apply`/`check` work, and what Ctrl-C does (issue 28, items 1 and 2).

The hosts here never answer (a loopback port that accepts and stays silent, as a host whose sshd hangs) or
refuse (a closed port): the command is run on a pseudo-terminal and piped, as a person and a CI job run it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cli import reconciler
from tests.support.silent import closed_port, silent_port, unanswered_specs
from tests.support.terminal import on_terminal


@pytest.fixture
def hanging(tmp_path: Path) -> object:
    with silent_port() as port:
        yield unanswered_specs(tmp_path, {"master-1": port, "master-2": closed_port()})


def test_a_terminal_shows_every_host_and_how_long_it_has_waited(hanging: Path) -> None:
    seen = on_terminal(
        "apply", str(hanging), "--connect-attempts", "1", interrupt_when=lambda s: "connecting (2s)" in s
    )
    screen = seen.screen
    assert re.search(r"master-1 +connecting \(0s\)", screen), screen
    assert re.search(r"master-2 +failed", screen), screen  # the refused host is through while the other waits
    assert "master-1  connecting (2s)" in screen  # redrawn every second: the wait is visible
    assert "\x1b[2F" in screen  # the two lines are redrawn in place, not scrolled


def test_ctrl_c_ends_the_command_at_once_and_says_what_was_and_was_not_done(hanging: Path) -> None:
    seen = on_terminal(
        "apply", str(hanging), "--connect-attempts", "1", interrupt_when=lambda s: "connecting (1s)" in s
    )
    assert seen.code == 130, seen.screen
    assert seen.interrupted_after is not None and seen.interrupted_after < 2.0
    assert "Traceback" not in seen.screen and "CancelledError" not in seen.screen, seen.screen
    tail = seen.screen[seen.screen.index("interrupted") :]
    assert "master-1: interrupted while: connecting; nothing changed on it" in tail, tail
    assert "master-2: failed" in tail, tail


@pytest.mark.parametrize("command", ["plan", "check"])
def test_ctrl_c_in_plan_and_check_too(hanging: Path, command: str) -> None:
    seen = on_terminal(
        command, str(hanging), "--connect-attempts", "1", interrupt_when=lambda s: "connecting (1s)" in s
    )
    assert seen.code == 130 and "Traceback" not in seen.screen, seen.screen


def test_piped_progress_is_one_line_per_step_in_the_logs_format(tmp_path: Path) -> None:
    specs = unanswered_specs(tmp_path, {"master-1": closed_port(), "master-2": closed_port()})
    as_json = reconciler("plan", str(specs), "--connect-attempts", "1")  # stderr is a pipe: logs are JSON
    events = [json.loads(line) for line in as_json.err.splitlines() if line.startswith("{")]
    steps = [(e["host"], e.get("doing") or e.get("finished")) for e in events if e["event"] == "progress"]
    assert sorted(steps) == [
        ("master-1", "connecting"),
        ("master-1", "failed"),
        ("master-2", "connecting"),
        ("master-2", "failed"),
    ]
    plain = reconciler("plan", str(specs), "--connect-attempts", "1", "--log-format", "console")
    assert re.search(r"^\d\d:\d\d:\d\d master-1: connecting$", plain.err, re.M), plain.err


def test_a_failed_host_is_reported_once_and_no_library_warning_is_printed(tmp_path: Path) -> None:
    specs = unanswered_specs(tmp_path, {"master-1": closed_port()})
    result = reconciler("plan", str(specs), "--connect-attempts", "1", "--log-format", "console")
    assert result.code == 1
    assert result.out.count("master-1: FAILED") == 1, result.out
    assert result.out.startswith("master-1: FAILED: root@127.0.0.1:"), result.out  # the host named once
    assert "Warning" not in result.err and "DSA" not in result.err, result.err
