"""Templates rendered for hosts as the spec loader renders them, and texts that differ per host: what import's
templating and describe tests check a template against (a template is right when it renders back to each host's
own text).

HOSTS are named and addressed as prefixes of one another (master-1 / master-10 / master-11, 198.18.0.1 / .11 / .10):
a value of one host found inside another's is the mistake these hosts provoke.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from reconciler.spec.load import parse_documents
from reconciler.spec.model import API_VERSION, Document
from reconciler.spec.templates import Renderer

HOSTS = {"master-1": "198.18.0.1", "master-10": "198.18.0.11", "master-11": "198.18.0.10"}


def host_documents(hosts: dict[str, str]) -> dict[str, Document]:
    text = "---\n".join(
        yaml.safe_dump({"apiVersion": API_VERSION, "kind": "Host", "metadata": {"name": n}, "spec": {"address": a}})
        for n, a in hosts.items()
    )
    docs, issues = parse_documents(text, "hosts.yaml")
    assert not issues, issues
    return {d.metadata.name: d for d in docs}


HOST_DOCS = host_documents(HOSTS)


def rendered(template: str, names: Sequence[str] | None = None) -> dict[str, str]:
    """The template rendered for each host by the project's Renderer (a fresh one: its byte budget is per load)."""
    docs = [HOST_DOCS[n] for n in (names if names is not None else HOSTS)]
    renderer = Renderer(docs)
    return {d.metadata.name: renderer.render(template, d) for d in docs}


def values(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Each host's own values as template_for takes them: name -> (name, address)."""
    return {n: (n, HOSTS[n]) for n in names}


OWN_NAME, OWN_ADDRESS, OWN_ONLY = object(), object(), object()  # replaced per host


def texts_of(tokens: list[Any], names: Sequence[str]) -> dict[str, str]:
    """Each host's text: the tokens joined, OWN_NAME and OWN_ADDRESS replaced by its own, OWN_ONLY by a value no
    other host has."""

    def piece(token: Any, i: int, name: str) -> str:
        if token is OWN_NAME:
            return name
        if token is OWN_ADDRESS:
            return HOSTS[name]
        if token is OWN_ONLY:
            return f"only{i}"  # a value no other host has: more than name and address
        return str(token)

    return {n: "".join(piece(t, i, n) for t in tokens) for i, n in enumerate(names)}
