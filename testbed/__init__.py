"""Testbed: real systemd master hosts booted with systemd-nspawn over an overlay of `/`.

Public API: Testbed, TestHost (hosts.py), the network constants (layout.py), the PKI (pki.py).
docs/development.md "The testbed" says how it is built. Importing has no side effects; booting needs root.
"""

from testbed.hosts import SSHCommandError, Testbed, TestHost
from testbed.layout import BRIDGE, DEFAULT_STATE_DIR, GATEWAY, host_address, host_name, moved_address

__all__ = [
    "BRIDGE",
    "DEFAULT_STATE_DIR",
    "GATEWAY",
    "SSHCommandError",
    "TestHost",
    "Testbed",
    "host_address",
    "moved_address",
    "host_name",
]
