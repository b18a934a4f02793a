"""`reconciler apply` on a terminal against the real testbed (issue 28, items 1 and 2): every host's step is shown
as it changes, a host that waits says what for, and Ctrl-C in the middle of an etcd rollout ends the command at
once, exit 130, saying per host what was done; the next apply converges from there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.observed import assert_files_match_specs
from tests.support.specs import BUNDLED as SPECS
from tests.support.specs import replace_once
from tests.support.terminal import on_terminal

pytestmark = pytest.mark.testbed


def test_ctrl_c_during_an_etcd_rollout_says_what_was_done_and_apply_goes_on_from_there(
    converged: Testbed, spec_copy: Path
) -> None:
    replace_once(spec_copy / "etcd.yaml", "ETCD_HEARTBEAT_INTERVAL: 100", "ETCD_HEARTBEAT_INTERVAL: 150")
    try:
        seen = on_terminal(
            "apply",
            str(spec_copy),
            interrupt_when=lambda screen: "waiting up to" in screen and "etcd.service to pass" in screen,
            timeout=300,
        )
        screen = seen.screen
        assert seen.code == 130, screen
        assert seen.interrupted_after is not None and seen.interrupted_after < 2.0, seen.interrupted_after
        assert "Traceback" not in screen and "CancelledError" not in screen, screen
        live = screen[: screen.index("interrupted")]
        assert re.search(r"master-\d +write /etc/etcd/etcd\.conf", live) or "restart etcd.service" in live, live
        assert "waiting for its turn to restart etcd.service" in live  # the hosts that wait say what for
        said = screen[screen.index("interrupted") :]
        lines = [line.strip() for line in said.splitlines() if line.strip().startswith("master-")]
        assert len(lines) == 3, said
        assert any("restart etcd.service" in line and "done before:" in line for line in lines) or any(
            "interrupted while: waiting up to" in line for line in lines
        ), said
    finally:
        result = reconciler("apply", str(SPECS))  # from wherever it stopped, back to the bundled specs
    assert result.code == 0, result.out + result.err
    assert_files_match_specs(converged)
