"""The in-process host (reconciler.transport.fake, also the fleet benchmark's emulated master) speaks what the
engine sends: a converge from bare reaches converged, the next pass finds nothing to do, and a hand edit is
repaired with one restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from reconciler.engine.converge import converge
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.specs import inventory

REPO = Path(__file__).resolve().parents[3]


def test_simulated_hosts_converge_stay_converged_and_are_repaired(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "inventory.yaml").write_text(inventory(3, 23000, tmp_path))
    for name in ("kubernetes.yaml", "certificates.yaml", "vars.yaml"):
        (specs / name).write_text((REPO / "specs" / name).read_text())
    desired = load_desired(specs)
    hosts = {name: SimHost(name) for name in desired.hosts}

    async def one_pass() -> dict[str, tuple[str, int]]:
        result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
        return {n: (o.status, len(o.applied)) for n, o in result.outcomes.items()}

    first = asyncio.run(one_pass())
    assert all(status == "converged" and applied >= 13 for status, applied in first.values()), first
    assert all(u.active and u.enabled for h in hosts.values() for u in h.units.values())
    commands = {n: h.commands for n, h in hosts.items()}
    assert asyncio.run(one_pass()) == {n: ("converged", 0) for n in hosts}
    assert all(h.commands - commands[n] == 1 for n, h in hosts.items())  # one observation, nothing else

    sim = hosts["sim-0001"]
    started = sim.units["kube-scheduler.service"].active_enter
    sim.hand_edit("/etc/kubernetes/scheduler", b"KUBE_SCHEDULER_ARGS=--hand-edit\n")
    after = asyncio.run(one_pass())
    assert after["sim-0001"] == ("converged", 2), after  # the write and the restart
    assert b"--hand-edit" not in sim.files["/etc/kubernetes/scheduler"].content
    assert sim.units["kube-scheduler.service"].active_enter != started
    assert sim.execute(["uname"])[0] == 127  # anything else fails loudly


@given(st.lists(st.text(max_size=30), max_size=8))
def test_the_fake_reads_a_command_line_back_as_a_shell_would(argv: list[str]) -> None:
    import shlex

    from reconciler.transport.fake import split_command

    line = shlex.join(argv)
    assert split_command(line) == shlex.split(line) == argv
