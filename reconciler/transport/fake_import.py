"""What an in-process host (transport.fake.SimHost) answers to `reconciler import`'s four read-only scripts
(adopt.discover): the unit list with the certificates beside it, the unit files' canonical paths, the read of files
within the byte budget it is given, the certificate probe. Answered from the host's own files, directories, units,
aliases and linked directories, so a host built by hand in memory is imported and then converged as one object.

A script is known by its first line: transport sits below adopt and imports nothing of it. The largest file the
read script sends is read from the script itself (adopt.discover.MAX_FILE is written into it). A hostile host is
the same host with its knobs set: `links` (symlinks, never read), `canonical_answer` (any text for the canonical
paths), `ignore_budget` (every file sent whole: the connection cuts it off); `read` and `probed` record what import
asked for. tests/unit/transport/test_fake_import.py holds these answers to the real scripts' on the same files.
"""

from __future__ import annotations

import base64
import posixpath
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.transport.fake import SimHost

CERT_HEAD = b"-----BEGIN CERTIFICATE-----"
_MAX_FILE = re.compile(r'\[ "\$size" -le ([0-9]+) \]')


def answer_import(host: SimHost, script: str, args: list[str]) -> tuple[int, bytes, bytes]:
    """`sh -c SCRIPT reconciler-import ARGS...` on `host`: (exit status, stdout, stderr)."""
    first = script.strip().split("\n", 1)[0]
    answer = _SCRIPTS.get(first)
    if answer is None:
        return 127, b"", f"fake host: import script not emulated: {first[:80]!r}\n".encode()
    return 0, answer(host, script, args).encode("utf-8", "surrogateescape"), b""


def _units(host: SimHost, script: str, args: list[str]) -> str:
    """`systemctl show -p FIELDS -- UNITS...`, then "@@CERTS" and the certificates in the directory asked."""
    fields, cert_dir, wanted = args[0].split(","), args[1], args[2:]
    blocks = []
    for name in wanted:
        props = host.unit_properties(name)
        blocks.append("".join(f"{key}={props[key]}\n" for key in fields))
    in_dir = sorted(p for p in host.files if posixpath.dirname(p) == cert_dir)
    globbed = [p for suffix in (".pem", ".crt") for p in in_dir if p.endswith(suffix)]
    certs = [p for p in globbed if _certificate(host, p)][:256]
    return "\n".join(blocks) + "@@CERTS\n" + "".join(p + "\n" for p in certs)


def _canonical(host: SimHost, script: str, args: list[str]) -> str:
    if host.canonical_answer is not None:
        return host.canonical_answer
    return "".join(host.real(p) + "\0" for p in args)


def _read(host: SimHost, script: str, args: list[str]) -> str:
    """Each file's answer while the budget (the first argument) takes its content, then "@@BUDGET <path>"."""
    found = _MAX_FILE.search(script)
    assert found is not None, "the read script names its largest file"
    largest, left, paths = int(found.group(1)), int(args[0]), args[1:]
    host.read += paths
    out: list[str] = []
    for p in paths:
        answer, size = _read_one(host, p, largest)
        if size is not None and size <= largest and not host.ignore_budget:
            if size > left:
                return "".join(out) + f"@@BUDGET {p}\n"
            left -= size
        out.append(answer)
    return "".join(out)


def _read_one(host: SimHost, p: str, largest: int) -> tuple[str, int | None]:
    """One path's answer, and the size of its content when it is a regular file."""
    d = posixpath.dirname(p)
    if host.dir_links.get(d, d) != d:
        return f"@@F {p} dirlink\n", None
    if p in host.links:
        return f"@@F {p} link\n", None
    if p in host.dirs:
        mode, owner, group = host.dirs[p]
        return f"@@F {p} dir 0 {mode:o} {_b64(owner)} {_b64(group)}\n", None
    f = host.files.get(p)
    if f is None:
        return f"@@F {p} missing\n", None
    sent = f.content if host.ignore_budget or len(f.content) <= largest else b""  # no larger file is read
    head = f"@@F {p} file {len(f.content)} {f.mode:o} {_b64(f.owner)} {_b64(f.group)}"
    return f"{head}\n{base64.b64encode(sent).decode()}\n", len(f.content)


def _probe(host: SimHost, script: str, args: list[str]) -> str:
    host.probed += args
    return "".join(p + "\n" for p in args if _certificate(host, p))


def _certificate(host: SimHost, path: str) -> bool:
    f = host.files.get(path)
    return path not in host.links and f is not None and f.content.startswith(CERT_HEAD)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


_SCRIPTS: dict[str, Callable[[SimHost, str, list[str]], str]] = {
    "fields=$1; dir=$2; shift 2": _units,
    """for p in "$@"; do printf '%s/%s\\0' "$(realpath -e -- "$(dirname -- "$p")")" "$(basename -- "$p")"; done""": (
        _canonical
    ),
    "left=$1; shift": _read,
    'for p in "$@"; do': _probe,
}
