"""Which flags a component's binary accepts, as the binary itself says: its `--help`, and for a flag its help does
not list (a deprecated or hidden one), its answer to that flag alone.

Owns reading a `--help` text into flag names (Go's pflag, as the kube components print it, and etcd's own usage
text), reading a probe's answer (`<binary> --<name>= --help`: refused as unknown, or not), and which flags of a
service the book does not know. Pure: the texts arrive from `observe.programs`, which asks the host once per
binary checksum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from reconciler.components.systemd import Service, Setting

CHECKED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")  # programs whose flags are asked
MIN_LISTED = 10  # a --help that lists fewer flags is not a flag list (a stand-in, a wrapper script): not checked

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# `      --etcd-servers strings   List of ...`, `  -v, --v Level ...` (pflag); `  --name 'default'` (etcd's usage)
_LISTED = re.compile(r"^[ \t]{1,16}(?:-[A-Za-z0-9], )?--([A-Za-z0-9][A-Za-z0-9._-]{0,99})(?=[ \t=\[,]|$)", re.M)
# what pflag (kube) and Go's flag package (etcd) say of a flag they do not define
_UNKNOWN = re.compile(r"unknown flag: --|flag provided but not defined: -")


def listed(help_text: str) -> frozenset[str]:
    """The flag names a `--help` text lists."""
    return frozenset(_LISTED.findall(help_text))


def refused(probe_answer: str) -> bool:
    """Whether the answer to `<binary> --<name>= --help` refuses the flag as unknown. A flag it knows ends in its
    help (exit 0), or in a complaint about the empty value: either way not "unknown"."""
    return _UNKNOWN.search(probe_answer) is not None


@dataclass
class FlagBook:
    """What one binary (by checksum) said: the flags its help lists, and its answers to flags probed one by one."""

    version: str = ""  # its first line of `--version`-like text, if the help gave one (shown in errors)
    visible: frozenset[str] = frozenset()
    probed: dict[str, bool] = field(default_factory=dict)  # name -> accepted

    @property
    def lists_flags(self) -> bool:
        return len(self.visible) >= MIN_LISTED

    def unknown_to(self, names: set[str]) -> set[str]:
        """Of `names`, those neither listed nor probed yet: what to ask the binary next."""
        return {n for n in names if n not in self.visible and n not in self.probed}

    def accepts(self, name: str) -> bool:
        return name in self.visible or self.probed.get(name, True)


def flag_words(svc: Service) -> dict[str, Setting]:
    """The `--name` flags of a service's argv (single-dash words are left alone: pflag reads them as shorthands,
    Go's flag package as names; neither is checked), by name, each with where it was written."""
    out: dict[str, Setting] = {}
    for word in svc.argv[1:]:
        if word.value == "--":
            break  # what follows is positional
        if word.value.startswith("--") and len(word.value) > 2:
            name = word.value[2:].partition("=")[0]
            out.setdefault(name, Setting(word.value, word.path, word.line, word.key, f"--{name}"))
    return out


def checkable(names: set[str]) -> tuple[set[str], set[str]]:
    """(names that can be asked, names that cannot be flags at all: refused without asking)."""
    good = {n for n in names if NAME.fullmatch(n)}
    return good, names - good
