"""Host snapshots for planning tests: the bundled specs rendered for master-1, that host converged, a file edited
on it. Used by the plan and format-only tests."""

from __future__ import annotations

from reconciler.observe.snapshot import FileFact, HostSnapshot, UnitFact
from reconciler.spec.desired import DesiredHost
from reconciler.spec.isolate import load_desired
from tests.support.specs import BUNDLED as SPECS

STARTED = 1_000.0


def desired() -> DesiredHost:
    return load_desired(SPECS).hosts["master-1"]


def converged(host: DesiredHost) -> HostSnapshot:
    files = {p: FileFact(p, True, f.mode, f.owner, f.group, STARTED - 10, f.content) for p, f in host.files.items()}
    units = {u.name: UnitFact(u.name, "loaded", "active", "running", "enabled", STARTED) for u in host.units}
    return HostSnapshot(host.name, files, units)


def edit(snapshot: HostSnapshot, path: str, content: bytes, mtime: float = STARTED + 5) -> HostSnapshot:
    files = dict(snapshot.files)
    files[path] = FileFact(path, True, files[path].mode, "root", "root", mtime, content)
    return HostSnapshot(snapshot.host, files, snapshot.units)
