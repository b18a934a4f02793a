"""What `check` prints for a host it found converged: it applies nothing, so it never says "0 change(s) applied"
(issue 28: found trying the README's quick start as a new operator)."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import cli
from reconciler.outcome import HostOutcome, RunResult


@pytest.mark.parametrize(
    ("command", "line"),
    [
        ("check", "master-1: converged (no drift, every check passes)"),
        ("apply", "master-1: converged (0 change(s) applied)"),
    ],
)
def test_a_converged_host_in_the_words_of_the_command(
    command: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    desired: Any = None  # read only for a host's health table, and these outcomes carry no observation
    cli._print_result(RunResult({"master-1": HostOutcome("master-1", "converged")}), command, desired)
    assert capsys.readouterr().out.splitlines() == [line]
