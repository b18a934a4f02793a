"""The programs contract: the real script (reconciler/observe/programs.sh, run here with bash on a binary written
for the purpose, which answers as pflag does) and the in-memory host (transport/fake_programs.py) tell the same of
the same binary, as observe.programs reads them: its version, the flags its help lists, each probe's verdict; a
path that is not an executable file; a binary changed since its checksum was taken."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from reconciler.components.flags import FlagBook
from reconciler.observe.programs import SCRIPT, SEEN, _learn, _sums
from reconciler.transport.fake import SimHost
from reconciler.transport.fake_programs import SimProgram

pytestmark = pytest.mark.host

LISTED = [f"flag-{i}" for i in range(12)]
HIDDEN = frozenset({"old-flag"})
HELP = "Usage:\n  thing [flags]\n\n" + "".join(f"      --{n} string   what it does\n" for n in LISTED)
VERSION = "Thing v1.2.3"
BINARY = f"""#!/bin/sh
# answers as a pflag program does: every flag parsed before --help is acted on
for a in "$@"; do
  case "$a" in
  --help) printf '%s' '{HELP}'; exit 0 ;;
  --version) echo '{VERSION}'; exit 0 ;;
  {"|".join(f"--{n}=*" for n in [*LISTED, *HIDDEN])}) ;;
  *) echo "Error: unknown flag: ${{a%%=*}}"; exit 1 ;;
  esac
done
sleep 30  # serving: a probe must never get here
"""


def real(*args: str) -> str:
    proc = subprocess.run(
        ["bash", "-c", SCRIPT, "reconciler-programs", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def fake(host: SimHost, *args: str) -> str:
    status, out, err = host.execute(["bash", "-c", SCRIPT, "reconciler-programs", *args])
    assert status == 0, err
    return out.decode()


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "thing"
    path.write_text(BINARY)
    path.chmod(0o755)
    return path


def test_the_script_and_the_fake_tell_the_same_of_one_binary(binary: Path, tmp_path: Path) -> None:
    host = SimHost("h")
    program = SimProgram(help=HELP, version=VERSION, hidden=HIDDEN)
    host.programs[str(binary)] = program
    host.programs[str(tmp_path / "gone")] = None
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    paths = [str(binary), str(tmp_path / "gone")]
    fresh = [w for p in paths for w in (p, "-")]
    assert _sums(real("sum", *fresh), paths, "real") == {str(binary): digest, str(tmp_path / "gone"): None}
    assert _sums(fake(host, "sum", *fresh), paths, "fake") == {
        str(binary): program.digest,
        str(tmp_path / "gone"): None,
    }
    for who, answer in (("real", real), ("fake", lambda *a: fake(host, *a))):  # asked again with its stamp: not read
        stamp = SEEN[(who, str(binary))][0]
        line = answer("sum", str(binary), stamp).strip()
        assert line == f"@@P {stamp} same {binary}"
        assert _sums(line, paths, who) == {str(binary): digest if who == "real" else program.digest}
    books = []
    for answer in (
        real("ask", str(binary), digest, "+help"),
        fake(host, "ask", str(binary), program.digest, "+help"),
    ):
        book = FlagBook()
        _learn(book, answer)
        books.append(book)
    probes = ["old-flag", "no-such-flag", "flag-3"]
    _learn(books[0], real("ask", str(binary), digest, *probes))
    _learn(books[1], fake(host, "ask", str(binary), program.digest, *probes))
    assert books[0] == books[1]
    assert books[0].version == VERSION and books[0].visible == frozenset(LISTED) and books[0].lists_flags
    assert books[0].probed == {"old-flag": True, "no-such-flag": False, "flag-3": True}


def test_a_binary_changed_since_its_checksum_is_said_so(binary: Path) -> None:
    host = SimHost("h")
    host.programs[str(binary)] = SimProgram(help=HELP)
    assert real("ask", str(binary), "0" * 64, "+help").splitlines() == ["@@CHANGED"]
    assert fake(host, "ask", str(binary), "0" * 64, "+help").splitlines() == ["@@CHANGED"]


def test_a_path_that_is_a_directory_or_not_executable_has_no_checksum(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("#!/bin/sh\n")
    paths = [str(tmp_path), str(tmp_path / "plain")]
    assert _sums(real("sum", str(tmp_path), "-", str(tmp_path / "plain"), "-"), paths, "real") == {
        str(tmp_path): None,
        str(tmp_path / "plain"): None,
    }
