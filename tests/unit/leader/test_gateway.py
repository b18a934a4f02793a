"""etcd's JSON gateway as a hostile or broken endpoint could answer it (issue 26, items 5 and 6).

Every exchange has an overall deadline (an answer dripping a byte at a time ends at it, whatever httpx's
per-read timeout) and a size cap (a huge answer is not read into memory): against a real loopback HTTP server
written here. Every answer of a shape the calls do not expect is `EtcdUnavailable`, never another exception:
named cases, then random JSON (hypothesis) into every parse path of the gateway, the elector and the restart lock.
The curl-over-SSH carrier (`leader.on_host`) has the same deadline and cap."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.leader.elector import Elector
from reconciler.leader.from_here import EtcdGateway
from reconciler.leader.gateway import EtcdApi, EtcdUnavailable
from reconciler.leader.on_host import EtcdOnHosts, etcd_members
from reconciler.leader.restart_lock import LockNotTaken, RestartLock
from reconciler.spec.isolate import load_desired
from reconciler.transport.base import MAX_OUTPUT, CommandResult
from reconciler.transport.session import Session

SPECS = Path(__file__).resolve().parents[3] / "specs"
MiB = 1 << 20

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> None:
    """Read one HTTP request (headers, then a Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    await reader.readexactly(length)


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A loopback HTTP server answering every connection with `handler`; its URL."""

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _request(reader)
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up: what these tests want
        finally:
            writer.close()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


def dripping(where: str, sent: list[float]) -> Handler:
    """A 200 answer that comes a byte at a time, 0.05 s apart (well within a per-read timeout), from its status
    line (`where` = "headers") or from its body; each byte's time is appended to `sent`."""
    body = b'{"kvs": []}' + b" " * 2000
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if where == "body":
            writer.write(head)
        for i in range(len(head + body) if where == "headers" else len(body)):
            writer.write((head + body if where == "headers" else body)[i : i + 1])
            await writer.drain()
            sent.append(time.monotonic())
            await asyncio.sleep(0.05)

    return handler


@pytest.mark.parametrize("where", ["headers", "body"])
async def test_an_answer_dripping_a_byte_at_a_time_ends_at_the_deadline(where: str) -> None:
    sent: list[float] = []
    async with serving(dripping(where, sent)) as url:
        gateway = EtcdGateway([url], timeout=0.5)
        began = time.monotonic()
        try:
            async with asyncio.timeout(10):  # the test's own limit: the drip lasts ~100 s
                with pytest.raises(EtcdUnavailable, match="no answer within 0.5s"):
                    await gateway.holder("/k")
        finally:
            await gateway.close()
        took = time.monotonic() - began
        assert len(sent) > 3  # it was answering, slowly: httpx's per-read timeout never fired
        assert 0.5 <= took < 1.5


def flooding(framing: str, sent: list[int], total: int = 64 * MiB) -> Handler:
    """A 200 answer of `total` bytes (whitespace, then `{}`: valid JSON once read whole), chunked or with a
    Content-Length; the bytes written so far are kept in sent[0] (the server's send buffer is kept small, so
    what it could write is what the client read, give or take the client's receive buffer)."""

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        headers = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        headers += (
            b"Transfer-Encoding: chunked\r\n\r\n" if framing == "chunked" else b"Content-Length: %d\r\n\r\n" % total
        )
        writer.write(headers)
        block = b" " * (64 * 1024)
        left = total - 2
        while left > 0:
            piece = block[: min(left, len(block))]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece)
            await writer.drain()
            left -= len(piece)
            sent[0] += len(piece)
        writer.write(b"2\r\n{}\r\n0\r\n\r\n" if framing == "chunked" else b"{}")
        await writer.drain()

    return handler


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_a_huge_answer_is_not_read_into_memory(framing: str) -> None:
    sent = [0]
    async with serving(flooding(framing, sent)) as url:
        gateway = EtcdGateway([url], timeout=10)
        try:
            with pytest.raises(EtcdUnavailable, match="bytes"):
                await gateway.holder("/k")
        finally:
            await gateway.close()
    assert sent[0] < 16 * MiB  # of 64 MiB: the client stopped reading at its cap (1 MiB) plus socket buffers


async def test_a_compressed_answer_is_refused_unread() -> None:
    """A gzip bomb inflates past any byte count taken before decoding: only an identity answer is read."""

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    async with serving(handler) as url:
        gateway = EtcdGateway([url], timeout=2)
        try:
            with pytest.raises(EtcdUnavailable, match="gzip"):
                await gateway.holder("/k")
        finally:
            await gateway.close()


class Member:
    """A master as the curl carrier sees it: `run` answers with `answer` (or never, when None), after keeping
    the `max_output` it was given."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.max_output: list[int] = []

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        self.max_output.append(max_output)
        if self.answer is None:
            await asyncio.Event().wait()
        return CommandResult(tuple(argv), 0, self.answer or b"", b"")

    async def copy_out(
        self, argv: Sequence[str], sink: Callable[[bytes], None], *, timeout: float, max_bytes: int
    ) -> CommandResult:
        raise NotImplementedError

    def lines(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


def on_hosts(member: Member, timeout: float) -> EtcdOnHosts:
    async def connect(_: object) -> Member:
        return member

    return EtcdOnHosts(Session(connect), etcd_members(load_desired(SPECS))[:1], timeout=timeout)  # type: ignore[arg-type]


async def test_the_curl_carrier_has_the_same_deadline_and_cap() -> None:
    silent = Member(None)
    api = on_hosts(silent, 0.1)
    assert api.deadline == 5.1  # curl's --max-time, and the SSH connection and command on top
    api.deadline = 0.2  # (not to wait 5 s here)
    began = time.monotonic()
    with pytest.raises(EtcdUnavailable, match="no answer within"):
        await api.holder("/k")
    assert time.monotonic() - began < api.deadline + 1
    assert silent.max_output and max(silent.max_output) <= 2 * MiB  # curl's output is cut on the host's side

    huge = Member(b"{}" + b" " * (2 * MiB) + b"\n200")  # a carrier that did not cut it: refused all the same
    with pytest.raises(EtcdUnavailable, match="bytes"):
        await on_hosts(huge, 1).holder("/k")


class Answers(EtcdApi):
    """An etcd whose every answer, per path, the test chooses (raw JSON: any shape at all)."""

    endpoints = ["x"]

    def __init__(self, answers: dict[str, Any], default: Any = None) -> None:
        self.answers, self.default = answers, default

    async def _ask(self, n: int, path: str, body: dict[str, Any]) -> bytes:
        return json.dumps(self.answers.get(path, self.default)).encode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


GOOD_KV = {"key": b64("/k"), "value": b64("me"), "create_revision": "5", "mod_revision": "5", "lease": "7"}
GOOD = {
    "/v3/lease/grant": {"ID": "7", "TTL": "3"},
    "/v3/lease/keepalive": {"result": {"ID": "7", "TTL": "3"}},
    "/v3/lease/timetolive": {"ID": "7", "TTL": "2"},
    "/v3/lease/revoke": {"header": {"revision": "6"}},
    "/v3/kv/txn": {"succeeded": True, "header": {"revision": "5"}},
    "/v3/kv/range": {"header": {"revision": "5"}, "kvs": [GOOD_KV], "count": "1"},
    "/v3/kv/put": {"header": {"revision": "5"}},
}

MALFORMED: list[tuple[str, Any]] = [
    ("holder", {"kvs": ["x"]}),
    ("holder", {"kvs": [{"value": 5}]}),
    ("holder", {"kvs": [{**GOOD_KV, "value": 5}]}),
    ("holder", {"kvs": "x"}),
    ("holder", {"kvs": [{**GOOD_KV, "create_revision": [1]}]}),
    ("holder", {"kvs": [{**GOOD_KV, "create_revision": True}]}),
    ("holder", {"kvs": [{**GOOD_KV, "create_revision": "1e3"}]}),
    ("holder", {"kvs": [{**GOOD_KV, "lease": {}}]}),
    ("holder", {"kvs": [{**GOOD_KV, "value": "not base64!"}]}),
    ("holder", []),
    ("holder", "x"),
    ("holder", None),
    ("campaign", {"responses": [{"response_range": []}]}),
    ("campaign", {"responses": [1]}),
    ("campaign", {"responses": {}}),
    ("campaign", {"responses": [{"response_range": {"kvs": ["x"]}}]}),
    ("campaign", {"succeeded": True}),  # no header
    ("campaign", {"succeeded": True, "header": []}),
    ("campaign", {"succeeded": True, "header": {"revision": 1.5}}),
    ("campaign", {"succeeded": "yes", "header": {"revision": "5"}}),
    ("grant", {"ID": [], "TTL": "5"}),
    ("grant", {"ID": True, "TTL": "5"}),
    ("grant", {"ID": "7", "TTL": " 5"}),
    ("keepalive", {"result": "x"}),
    ("keepalive", {"result": {"TTL": {}}}),
    ("keepalive", {"result": {"TTL": False}}),
    ("time_to_live", {"TTL": []}),
    ("put_while", {"succeeded": "false"}),
    ("put_while", {"succeeded": 1}),
    ("prefixed", {"kvs": [1]}),
    ("prefixed", {"kvs": [{"key": 5}]}),
    ("prefixed", {"kvs": {"a": 1}}),
    ("prefixed", {"kvs": [{"value": b64("v")}]}),  # no key
]


async def call(api: EtcdApi, method: str) -> object:
    match method:
        case "holder":
            return await api.holder("/k")
        case "campaign":
            return await api.campaign("/k", "me", 7)
        case "grant":
            return await api.grant(3)
        case "keepalive":
            return await api.keepalive(7)
        case "time_to_live":
            return await api.time_to_live(7)
        case "put_while":
            return await api.put_while("/s", "v", "/k", 5)
        case "prefixed":
            return await api.prefixed("/p/")
        case "revoke":
            return await api.revoke(7)
        case "put":
            return await api.put("/k", "v", 7)
    raise AssertionError(method)


PATH = {
    "holder": "/v3/kv/range",
    "prefixed": "/v3/kv/range",
    "campaign": "/v3/kv/txn",
    "put_while": "/v3/kv/txn",
    "grant": "/v3/lease/grant",
    "keepalive": "/v3/lease/keepalive",
    "time_to_live": "/v3/lease/timetolive",
    "revoke": "/v3/lease/revoke",
    "put": "/v3/kv/put",
}


@pytest.mark.parametrize(("method", "answer"), MALFORMED)
async def test_a_malformed_answer_is_etcd_unavailable(method: str, answer: Any) -> None:
    with pytest.raises(EtcdUnavailable):
        await call(Answers({PATH[method]: answer}), method)


async def test_well_formed_answers_still_parse() -> None:
    api = Answers(GOOD)
    holder = await api.holder("/k")
    assert holder is not None and (holder.value, holder.create_revision, holder.lease) == ("me", 5, 7)
    assert (await api.grant(3)).id == 7 and await api.keepalive(7) == 3 and await api.time_to_live(7) == 2
    assert await api.put_while("/s", "v", "/k", 5)
    assert await api.prefixed("/") == {"/k": "me"}
    taken = await api.campaign("/k", "me", 7)
    assert (taken.value, taken.create_revision, taken.lease) == ("me", 5, 7)
    assert await Answers({"/v3/kv/range": {"header": {}}}).holder("/k") is None  # no kvs: no key
    assert await Answers({"/v3/lease/keepalive": {"result": {"ID": "7"}}}).keepalive(7) == 0  # expired: no TTL
    other = await Answers(
        {"/v3/kv/txn": {"header": {}, "responses": [{"response_range": {"kvs": [{**GOOD_KV, "value": b64("x")}]}}]}}
    ).campaign("/k", "me", 8)
    assert (other.value, other.lease) == ("x", 7)


KEYS = sorted({k for a in GOOD.values() for k in a} | set(GOOD_KV) | {"response_range", "responses", "result", "error"})
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.sampled_from(["", "0", "5", "7", "-1", "x", b64("me"), b64("/k"), "not base64!", "9" * 30])
    | st.text(max_size=5)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=12,
)
WRONG = SCALARS | st.lists(SCALARS, max_size=2) | st.dictionaries(st.sampled_from(KEYS), SCALARS, max_size=2)
LOST = {"header": {"revision": "9"}, "responses": [{"response_range": {"kvs": [{**GOOD_KV, "value": b64("x")}]}}]}


def spoiled(good: Any) -> st.SearchStrategy[Any]:
    """`good` with one mistake: replaced by a value of some other shape, or one field at any depth replaced or left
    out (mostly deep down: where a parser trusts what it has already looked at)."""
    if isinstance(good, dict) and good:
        keys = st.sampled_from(sorted(good))
        deeper = keys.flatmap(lambda k: spoiled(good[k]).map(lambda v: {**good, k: v}))
        return WRONG | deeper | deeper | deeper | keys.map(lambda k: {f: v for f, v in good.items() if f != k})
    if isinstance(good, list) and good:
        deeper = spoiled(good[0]).map(lambda v: [v, *good[1:]])
        return WRONG | deeper | deeper | deeper
    return WRONG


FINE = {path: [answer, LOST] if path == "/v3/kv/txn" else [answer] for path, answer in GOOD.items()}
# every path answers well but one, which has one mistake (so that callers get past their first exchanges)
ANSWERS = st.sampled_from(sorted(FINE)).flatmap(
    lambda wrong: st.fixed_dictionaries(
        {
            path: st.sampled_from(fine).flatmap(spoiled) if path == wrong else st.sampled_from(fine)
            for path, fine in FINE.items()
        }
    )
)


def run(check: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(check())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANSWERS)
def test_any_answer_from_the_gateway_is_a_value_or_etcd_unavailable(answers: dict[str, Any]) -> None:
    async def check() -> None:
        for method in PATH:
            try:
                await call(Answers(answers), method)
            except EtcdUnavailable:
                pass

    run(check)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANSWERS)
def test_any_answer_leaves_the_elector_a_leader_or_not_never_an_error(answers: dict[str, Any]) -> None:
    async def check() -> None:
        elector = Elector(Answers(answers), "me", ttl=3)
        for _ in range(3):  # campaign, renew, renew
            await elector.step()
            assert isinstance(await elector.fenced(), bool)

    run(check)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANSWERS)
def test_any_answer_leaves_the_restart_lock_taken_or_refused_never_an_error(answers: dict[str, Any]) -> None:
    async def check() -> None:
        try:
            async with RestartLock(Answers(answers), "me", retry=0.001).turn("etcd.service", "h", wait=0) as held:
                for _ in range(2):
                    await asyncio.sleep(0.002)  # the keeper runs in between
                    assert isinstance(await _ask(held), bool)
        except LockNotTaken:
            pass

    run(check)


async def _ask(held: Callable[[], Any]) -> bool:
    """The turn's fence, as the engine asks it."""
    return bool(await held())


@pytest.mark.parametrize("kvs", [["x"], [None], "x", [{"value": 5}], [{**GOOD_KV, "create_revision": {}}]])
async def test_the_elector_fence_says_no_to_a_malformed_key(kvs: Any) -> None:
    elector = Elector(Answers(GOOD), "me", ttl=3)
    await elector.step()
    assert elector.acting() and await elector.fenced()
    elector.gateway = Answers({**GOOD, "/v3/kv/range": {"kvs": kvs}})
    assert not await elector.fenced()
    await elector.step()  # nor does a renewal raise
    assert not await elector.fenced()


@pytest.mark.parametrize("answer", [{"responses": [{"response_range": []}]}, {"responses": [{"response_range": "x"}]}])
async def test_the_restart_lock_refuses_a_malformed_transaction(answer: Any) -> None:
    with pytest.raises(LockNotTaken, match="etcd did not answer"):
        async with RestartLock(Answers({**GOOD, "/v3/kv/txn": answer}), "me").turn("etcd.service", "h", wait=1):
            raise AssertionError("taken on a malformed answer")
