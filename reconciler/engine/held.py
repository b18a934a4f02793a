"""What was rolled back, remembered: a config that failed is not tried again until the specs change.

Owns `Held`: per (host, unit) the config that was tried (each file the unit reads with the sha256 of what the
specs want there: drift on the host does not change it, a spec edit does), the files that were rolled back, and
why it failed; per unit, the whole unit's config across its hosts when its rollout stopped on a member's rollback.
An entry is dropped the first time it is asked about with other specs (the new content gets its chance). Each
entry carries when it was made: of two copies of the same entry, the newer wins.

Kept in memory for a run of `reconciler apply`; the daemon gives it a file (`held.json` in its state directory),
read at start and written atomically on every change, so a restarted daemon does not try the same bad config once
more. `to_json`/`merge` carry it through etcd to the next leader (leader.leadership). Bounded: at most
`MAX_ENTRIES` entries and `MAX_FILE_BYTES` read; a file that is damaged or too big is set aside with a warning.
Called by `engine.converge` (the held-back actions, the stopped rollouts) and `engine.daemon`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconciler.plan.actions import Action, without
from reconciler.spec.desired import DesiredHost

log = structlog.get_logger(__name__)

FILENAME = "held.json"
MAX_ENTRIES = 10000  # (host, unit) pairs and units: a fleet of 1000 hosts with a few units each
MAX_FILE_BYTES = 8 << 20
MAX_WHY = 4000  # characters of a reason kept (a rollback's message is ~1 kB)

Tried = frozenset[tuple[str, str]]  # (path, sha256 of the content the specs want there), every file the unit reads
Config = frozenset[tuple[str, str, str]]  # (host, path, sha256): a rollout unit's config on every host


@dataclass(frozen=True)
class Entry:
    tried: Tried
    paths: frozenset[str]  # the files rolled back: not written again while held
    why: str
    at: float  # when it was held (wall clock: copies from other replicas are compared by it)


HELD = " (held: not tried again on this host until the specs change)"


def fingerprint(host: DesiredHost, paths: Iterable[str]) -> frozenset[tuple[str, str]]:
    """What was tried: each path with the hash of the content the specs want there."""
    return frozenset((p, hashlib.sha256(host.files[p].content).hexdigest()) for p in paths if p in host.files)


class Held:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._held: dict[tuple[str, str], Entry] = {}
        self._stopped: dict[str, tuple[Config, str, float]] = {}
        self.changed = 0  # counts changes: who carries it elsewhere (etcd) sends it again when this moved
        if path is not None:
            self._load(path)

    # -- a host's unit ---------------------------------------------------------------------
    def lookup(self, host: str, unit: str, tried: Tried) -> Entry | None:
        """What is held on this host's unit for this config, or None (never held, or the specs changed since)."""
        held = self._held.get((host, unit))
        if held is None:
            return None
        if held.tried != tried:
            del self._held[(host, unit)]
            self._save()
            return None
        return held

    def why(self, host: str, unit: str, tried: Tried) -> str | None:
        entry = self.lookup(host, unit, tried)
        return entry.why if entry else None

    def hold(self, host: str, unit: str, tried: Tried, why: str, paths: Iterable[str] = ()) -> None:
        """Hold `tried` on this host's unit: `paths` (the files rolled back) are not written again, and nothing
        they alone bring (a restart, reload, daemon-reload or re-enable) happens, until the specs change."""
        if len(self._held) + len(self._stopped) < MAX_ENTRIES or (host, unit) in self._held:
            self._held[(host, unit)] = Entry(tried, frozenset(paths), why[:MAX_WHY], time.time())
            self._save()

    # -- a unit's rollout ------------------------------------------------------------------
    def stop(self, unit: str, config: Config, why: str) -> None:
        """A member was rolled back: no other member's turn of `unit` begins on the same config."""
        if len(self._held) + len(self._stopped) < MAX_ENTRIES or unit in self._stopped:
            self._stopped[unit] = (config, why[:MAX_WHY], time.time())
            self._save()

    def stopped(self, unit: str, config: Config) -> str | None:
        stopped = self._stopped.get(unit)
        if stopped is None:
            return None
        if stopped[0] != config:
            del self._stopped[unit]
            self._save()
            return None
        return stopped[1]

    def hold_back(self, host: DesiredHost, actions: tuple[Action, ...]) -> tuple[tuple[Action, ...], list[str]]:
        """The actions without what a held config would bring again, and why: the writes of its rolled-back files,
        and every restart, reload, daemon-reload or re-enable those files alone bring, whichever unit reads them. A
        held file stays as it is on the host, so the other units reading it have nothing new to read: restarting
        them pass after pass would change nothing but their uptime. What else brings an action still does (a
        unit's own new file, a unit found stopped, systemd asking for a daemon-reload)."""
        paths: set[str] = set()
        why: list[str] = []
        for unit in host.units:
            if (host.name, unit.name) not in self._held:  # nearly always: no file of it is hashed
                continue
            entry = self.lookup(host.name, unit.name, fingerprint(host, unit.restart_on))
            if entry is not None:
                paths |= entry.paths
                why.append(entry.why + HELD)
        if not paths:
            return actions, why
        return without(actions, paths), why

    def __len__(self) -> int:
        return len(self._held) + len(self._stopped)

    # -- carried elsewhere -------------------------------------------------------------------
    def to_json(self, max_bytes: int | None = None) -> str:
        """The whole memory as JSON; with `max_bytes`, the newest entries that fit in it."""
        held: list[dict[str, Any]] = [
            {"host": h, "unit": u, "tried": sorted(e.tried), "paths": sorted(e.paths), "why": e.why, "at": e.at}
            for (h, u), e in sorted(self._held.items())
        ]
        stopped: list[dict[str, Any]] = [
            {"unit": u, "config": sorted(config), "why": why, "at": at}
            for u, (config, why, at) in sorted(self._stopped.items())
        ]
        text = _document(held, stopped)
        if max_bytes is None or len(text) <= max_bytes:
            return text
        kept: list[tuple[str, dict[str, Any]]] = []
        size = len(_document([], []))
        for kind, entry in sorted(
            [("held", e) for e in held] + [("stopped", e) for e in stopped], key=lambda k: -float(k[1]["at"])
        ):
            cost = len(json.dumps(entry, separators=(",", ":"))) + 1
            if size + cost > max_bytes:
                break
            kept.append((kind, entry))
            size += cost
        return _document([e for k, e in kept if k == "held"], [e for k, e in kept if k == "stopped"])

    def merge(self, text: str | bytes, source: str) -> None:
        """Take in what another copy remembers (another replica's, through etcd; the file at start): of two
        entries for the same unit the newer wins. Raises ValueError on anything but the shape `to_json` writes."""
        if len(text) > MAX_FILE_BYTES:
            raise ValueError(f"{source}: larger than {MAX_FILE_BYTES} bytes")
        held, stopped = _parse(json.loads(text))
        moved = False
        for key, entry in held.items():
            mine = self._held.get(key)
            if (mine is None and len(self) < MAX_ENTRIES) or (mine is not None and entry.at > mine.at):
                self._held[key], moved = entry, True
        for unit, item in stopped.items():
            have = self._stopped.get(unit)
            if (have is None and len(self) < MAX_ENTRIES) or (have is not None and item[2] > have[2]):
                self._stopped[unit], moved = item, True
        if moved:
            self._save()

    def _load(self, path: Path) -> None:
        try:
            with open(path, "rb") as f:
                text = f.read(MAX_FILE_BYTES + 1)
            self.merge(text, str(path))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:  # damaged: set aside, so the next save does not lose the evidence
            log.error("held rollbacks unreadable: starting without them", path=str(path), error=str(exc)[:300])
            try:
                os.replace(path, path.with_name(path.name + ".damaged"))
            except OSError:
                pass

    def _save(self) -> None:
        self.changed += 1
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(self.to_json())
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:  # the memory in this process still holds; a restart would try once more
            log.error("held rollbacks not saved", path=str(self.path), error=str(exc)[:300])


def _pairs(value: Any, width: int) -> frozenset[Any]:
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise ValueError("a list of entries expected")
    out = []
    for item in value:
        if not (isinstance(item, list) and len(item) == width and all(isinstance(v, str) for v in item)):
            raise ValueError(f"entries of {width} strings expected")
        out.append(tuple(item))
    return frozenset(out)


def _document(held: list[dict[str, Any]], stopped: list[dict[str, Any]]) -> str:
    return json.dumps({"version": 1, "held": held, "stopped": stopped}, separators=(",", ":"))


def _at(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e11:
        raise ValueError("an entry's time must be a number of seconds")
    return float(value)


def _paths(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or len(value) > MAX_ENTRIES or not all(isinstance(p, str) for p in value):
        raise ValueError("paths must be a list of strings")
    return frozenset(value)


def _parse(raw: Any) -> tuple[dict[tuple[str, str], Entry], dict[str, tuple[Config, str, float]]]:
    if not isinstance(raw, dict) or raw.get("version") != 1:
        raise ValueError("not a held-rollbacks document of version 1")
    held_in, stopped_in = raw.get("held", []), raw.get("stopped", [])
    if (
        not isinstance(held_in, list)
        or not isinstance(stopped_in, list)
        or len(held_in) + len(stopped_in) > MAX_ENTRIES
    ):
        raise ValueError("held and stopped must be lists of at most MAX_ENTRIES")
    held: dict[tuple[str, str], Entry] = {}
    for e in held_in:
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("host", "unit", "why")):
            raise ValueError("a held entry needs host, unit and why")
        tried = _pairs(e.get("tried"), 2)
        held[(e["host"], e["unit"])] = Entry(tried, _paths(e.get("paths")), e["why"][:MAX_WHY], _at(e.get("at")))
    stopped: dict[str, tuple[Config, str, float]] = {}
    for e in stopped_in:
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("unit", "why")):
            raise ValueError("a stopped entry needs unit and why")
        stopped[e["unit"]] = (_pairs(e.get("config"), 3), e["why"][:MAX_WHY], _at(e.get("at")))
    return held, stopped
