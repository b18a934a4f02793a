"""The daemon never stops because of a spec, and never exits 0 because of an internal fault.

The real Daemon, run in-process against hosts that cannot be reached (every pass fails on connecting, so
nothing depends on a testbed): hostile spec edits become located errors while it keeps the last good specs;
a loader bug keeps them too; a refused spec shows in /metrics, and a good edit queues only the host it changes;
a background task that dies stops it with exit code 1 (systemd restarts it).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import reconciler.engine.daemon as daemon_module
import reconciler.engine.spec_keeper as spec_keeper_module
from reconciler.engine.daemon import Daemon
from reconciler.errors import TransientHostError
from reconciler.settings import DaemonSettings
from reconciler.spec.desired import Target
from reconciler.transport.base import Connection
from tests.support.specs import BUNDLED, copy_specs

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
    assert await daemon.specs.load("start")
    good = daemon.specs.desired
    bad_spec(specs, HOSTILE[name])
    assert not await daemon.specs.load("watch")
    assert daemon.specs.desired is good and daemon.ledger.spec.generation == 1 and not daemon.ledger.spec.valid
    assert daemon.ledger.spec.errors and all(
        e.startswith("specs/bad.yaml:7: spec.content: rendering for host ") for e in daemon.ledger.spec.errors
    )
    (specs / "bad.yaml").unlink()
    assert await daemon.specs.load("watch") and daemon.ledger.spec.valid


async def test_a_loader_bug_keeps_the_last_good_specs(
    specs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = Daemon(settings(specs, tmp_path / "state"), connector=unreachable)
    assert await daemon.specs.load("start")
    good = daemon.specs.desired

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the loader")

    monkeypatch.setattr(spec_keeper_module, "load_desired", broken)
    assert not await daemon.specs.load("watch")
    assert daemon.specs.desired is good and daemon.ledger.spec.errors == [
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
    await daemon.specs.load("watch")  # the watcher would do the same
    daemon.stop()
    assert await asyncio.wait_for(task, 60) == 0


async def test_a_bad_spec_keeps_the_last_good_ones_visibly_and_a_good_edit_queues_only_its_host(
    tmp_path: Path,
) -> None:
    spec_dir = copy_specs(tmp_path / "specs")
    daemon = Daemon(DaemonSettings(spec_dir=spec_dir, listen_port=0))
    assert await daemon.specs.load("start")
    good = daemon.specs.desired
    assert daemon.workers.queue.depth() == 3
    (spec_dir / "etcd.yaml").write_text(
        (spec_dir / "etcd.yaml").read_text().replace("timeoutSeconds: 3", "timeoutSeconds: soon")
    )
    assert not await daemon.specs.load("watch")
    assert daemon.specs.desired is good
    assert daemon.ledger.spec.valid is False
    assert any("etcd.yaml:" in e and "spec.timeoutSeconds" in e for e in daemon.ledger.spec.errors)
    families = {f.name: f for f in text_string_to_metric_families(daemon.http.routes["/metrics"]().body.decode())}
    assert families["reconciler_spec_valid"].samples[0].value == 0
    reloads = {
        s.labels["result"]: s.value for s in families["reconciler_spec_reloads"].samples if s.name.endswith("_total")
    }
    assert reloads == {"success": 1.0, "error": 1.0}
    # A good edit that changes one host's file queues only that host.
    shutil.copy(BUNDLED / "etcd.yaml", spec_dir / "etcd.yaml")
    inventory = spec_dir / "inventory.yaml"
    inventory.write_text(
        inventory.read_text().replace("etcd_binary: /usr/bin/etcd", "etcd_binary: /usr/local/bin/etcd", 1)
    )
    for _ in range(3):
        daemon.workers.queue.done(await asyncio.wait_for(daemon.workers.queue.get(), 1))
    assert await daemon.specs.load("watch")
    assert daemon.ledger.spec.valid and daemon.ledger.spec.generation == 2
    assert daemon.workers.queue.depth() == 1 and await asyncio.wait_for(daemon.workers.queue.get(), 1) == "master-1"


async def test_a_spec_dir_that_is_not_there_yet_is_a_spec_error_until_it_appears(tmp_path: Path) -> None:
    """`reconciler run DIR` before DIR is deployed: the daemon runs and says why it has no specs (it used to exit 1
    with "internal fault", and systemd restarted it every 5 s); once DIR appears, it loads it."""
    specs = tmp_path / "specs"
    daemon = Daemon(settings(specs, tmp_path / "state"), connector=unreachable)
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(200):
            if daemon.ledger.spec.errors:
                break
            await asyncio.sleep(0.05)
        assert daemon.ledger.spec.errors == [f"{specs}:0: spec directory does not exist"] and not task.done()
        staged = tmp_path / "staged"
        staged.mkdir()
        (staged / "hosts.yaml").write_text(HOST)
        staged.rename(specs)  # a deploy moves it into place
        for _ in range(300):
            if daemon.ledger.spec.valid:
                break
            await asyncio.sleep(0.05)
        assert (
            daemon.ledger.spec.valid and daemon.specs.desired is not None and list(daemon.specs.desired.hosts) == ["m1"]
        )
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 60) == 0
