"""The plan (plan.diff), attacked: what a host's file holds never reaches the operator's terminal as control
sequences (the hostile-host review of b861037 and c08d5ce, item G).

A plain test asserts the safe behaviour an attack failed to break (a broken one would be marked
xfail(strict=True): see observe/test_observe_sh_attacks.py). The letter in a test's name (A..J) matches the
review report."""

from __future__ import annotations

import pytest

from reconciler.observe.snapshot import FileFact, HostSnapshot
from reconciler.plan.diff import plan_host
from tests.support.hostile_files import desired
from tests.support.scripts import GROUP, USER

pytestmark = pytest.mark.host


# --------------------------------------------------------------------------- G: operator's terminal


def test_G_a_plan_never_carries_terminal_control_sequences_from_the_host() -> None:
    path = "/etc/kubernetes/config"
    evil = b"KUBE_LOGTOSTDERR=1\n\x1b]52;c;cm0gLXJmIH4K\x07\x1b[1A\x1b[2K\n"
    snap = HostSnapshot("h", {path: FileFact(path, True, 0o644, USER, GROUP, 1.0, evil, len(evil))})
    assert "\x1b" not in plan_host(desired([path]), snap).render()
