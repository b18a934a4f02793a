"""A fleet of emulated masters behind real SSH on loopback: one asyncssh server process, one port per host.

    python -m bench.fleetsim --hosts 1000 --base-port 23000 --dir /tmp/fleet

Writes into --dir: the client key (id_ed25519), known_hosts (one line per host: host keys are verified
as with real hosts), then prints `ready` once every port listens. Each host is a `reconciler.transport.fake.SimHost`
(files, units and health in memory). Standard input takes one JSON command per line, answered with one
JSON line: {"cmd": "stats"} (commands answered per host), {"cmd": "edit", "path": P, "content": C} (a hand
edit of P on every host). Loopback only: it binds 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
from functools import partial
from pathlib import Path

import asyncssh

from reconciler.transport.fake import SimHost, split_command


async def _handle(host: SimHost, process: asyncssh.SSHServerProcess[bytes]) -> None:
    argv = split_command(process.command or "")
    stdin = await process.stdin.read() if "reconciler-write" in argv[3:4] else b""
    status, out, err = host.execute(argv, stdin)
    process.stdout.write(out)
    process.stderr.write(err)
    process.exit(status)


def write_keys(workdir: Path, n: int, base_port: int) -> tuple[asyncssh.SSHKey, asyncssh.SSHAuthorizedKeys]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    workdir.mkdir(parents=True, exist_ok=True)
    client_key.write_private_key(str(workdir / "id_ed25519"))
    (workdir / "id_ed25519").chmod(0o600)
    public = host_key.export_public_key().decode().strip()
    (workdir / "known_hosts").write_text("".join(f"[127.0.0.1]:{base_port + i} {public}\n" for i in range(n)))
    return host_key, asyncssh.import_authorized_keys(client_key.export_public_key().decode())


async def serve(n: int, base_port: int, workdir: Path) -> None:
    host_key, authorized = write_keys(workdir, n, base_port)
    hosts = [SimHost(f"sim-{i:04d}") for i in range(n)]
    servers = [
        await asyncssh.listen(
            "127.0.0.1",
            base_port + i,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            encoding=None,
            process_factory=partial(_handle, host),
            keepalive_interval=0,
        )
        for i, host in enumerate(hosts)
    ]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        request = json.loads(line)
        if request["cmd"] == "stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            answer = {"commands": {h.name: h.commands for h in hosts}, "cpu_seconds": usage.ru_utime + usage.ru_stime}
        elif request["cmd"] == "edit":
            for host in hosts:
                host.hand_edit(request["path"], request["content"].encode())
            answer = {"edited": len(hosts)}
        else:
            answer = {"error": f"unknown command {request['cmd']!r}"}
        print(json.dumps(answer), flush=True)
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--base-port", type=int, default=23000)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one listening socket and one connection per host
    asyncio.run(serve(args.hosts, args.base_port, args.dir))


if __name__ == "__main__":
    main()
