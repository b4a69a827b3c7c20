"""`BedrockUpstream` (`sidecar.upstream_bedrock`) against a loopback fake Bedrock: botocore's
errors become answers, events or `UpstreamError`s here; its own retries are off; the request id
rides on every call."""

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from backends.kinds import BEDROCK_MODEL, backend_env
from fakes.bedrock_upstream import FakeBedrock, Script

from sidecar.call import UpstreamRequest
from sidecar.config import load_config
from sidecar.dialects.bedrock import Converse
from sidecar.failure import FailureClass
from sidecar.upstream import UpstreamError
from sidecar.upstream_bedrock import BedrockUpstream

MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]

Connect = Callable[[FakeBedrock], BedrockUpstream]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    made: list[BedrockUpstream] = []

    def make(fake: FakeBedrock) -> BedrockUpstream:
        env = {"SIDECAR_BACKENDS": "br", **backend_env("br", fake)}
        made.append(BedrockUpstream(load_config(env).chains["default"][0]))
        return made[-1]

    yield make
    for upstream in made:
        await upstream.close()


def converse(stream: bool = False) -> UpstreamRequest:
    params = {"modelId": BEDROCK_MODEL, "messages": MESSAGES}
    call = Converse(stream=stream, params=params)
    return UpstreamRequest("POST", "", {"x-request-id": "rid-7"}, b"", payload=call)


async def test_an_answer_is_its_json_with_the_http_headers_and_the_request_id_went_up(
    bedrock: FakeBedrock, connect: Connect
) -> None:
    resp = await connect(bedrock).send(converse())
    assert (resp.status, resp.content_type) == (200, "application/json")
    assert resp.headers["x-amzn-requestid"] == "fake-request-id"
    body = orjson.loads(await resp.read())
    assert body["output"]["message"]["content"] == [{"text": "Hello from the fake Bedrock."}]
    assert bedrock.seen[0].headers["x-request-id"] == "rid-7"


async def test_an_error_is_an_answer_with_its_status_and_is_sent_only_once(
    bedrock: FakeBedrock, connect: Connect
) -> None:
    bedrock.script(Script(error="ServiceUnavailableException"))
    resp = await connect(bedrock).send(converse())
    assert resp.status == 503
    body = orjson.loads(await resp.read())
    assert body["__type"] == "ServiceUnavailableException"
    assert len(bedrock.seen) == 1  # botocore's own retries are off: the chain decides


async def test_a_model_timeout_is_a_timeout_failure_though_it_came_as_an_answer(
    bedrock: FakeBedrock, connect: Connect
) -> None:
    bedrock.script(Script(error="ModelTimeoutException"))
    with pytest.raises(UpstreamError) as e:
        await connect(bedrock).send(converse())
    assert e.value.cls is FailureClass.TIMEOUT


async def events(resp: Any) -> list[Any]:
    out = []
    while (event := await resp.chunk()) != b"":
        out.append(event)
    return out


async def test_a_stream_is_read_as_event_dicts_until_an_empty_end(
    bedrock: FakeBedrock, connect: Connect
) -> None:
    resp = await connect(bedrock).send(converse(stream=True))
    assert resp.content_type == "application/vnd.amazon.eventstream"
    got = await events(resp)
    assert next(iter(got[0])) == "messageStart"
    assert next(iter(got[-1])) == "metadata"
    assert await resp.chunk() == b""  # and stays ended
    resp.finish()


async def test_an_exception_frame_is_one_more_event_that_ends_the_stream(
    bedrock: FakeBedrock, connect: Connect
) -> None:
    bedrock.script(Script(end="exception", exception="throttlingException", after=1))
    resp = await connect(bedrock).send(converse(stream=True))
    got = await events(resp)
    assert set(got[-1]) == {"throttlingException"}
    assert "message" in got[-1]["throttlingException"]
    resp.close()


async def test_a_cut_stream_is_stream_interrupted(bedrock: FakeBedrock, connect: Connect) -> None:
    bedrock.script(Script(end="cut", after=1))
    resp = await connect(bedrock).send(converse(stream=True))
    with pytest.raises(UpstreamError) as e:
        await events(resp)
    assert e.value.cls is FailureClass.STREAM_INTERRUPTED
    resp.close()
