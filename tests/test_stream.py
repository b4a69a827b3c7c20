"""The relay (`sidecar.stream`) after the commit point: relayed as it arrives, never a
truncated answer dressed as success."""

import asyncio
import time

import aiohttp
import pytest
from conftest import (
    FakeFactory,
    SidecarFactory,
    chain_env,
    chat,
    post,
    sse_data,
    streamed_text,
    wait_until,
)
from fakes.openai_upstream import Script

import sidecar.upstream as sidecar_upstream

LONG = " ".join(f"w{i}" for i in range(40))


@pytest.mark.parametrize(
    ("script", "cls"),
    [
        (Script(text=LONG, end="cut", after=3), "stream_interrupted"),
        (Script(text=LONG, end="malformed", after=3), "stream_interrupted"),
        (Script(text=LONG, end="error", after=3), "stream_interrupted"),
        (Script(text=LONG, end="stall", after=3), "stream_timeout"),
    ],
    ids=["cut", "malformed", "in_band_error", "stall"],
)
async def test_broken_stream_after_commit_ends_with_one_terminal_error_and_no_done(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    script: Script,
    cls: str,
) -> None:
    a, b = await fake(script), await fake()
    sc = await sidecar(chain_env(a, b, B0_STREAM_IDLE_TIMEOUT_S="0.3"))
    r = await post(http, sc.url, chat(stream=True))
    assert r.status == 200
    events = sse_data(r.text)
    assert "[DONE]" not in events
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1
    assert events[-1] is errors[0]
    assert streamed_text(r.text) == "w0 w1 w2"
    assert b.seen == []  # no fallback after commit
    labels = {"chain": "default", "backend": "b0", "class": cls}
    assert sc.metric("llm_sidecar_backend_failures_total", **labels) == 1
    assert sc.log_lines()[0]["stream"] == cls


async def test_stream_finished_without_done_gets_the_terminator(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(end="no_done"))
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat(stream=True))
    events = sse_data(r.text)
    assert events[-1] == "[DONE]"
    assert events.count("[DONE]") == 1
    assert streamed_text(r.text) == "Hello from the fake."


async def test_stream_is_relayed_chunk_by_chunk(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(text="a b c d e", chunk_delay_s=0.15))
    sc = await sidecar(chain_env(a))
    arrivals: list[float] = []
    async with http.post(sc.url + "/v1/chat/completions", json=chat(stream=True)) as r:
        async for line in r.content:
            if b'"content":"' in line and b'"content":""' not in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    # Each word arrives on its own, about one delay apart, not all at the end.
    assert arrivals[-1] - arrivals[0] > 0.4


async def test_a_stream_whose_body_ends_after_done_keeps_its_upstream_connection(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    # `[DONE]` and the end of the chunked body often come in different reads: the caller is
    # answered at `[DONE]`, and the connection still goes back to the pool, not closed.
    a = await fake(Script(done_gap_s=0.3))
    sc = await sidecar(chain_env(a))
    for _ in range(3):
        started = time.monotonic()
        r = await post(http, sc.url, chat(stream=True))
        assert sse_data(r.text)[-1] == "[DONE]"
        assert time.monotonic() - started < 0.3  # not held for the upstream's tail
        await asyncio.sleep(0.4)
    assert len(a.seen) == 3
    assert len({s.peer_port for s in a.seen}) == 1


async def test_a_stream_tail_that_does_not_end_in_time_drops_the_connection(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sidecar_upstream, "TAIL_S", 0.2)
    a = await fake(Script(done_gap_s=5))
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat(stream=True))
    assert sse_data(r.text)[-1] == "[DONE]"
    for _ in range(40):
        if a.cancelled:
            break
        await asyncio.sleep(0.05)
    assert a.cancelled  # the upstream saw the connection go
    await post(http, sc.url, chat(stream=True))
    assert len({s.peer_port for s in a.seen}) == 2


async def test_stream_tails_never_tie_up_the_backend_pool(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    # An upstream that keeps every stream open after [DONE]: with a pool of 2, one tail is read
    # and the rest are closed, so the next requests still get a connection at once.
    a = await fake(Script(done_gap_s=5))
    sc = await sidecar(chain_env(a, B0_MAX_CONNECTIONS="2"))
    started = time.monotonic()
    for _ in range(4):
        r = await post(http, sc.url, chat(stream=True))
        assert sse_data(r.text)[-1] == "[DONE]"
    assert time.monotonic() - started < 1.0  # not waiting out a tail for a free connection
    for _ in range(40):
        if len(a.cancelled) >= 3:
            break
        await asyncio.sleep(0.05)
    assert len(a.cancelled) == 3


async def test_client_disconnect_mid_stream_closes_the_upstream_at_once(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    a = await fake(Script(text=LONG, chunk_delay_s=0.5))
    sc = await sidecar(chain_env(a))
    session = aiohttp.ClientSession()
    resp = await session.post(sc.url + "/v1/chat/completions", json=chat(stream=True))
    async for line in resp.content:
        if b'"w0"' in line:
            break
    closed_at = time.monotonic()
    resp.close()
    await session.close()
    for _ in range(40):
        if a.cancelled:
            break
        await asyncio.sleep(0.01)
    assert a.cancelled, "the upstream never saw the disconnect"
    assert a.cancelled[0] - closed_at < 0.2
    assert sc.metric("llm_sidecar_client_disconnects_total", route="chat_completions") == 1
    await asyncio.sleep(0.05)
    labels = {"route": "chat_completions", "chain": "default"}
    assert sc.metric("llm_sidecar_requests_total", status="200", **labels) == 1
    assert [x["backend"] for x in sc.log_lines()[0]["attempts"]] == ["b0"]


async def test_client_disconnect_before_commit_cancels_and_starts_no_fallback(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    a, b = await fake(Script(delay_s=5)), await fake()
    sc = await sidecar(chain_env(a, b))
    session = aiohttp.ClientSession()
    task = asyncio.create_task(session.post(sc.url + "/v1/chat/completions", json=chat()))
    await wait_until(lambda: bool(a.seen), what="a request upstream")
    closed_at = time.monotonic()
    task.cancel()
    await session.close()
    for _ in range(40):
        if a.cancelled:
            break
        await asyncio.sleep(0.01)
    assert a.cancelled and a.cancelled[0] - closed_at < 0.2
    await asyncio.sleep(0.1)
    assert b.seen == []
    assert sc.metric("llm_sidecar_client_disconnects_total", route="chat_completions") == 1
    assert sc.app.proxy.inflight == 0
    labels = {"route": "chat_completions", "chain": "default"}
    assert sc.metric("llm_sidecar_requests_total", status="499", **labels) == 1


async def test_log_line_keeps_every_attempt_when_the_caller_leaves(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    a, b = await fake(Script(delay_s=5)), await fake(Script(delay_s=5))
    sc = await sidecar(chain_env(a, b, B0_RESPONSE_TIMEOUT_S="0.2"))
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(session.post(sc.url + "/v1/chat/completions", json=chat()))
        await wait_until(lambda: bool(b.seen), what="a request at the second backend")
        task.cancel()
    await wait_until(lambda: not sc.app.proxy.inflight, what="no request in flight")
    (line,) = sc.log_lines()
    assert line["status"] == 499
    assert [(x["backend"], x["class"], x.get("cancelled")) for x in line["attempts"]] == [
        ("b0", "timeout", None),
        ("b1", None, True),
    ]
    assert line["served_by"] is None
    labels = {"chain": "default", "backend": "b0", "class": "timeout"}
    assert sc.metric("llm_sidecar_backend_failures_total", **labels) == 1


async def test_committed_stream_keeps_going_past_the_request_budget(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(text="a b c d", chunk_delay_s=0.2))
    sc = await sidecar(chain_env(a, SIDECAR_REQUEST_TIMEOUT_S="0.3"))
    r = await post(http, sc.url, chat(stream=True))
    assert streamed_text(r.text) == "a b c d"
    assert sse_data(r.text)[-1] == "[DONE]"


async def test_azure_content_filter_chunks_without_delta_get_an_empty_delta(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    annotation = (
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"finish_reason":null,"content_filter_results":{}}]}\n\n'
    )
    body = (
        annotation + b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    a = await fake(Script(body=body, headers={"Content-Type": "text/event-stream"}))
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat(stream=True))
    first = sse_data(r.text)[0]
    assert first["choices"][0]["delta"] == {}
    assert streamed_text(r.text) == "hi"
