"""What an in-process host (transport.fake.SimHost) answers to observe/programs.sh: the checksums of the
components' binaries, and what a binary says of its flags (its --version, its --help, its answer to each probed
flag), from the host's `programs`. A path the host has no entry for is a stand-in that lists no flags (as the
testbed's are); an entry of None is a binary that is not there. tests/unit/transport/test_fake_programs.py holds
these answers to the real script's, run on a binary written for the purpose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.components.flags import listed

if TYPE_CHECKING:
    from reconciler.transport.fake import SimHost


@dataclass(frozen=True)
class SimProgram:
    help: str = "stand-in: accepts any flag\n"
    version: str = ""
    hidden: frozenset[str] = frozenset()  # flags it accepts without listing them (deprecated ones)

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.version}\0{self.help}\0{sorted(self.hidden)}".encode()).hexdigest()

    def probe(self, name: str) -> str:
        if name in self.hidden:
            return f"Flag --{name} has been deprecated\n{self.help}"
        if name in listed(self.help):
            return f'Error: invalid argument "" for "--{name}" flag\n'
        return f"Error: unknown flag: --{name}\n"


STANDIN = SimProgram()


def answer_programs(host: SimHost, args: list[str]) -> tuple[int, bytes, bytes]:
    """`bash -c SCRIPT reconciler-programs MODE ARGS...` on `host`: (exit status, stdout, stderr)."""
    mode, rest = (args[0], args[1:]) if args else ("", [])
    out: list[str] = []
    if mode == "sum":
        for path, known in zip(rest[::2], rest[1::2]):
            program = host.programs.get(path, STANDIN)
            stamp = f"1:{abs(hash(program)) % 10**9}:1:1.0:1.0" if program else "-"
            said = "same" if program and stamp == known else program.digest if program else "-"
            out.append(f"@@P {stamp} {said} {path}")
    elif mode == "ask" and len(rest) >= 2:
        path, digest, names = rest[0], rest[1], rest[2:]
        program = host.programs.get(path, STANDIN)
        host.asked.append((path, tuple(names)))
        if program is None or program.digest != digest:
            return 0, b"@@CHANGED\n", b""
        if names[:1] == ["+help"]:
            names = names[1:]
            out += ["@@VERSION", program.version, "@@HELP", program.help]
        for name in names:
            out += [f"@@PROBE {name}", program.probe(name)]
        out.append("@@END")
    else:
        return 2, b"", b"@@ERR unknown mode\n"
    return 0, ("\n".join(out) + "\n").encode(), b""
