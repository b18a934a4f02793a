"""adopt.emit: documents written as YAML that reads back exactly as written, whatever the content (awkward
whitespace, document markers, NEL, BOMs, 200 KB lines), headed and commented, one file per kind group."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adopt.describe import Adoption, Doc
from reconciler.adopt.emit import KIND_ORDER, _yaml, document, spec_files

YAML_AWKWARD = [
    "",
    " ",
    "\n",
    "\n\n\n",
    "  leading spaces on the first line\nnext\n",
    " x",
    "trailing spaces   \nx\n",
    "x\n   ",
    "x\n \n",
    "\ttab first\n",
    "a\n\t\nb\n",
    "---\n",
    "x\n---\ny\n",
    "...\n",
    "x\n...\n",
    "# not a comment\n",
    "#\n#\n",
    "key: value\n- item\n",
    "|\n>\n",
    "'\"\\\n",
    "é∂ƒ漢字\n😀\n",
    "\u202e\u200b\ufeff\n",
    "\ufeffBOM first\n",
    "a\r\nb\r\n",
    "a\rb",
    "a\x00b\x1b\x7f\n",
    "\u2028\u2029\n",
    "x" * 200_000 + "\n",
    ("long line " * 20_000).strip() + "\n",
    "no newline at end",
    "ends with two\n\n",
    "null\n",
    "~",
    "true",
    "0755",
    "1e3",
    "{a: b}",
    "[1, 2]",
    "*alias",
    "&anchor x",
    "!!python/object:os.system",
    "%YAML 1.1\n",
    "@",
    "`",
    "{{ host.address }}\n",
    "{% raw %}x{% endraw %}",
    "\xa0nbsp first\n",
]


def file_doc(content: str, **spec: Any) -> Doc:
    return Doc(
        "File", "f", {"hosts": {"matchLabels": {"host": "master-1"}}, "path": "/etc/f", **spec, "content": content}
    )


@pytest.mark.parametrize("content", YAML_AWKWARD)
def test_document_yaml_reads_back_exactly(content: str) -> None:
    data = document(file_doc(content))
    text = _yaml(data)
    assert yaml.safe_load(text) == data
    assert yaml.safe_load(text)["spec"]["content"] == content


@pytest.mark.parametrize("content", ["a\x85b\n", "\x85", "ETCD_NAME=caf\x85\n", "line\n\x85\nline\n"])
def test_document_yaml_with_nel_reads_back_exactly(content: str) -> None:
    data = document(file_doc(content))
    assert yaml.safe_load(_yaml(data)) == data


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", " ", "  ", "\t", "\n", "\r", "#", "-", "---", "...", ":", "|", ">", "'", '"', "\\"])
        | st.sampled_from(["{", "}", "%", "@", "&", "*", "!", "é", "\ufeff", "\u2028", "\xa0", "\x00", "\x1b"]),
        max_size=20,
    ).map("".join)
)
def test_any_nel_free_content_reads_back_exactly(content: str) -> None:
    data = document(file_doc(content, mode="0600", owner="etcd", sensitive=True))
    assert yaml.safe_load(_yaml(data)) == data


def test_spec_files_are_headed_commented_and_read_back_document_by_document() -> None:
    adoption = Adoption()
    contents = ["x\n\n\n", "\n", "", " lead\n", "---\n...\n"]
    for i, c in enumerate(contents):
        adoption.add("etcd.yaml", Doc("File", f"f{i}", {"hosts": "all", "path": f"/etc/f{i}", "content": c}, "a\nb"))
    adoption.add("etcd.yaml", Doc("Unit", "etcd", {"hosts": "all", "restartOn": ["f0"], "content": "[Unit]\n"}))
    adoption.add("zz-other.yaml", Doc("Certificate", "c", {"hosts": "all", "paths": ["/a.pem"]}, "# tricky\n---"))
    adoption.files["inventory.yaml"] = [Doc("Host", "m", {"address": "198.18.0.1"}, labels={"role": "master"})]
    files = spec_files(adoption, "m, n")
    assert list(files) == ["inventory.yaml", "etcd.yaml", "zz-other.yaml"]
    for name, text in files.items():
        assert text.startswith("#") and "# Written by `reconciler import` from m, n.\n" in text
        docs = [d for d in yaml.safe_load_all(text) if d]
        assert docs == [document(d) for d in sorted(adoption.files[name], key=lambda d: KIND_ORDER.index(d.kind))]
    etcd = [d for d in yaml.safe_load_all(files["etcd.yaml"]) if d]
    assert [d["kind"] for d in etcd] == ["File"] * len(contents) + ["Unit"]
    assert [d["spec"]["content"] for d in etcd[:-1]] == contents
    assert "# a\n# b\n" in files["etcd.yaml"]
    other = [d for d in yaml.safe_load_all(files["zz-other.yaml"]) if d]
    assert other == [document(adoption.files["zz-other.yaml"][0])]
