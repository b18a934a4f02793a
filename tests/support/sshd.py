"""SSH servers on 127.0.0.1 for transport tests (asyncssh, each with a host key of its own that clients verify):
a host that answers each command with the user it authenticated, and a bastion that forwards only to the
names it is given (a host "reachable only through the bastion": its name resolves nowhere else).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh


class LoopbackSSH:
    """`async with LoopbackSSH(keys) as server`: listening on 127.0.0.1:server.port, accepting public-key logins
    of `keys` (any user name); a command's stdout is `user=<name>`. `routes` makes it a bastion: a direct-tcpip
    request for one of its names is forwarded to that loopback port, anything else refused; every request is
    kept in `requested` (name, port)."""

    def __init__(self, keys: list[asyncssh.SSHKey], routes: dict[str, int] | None = None, output: bytes | None = None):
        """`output`: what every command writes on stdout instead (a large answer, for streaming)."""
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.keys, self.routes, self.output = keys, routes, output
        self.requested: list[tuple[str, int]] = []
        self.logins: list[str] = []
        self.port = 0

    def known_hosts_line(self, name: str = "127.0.0.1", port: int | None = None) -> str:
        """The known_hosts line for this server reached as `name` at `port` (its own by default)."""
        port = port or self.port
        where = name if port == 22 else f"[{name}]:{port}"
        return f"{where} {self.host_key.export_public_key().decode().strip()}\n"

    async def __aenter__(self) -> LoopbackSSH:
        outer = self
        authorized = asyncssh.import_authorized_keys("".join(k.export_public_key().decode() for k in self.keys))

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                self.conn = conn

            def begin_auth(self, username: str) -> bool:
                outer.logins.append(username)
                self.conn.set_authorized_keys(authorized)
                return True

            def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
                outer.requested.append((dest_host, dest_port))
                if outer.routes is None or dest_host not in outer.routes or dest_port != 22:
                    return False
                return self.conn.forward_connection("127.0.0.1", outer.routes[dest_host])

        async def answer(process: asyncssh.SSHServerProcess[bytes]) -> None:
            if (process.command or "").startswith("sleep "):  # a command that takes its time (holds its session)
                await asyncio.sleep(float((process.command or "").split()[1]))
            if outer.output is not None:
                try:
                    process.stdout.write(outer.output)
                    await process.stdout.drain()
                except (OSError, asyncssh.Error):
                    return  # the client closed the channel before reading it all, as it may
            else:
                process.stdout.write(f"user={process.get_extra_info('username')}".encode())
            process.exit(0)

        self.server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_factory=Server,
            server_host_keys=[self.host_key],
            encoding=None,
            process_factory=answer,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


def write_key(key: asyncssh.SSHKey, path: Path, passphrase: str | None = None) -> Path:
    """A private key file as ssh wants it (0600); with a passphrase, PKCS#8 (asyncssh writes OpenSSH's own
    encrypted format only with bcrypt installed)."""
    if passphrase is None:
        key.write_private_key(str(path))
    else:
        key.write_private_key(str(path), "pkcs8-pem", passphrase=passphrase)
    path.chmod(0o600)
    return path
