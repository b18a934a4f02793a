"""adopt.describe on secrets (issue 26, items 4 and 13): a sensitive File keeps the mode the host gives it, a secret
others can read (the seed's token.csv, 0644) is imported as it is with a warning saying how to tighten it, and no
secret appears in a problem, a note, a warning or a comment."""

from __future__ import annotations

from pathlib import Path

from reconciler.adopt.describe import describe
from reconciler.adopt.emit import spec_files
from tests.support.masters import (
    PLAIN_ENV,
    TOKEN,
    adopt,
    app_host,
    assert_exact,
    fleet,
    found_hosts,
    guide_fleet,
    infos,
)


def test_the_token_file_is_sensitive_and_its_secret_in_no_problem_or_comment(tmp_path: Path) -> None:
    masters = fleet()
    masters[1].files["/etc/kubernetes/token.csv"].content = b"\xff" + TOKEN  # not UTF-8 on one host
    masters[2].files["/etc/kubernetes/token.csv"].content = TOKEN + b"\x00"  # a NUL on another
    imported = adopt(masters, tmp_path)
    assert any("master-2" in p and "token.csv is not UTF-8" in p for p in imported.adoption.problems)
    assert any("master-3" in p and "token.csv holds a NUL" in p for p in imported.adoption.problems)
    secret = TOKEN.split(b",")[0].decode()
    assert not any(secret in p for p in imported.adoption.problems + imported.adoption.notes)
    comments = [line for text in imported.files.values() for line in text.splitlines() if line.startswith("#")]
    assert not any(secret in c for c in comments)
    tokens = [d for d in imported.docs("File") if d["spec"]["path"] == "/etc/kubernetes/token.csv"]
    assert tokens and all(d["spec"]["sensitive"] is True for d in tokens)
    desired = imported.load()
    assert desired.hosts["master-1"].files["/etc/kubernetes/token.csv"].content == TOKEN
    assert desired.hosts["master-1"].files["/etc/kubernetes/token.csv"].sensitive


def test_a_world_readable_secret_is_imported_as_it_is_with_a_warning_without_the_secret(tmp_path: Path) -> None:
    """Issue 26 item 13: the seed's guide leaves token.csv 0644; import must not ask for the host to change first."""
    masters = fleet(1)
    masters[0].files["/etc/kubernetes/token.csv"].mode = 0o644
    imported = adopt(masters, tmp_path)
    assert imported.adoption.problems == []
    token = next(d["spec"] for d in imported.docs("File") if d["spec"]["path"] == "/etc/kubernetes/token.csv")
    assert token["sensitive"] is True and token["mode"] == "0644" and token["wideMode"] is True
    desired = assert_exact(masters, imported)  # the mode kept: 0644 on the host, 0644 in the spec
    assert desired.hosts["master-1"].files["/etc/kubernetes/token.csv"].sensitive
    (warning,) = imported.adoption.warnings
    assert "chmod" not in warning and 'mode: "0600"' in warning and TOKEN.decode().split(",")[0] not in warning


def test_a_file_others_cannot_read_but_its_group_can_is_sensitive_with_its_mode_kept(tmp_path: Path) -> None:
    host = app_host()
    plain = host.files[PLAIN_ENV]
    plain.mode, plain.group = 0o640, "app"  # the service's group reads it; others not
    found = found_hosts([host], ("app.service",))
    adoption = describe(infos([host]), found)
    spec = next(d.spec for d in adoption.files["units.yaml"] if d.kind == "File" and d.spec["path"] == PLAIN_ENV)
    assert spec["sensitive"] is True and spec["mode"] == "0640" and spec["group"] == "app"
    assert not adoption.problems and not adoption.warnings  # group-readable is how services read their secrets


def test_a_world_readable_token_file_is_imported_as_it_is_with_a_warning_saying_how_to_tighten_it() -> None:
    masters = guide_fleet()
    adoption = describe(infos(masters), found_hosts(masters))
    assert adoption.problems == []
    tokens = [d for d in adoption.files["kubernetes.yaml"] if d.kind == "File" and "token.csv" in d.spec["path"]]
    assert len(tokens) == 1
    spec = tokens[0].spec
    assert spec["sensitive"] is True and spec["mode"] == "0644" and spec["wideMode"] is True
    assert 'mode: "0600"' in tokens[0].comment
    (warning,) = adoption.warnings
    assert "/etc/kubernetes/token.csv" in warning and "0644" in warning and 'mode: "0600"' in warning
    assert "master-1, master-2, master-3" in warning and "no restart" in warning
    text = spec_files(adoption, "x")["kubernetes.yaml"]
    secret = TOKEN.decode().split(",")[0]
    assert secret not in warning and secret not in tokens[0].comment
    assert '  mode: "0644"\n' in text  # the line the operator edits
