"""reconciler.secrets: what looks like a secret, and a line with the secrets taken out (what a rollback reports of a
unit's journal and of the values it tried). Issue 26: a service that logs its connection string on failure put it
into /status and the logs through the rollback's message."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.secrets import REDACTED, known_words, scrub, secret_name

SECRET = "hunter2-s3cr3t-value"
TOKEN_CSV = b'0b3c2a7e5f1d4c6b9a8e7d6c5b4a3f2e,kubelet-bootstrap,10001,"system:kubelet-bootstrap"\n'


@pytest.mark.parametrize(
    "line",
    [
        f"failed to connect to postgres://admin:{SECRET}@db.example:5432/k8s",
        f"DB_PASSWORD={SECRET}",
        f'config: {{"token": "{SECRET}", "user": "x"}}',
        f"error: --db-password {SECRET} refused",
        f"--db-password={SECRET}: unknown flag",
        f"AWS_SECRET_ACCESS_KEY: {SECRET}",
        f"vault: VAULT_TOKEN='{SECRET}' expired",
        f"api_key={SECRET},retries=3",
    ],
)
def test_secret_looking_values_are_taken_out(line: str) -> None:
    out = scrub(line)
    assert SECRET not in out and REDACTED in out, out


@pytest.mark.parametrize(
    "line",
    [
        "error: argument --insecure-port: invalid int value: 'eighty'",
        "error listing data dir: /etc/hostname/default.etcd",
        "ETCD_KEY_FILE=/etc/kubernetes/ssl/kubernetes-key.pem",
        "--token-auth-file=/etc/kubernetes/token.csv: no such file",
        "ETCD_INITIAL_CLUSTER_TOKEN=etcd-cluster-0 mismatch",
        "election timeout 1000 ms is below 5 x the heartbeat interval 420 ms",
    ],
)
def test_what_says_why_a_unit_failed_is_kept(line: str) -> None:
    assert scrub(line) == line


def test_the_words_of_a_sensitive_file_are_taken_out_wherever_they_appear() -> None:
    known = known_words([TOKEN_CSV])
    out = scrub("invalid token line 0b3c2a7e5f1d4c6b9a8e7d6c5b4a3f2e,kubelet-bootstrap: bad uid", known)
    assert "0b3c2a7e5f1d4c6b9a8e7d6c5b4a3f2e" not in out and "bad uid" in out


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#%&+-./~", min_size=8))
def test_no_secret_survives_in_any_of_its_shapes(secret: str) -> None:
    known = known_words([secret.encode()])
    for line in (f"postgres://u:{secret}@db", f"PASSWORD={secret}", f"token: {secret} refused", f"saw {secret} here"):
        assert secret not in scrub(line, known), line


def test_names_with_a_path_a_switch_or_nothing_are_not_secrets() -> None:
    assert secret_name("DB_PASSWORD", "x") and secret_name("apiKey", "x")
    assert not secret_name("ETCD_KEY_FILE", "/etc/a/b") and not secret_name("USE_TOKEN", "true")
    assert not secret_name("PASSWORD", "") and not secret_name("ETCD_INITIAL_CLUSTER_TOKEN", "x")


def test_scrub_is_linear_on_a_long_line() -> None:
    line = "PASSWORD=" + "a" * 1_000_000 + " " + "b:" * 200_000 + " token=x" * 100_000
    began = time.process_time()
    scrub(line, known_words([b"x" * 100 + b" " + b"y" * 50]))
    assert time.process_time() - began < 5
