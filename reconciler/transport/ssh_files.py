"""Local files the SSH transport reads: known_hosts, private keys and ssh config files.

Owns reading them bounded (a regular file of at most MAX_SSH_FILE bytes: a fifo is not waited on, /dev/zero not
read to the end of memory), parsing each once and again only when it changes, the checks ssh makes (a private key
of ours that others may read is refused; a config file must be ours or root's and writable by no one else), and
telling a passphrase-protected key from a broken one. Errors name the file and what is wrong with it, never a line
of it: pointed at the wrong file (a shadow file, a token), asyncssh's own message would quote what it could not
parse. Used by transport.ssh and transport.ssh_config.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import asyncssh

T = TypeVar("T")

MAX_SSH_FILE = 1024 * 1024  # a known_hosts, key or ssh config file read at most


class UnusableFile(ValueError):
    """A local file the transport refuses; the message says why, never what the file holds."""


class UnprotectedKey(UnusableFile):
    pass


class ParsedFiles:
    """Files parsed once and again only when they change on disk. asyncssh parses a known_hosts file on every
    connect otherwise: with one known_hosts line per host, O(hosts^2) for a fleet's connects.
    One per connector (`transport.session.ssh_connector`), shared by its connects."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, tuple[str, ...]], tuple[tuple[tuple[int, int], ...], object]] = {}

    def get(self, kind: str, path: str | Sequence[str], read: Callable[..., T]) -> T:
        """`read(path)` (or `read(paths)` for several files parsed together), cached until one of them changes."""
        paths = (path,) if isinstance(path, str) else tuple(path)
        stamps = tuple((st.st_mtime_ns, st.st_size) for st in (os.stat(p) for p in paths))
        hit = self._files.get((kind, paths))
        if hit is not None and hit[0] == stamps:
            return cast(T, hit[1])
        value = read(path)
        self._files[(kind, paths)] = (stamps, value)
        return value


def read_small(path: str) -> tuple[bytes, os.stat_result]:
    """A regular file of at most MAX_SSH_FILE bytes, and its status as read (from the open file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnusableFile("not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > MAX_SSH_FILE:
                raise UnusableFile(f"larger than {MAX_SSH_FILE} bytes")
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def read_config(path: str) -> tuple[bytes, tuple[int, int]]:
    """An ssh config file's bytes and identity (device, inode), checked as ssh checks ~/.ssh/config: owned by us
    or root, writable by no one else (whoever can write it chooses where we connect and with which key)."""
    data, st = read_small(path)
    if (st.st_uid not in (0, os.getuid())) or st.st_mode & 0o022:
        raise UnusableFile(
            f"bad owner or permissions (owner uid {st.st_uid}, mode {st.st_mode & 0o777:04o}): an ssh config "
            "must be owned by you or root and writable by no one else, as ssh requires"
        )
    return data, (st.st_dev, st.st_ino)


_PEM_BOUNDARY = re.compile(rb"-----(BEGIN|END) [A-Z0-9 ]{1,64}-----\s*")


def pem_checked(data: bytes) -> bytes:
    """Key text whose PEM boundary lines are what PEM allows (asyncssh turns a BEGIN line into a pattern)."""
    for line in data.splitlines():
        if line.startswith(b"-----") and not _PEM_BOUNDARY.fullmatch(line):
            raise UnusableFile("a PEM boundary line that is not -----BEGIN/END <LABEL>-----")
    return data


def check_key_mode(path: str) -> None:
    """ssh's rule (sshkey_perm_ok): a private key of ours that others may read is refused, not used."""
    st = os.stat(path)
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        raise UnprotectedKey(
            f"permissions {st.st_mode & 0o777:04o} are too open: a private key must not be "
            "accessible by others (chmod 600), as ssh requires"
        )


@dataclass(frozen=True)
class LoadedKey:
    """An identity file: its key, or (passphrase-protected) None and its public key when that can be known
    without the passphrase (an OpenSSH-format key carries it in the clear; else a `.pub` beside it)."""

    path: str
    key: asyncssh.SSHKey | None
    public: bytes | None  # the public key blob, as an agent lists it

    @property
    def encrypted(self) -> bool:
        return self.key is None


def load_key(path: str) -> LoadedKey:
    """Raises UnusableFile (or OSError) naming what is wrong, never quoting the file."""
    check_key_mode(path)
    data = pem_checked(read_small(path)[0])
    try:
        key = asyncssh.import_private_key(data)
    except asyncssh.KeyImportError as exc:
        if not str(exc).startswith("Passphrase"):  # asyncssh's own test for an encrypted key (load_keypairs)
            raise UnusableFile("not a private key asyncssh can read") from None
        return LoadedKey(path, None, _openssh_public(data) or _pub_beside(path))
    except Exception:  # whatever the file made asyncssh raise (e.g. re.error): named by kind, never quoted
        raise UnusableFile("not a private key asyncssh can read") from None
    return LoadedKey(path, key, key.public_data)


_OPENSSH_KEY = re.compile(rb"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----", re.S)


def _openssh_public(data: bytes) -> bytes | None:
    """The first public key of an OpenSSH-format private key (PROTOCOL.key: stored unencrypted before the
    encrypted part)."""
    found = _OPENSSH_KEY.search(data)
    if not found:
        return None
    try:
        raw = base64.b64decode(b"".join(found.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    magic = b"openssh-key-v1\0"
    if not raw.startswith(magic):
        return None
    pos = len(magic)

    def string() -> bytes:
        nonlocal pos
        size = int.from_bytes(raw[pos : pos + 4], "big")
        if pos + 4 + size > len(raw):
            raise ValueError("truncated")
        pos += 4 + size
        return raw[pos - size : pos]

    try:
        for _ in range(3):  # cipher name, kdf name, kdf options
            string()
        if int.from_bytes(raw[pos : pos + 4], "big") < 1:
            return None
        pos += 4
        return string() or None
    except ValueError:
        return None


def _pub_beside(path: str) -> bytes | None:
    try:
        return asyncssh.import_public_key(read_small(path + ".pub")[0]).public_data
    except Exception:  # none, or not a public key: the public key stays unknown
        return None


def load_known_hosts(paths: Sequence[str]) -> asyncssh.SSHKnownHosts:
    """One or several known_hosts files, parsed together."""
    text = "\n".join(read_small(p)[0].decode("utf-8", "replace") for p in paths)
    return asyncssh.import_known_hosts(text)


def why(exc: BaseException, otherwise: str) -> str:
    """What to say about a file that could not be used: our own reasons, the system's, or `otherwise` (never
    an exception text that could quote the file)."""
    if isinstance(exc, UnusableFile):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return otherwise
