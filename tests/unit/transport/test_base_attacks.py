"""Command quoting (transport.base.command_line), attacked: sshd hands the command line to the host's login shell, so
every value a spec can carry (a health check's URL included) must reach the host's program as one argument, never as
shell (the hostile-host review of b861037 and c08d5ce).

A plain test asserts the safe behaviour an attack failed to break (a broken one would be marked
xfail(strict=True): see observe/test_observe_sh_attacks.py). The letter in a test's name (A..J) matches the
review report."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.observe.facts import observe_argv
from reconciler.spec.desired import DesiredCheck
from reconciler.transport.base import command_line

pytestmark = pytest.mark.host


def test_spec_values_reach_the_host_shell_quoted(tmp_path: Path) -> None:
    """sshd hands command_line(argv) to the login shell: run it through bash and dash as sshd would."""
    marker = tmp_path / "pwned"
    values = [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"a;touch {marker}",
        f"a' ; touch {marker} '",
        "a\nb",
        "-n",
        "$IFS",
        "!!",
        "*",
        f"http://127.0.0.1:1/$(touch${{IFS}}{marker})&x=1;y",
    ]
    for shell in ("bash", "sh"):
        out = subprocess.run([shell, "-c", command_line(["printf", "%s\\0", *values])], capture_output=True, timeout=10)
        assert out.stdout.split(b"\0")[:-1] == [v.encode() for v in values]
    check = DesiredCheck("c", 1.0, url=values[-1])
    subprocess.run(["bash", "-c", command_line(observe_argv((), (), (check,)))], capture_output=True, timeout=30)
    assert not marker.exists()
