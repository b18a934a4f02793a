"""Daemon settings: where the specs are, how often to resync, how hard to back off, where to listen.

Plain pydantic, built by the CLI from flags; the defaults are the documented ones.
"""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reconciler.tuning.overlay import default_state_dir


class DaemonSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec_dir: Path = Path("specs")
    resync_interval: float = Field(30.0, gt=0, description="seconds between passes over every host")
    resync_jitter: float = Field(0.1, ge=0, lt=1, description="fraction of the interval added or removed at random")
    workers: int = Field(16, ge=1, description="hosts reconciled at the same time")
    backoff_base: float = Field(1.0, gt=0, description="first retry delay after a failed pass, seconds")
    backoff_cap: float = Field(300.0, gt=0, description="longest retry delay, seconds")
    debounce_ms: int = Field(100, ge=0, description="spec edits closer than this are one change")
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(9479, ge=0, le=65535)
    verify_wait: float = Field(60.0, ge=0, description="seconds a pass waits for health checks after applying")
    shutdown_timeout: float = Field(120.0, gt=0, description="seconds SIGTERM waits for applies in flight")
    state_dir: Path = Field(
        default_factory=lambda: default_state_dir(), description="where the etcd tuning overlay is kept"
    )
    connect_attempts: int = Field(2, ge=1, description="SSH connection attempts within one pass")
    leader_election: bool = Field(False, description="elect one leader among replicas on the cluster's etcd")
    name: str = Field(default_factory=socket.gethostname, min_length=1, description="this replica's name")
    leader_ttl: int = Field(15, ge=2, le=300, description="lease asked of etcd, seconds (it may grant more)")
    renew_deadline: float = Field(10.0, gt=0, description="a leader not renewed for this long stops acting")
    leader_retry: float = Field(2.0, gt=0, description="seconds between campaigns / renewals")
    accept_specs: bool = Field(False, description="as leader, publish this replica's specs as the agreed ones")

    @model_validator(mode="after")
    def _leader_timings(self) -> DaemonSettings:
        if not self.leader_retry * 2 <= self.renew_deadline < self.leader_ttl:
            raise ValueError(
                f"leader timings: retry ({self.leader_retry:g} s) must be at most half the renew deadline "
                f"({self.renew_deadline:g} s), and that below the lease ({self.leader_ttl} s)"
            )
        return self
