"""adopt.secrets (with reconciler.secrets.secret_name): what import takes for a secret in a file it copies, found by
name and never by value, in time linear in the text."""

from __future__ import annotations

import time

import pytest

from reconciler.adopt.secrets import env_file_secrets, unit_file_secrets
from reconciler.secrets import secret_name


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("VAULT_TOKEN", "s.abc", True),
        ("AWS_SECRET_ACCESS_KEY", "wJalr/K7MDENG", True),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE", True),
        ("DB_PASSWORD", "hunter2", True),
        ("MYSQL_PASSWD", "hunter2", True),
        ("DB_PASS", "hunter2", True),
        ("GITHUB_API_KEY", "ghp_x", True),
        ("APP_KEY", "base64:abc", True),
        ("KEY", "abc", True),
        ("GOOGLE_APPLICATION_CREDENTIALS_JSON", "{}", True),
        ("client-secret", "abc", True),
        ("ETCD_KEY_FILE", "/etc/kubernetes/ssl/kubernetes-key.pem", False),  # names a file
        ("ETCD_PEER_KEY_FILE", "/etc/kubernetes/ssl/kubernetes-key.pem", False),
        ("etcd-keyfile", "/etc/kubernetes/ssl/kubernetes-key.pem", False),
        ("token-auth-file", "/etc/kubernetes/token.csv", False),
        ("kubelet-client-key", "/etc/kubernetes/ssl/kubelet-key.pem", False),  # a path, whatever the name
        ("VAULT_TOKEN_PATH", "/run/vault/token", False),
        ("TOKEN_TTL", "3600", False),
        ("ETCD_INITIAL_CLUSTER_TOKEN", "k8s-etcd-cluster", False),  # etcd's cluster id, not a secret
        ("initial-cluster-token", "k8s-etcd-cluster", False),
        ("experimental-bootstrap-token-auth", "", False),  # a switch
        ("ETCD_CLIENT_CERT_AUTH", "true", False),
        ("DB_PASSWORD", "", False),  # nothing to keep
        ("LOG_LEVEL", "info", False),
        ("KUBE_API_ADDRESS", "--bind-address=10.0.0.1", False),
        ("PWD", "/root/x", False),
    ],
)
def test_secret_names(name: str, value: str, secret: bool) -> None:
    assert secret_name(name, value) is secret


def test_secrets_are_found_by_name_in_env_files_and_units_never_by_value() -> None:
    env = (
        'KUBE_API_ARGS="--etcd-servers=https://10.0.0.1:2379 --oidc-client-secret=abc --token-auth-file=/x/t.csv"\n'
        "DATABASE_URL=postgres://app:hunter2@db:5432/app\n"
        "# VAULT_TOKEN=commented-out\n"  # still in the file, and in any diff of it
        "export DB_PASSWORD=hunter2\n"  # systemd skips the line; the file still holds it
        "PLAIN=1\n"
        '#ETCD_WAL_DIR=""\n'
    )
    assert env_file_secrets(env) == ["--oidc-client-secret", "DATABASE_URL", "VAULT_TOKEN", "DB_PASSWORD"]
    unit = (
        "[Service]\n"
        'Environment="VAULT_TOKEN=s.x" LOG=info\n'
        "ExecStart=/usr/bin/app --password hunter2 --key-file=/etc/app.key --verbose\n"
    )
    assert unit_file_secrets(unit) == ["VAULT_TOKEN", "--password"]
    assert unit_file_secrets("[Service]\n#Environment=API_KEY=abc\n") == ["API_KEY"]
    seed_env = 'KUBE_API_ARGS="--experimental-bootstrap-token-auth --token-auth-file=/etc/kubernetes/token.csv"\n'
    assert env_file_secrets(seed_env) == [] and unit_file_secrets("[Service]\nExecStart=/usr/bin/etcd\n") == []


@pytest.mark.parametrize(
    "text",
    [
        "X=" + "a" * 2**20,
        'X="' + "a b " * 2**18,
        "X=" + "://" + "a" * 2**20,
        "X=" + "://a:" * 2**18,
        "[Service]\nExecStart=/bin/x " + "--a " * 2**18,
        "[Service]\nEnvironment=" + "'" * 2**20,
        "[Service]\nEnvironment=" + "\\" * 2**20,
    ],
)
def test_looking_for_secrets_takes_time_linear_in_the_text(text: str) -> None:
    """A host's file is up to 1 MiB of anything: shlex took 15 s on one long word, a scheme before `://` 20 s."""
    began = time.process_time()
    env_file_secrets(text)
    unit_file_secrets(text)
    assert time.process_time() - began < 5  # about 0.1 s; quadratic would be minutes
