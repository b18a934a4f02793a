"""adopt.templating: per-host texts made one template (`template_for`) or kept literal (`literal`), attacked with
awkward text and hypothesis: a template, when there is one, renders back to exactly each host's text with the
project's own renderer (tests/support/rendering.py), never to another host's value."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.adopt.templating import literal, template_for
from tests.support.rendering import HOSTS, OWN_ADDRESS, OWN_NAME, OWN_ONLY, rendered, texts_of, values


def assert_renders_back(texts: dict[str, str], *, switch: bool = False) -> str:
    template = template_for(texts, values(list(texts)), switch=switch)
    assert template is not None
    assert rendered(template, list(texts)) == texts, template
    return template


AWKWARD = [
    "",
    "\n",
    "\n\n\n",
    "plain text\n",
    "no trailing newline",
    "{{ host.name }}\n",
    "{% if true %}x{% endif %}\n",
    "{# a comment #}\n",
    "{% raw %}x{% endraw %}\n",
    "{% endraw %}\n",
    "endraw\n",
    "{{ endraw }}",
    "{%- endraw -%}",
    "lone { brace\n",
    "{",
    "}",
    "}}",
    "%}",
    "#}",
    "{{",
    "{%",
    "{#",
    "{{{{{{",
    "a{b}c{{d}}e{%f%}g{#h#}i\n",
    '{{ "{" }}\n',
    "{{ '}}' }}",
    "{% raw %}",
    "{%raw%}{%endraw%}",
    "{{ hosts[0].address }} {{ vars }} {{ lipsum(10**9) }}\n",
    "{% for x in range(10**9) %}{% endfor %}",
    "é∂ƒ漢字 😀 \u202e\n{ünï}\n",
    "tab\there\n{\t}\n",
    "line\u2028sep{\u2029}\x85\n",
    "\x0b\x0c{\x1c\x1d\x1e}\n",
    "trailing spaces {   \n   \n",
    "198.18.0.1 master-1 {{ 198.18.0.1 }}\n",
    "x" * 5000 + "{" + "y" * 5000 + "\n",
]


CR = [
    "a{\r\nb\r\n",
    "{\r\n",
    "x\r{",
    "{{ x }}\r\nendraw\r\n",
    "{% raw %}\r\n",
    'json: {\r\n  "a": 1\r\n}\r\n',
]


@pytest.mark.parametrize("text", AWKWARD)
def test_literal_renders_to_itself(text: str) -> None:
    assert rendered(literal(text)) == {n: text for n in HOSTS}


@pytest.mark.parametrize("text", ["a\r\nb\r\n", "\r", "x\ry\n", "CRLF only\r\n\r\n"])
def test_literal_of_cr_text_without_a_brace_renders_to_itself(text: str) -> None:
    assert rendered(literal(text)) == {n: text for n in HOSTS}


@pytest.mark.parametrize("text", CR)
def test_literal_of_cr_text_with_a_brace_renders_to_itself(text: str) -> None:
    assert rendered(literal(text)) == {n: text for n in HOSTS}


def test_template_for_identical_crlf_texts_with_a_brace() -> None:
    text = '{\r\n  "kind": "Config"\r\n}\r\n'
    assert_renders_back({n: text for n in HOSTS})


def test_template_for_texts_with_cr_that_differ_is_refused_not_wrong() -> None:
    texts = {n: f"addr={a}\r\n" for n, a in HOSTS.items()}
    assert template_for(texts, values(list(HOSTS))) is None
    assert template_for(texts, values(list(HOSTS)), switch=True) is None


text_pieces = st.sampled_from(
    [
        "a",
        "Z",
        "0",
        " ",
        "\t",
        "\n",
        "-",
        ".",
        ":",
        "=",
        "_",
        '"',
        "'",
        "\\",
        "{",
        "}",
        "{{",
        "}}",
        "{%",
        "%}",
        "{#",
        "#}",
        "{% raw %}",
        "{% endraw %}",
        "endraw",
        "{{ host.name }}",
        "é",
        "漢",
        "\u2028",
        "\x85",
        "\x00",
    ]
    + list(HOSTS)
    + list(HOSTS.values())
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(text_pieces, max_size=30).map("".join))
@example("{% raw %}x")
@example("a{%- raw %}b")
@example("{{ '{% endraw %}' }}")
def test_literal_renders_any_cr_free_text_to_itself(text: str) -> None:
    assert rendered(literal(text), ["master-1"]) == {"master-1": text}


host_sets = st.lists(st.sampled_from(list(HOSTS)), min_size=1, max_size=3, unique=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(text_pieces | st.sampled_from([OWN_NAME, OWN_ADDRESS, OWN_ONLY]), max_size=25), host_sets)
def test_template_for_renders_each_hosts_text_back(tokens: list[Any], names: list[str]) -> None:
    """Any texts, any hosts: a template, when there is one, renders to exactly each host's text; with `switch`
    there always is one (no CR here)."""
    texts = texts_of(tokens, names)
    for switch in (False, True):
        template = template_for(texts, values(names), switch=switch)
        if switch:
            assert template is not None
        if template is not None:
            assert rendered(template, names) == texts, (texts, template)


safe_pieces = st.sampled_from(["{", "}", "{{", "}}", "{%", "%}", "{#", "#}", "é", "\n", " ", "\t", ":", "=", "/"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(safe_pieces | st.sampled_from([OWN_NAME, OWN_ADDRESS]), min_size=1, max_size=25), host_sets)
def test_texts_differing_only_by_each_hosts_own_name_and_address_get_one_template(
    tokens: list[Any], names: list[str]
) -> None:
    texts = texts_of([x for t in tokens for x in (t, " ")], names)  # every value stands alone
    template = template_for(texts, values(names))
    assert template is not None and "{% if" not in template
    assert rendered(template, names) == texts
    if len(names) > 1 and any(t is OWN_NAME or t is OWN_ADDRESS for t in tokens):
        assert not any(n in template or HOSTS[n] in template for n in names), template


def test_values_inside_longer_tokens_stay_literal() -> None:
    texts = {
        n: f"--advertise={a}:2379 --peer=198.18.0.100 --name={n} --other=master-100 --dns=master-1.example.com "
        f"--ip6=::ffff:{a} --next=198.18.0.1.5\n"
        for n, a in (("master-1", HOSTS["master-1"]), ("master-10", HOSTS["master-10"]))
    }
    template = assert_renders_back(texts)
    assert template == (
        "--advertise={{ host.address }}:2379 --peer=198.18.0.100 --name={{ host.name }} --other=master-100 "
        "--dns=master-1.example.com --ip6=::ffff:{{ host.address }} --next=198.18.0.1.5\n"
    )


def test_another_hosts_value_is_not_this_hosts_value() -> None:
    # master-1 (198.18.0.1) names master-10's address 198.18.0.11; master-10 names its own
    texts = {"master-1": "me=198.18.0.1 peer=198.18.0.11\n", "master-10": "me=198.18.0.11 peer=198.18.0.11\n"}
    assert template_for(texts, values(list(texts))) is None
    template = assert_renders_back(texts, switch=True)
    assert '{% if host.name == "master-1" %}' in template


def test_prefix_names_each_get_their_own_value() -> None:
    texts = {n: f"ETCD_NAME={n}\nETCD_ADVERTISE_CLIENT_URLS=https://{a}:2379\n" for n, a in HOSTS.items()}
    template = assert_renders_back(texts)
    assert template == "ETCD_NAME={{ host.name }}\nETCD_ADVERTISE_CLIENT_URLS=https://{{ host.address }}:2379\n"


@pytest.mark.parametrize(
    "texts",
    [
        {"master-1": "a\nb\n", "master-10": "a\nb\nc\n"},
        {"master-1": "a\n", "master-10": "a"},
        {"master-1": "", "master-10": "x", "master-11": "\n"},
        {"master-1": "{% endraw %}\n{{\n", "master-10": "{#\n", "master-11": "{% raw %}\n\n\n"},
        {"master-1": "x=198.18.0.1\n{\n", "master-10": "x=198.18.0.11\n", "master-11": "x=198.18.0.10\ny\nz\n"},
        {"master-1": "# comment\nA=1\n", "master-10": "A=1\n", "master-11": "A=1\n"},
    ],
)
def test_switch_on_different_line_counts_renders_each_hosts_text(texts: dict[str, str]) -> None:
    assert template_for(texts, values(list(texts))) is None
    assert_renders_back(texts, switch=True)


def test_switch_on_one_differing_line_keeps_the_others_shared() -> None:
    texts = {n: f"[Service]\nExecStart=/usr/bin/etcd --name={n}\nNice={i}\n{{\n" for i, n in enumerate(sorted(HOSTS))}
    template = assert_renders_back(texts, switch=True)
    assert template.count("[Service]") == 1 and template.count("{% if") == 1


def test_a_long_json_file_differing_by_address_renders_within_the_renderers_limits() -> None:
    policy = "".join(
        '{"apiVersion": "abac.authorization.kubernetes.io/v1beta1", "kind": "Policy", '
        f'"spec": {{"user": "user-{i}", "namespace": "*", "resource": "*", "apiGroup": "*"}}}}\n'
        for i in range(5001)
    )
    texts = {n: f'{{"host": "{a}"}}\n' + policy for n, a in HOSTS.items()}
    assert_renders_back(texts)


def test_a_long_json_file_the_same_everywhere_is_one_raw_block() -> None:
    text = '{"a": {"b": 1}}\n' * 6000
    template = assert_renders_back({n: text for n in HOSTS})
    assert template.count("{%") == 2
