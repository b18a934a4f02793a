"""The README and docs/ as an operator reads them: every example in them works.

Taken from README.md and docs/*.md (issue 28, item 10): every ```yaml block that is a complete spec document
(`apiVersion: reconciler/v1`) validates, alone or added to a copy of the bundled specs (where a document of the
same kind and name replaces the bundled one, as an operator edits inventory.yaml); every `reconciler ...` command
line of a ```sh or ```console block parses with the CLI's own parser (nothing is run); every relative link reaches
a file, and its `#anchor` a heading of that file (GitHub's anchors). A block that is deliberately partial or
invalid says so on the line before it: `<!-- docs-test: skip (why) -->`. Each docs page starts with its title and
one paragraph saying what it covers, and the README links every page.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reconciler import cli
from reconciler.errors import SpecError
from reconciler.spec.isolate import load_desired

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "specs"
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b")
FENCE = re.compile(r"^(\s*)(```+)\s*([\w-]*)")
SHELLS = {"sh", "bash", "shell", "console"}


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence
    lang: str
    text: str
    skipped: bool

    @property
    def name(self) -> str:
        return where(self.path, self.line)


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, dedented to their fence."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m.groups()
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        found.append(Block(path, i + 1, lang.lower(), "\n".join(body) + "\n", bool(SKIP.match(previous))))
        i = j + 1
    return found


def prose(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line outside fenced blocks, inline code spans blanked out."""
    out, fenced, ticks = [], False, ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if m and (not fenced or line.strip().startswith(ticks)):
            fenced, ticks = (not fenced), m.group(2)
            continue
        if not fenced:
            out.append((n, re.sub(r"(`+)(.+?)\1", lambda c: " " * len(c.group(0)), line)))
    return out


# Spec examples


def spec_examples() -> list[Block]:
    return [
        b
        for p in pages()
        for b in blocks(p)
        if b.lang in ("yaml", "yml") and re.search(r"^apiVersion:\s*reconciler/v1\s*$", b.text, re.M)
    ]


def documents(text: str) -> list[str]:
    """The documents of a YAML stream, each as its own text (so the bundled files keep their exact text)."""
    return [d for d in re.split(r"^---[ \t]*$", text, flags=re.M) if d.strip()]


def identity(doc_text: str) -> tuple[str, str] | None:
    doc = yaml.safe_load(doc_text)
    if not isinstance(doc, dict):
        return None
    return str(doc.get("kind")), str((doc.get("metadata") or {}).get("name"))


def validate(directory: Path) -> str | None:
    """None when the spec directory loads, else its errors."""
    try:
        load_desired(directory)
    except SpecError as exc:
        return str(exc)
    return None


def with_bundled(example: str, dest: Path) -> Path:
    """A copy of the bundled specs with the example added; a bundled document of the same kind and name is left
    out (the example stands for the operator's edit of it)."""
    shutil.copytree(BUNDLED, dest)
    replaced = {identity(d) for d in documents(example)}
    for path in sorted(dest.rglob("*.y*ml")):
        kept = [d for d in documents(path.read_text()) if identity(d) not in replaced]
        path.write_text("---\n".join(kept))
    (dest / "zz-docs-example.yaml").write_text(example)
    return dest


@pytest.mark.parametrize("block", spec_examples(), ids=lambda b: b.name)
def test_spec_examples_validate(block: Block, tmp_path: Path) -> None:
    if block.skipped:
        pytest.skip("marked partial: docs-test: skip")
    kinds = [identity(d) for d in documents(block.text)]
    assert all(k is not None and k[0] != "None" for k in kinds), f"{block.name}: not spec documents: {kinds}"
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "example.yaml").write_text(block.text)
    errors_alone = validate(alone)
    if errors_alone is None:
        return
    errors_bundled = validate(with_bundled(block.text, tmp_path / "bundled"))
    assert errors_bundled is None, (
        f"{block.name}: the example does not validate\nalone:\n{errors_alone}\nwith the bundled specs:\n{errors_bundled}"
    )


# Command lines


def command_lines(block: Block) -> list[tuple[int, list[str]]]:
    """(line, argv after `reconciler`) of every reconciler command in a shell block: continuation lines joined,
    a console prompt dropped, pipes, `&&`, `;` and redirections cut."""
    out: list[tuple[int, list[str]]] = []
    joined: list[tuple[int, str]] = []
    carry, start = "", 0
    for n, line in enumerate(block.text.splitlines(), block.line + 1):
        if not carry:
            start = n
        if line.rstrip().endswith("\\"):
            carry += line.rstrip()[:-1] + " "
            continue
        joined.append((start, carry + line))
        carry = ""
    for n, line in joined:
        if block.lang == "console":
            if not re.match(r"^\s*[$#] ", line):
                continue
            line = re.sub(r"^\s*[$#] ", "", line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        segment: list[str] = []
        for i, token in enumerate([*tokens, ";"]):
            if token and set(token) <= set("();<>|&"):
                if segment and Path(segment[0]).name == "reconciler":
                    out.append((n, segment[1:]))
                segment = []
                if token[0] in "<>":
                    segment = ["<redirected>"]  # the file name after it is no command
                continue
            if token.isdigit() and i + 1 < len(tokens) and tokens[i + 1][:1] in "<>":
                continue  # 2> and the like
            segment.append(token)
    return out


def commands() -> list[tuple[str, list[str]]]:
    found = []
    for p in pages():
        for b in blocks(p):
            if b.lang in SHELLS and not b.skipped:
                found += [(where(p, n), argv) for n, argv in command_lines(b)]
    return found


@pytest.mark.parametrize(("at", "argv"), commands(), ids=[f"{at} {' '.join(a)[:40]}" for at, a in commands()])
def test_command_lines_parse(at: str, argv: list[str]) -> None:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            cli._parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, (
            f"{at}: `reconciler {shlex.join(argv)}` does not parse: {stderr.getvalue().strip().splitlines()[-1]}"
        )


def test_the_docs_show_commands() -> None:
    """The extraction finds what it should (a parser change that saw nothing would pass for nothing)."""
    argvs = [a for _, a in commands()]
    for command in ("init", "validate", "plan", "apply", "check", "run", "status"):
        assert any(a[:1] == [command] for a in argvs), command


# Links


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links as their text, no markup), lower-case, punctuation dropped,
    spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_with_code(path):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = anchor(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def prose_with_code(path: Path) -> list[tuple[int, str]]:
    """Lines outside fenced blocks, inline code kept (a heading's anchor includes its code's text)."""
    out, fenced, ticks = [], False, ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if m and (not fenced or line.strip().startswith(ticks)):
            fenced, ticks = (not fenced), m.group(2)
            continue
        if not fenced:
            out.append((n, line))
    return out


def links() -> list[tuple[str, Path, str]]:
    found = []
    for p in [*pages(), REPO / "RELIABILITY.md"]:
        for n, line in prose(p):
            for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    found.append((where(p, n), p, target))
    return found


@pytest.mark.parametrize(("at", "page", "target"), links(), ids=[f"{at} {t}" for at, _, t in links()])
def test_links_resolve(at: str, page: Path, target: str) -> None:
    path, _, fragment = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{at}: {target}: no such file {dest}"
    assert dest.is_relative_to(REPO), f"{at}: {target} leaves the repository"
    if fragment:
        assert dest.suffix == ".md", f"{at}: {target}: an anchor into a file that is not markdown"
        assert fragment in anchors(dest), f"{at}: {target}: no heading with that anchor in {dest.name}"


def test_links_are_found() -> None:
    targets = {t for _, _, t in links()}
    assert "docs/daemon.md#under-systemd" in targets and any(t.startswith("apply.md#") for t in targets)


# Pages


@pytest.mark.parametrize("page", sorted((REPO / "docs").glob("*.md")), ids=lambda p: p.name)
def test_each_page_says_what_it_covers_and_the_readme_links_it(page: Path) -> None:
    lines = page.read_text().splitlines()
    assert lines[0].startswith("# "), f"{page.name}: starts with its title"
    assert not lines[1].strip() and lines[2].strip() and not lines[2].startswith(("#", "```", "|", "-")), (
        f"{page.name}: the title is followed by one paragraph saying what the page covers"
    )
    readme = (REPO / "README.md").read_text()
    assert f"](docs/{page.name}" in readme, f"the README does not link docs/{page.name}"


def test_the_anchor_rule() -> None:
    assert anchor("Lost quorum: `reconciler apply --break-glass`") == "lost-quorum-reconciler-apply---break-glass"
    assert anchor("`kind: Host`") == "kind-host"
    assert anchor("One leader among replicas (leader election)") == "one-leader-among-replicas-leader-election"
