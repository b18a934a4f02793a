"""The tuner's decision as desired state: an overlay file in the daemon's state directory.

`Overlay` holds the raised etcd values and why; `load`/`save` keep it in `<state>/etcd-tuning.json`
(atomic replace, so a crash never leaves half a file), so it survives daemon restarts and `reconciler
plan` can show it. Spec loading applies it (`as_env`): an operator's higher spec value wins.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reconciler.components.etcd import ELECTION_KEY, HEARTBEAT_KEY

FILENAME = "etcd-tuning.json"


@dataclass(frozen=True)
class Overlay:
    heartbeat_ms: int
    election_ms: int
    decided_at: float
    reason: str = ""
    cause: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier decisions, oldest first

    def as_env(self) -> dict[str, int]:
        return {HEARTBEAT_KEY: self.heartbeat_ms, ELECTION_KEY: self.election_ms}


def default_state_dir() -> Path:
    """$RECONCILER_STATE_DIR, else /var/lib/reconciler (systemd's StateDirectory for the service)."""
    return Path(os.environ.get("RECONCILER_STATE_DIR") or os.environ.get("STATE_DIRECTORY") or "/var/lib/reconciler")


def path_in(state_dir: Path) -> Path:
    return state_dir / FILENAME


def load(state_dir: Path) -> Overlay | None:
    """The saved overlay, or None when there is none; raises ValueError on a damaged file."""
    path = path_in(state_dir)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable tuning overlay: {exc}") from exc
    try:
        return Overlay(
            int(raw["heartbeat_ms"]),
            int(raw["election_ms"]),
            float(raw["decided_at"]),
            str(raw.get("reason", "")),
            str(raw.get("cause", "")),
            list(raw.get("history", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed tuning overlay: {exc}") from exc


def save(state_dir: Path, overlay: Overlay) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=f".{FILENAME}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(overlay), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path_in(state_dir))
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def clear(state_dir: Path) -> bool:
    try:
        path_in(state_dir).unlink()
        return True
    except FileNotFoundError:
        return False
