"""Pass-through (`sidecar.backends.passthrough`): the caller's bytes up, the upstream's bytes and
content type down; an event stream relayed as it comes, its cut ended by a generic SSE error."""

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from conftest import SidecarFactory

from sidecar.backends import passthrough
from sidecar.call import Call, Dialect, Route


def call(**fields: object) -> Call:
    made: dict[str, object] = {
        "route": Route.PASSTHROUGH,
        "dialect": Dialect.OPENAI,
        "method": "PUT",
        "path": "files/a%2Fb",
        "query": "x=a%26b",
        "raw": b"\x00 not json",
        "body": None,
        "stream": False,
        "model": None,
        "headers": {"x-custom": "kept", "authorization": "Bearer caller", "x-request-id": "no"},
        "request_id": "rid-1",
        "chain": "default",
    }
    made.update(fields)
    return Call(**made)  # type: ignore[arg-type]


def test_the_callers_method_body_and_headers_go_up_with_the_backends_own_on_top() -> None:
    url = "http://up/v1/files/a%2Fb?x=a%26b"
    req = passthrough.build(call(), url, {"authorization": "Bearer ours"})
    assert (req.method, req.url, req.body) == ("PUT", url, b"\x00 not json")
    assert req.encoded  # the caller's percent-encoding goes out as it came
    assert req.headers == {
        "x-custom": "kept",
        "authorization": "Bearer ours",
        "x-request-id": "rid-1",
    }


def test_an_answer_is_the_upstreams_bytes_and_untyped_until_its_headers_say() -> None:
    answer = passthrough.answer(b"\x89PNG")
    assert (answer.body, answer.content_type) == (b"\x89PNG", "application/octet-stream")
    assert (answer.usage.prompt, answer.usage.completion) == (0, 0)


def test_only_an_event_stream_is_read_as_a_stream() -> None:
    assert passthrough.reads_stream("text/event-stream")
    assert not passthrough.reads_stream("application/json")
    assert not passthrough.reads_stream("application/x-ndjson")


def test_response_headers_keep_the_upstreams_content_type_or_say_octet_stream() -> None:
    typed = passthrough.response_headers({"Content-Type": "image/png", "X-Thing": "1"})
    assert typed == {"content-type": "image/png", "x-thing": "1"}
    assert passthrough.response_headers({})["content-type"] == "application/octet-stream"


def test_a_pass_through_stream_relays_bytes_unread_and_is_never_recovered() -> None:
    s = passthrough.PassthroughStream()
    assert not s.text_only
    step = s.feed(b"event: x\ndata: {}\n\n")
    assert (step.out, step.content, step.done) == (b"event: x\ndata: {}\n\n", True, False)
    assert not s.feed(b"").content
    assert s.end().done
    assert s.terminator() == b""


def test_a_pass_through_stream_ends_a_cut_with_a_generic_sse_error_event() -> None:
    event = passthrough.PassthroughStream().terminal_error("cut", "stream_interrupted")
    head, data = event.split(b"\n", 1)
    assert head == b"event: error"
    assert data.endswith(b"\n\n")
    assert orjson.loads(data.removeprefix(b"data: ")) == {
        "type": "error",
        "error": {"type": "stream_interrupted", "message": "cut"},
    }


@pytest.fixture
async def cut_stream() -> AsyncIterator[str]:
    """An upstream whose event stream is cut after its first event."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: thread.message.delta\ndata: {"delta":"hi"}\n\n')
        assert request.transport is not None
        request.transport.abort()
        return resp

    app = web.Application()
    app.router.add_post("/v1/threads/runs", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


async def test_a_pass_through_stream_cut_after_commit_ends_with_an_error_event(
    cut_stream: str, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar({"SIDECAR_BACKENDS": "a", "A_BASE_URL": cut_stream, "A_API_KEY": "k"})
    async with http.post(sc.url + "/v1/threads/runs", json={"stream": True}) as r:
        assert r.status == 200
        body = await r.read()
    first, error = body.split(b"\n\n", 1)
    assert first == b'event: thread.message.delta\ndata: {"delta":"hi"}'
    assert error.startswith(b"event: error\ndata: ")
    assert orjson.loads(error.split(b"data: ", 1)[1])["error"]["type"] == "stream_interrupted"
