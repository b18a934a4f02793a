"""Property-based: whatever bytes land in a spec file, no traceback ever escapes the spec loader.

The loader (load_desired, spec.load run in spec.isolate's child) answers with a SpecError whose every issue names
the file and a line. (The etcd log parser's properties are in tests/unit/tuning/test_etcdlog_properties.py.)
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.errors import SpecError
from reconciler.spec.isolate import load_desired

pytestmark = pytest.mark.slow

SPECS = Path(__file__).resolve().parents[3] / "specs"
ISSUE = re.compile(r"^specs/[^:]+\.yaml:\d+: ")
NASTY = [
    "",
    " ",
    "..",
    "/etc/../etc/passwd",
    "../x",
    "a\x00b",
    "\x00",
    "é∂ƒ漢字",
    "\u202e",
    "$(touch /tmp/x)",
    "; reboot",
    "`id`",
    "a\nb",
    "'\"",
    "x" * 100_000,
    "-1",
    "0777",
    "NaN",
    "null",
    "~",
    "{}",
    "[]",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.sampled_from(NASTY),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


def load_text(text: str | bytes, name: str = "fuzz.yaml") -> None:
    """Load the bundled specs plus one extra file; only a SpecError naming file and line may come out."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_dir = Path(tmp) / "specs"
        shutil.copytree(SPECS, spec_dir)
        path = spec_dir / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogatepass"))
        try:
            load_desired(spec_dir)
        except SpecError as exc:
            assert exc.issues
            for issue in exc.issues:
                assert ISSUE.match(str(issue)), str(issue)


def mutate(doc: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    node: Any = doc
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        node[path[-1]] = value
    return doc


DOCS = [d for f in sorted(SPECS.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
FIELDS = sorted(
    {
        (i, tuple(p))
        for i, d in enumerate(DOCS)
        for p in (
            [["metadata", "name"], ["kind"], ["apiVersion"], ["spec"]]
            + [["spec", k] for k in d.get("spec", {})]
            + [["spec", "env", k] for k in (d.get("spec", {}).get("env") or {})]
        )
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), values)
def test_any_value_in_any_field_is_a_located_spec_error_or_valid(
    field: tuple[int, tuple[str, ...]], value: Any
) -> None:
    index, path = field
    doc = mutate(yaml.safe_load(yaml.safe_dump(DOCS[index])), list(path), value)
    doc.setdefault("metadata", {})["name"] = (
        f"fuzz-{index}" if path != ("metadata", "name") else doc["metadata"]["name"]
    )
    if doc.get("kind") == "Host" and path != ("spec",):
        return  # a second Host would also need its own address; covered by the random-text tests
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return
    load_text(text)


@settings(max_examples=150, deadline=None)
@given(values)
def test_random_yaml_documents_never_escape_as_tracebacks(value: Any) -> None:
    try:
        text = yaml.safe_dump_all(
            [value, {"apiVersion": "reconciler/v1", "kind": "File", "spec": value}], allow_unicode=True
        )
    except (yaml.YAMLError, ValueError):
        return
    load_text(text)


@settings(max_examples=200, deadline=None)
@example(b"=")  # found by hypothesis: a bare "=" resolves to a tag the safe loader cannot build
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", errors="surrogatepass")))
def test_random_bytes_as_a_spec_file(data: bytes) -> None:
    load_text(data)
