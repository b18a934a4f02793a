"""The daemon never stops because of a spec, and never exits 0 because of an internal fault.

The real Daemon, run in-process against hosts that cannot be reached (every pass fails on connecting, so
nothing depends on a testbed): hostile spec edits become located errors while it keeps the last good specs;
a loader bug keeps them too; a background task that dies stops it with exit code 1 (systemd restarts it).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import yaml

import reconciler.engine.daemon as daemon_module
import reconciler.engine.spec_keeper as spec_keeper_module
from reconciler.engine.daemon import Daemon
from reconciler.errors import TransientHostError
from reconciler.settings import DaemonSettings
from reconciler.spec.desired import Target
from reconciler.transport.base import Connection

HOST = """\
apiVersion: reconciler/v1
kind: Host
metadata: {name: m1}
spec: {address: 198.18.0.250, unsafeSkipHostKeyVerification: true}
---
apiVersion: reconciler/v1
kind: File
metadata: {name: f}
spec: {path: /etc/f, content: "good\\n"}
"""

HOSTILE = {
    "loop": "{% for i in range(3) %}{% for j in range(100000) %}{% for k in range(100000) %}{% endfor %}{% endfor %}{% endfor %}",
    "range": "{% for i in range(200000) %}x{% endfor %}",
    "macro": "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}",
    "power": "{{ 10 ** (10 ** 9) }}",
    "repeat": "{{ 'x' * 3000000000 }}",
    "surrogate": "{{ '\\ud800' }}",
}


def bad_spec(specs: Path, template: str) -> None:
    doc = {
        "apiVersion": "reconciler/v1",
        "kind": "File",
        "metadata": {"name": "bad"},
        "spec": {"path": "/etc/bad", "content": template},
    }
    (specs / "bad.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))  # content: on line 7


async def unreachable(target: Target) -> Connection:
    raise TransientHostError(f"{target.name}: unreachable (test)", ssh=True)


def settings(specs: Path, state: Path) -> DaemonSettings:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return DaemonSettings(
        spec_dir=specs,
        state_dir=state,
        listen_port=port,
        resync_interval=3600,
        backoff_base=3600,
        backoff_cap=3600,
        shutdown_timeout=5,
    )


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    d = tmp_path / "specs"
    d.mkdir()
    (d / "hosts.yaml").write_text(HOST)
    return d


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_hostile_template_edit_is_a_located_error_and_the_last_good_specs_stay(
    specs: Path, tmp_path: Path, name: str
) -> None:
    daemon = Daemon(settings(specs, tmp_path / "state"), connector=unreachable)
    assert await daemon.load_specs("start")
    good = daemon.desired
    bad_spec(specs, HOSTILE[name])
    assert not await daemon.load_specs("watch")
    assert daemon.desired is good and daemon.ledger.spec.generation == 1 and not daemon.ledger.spec.valid
    assert daemon.ledger.spec.errors and all(
        e.startswith("specs/bad.yaml:7: spec.content: rendering for host ") for e in daemon.ledger.spec.errors
    )
    (specs / "bad.yaml").unlink()
    assert await daemon.load_specs("watch") and daemon.ledger.spec.valid


async def test_a_loader_bug_keeps_the_last_good_specs(
    specs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = Daemon(settings(specs, tmp_path / "state"), connector=unreachable)
    assert await daemon.load_specs("start")
    good = daemon.desired

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the loader")

    monkeypatch.setattr(spec_keeper_module, "load_desired", broken)
    assert not await daemon.load_specs("watch")
    assert daemon.desired is good and daemon.ledger.spec.errors == [
        f"{specs}:0: internal error while loading: RuntimeError"
    ]


async def test_a_background_task_that_dies_stops_the_daemon_with_exit_code_1(
    specs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_watch(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the watcher died")

    monkeypatch.setattr(daemon_module, "watch_specs", broken_watch)
    daemon = Daemon(settings(specs, tmp_path / "state"), connector=unreachable)
    assert await asyncio.wait_for(daemon.run(), 60) == 1


async def test_sigterm_still_exits_0(specs: Path, tmp_path: Path) -> None:
    daemon = Daemon(settings(specs, tmp_path / "state"), connector=unreachable)
    task = asyncio.create_task(daemon.run())
    await asyncio.sleep(0.5)
    bad_spec(specs, HOSTILE["range"])
    await daemon.load_specs("watch")  # the watcher would do the same
    daemon.stop()
    assert await asyncio.wait_for(task, 60) == 0
