"""Snapshots encrypted at rest with age (the `age` command: Debian's package, the reference implementation).

Owns the two directions. `Encrypting`: bytes written to it reach a file already opened for them (exclusively, mode
0600) encrypted to the EtcdBackup's recipients (age public keys), so that the snapshot's plain bytes never touch this
machine's disk; `decrypted`: a kept snapshot read back with the operator's identity file (the private key, given by
the person restoring, never kept by reconciler), at most `max_bytes` of it. Every value is an argument of its own:
no shell.
"""

from __future__ import annotations

import subprocess

from reconciler.terminal import printable

SUFFIX = ".age"


class AgeError(Exception):
    """age could not do it: why, in one line."""


def _said(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    return printable(lines[-1] if lines else "no message")[:300]


class Encrypting:
    def __init__(self, out_fd: int, recipients: tuple[str, ...]):
        argv = ["age", "--encrypt"]
        for r in recipients:
            argv += ["--recipient", r]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out_fd, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise AgeError("the age command is not installed on this machine (Debian: age)") from None

    def write(self, chunk: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # age ended early: close() says why

    def close(self) -> None:
        """All written: AgeError unless age wrote the whole file."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        err = self.proc.stderr.read(65536)
        if self.proc.wait(timeout=300) != 0:
            raise AgeError(f"age could not encrypt the snapshot: {_said(err)}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def decrypted(path: str, identity: str, max_bytes: int) -> bytes:
    """The plain bytes of an age-encrypted snapshot, read with the identity file `identity`; AgeError otherwise."""
    try:
        done = subprocess.run(
            ["age", "--decrypt", "--identity", identity, "--", path], capture_output=True, timeout=3600, check=False
        )
    except FileNotFoundError:
        raise AgeError("the age command is not installed on this machine (Debian: age)") from None
    if done.returncode != 0:
        raise AgeError(f"age could not decrypt it with {identity}: {_said(done.stderr)}")
    if len(done.stdout) > max_bytes:
        raise AgeError(f"it decrypts to more than {max_bytes} bytes")
    return done.stdout
