"""The hostile spec corpus: spec directories built to stop, hang or fool the loader, as data.

Each `Case` is a small spec directory (a Host document plus the hostile document or file) and what it must
give: a SpecError located at a file (and line), naming the limit or rule, or valid for the few that are. Cases
with `fixed` once got past the bounds (what went wrong, and what holds now). `build` writes a case's directory,
`run_child` runs a command under RLIMIT_AS and a timeout. Used by tests/unit/spec/test_isolate_hostile.py (the errors)
and bench/hostile.py (`reconciler validate` over every case, timed).
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOAL_SECONDS = 2.0
GOAL_RSS_MB = 200.0
CANARY = "s3cret-canary"

Content = str | bytes | Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One hostile spec directory and what loading it must give."""

    name: str
    files: dict[str, Content]  # path under the spec directory -> text, bytes, or a function that creates it
    expect: str | None  # a SpecIssue whose "field: message" contains this ("a|b": either); None: the spec is valid
    file: str | None = "a.yaml"  # ... reported in this file (under the spec directory; "." the directory; None any)
    located: bool = True  # ... at a line > 0
    line: int | None = None  # ... at exactly this line
    canary: str | None = None  # must appear in no issue (the secret of a sensitive File)
    fixed: str | None = None  # an escape found by attacking, now fixed: what went wrong (the case pins the fix)
    or_valid: bool = False  # loading it as valid is right too (once it is cheap)
    host: bool = True  # add hosts.yaml with one Host document
    bench_only: bool = False  # too slow for the unit tests by design (not an escape)
    note: str = field(default="", compare=False)


HOST = """\
apiVersion: reconciler/v1
kind: Host
metadata: {name: m1}
spec: {address: 198.18.0.11}
"""


def host_with_vars(vars_yaml: str) -> str:
    """A second Host (m2) with these vars (YAML lines)."""
    return (
        "apiVersion: reconciler/v1\nkind: Host\nmetadata: {name: m2}\nspec:\n  address: 198.18.0.12\n"
        "  vars:\n" + "".join(f"    {line}\n" for line in vars_yaml.splitlines())
    )


def file_doc(content: str, name: str = "f", path: str | None = None, extra: str = "") -> str:
    """A File document whose content (a template) is a JSON-quoted YAML string on line 6 (7 with one extra line)."""
    return (
        f"apiVersion: reconciler/v1\nkind: File\nmetadata: {{name: {name}}}\nspec:\n"
        f"  path: {json.dumps(path or '/etc/' + name)}\n{extra}  content: {json.dumps(content)}\n"
    )


def env_file(key: str, value: str = "x") -> str:
    return (
        f"apiVersion: reconciler/v1\nkind: File\nmetadata: {{name: f}}\nspec:\n  path: /etc/f\n"
        f"  env: {{{json.dumps(key)}: {json.dumps(value)}}}\n"
    )


def unit_doc(name: str, path: str | None = None, content: str = "[Service]\\nExecStart=/bin/true\\n") -> str:
    spec_path = f"  path: {json.dumps(path)}\n" if path else ""
    return (
        f"apiVersion: reconciler/v1\nkind: Unit\nmetadata: {{name: {json.dumps(name)}}}\nspec:\n{spec_path}"
        f'  content: "{content}"\n'
    )


def http_check(url: str) -> str:
    return f"apiVersion: reconciler/v1\nkind: HealthCheck\nmetadata: {{name: c}}\nspec:\n  http: {{url: {json.dumps(url)}}}\n"


def tcp_check(host: str) -> str:
    return (
        f"apiVersion: reconciler/v1\nkind: HealthCheck\nmetadata: {{name: c}}\nspec:\n"
        f"  tcp: {{host: {json.dumps(host)}, port: 80}}\n"
    )


def many_hosts(n: int) -> str:
    return "".join(
        f"---\n{{apiVersion: reconciler/v1, kind: Host, metadata: {{name: h{i}}}, spec: {{address: a{i}}}}}\n"
        for i in range(n)
    )


def many_files(n: int, same_path: bool = False) -> str:
    return "".join(
        f"---\n{{apiVersion: reconciler/v1, kind: File, metadata: {{name: f{i}}}, "
        f"spec: {{path: /f{0 if same_path else i}, content: x}}}}\n"
        for i in range(n)
    )


def alias_bomb(levels: int) -> str:
    """The "billion laughs": 9 ** levels values from a few hundred bytes (a document of its own)."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = ["a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{names[i - 1]}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def big_vars_file(size: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        line = b"    k%08d: '" + b"v" * 100 + b"'\n"
        head = host_with_vars("").encode()
        with path.open("wb") as f:
            f.write(head)
            i = 0
            while f.tell() < size:
                f.write(line % i)
                i += 1

    return write


def spec_files(n: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        for i in range(n):
            (path.parent / f"f{i:04d}.yaml").write_text(file_doc("x", name=f"f{i}"))

    return write


def big_files(n: int, size: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        for i in range(n):
            (path.parent / f"big{i}.yaml").write_text(file_doc("x" * size, name=f"big{i}"))

    return write


def deep_dirs(depth: int, name: str) -> Callable[[Path], None]:
    """Directories `depth` levels deep, made with relative mkdir (the whole path may be longer than PATH_MAX)."""

    def write(path: Path) -> None:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            for _ in range(depth):
                os.mkdir(name, dir_fd=fd)
                child = os.open(name, os.O_RDONLY, dir_fd=fd)
                os.close(fd)
                fd = child
            with open(os.open("deep.yaml", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
                f.write(file_doc("x", name="deep"))
        finally:
            os.close(fd)

    return write


def many_other_files(dirs: int, per_dir: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        for d in range(dirs):
            (path.parent / f"d{d}").mkdir()
            for i in range(per_dir):
                (path.parent / f"d{d}" / f"{i}.txt").touch()

    return write


def symlinks(path: Path) -> None:
    os.symlink(".", path.parent / "loop")  # a directory symlink loop
    os.symlink("self.yaml", path.parent / "self.yaml")  # a file symlink loop
    os.symlink("/dev/zero", path.parent / "zero.yaml")
    os.mkfifo(path.parent / "fifo.yaml")  # would block a reader forever
    path.write_text(file_doc("x"))


def binary(data: bytes) -> str:
    return "!!binary " + base64.b64encode(data).decode()


def etcd_env_unit(env: dict[str, str], sensitive: bool) -> str:
    """An etcd Unit reading /etc/etcd/etcd.conf, and that env File (sensitive or not)."""
    body = "[Service]\nEnvironmentFile=/etc/etcd/etcd.conf\nExecStart=/usr/bin/etcd\n"
    return (
        f"apiVersion: reconciler/v1\nkind: Unit\nmetadata: {{name: etcd}}\nspec:\n  content: {json.dumps(body)}\n"
        "---\napiVersion: reconciler/v1\nkind: File\nmetadata: {name: etcd-conf}\nspec:\n"
        f"  path: /etc/etcd/etcd.conf\n  sensitive: {'true' if sensitive else 'false'}\n  env: {json.dumps(env)}\n"
    )


def sensitive(template: str) -> str:
    return file_doc(template, extra="  sensitive: true\n")


_SEXAGESIMAL = "x: 1" + ":59" * 300_000 + "\n"

CASES: list[Case] = [
    # --- spec files and YAML ---------------------------------------------------------------------
    Case("alias-bomb-7", {"a.yaml": alias_bomb(7)}, "MAX_YAML_NODES"),
    Case("alias-bomb-9", {"a.yaml": alias_bomb(9)}, "MAX_YAML_NODES"),
    Case("lists-nested-500", {"a.yaml": host_with_vars("x: " + "[" * 500 + "]" * 500)}, "MAX_YAML_DEPTH"),
    Case("maps-nested-995", {"a.yaml": host_with_vars("x: " + "{a: " * 995 + "1" + "}" * 995)}, "MAX_YAML_DEPTH"),
    Case(
        "lists-nested-2000",
        {"a.yaml": host_with_vars("x: " + "[" * 2000 + "]" * 2000)},
        "nesting depth",
        note="libyaml's own limit (1000) answers first",
    ),
    Case("block-nested-200", {"a.yaml": "".join(" " * i + "a:\n" for i in range(200))}, "MAX_YAML_DEPTH"),
    Case("vars-file-50MB", {"a.yaml": big_vars_file(50 * 1024 * 1024)}, "MAX_SPEC_FILE_BYTES", located=False),
    Case("yaml-values-100k", {"a.yaml": host_with_vars("x: [" + "1," * 100_001 + "1]")}, "MAX_YAML_NODES"),
    Case("spec-bytes-17MB", {"x": big_files(5, 3_500_000)}, "MAX_SPEC_BYTES", file="big4.yaml", located=False),
    Case("spec-files-1001", {"x": spec_files(1001)}, "MAX_SPEC_FILES", file=".", located=False),
    Case("yaml-surrogate-escape", {"a.yaml": file_doc("x").replace('"x"', '"\\ud800"')}, "invalid Unicode"),
    Case("yaml-python-tag", {"a.yaml": host_with_vars("x: !!python/name:os.system")}, "not allowed"),
    Case("yaml-merge-key", {"a.yaml": host_with_vars("a: &a {b: 1}\nc: {<<: *a}")}, "merge"),
    Case("not-utf8", {"a.yaml": b"apiVersion: reconciler/v1\nkind: \xff\n"}, "not UTF-8"),
    Case(
        "symlink-loop-fifo-dev-zero",
        {"a.yaml": symlinks},
        None,
        note="a directory loop, a self link, /dev/zero and a FIFO are not spec files",
    ),
    Case(
        "yaml-big-decimal",
        {"a.yaml": host_with_vars("x: " + "1" * 5000)},
        "ValueError|MAX_NUMBER_CHARS",
        fixed="located at line 0 ('cannot read: ValueError'): Python's 4300-digit int limit raises a ValueError "
        "while the scalar is built; the file's every document is dropped and the line is lost",
    ),
    Case(
        "yaml-sexagesimal-int",
        {"a.yaml": _SEXAGESIMAL},
        "unknown field|MAX_NUMBER_CHARS",
        fixed="hang: YAML 1.1 base-60 int '1:59:59:...' (one scalar, 900 KB) is built by a quadratic loop in "
        "PyYAML's construct_yaml_int (~40 s here, ~15 min for a 4 MB file); no limit applies to one scalar",
    ),
    Case(
        "yaml-1.9M-values-composed",
        {"a.yaml": "x: [" + "a," * 1_900_000 + "a]\n"},
        "MAX_YAML_NODES",
        fixed="yaml.compose_all builds every node of a 4 MB file before MAX_YAML_NODES counts them: ~11 s and "
        "~620 MB RSS to refuse it"
        + " (fixed: now counted from the parser's events before composing, up to the limit (~0.1 s))",
    ),
    Case(
        "yaml-duplicate-keys",
        {"a.yaml": "m: {" + "a: , " * 700_000 + "}\n"},
        "MAX_YAML_NODES",
        fixed="duplicate keys now count as values (100k at most), but yaml.compose_all still builds the 1.4M nodes of the 4 MB file before they are counted (~11 s): the same as yaml-1.9M-values-composed"
        + " (fixed: the same, now counted before composing)",
    ),
    Case(
        "yaml-alias-key-amplified",
        {"a.yaml": 'k: &k "' + "x" * 100_000 + '"\nm: {' + "*k : 1, " * 10_000 + "}\n"},
        "duplicate key|MAX_YAML_NODES",
        fixed="an alias used as a mapping key is not counted, and each duplicate's issue names the field: "
        "10k issues x a 100 KB key = ~3 GB",
    ),
    Case(
        "dir-1200-deep",
        {"x": deep_dirs(1200, "d")},
        None,
        fixed="RecursionError traceback out of load_desired: spec_files' rglob recurses once per directory level (now listed without recursion: the file at the bottom loads)",
    ),
    Case(
        "dir-path-too-long",
        {"x": deep_dirs(20, "d" * 250)},
        "",
        file=None,
        located=False,
        fixed="OSError (ENAMETOOLONG) traceback out of load_desired: rglob's scandir of a directory whose path "
        "exceeds PATH_MAX",
    ),
    Case(
        "identity-file-nul",
        {
            "a.yaml": (
                "apiVersion: reconciler/v1\nkind: Host\nmetadata: {name: m2}\n"
                'spec: {address: a2, identityFile: "~a\\0b/key"}\n'
            )
        },
        "identityFile",
        fixed="was a ValueError traceback out of load_desired (os.path.expanduser('~a\\0b/key'), pwd.getpwnam); "
        "now validate says valid: a path with a NUL byte (identityFile, knownHosts) can never be opened, "
        "so plan/apply fail on that host later",
    ),
    # --- paths, names, modes, env keys ------------------------------------------------------------
    Case("path-trailing-newline", {"a.yaml": file_doc("x", path="/etc/a\n")}, "characters outside"),
    Case(
        "path-double-slash",
        {
            "a.yaml": file_doc("x", name="a", path="/etc/kubernetes/config")
            + "---\n"
            + file_doc("y", name="b", path="//etc/kubernetes/config")
        },
        "not normalised",
    ),
    Case("path-5000-chars", {"a.yaml": file_doc("x", path="/" + "/".join(["d" * 99] * 50))}, "PATH_MAX"),
    Case("path-component-300", {"a.yaml": file_doc("x", path="/etc/" + "c" * 300)}, "NAME_MAX"),
    Case("unit-name-258", {"a.yaml": unit_doc("u" * 250)}, "systemd allows 255"),
    Case("unit-path-etc-shadow", {"a.yaml": unit_doc("evil", path="/etc/shadow")}, "systemd unit directory"),
    Case(
        "unit-path-other-name",
        {"a.yaml": unit_doc("evil", path="/etc/systemd/system/sshd.service")},
        "under its own name",
    ),
    Case(
        "unit-twice-same-systemd-unit",
        {"a.yaml": unit_doc("etcd", path="/lib/systemd/system/etcd.service") + "---\n" + unit_doc("etcd.service")},
        "etcd.service",
        fixed="fooled: Units 'etcd' (path /lib/systemd/system/etcd.service) and 'etcd.service' are one systemd "
        "unit with two unit files (the /etc one overrides); validate says valid",
    ),
    Case("mode-7777", {"a.yaml": file_doc("x", extra='  mode: "7777"\n')}, "specialBits"),
    Case("mode-4777", {"a.yaml": file_doc("x", extra='  mode: "4777"\n')}, "specialBits"),
    Case("mode-4755-special-bits", {"a.yaml": file_doc("x", extra='  mode: "4755"\n  specialBits: true\n')}, None),
    Case("env-key-newline", {"a.yaml": env_file("FOO\n")}, "not a valid variable name"),
    Case("env-value-newline", {"a.yaml": env_file("FOO", "{{ 'a\\nB=b' }}")}, "single line"),
    Case(
        "key-terminal-escape",
        {"a.yaml": file_doc("x").replace("spec:\n", 'spec:\n  "\\e[2J\\e[32mall good\\e]0;x\\a": 1\n')},
        "unknown field",
        canary="\x1b",
        fixed="fooled: a YAML key's control characters reach the terminal raw in `validate` (and the daemon's "
        "console log): ESC [2J clears the screen, a fake 'all good', the window title; a newline in a key "
        "forges whole issue lines",
    ),
    Case(
        "file-name-terminal-escape",
        {"\x1b[2J\x1b[32mall good\x1b[0m.yaml": "kind: [\n"},
        "YAML syntax error",
        file=None,
        canary="\x1b",
        fixed="fooled: a spec file's name is printed raw: its control characters reach the terminal",
    ),
    # --- health checks --------------------------------------------------------------------------
    Case("url-curl-glob", {"a.yaml": http_check("http://127.0.0.1/[1-100000]")}, "not an http(s) URL"),
    Case("url-curl-braces", {"a.yaml": http_check("http://127.0.0.1/{a,b,c}")}, "not an http(s) URL"),
    Case(
        "url-spaces-after-render",
        {"a.yaml": http_check("http://{{ '127.0.0.1/ -o /etc/passwd' }}")},
        "not an http(s) URL",
    ),
    Case("url-quote-after-render", {"a.yaml": http_check("http://{{ '127.0.0.1/\"' }}")}, "not an http(s) URL"),
    Case("tcp-host-slash", {"a.yaml": tcp_check("{{ '127.0.0.1/8080' }}")}, "not a host name"),
    Case("tcp-host-newline", {"a.yaml": tcp_check("{{ '127.0.0.1\\nx' }}")}, "not a host name"),
    # --- templates: bounded ---------------------------------------------------------------------
    Case("range-200000", {"a.yaml": file_doc("{% for i in range(200000) %}x{% endfor %}")}, "MAX_RANGE"),
    Case("range-1e9", {"a.yaml": file_doc("{{ range(10**9)|length }}")}, "MAX_RANGE"),
    Case(
        "recursive-macro", {"a.yaml": file_doc("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}")}, "MAX_TEMPLATE_DEPTH"
    ),
    Case(
        "nested-range-loops",
        {"a.yaml": file_doc("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")},
        "MAX_TEMPLATE_STEPS",
    ),
    Case("pow-10-10-9", {"a.yaml": file_doc("{{ 10**(10**9) }}")}, "MAX_TEMPLATE_INT_BITS"),
    Case("str-times-3e9", {"a.yaml": file_doc("{{ 'x' * 3000000000 }}")}, "MAX_RENDERED_BYTES"),
    Case("template-surrogate", {"a.yaml": file_doc("{{ '\\ud800' }}")}, "lone surrogate"),
    Case(
        "doubling-tilde",
        {
            "a.yaml": file_doc(
                "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
            )
        },
        "MAX_RENDERED_BYTES",
    ),
    Case(
        "doubling-plus",
        {
            "a.yaml": file_doc(
                "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}"
            )
        },
        "MAX_RENDERED_BYTES",
    ),
    Case("percent-width", {"a.yaml": file_doc("{{ '%999999999d' % 1 }}")}, "MAX_RENDERED_BYTES"),
    Case("format-width", {"a.yaml": file_doc("{{ '{:>999999999}'.format(1) }}")}, "MAX_RENDERED_BYTES"),
    Case("center-1e9", {"a.yaml": file_doc("{{ 'x'|center(10**9) }}")}, "MAX_RENDERED_BYTES"),
    Case("indent-many-lines", {"a.yaml": file_doc("{{ ('a\\n' * 1000)|indent(100000) }}")}, "MAX_RENDERED_BYTES"),
    Case(
        "replace-amplified", {"a.yaml": file_doc("{{ ('x' * 100000)|replace('x', 'y' * 1000) }}")}, "MAX_RENDERED_BYTES"
    ),
    Case("replace-empty", {"a.yaml": file_doc("{{ ('x' * 100000)|replace('', 'y' * 1000) }}")}, "MAX_RENDERED_BYTES"),
    Case(
        "join-big", {"a.yaml": file_doc("{% set big = 'x' * 1000000 %}{{ ([big] * 1000)|join }}")}, "MAX_RENDERED_BYTES"
    ),
    Case("slice-1e9", {"a.yaml": file_doc("{{ [1]|slice(10**9)|list }}")}, "MAX_RENDERED_BYTES"),
    Case("lipsum-1e9", {"a.yaml": file_doc("{{ lipsum(10**9) }}")}, "'lipsum' is not defined"),
    Case("deep-parentheses", {"a.yaml": file_doc("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")}, "recursion"),
    Case("deep-if", {"a.yaml": file_doc("{% if 1 %}" * 3000 + "{% endif %}" * 3000)}, "recursion"),
    Case("include-import", {"a.yaml": file_doc("{% include '/etc/shadow' %}{% import 'x' as y %}")}, "no loader"),
    Case("dunder-escape", {"a.yaml": file_doc("{{ ''.__class__.__mro__[1].__subclasses__() }}")}, "__class__"),
    Case(
        "template-syntax-error-block",
        {"a.yaml": file_doc("x").replace('content: "x"', "content: |\n    ok\n    {% if %}")},
        "template syntax error",
        line=8,
    ),
    Case(
        "template-syntax-error-inline",
        {"a.yaml": file_doc("{% if %}")},
        "template syntax error",
        line=6,
        fixed="located one line too low: a syntax error in a one-line (flow or quoted) template is reported at "
        "the content key's line + 1 (right for block scalars only)",
    ),
    Case(
        "sensitive-valueerror-canary",
        {"a.yaml": sensitive("{{ '{0:" + CANARY + "}'.format(1) }}")},
        "withheld",
        canary=CANARY,
    ),
    Case(
        "sensitive-keyerror-canary",
        {"a.yaml": sensitive("{{ '{" + CANARY + "}'.format() }}")},
        "withheld",
        canary=CANARY,
    ),
    # --- templates: escapes ---------------------------------------------------------------------
    Case(
        "sensitive-undefined-canary",
        {"a.yaml": sensitive("{{ {}['" + CANARY + "'] }}")},
        "spec.content",
        canary=CANARY,
        fixed="leak: an UndefinedError's message is reported as is for a sensitive File "
        "(\"'dict object' has no attribute 's3cret-canary'\")",
    ),
    Case(
        "sensitive-syntax-canary",
        {"a.yaml": sensitive("{% " + CANARY.replace("-", "_") + " %}")},
        "syntax",
        canary=CANARY.replace("-", "_"),
        fixed="leak: a template syntax error is reported with Jinja's message for a sensitive File "
        "(\"Encountered unknown tag 's3cret_canary'\")",
    ),
    Case(
        "sensitive-token-canary",
        {"a.yaml": sensitive("{{ 1 " + CANARY.replace("-", "_") + " }}")},
        "syntax",
        canary=CANARY.replace("-", "_"),
        fixed="leak: \"expected token 'end of print statement', got 's3cret_canary'\"",
    ),
    Case(
        "str-of-list",
        {"a.yaml": file_doc("{% set s = 'x' * 10000000 %}{{ [s] * 1000 }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="str() of a list of big strings is not estimated: {{ [s] * 1000 }} (s 10 MB) builds 10 GB (output, "
        "~, |string, |lower, '%s' % ..., .format(list) go the same way)"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "tojson-of-list",
        {"a.yaml": file_doc("{% set s = 'x' * 10000000 %}{{ ([s] * 1000)|tojson }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="|tojson of a list of big strings: 10 GB (|pprint too)"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "format-many-fields",
        {"a.yaml": file_doc("{{ '" + "{0:9999999}" * 100 + "'.format(1) }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="format widths of 7 digits are not caught by the 8-digit check; 100 fields "
        "build 1 GB before the size check"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "percent-many-fields",
        {"a.yaml": file_doc("{{ '" + "%(a)9999999d" * 100 + "' % {'a': 1} }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="'%(a)9999999d' x 100 % {'a': 1}: 1 GB before the size check"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "format-width-as-string",
        {"a.yaml": file_doc("{{ '{0:{1}}'.format(1, '999999999') }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="a nested width given as a string argument is not estimated: 1 GB"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "batch-1-list",
        {"a.yaml": file_doc("{{ ('x' * 16000000)|batch(1)|list|length }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="|list materialises 16M one-item lists (~1.6 GB) before MAX_TEMPLATE_ITEMS is checked"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "split-5M",
        {"a.yaml": file_doc("{{ ('ab ' * 5500000).split()|length }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="str.split() builds 5.5M strings (~430 MB) before MAX_TEMPLATE_ITEMS is checked (|wordcount, "
        ".splitlines() too)"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "sort-16M",
        {"a.yaml": file_doc("{{ ('x' * 16000000)|sort|length }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="|sort of a 16 MB string: one step, 16M items, ~2.5 GB, ~25 s"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "map-center-list",
        {"a.yaml": file_doc("{{ range(100)|map('center', 9999999)|list|length }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="each center() is within the limit, |list keeps 100 of them: 1 GB, and the spec is valid"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "wordwrap-wrapstring",
        {"a.yaml": file_doc("{{ ('a ' * 10000)|wordwrap(1, wrapstring='x' * 100000) }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="|wordwrap's wrapstring is not estimated: 10k x 100 KB = 1 GB"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "wordwrap-quadratic",
        {"a.yaml": file_doc("{{ ('x' * 2000000)|wordwrap(1) }}")},
        "MAX_LOAD_SECONDS",
        fixed="hang: textwrap breaks a long word in quadratic time, inside one step: ~80 s for 2 MB, hours for "
        "16 MB; the wall-time limit is only checked between steps"
        + " (fixed: the load's CPU alarm interrupts it inside the step)",
    ),
    Case(
        "urlize-target",
        {"a.yaml": file_doc("{{ ('http://a.co ' * 100000)|urlize(target='x' * 10000) }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="|urlize's target is not estimated: 100k links x 10 KB = 1 GB"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "urlize-16MB",
        {"a.yaml": file_doc("{{ ('a ' * 8000000)|urlize|length }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="one |urlize over 16 MB: ~40 s and ~1.2 GB in one step; the spec is then valid"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "urlencode-astral",
        {"a.yaml": file_doc("{{ ('\\U0001F600' * 16000000)|urlencode|length }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        fixed="|urlencode multiplies by 12: 192M characters (~850 MB) before the check"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "indent-int-target",
        {"a.yaml": file_doc("{{ 0|indent(999999999) }}")},
        "TypeError|MAX_RENDERED_BYTES",
        fixed="the indent estimate needs a str target; with an int it builds the 1 GB indentation first",
    ),
    Case(
        "striptags-loop",
        {
            "a.yaml": file_doc(
                "{% set s = '<a>' * 5000000 %}{% for i in range(60) %}{{ s|striptags|length }}{% endfor %}"
            )
        },
        "MAX_RENDER_SECONDS|MAX_LOAD_SECONDS",
        fixed="MAX_RENDER_SECONDS is checked every 64 steps: 21 slow filter calls in between take ~55 s",
    ),
    Case(
        "bytes-var-replace",
        {
            "hosts.yaml": host_with_vars(f"b: {binary(b'x' * 30000)}\ne: {binary(b'')}"),
            "a.yaml": file_doc("{{ vars.b.replace(vars.e, vars.b)|length }}"),
        },
        "MAX_RENDERED_BYTES",
        host=False,
        fixed="a !!binary var is bytes, whose replace is not estimated: 30 KB x 30 KB = 900 MB",
    ),
    Case(
        "bytes-var-percent",
        {"hosts.yaml": host_with_vars(f"f: {binary(b'%999999999d')}"), "a.yaml": file_doc("{{ vars.f % 1 }}")},
        "MAX_RENDERED_BYTES",
        host=False,
        fixed="bytes % is not estimated (only str): 1 GB",
    ),
    Case(
        "date-var-strftime",
        {"hosts.yaml": host_with_vars("t: 2001-12-14"), "a.yaml": file_doc("{{ vars.t.strftime('%c' * 5000000) }}")},
        "MAX_LOAD_MEMORY_BYTES|MAX_LOAD_SECONDS",
        host=False,
        fixed="a YAML date var's strftime('%c' * 5M) builds 120M characters (~700 MB)"
        + " (fixed: the load's child process runs under RLIMIT_AS: a MemoryError where the value is built, located)",
    ),
    Case(
        "translate-list",
        {"a.yaml": file_doc("{{ ('\\x00' * 100000).translate(['x' * 10000]) }}")},
        "MAX_RENDERED_BYTES",
        fixed="str.translate with a list table is not estimated (only a dict): 100k x 10 KB = 1 GB",
    ),
    Case(
        "bytes-encode-replace",
        {"a.yaml": file_doc("{{ ('x' * 30000).encode().replace(''.encode(), ('x' * 30000).encode()) }}")},
        "MAX_RENDERED_BYTES",
        fixed="''.encode() gives bytes, whose replace/expandtabs/% are not estimated: 900 MB",
    ),
    Case(
        "list-extend-doubling",
        {
            "a.yaml": file_doc(
                "{% set l = [1] %}{% for i in range(28) %}{{ l.extend(l) or '' }}{% endfor %}{{ l|length }}"
            )
        },
        "unsafe",
        fixed="list.extend is allowed and unchecked: 28 doublings make 268M items (~2 GB); the spec is valid",
    ),
    Case(
        "template-mutates-vars",
        {
            "hosts.yaml": host_with_vars("l: [a]"),
            "a.yaml": file_doc("{{ vars.l.append('b') or '' }}{{ vars.l|join(',') }}"),
        },
        "unsafe",
        host=False,
        fixed="fooled: the sandbox lets a template mutate the host's vars and `hosts` (list.append, dict.update); "
        "other templates and hosts see it, and with the daemon's SpecCache it persists: every reload of "
        "unchanged specs renders something new",
    ),
    Case(
        "vars-alias-repr",
        {"hosts.yaml": host_with_vars('s: &s "' + "x" * 1_000_000 + '"\nl: [' + "*s, " * 10_000 + "]")},
        "MAX_",
        file="hosts.yaml",
        host=False,
        or_valid=True,
        fixed="no template needed: 10k aliases of a 1 MB string in a Host's vars are 10k YAML values, and "
        "repr(hosts) (the render cache key) builds 10 GB: MemoryError traceback out of load_desired",
    ),
    Case(
        "astral-output",
        {"a.yaml": "---\n".join(file_doc("{{ '\\U0001F600' * 16000000 }}" + "\n" * i, name=f"f{i}") for i in range(4))},
        "MAX_RENDERED_TOTAL_BYTES|MAX_LOAD_MEMORY_BYTES",
        fixed="MAX_RENDERED_BYTES and MAX_RENDERED_TOTAL_BYTES count characters: 4 x 16M 4-byte characters "
        "are valid, 256 MB of UTF-8 files, ~600 MB RSS",
    ),
    Case(
        "compile-500k-prints",
        {"a.yaml": file_doc("{{ 1 }}" * 500_000)},
        "MAX_TEMPLATE_TAGS",
        fixed="compiling a template is not bounded: 500k '{{ 1 }}' (3.5 MB) take ~20 s; the spec is valid"
        + " (fixed: at most MAX_TEMPLATE_TAGS tags are compiled)",
    ),
    Case(
        "compile-100k-loops",
        {"a.yaml": file_doc("{% for i in [] %}{% endfor %}" * 100_000)},
        "MAX_TEMPLATE_TAGS",
        fixed="compiling 100k empty loops (3 MB): ~40 s, ~1.9 GB; the spec is valid"
        + " (fixed: at most MAX_TEMPLATE_TAGS tags are compiled)",
    ),
    # --- the desired state: hosts x documents ---------------------------------------------------
    Case(
        "hosts-x-files",
        {"hosts.yaml": many_hosts(3000), "a.yaml": many_files(3000)},
        "MAX_HOSTS|MAX_DESIRED_ITEMS",
        file=None,
        host=False,
        fixed="3000 Hosts x 3000 Files (45k YAML values) are 9M desired files: > 60 s, > 2 GB"
        + " (fixed: hosts x selected documents are counted before rendering)",
    ),
    Case(
        "hosts-x-certificates",
        {
            "hosts.yaml": many_hosts(1000),
            "a.yaml": "---\n".join(  # 80 documents of 250 paths (a Certificate lists at most 256)
                f"apiVersion: reconciler/v1\nkind: Certificate\nmetadata: {{name: c{d}}}\n"
                "spec:\n  paths: [" + ",".join(f"/c{d}/{i}" for i in range(250)) + "]\n"
                for d in range(80)
            ),
        },
        "MAX_DESIRED_ITEMS",
        file=None,
        host=False,
        fixed="1000 Hosts x 20000 certificate paths: 20M desired certificates, > 60 s, > 2 GB" + " (fixed: the same)",
    ),
    Case(
        "hosts-x-path-conflicts",
        {"hosts.yaml": many_hosts(1000), "a.yaml": many_files(1000, same_path=True)},
        "MAX_DESIRED_ITEMS",
        host=False,
        fixed="one issue per host and conflicting File: 1000 x 1000 = 1M issues, ~15 s, ~560 MB" + " (fixed: the same)",
    ),
    Case(
        "plain-content-per-host",
        {"hosts.yaml": many_hosts(200), "a.yaml": file_doc("x" * 4_000_000)},
        "MAX_RENDERED_TOTAL_BYTES",
        host=False,
        or_valid=True,
        fixed="content without '{' is not a rendering: MAX_RENDERED_TOTAL_BYTES does not count it, "
        "and each host gets its own encoded copy: 200 hosts x 4 MB = ~850 MB",
    ),
    # --- found attacking the load's child process (spec.isolate) --------------------------------
    Case(
        "hosts-1001",
        {"hosts.yaml": many_hosts(1001)},
        "MAX_HOSTS",
        file="hosts.yaml",
        host=False,
        fixed="the load's budgets grew with every Host document (13 YAML values each): 7600 of them in 700 KB "
        "bought 39 s and 600 MB for anything else in the spec",
    ),
    Case(
        "hosts-one-copied-7000",
        {
            "hosts.yaml": "".join(
                "---\n{apiVersion: reconciler/v1, kind: Host, metadata: {name: h}, spec: {address: a}}\n"
                for _ in range(7000)
            )
        },
        "duplicate Host name",
        file="hosts.yaml",
        host=False,
        fixed="copies of one Host counted towards the budgets before they were reported as duplicates",
    ),
    Case(
        "files-selecting-nobody",
        {
            "hosts.yaml": many_hosts(1000),
            "a.yaml": "".join(
                f"---\n{{apiVersion: reconciler/v1, kind: File, metadata: {{name: f{i}}}, spec: {{path: /f{i}, content: x, "
                "hosts: {matchLabels: {none: none}}}}\n"
                for i in range(200)
            ),
        },
        "MAX_DESIRED_ITEMS",
        host=False,
        fixed="hosts x documents that select nobody were selector checks MAX_DESIRED_ITEMS did not count: 3800 x "
        "2250 took 22 s",
    ),
    Case(
        "env-keys-per-host",
        {
            "hosts.yaml": many_hosts(300),
            "a.yaml": file_doc("x", name="e", path="/etc/e").replace(
                '  content: "x"\n', "  env:\n" + "".join(f"    ? K{i}{'K' * 30000}\n    : x\n" for i in range(100))
            ),
        },
        "MAX_RENDERED_TOTAL_BYTES",
        host=False,
        fixed="an env File's keys were not counted in MAX_RENDERED_TOTAL_BYTES: a 22 KB key on 7600 hosts made a "
        "167 MB answer, and the daemon grew from 389 to 596 MB on one reload",
    ),
    Case(
        "env-line-of-spaces",
        {
            "a.yaml": etcd_env_unit({}, False).replace(
                "  env: {}\n", "  content: " + json.dumps("ETCD_NAME=x" + " " * 200_000 + "y\n") + "\n"
            )
        },
        None,
        fixed="the env-file parser's lazy value match backtracked quadratically on spaces: 16 KB took 4 s",
    ),
    Case(
        "sensitive-component-rule",
        {
            "a.yaml": etcd_env_unit(
                {"ETCD_LISTEN_CLIENT_URLS": f"http://10.0.0.1:{CANARY}", "ETCD_HEARTBEAT_INTERVAL": f"{CANARY}-hb"},
                True,
            )
        },
        "details withheld",
        canary=CANARY,
        fixed="leak: etcd's and kube's rules quoted the value in their messages, a sensitive File's too",
    ),
    Case(
        "apiversion-of-1MB",
        {"a.yaml": "apiVersion: " + "x" * 1_000_000 + "\nkind: File\n"},
        "must be",
        fixed="an issue quoted the whole value: a 30 MB apiVersion was a 30 MB message",
    ),
    Case(
        "dir-300k-other-files",
        {"x": many_other_files(300, 1000)},
        "MAX_SPEC_DIR_ENTRIES",
        file=".",
        located=False,
        bench_only=True,
        fixed="no limit on what the directory holds besides spec files: rglob walked 300k other "
        "files (~2.7 s, ~170 MB) before MAX_SPEC_FILES counted the *.yaml ones; bench only "
        "(slow to build)",
    ),
    Case(
        "dir-10001-other-files",
        {"x": many_other_files(10, 1001)},
        "MAX_SPEC_DIR_ENTRIES",
        file=".",
        located=False,
        note="the same as dir-300k-other-files, just past the limit",
    ),
    Case(
        "render-40-slow-templates",
        {
            "a.yaml": "---\n".join(
                file_doc(
                    "{%% for i in range(100000) %%}{%% for j in range(100000) %%}{%% endfor %%}{%% endfor %%}%d" % i,
                    name=f"f{i}",
                )
                for i in range(40)
            )
        },
        "MAX_RENDER_SECONDS|MAX_LOAD_SECONDS",
        note="each template within MAX_RENDER_SECONDS (1 s), 40 of them: the load's CPU budget ends it",
    ),
]

BY_NAME = {case.name: case for case in CASES}


def build(case: Case, directory: Path) -> Path:
    """The case's spec directory, `directory`/specs (made here)."""
    spec_dir = directory / "specs"
    spec_dir.mkdir(parents=True)
    if case.host:
        (spec_dir / "hosts.yaml").write_text(HOST)
    for name, content in case.files.items():
        path = spec_dir / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return spec_dir


def remove(directory: Path) -> None:
    """rm -rf: shutil.rmtree recurses once per level and cannot remove the deep-directory cases."""
    subprocess.run(["rm", "-rf", "--", str(directory)], check=False)


@dataclass
class ChildRun:
    """What a child process did: exit code (None: killed at the timeout), wall and CPU time, peak RSS, output."""

    exit: int | None
    seconds: float
    cpu_seconds: float
    rss_mb: float
    stdout: str
    stderr: str


def run_child(
    argv: list[str], *, timeout: float, as_bytes: int, cpu_seconds: int | None = None, env: dict[str, str] | None = None
) -> ChildRun:
    """Run argv (cwd: the repository) under RLIMIT_AS (and RLIMIT_CPU); reaped with os.wait4 for its own rusage."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (as_bytes, as_bytes))
        if cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))  # SIGXCPU, then SIGKILL

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, preexec_fn=limits
        )
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - began > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.005)
        seconds = time.monotonic() - began
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here (wait4), not by Popen
        out.seek(0)
        err.seek(0)
        return ChildRun(
            None if timed_out else proc.returncode,
            seconds,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
