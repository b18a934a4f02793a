"""Fixtures of the tests that need no testbed: a writable copy of the bundled specs, a local etcd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.observe import programs
from tests.support.etcd import local_etcd
from tests.support.specs import copy_specs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a real etcd runs a program of this machine: it is of the `host` tier."""
    for item in items:
        if "etcd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.host)


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    """A writable copy of the bundled specs (specs/ha/ included)."""
    return copy_specs(tmp_path / "specs")


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[str]:
    """A real etcd member on loopback; its client URL."""
    with local_etcd(tmp_path / "etcd-data") as url:
        yield url


@pytest.fixture
def no_flag_books() -> Iterator[None]:
    """The test starts with nothing learnt of any binary (observe.programs keeps what it asked per process)."""
    programs.BOOKS.clear()
    programs.SEEN.clear()
    yield
    programs.BOOKS.clear()
    programs.SEEN.clear()
