"""`reconciler init DIR`: the example specs written into a new spec directory, and the daemon's systemd unit for it.

The examples are the tree's specs/ and deploy/systemd/reconciler.service: a wheel carries a copy made when it is
built (setup.py: reconciler/examples/), a checkout reads them where they are. The unit is printed on stdout (so
that `reconciler init DIR > /etc/systemd/system/reconciler.service` installs it) with its ExecStart naming the
`reconciler` this process is and its spec directory DIR; what was written, what to do next and what the unit's
sandbox would hide go to stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

UNIT_NAME = "reconciler.service"
SHIPPED_SPEC_DIR = "/etc/reconciler/specs"  # what the shipped unit names
SHIPPED_READ_ONLY = "ReadOnlyPaths=/etc/reconciler"
# What the unit's sandbox hides from the daemon (ProtectHome=yes, PrivateTmp=yes), besides what its user
# `reconciler` may not read
HIDDEN = (Path("/root"), Path("/home"), Path("/run/user"), Path("/tmp"), Path("/var/tmp"))


class ExamplesMissing(Exception):
    """Neither the wheel's copy of the examples nor a checkout's: a broken install."""


def examples() -> tuple[Traversable, str]:
    """The example spec directory and the unit's text: the installed package's copy, else the checkout's."""
    packaged = resources.files("reconciler") / "examples"
    if packaged.is_dir():
        return packaged / "specs", (packaged / UNIT_NAME).read_text()
    checkout = Path(__file__).resolve().parents[1]
    unit = checkout / "deploy/systemd" / UNIT_NAME
    if (checkout / "specs").is_dir() and unit.is_file():
        return checkout / "specs", unit.read_text()
    raise ExamplesMissing(f"the example specs are not installed with reconciler ({packaged} is missing): reinstall it")


def spec_files(directory: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    """Every *.yaml and *.yml under `directory`, as (relative path, file), sorted."""
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from spec_files(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith((".yaml", ".yml")):
            yield f"{prefix}{entry.name}", entry


def write_specs(source: Traversable, target: Path) -> list[str]:
    """The example specs written into `target` (created; it must not exist or be empty); their relative paths."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty directory: init writes into a new or empty one")
    written = []
    for name, entry in spec_files(source):
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(entry.read_bytes())
        written.append(name)
    return written


def executable() -> list[str]:
    """The `reconciler` this process runs as, as an absolute path: the console script it was started as, else the
    one beside this interpreter, else the first on PATH; failing all, this interpreter with `-m reconciler.cli`."""
    argv0 = Path(sys.argv[0])
    candidates = [argv0] if argv0.name == "reconciler" else []
    candidates.append(Path(sys.executable).parent / "reconciler")
    on_path = shutil.which("reconciler")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate.resolve())]
    return [str(Path(sys.executable).absolute()), "-m", "reconciler.cli"]


def _specifiers(text: str) -> str:
    """A value as systemd reads it after expanding specifiers: `%` doubled."""
    return text.replace("%", "%%")


def _word(text: str, *, exec_line: bool = False) -> str:
    """One word of a unit's command line or path list, quoted as systemd unquotes it where it must be."""
    text = _specifiers(text)
    if exec_line:
        text = text.replace("$", "$$")
    if re.fullmatch(r"[\w@%+=:,./$-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(template: str, command: list[str], spec_dir: Path) -> str:
    """The shipped unit with its ExecStart running `command` on `spec_dir` (absolute), its own header comment
    replaced by one saying so."""
    spec = str(spec_dir)
    lines = [
        "# The reconciler daemon, as `reconciler init` printed it: it runs " + " ".join(command) + ",",
        f"# specs in {spec}, SSH key and known_hosts in /etc/reconciler/ssh, state in /var/lib/reconciler.",
    ]
    body = template.splitlines()
    while body and body[0].startswith("#"):  # the shipped unit's header: how to install it
        body.pop(0)
    for line in body:
        if line.startswith("ExecStart="):
            rest = line.removeprefix("ExecStart=").partition(" ")[2]  # the shipped program's path, then its flags
            line = "ExecStart=" + " ".join(_word(w, exec_line=True) for w in command) + " " + rest
            line = line.replace(SHIPPED_SPEC_DIR, _word(spec, exec_line=True))
        elif line == SHIPPED_READ_ONLY and not spec_dir.is_relative_to("/etc/reconciler"):
            line = f"ReadOnlyPaths=-/etc/reconciler {_word(spec)}"
        elif line.startswith("Description="):
            line = line.replace(SHIPPED_SPEC_DIR, _specifiers(spec))
        lines.append(line)
    return "\n".join(lines) + "\n"


def hidden_from_the_unit(paths: dict[str, Path]) -> list[str]:
    """What the unit's daemon could not reach, each as a line saying why and what to do instead."""
    notes = []
    for what, path in paths.items():
        for where in (path, path.resolve()):
            hiding = next((h for h in HIDDEN if where.is_relative_to(h)), None)
            if hiding is not None:
                sandbox = "PrivateTmp=yes" if hiding.name == "tmp" else "ProtectHome=yes"
                instead = (
                    "keep the specs where it can read them, e.g. /etc/reconciler/specs"
                    if what == "the spec directory"
                    else "install reconciler where every user can run it, e.g. in a virtualenv under /opt (README: "
                    "Install)"
                )
                notes.append(
                    f"warning: the unit cannot reach {what} {where}: it is under {hiding}, which the unit's {sandbox} "
                    f"hides from the daemon (and its user `reconciler` may not read it); {instead}"
                )
                break
    return notes


def init_command(directory: Path, *, unit_only: bool = False, command: list[str] | None = None) -> int:
    """`reconciler init DIR`: 0 written (or, with `unit_only`, printed), 1 DIR is not new or empty."""
    source, template = examples()
    spec_dir = directory.absolute()
    command = command if command is not None else executable()
    named = [str(spec_dir), *command]
    if any(ord(c) < 32 or c == "\x7f" for c in "".join(named)):
        print(f"{named!r}: a control character cannot be written in a systemd unit", file=sys.stderr)
        return 1
    if not unit_only:
        try:
            written = write_specs(source, directory)
        except FileExistsError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{spec_dir}: wrote the example specs: {', '.join(written)}", file=sys.stderr)
        print(
            f"next: edit {spec_dir / 'inventory.yaml'} (the masters' addresses, identityFile, knownHosts) and the "
            f"values in the other files, then `reconciler validate {spec_dir}` and `reconciler plan {spec_dir}`",
            file=sys.stderr,
        )
    reach = {"the program": Path(command[0]), "its Python": Path(sys.executable), "the spec directory": spec_dir}
    for note in hidden_from_the_unit(reach):
        print(note, file=sys.stderr)
    print(
        f"the daemon's systemd unit for {spec_dir} follows: save it as /etc/systemd/system/{UNIT_NAME} "
        f"(`reconciler init --unit-only {spec_dir}` prints it again), then `systemctl daemon-reload && "
        "systemctl enable --now reconciler` (docs/daemon.md: Under systemd)",
        file=sys.stderr,
    )
    sys.stderr.flush()
    sys.stdout.write(render_unit(template, command, spec_dir))
    return 0
