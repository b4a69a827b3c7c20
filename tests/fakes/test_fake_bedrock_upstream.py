from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from fakes.bedrock_upstream import FakeBedrock, Script

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeBedrock]:
    fake = await FakeBedrock().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bedrock(upstream: FakeBedrock) -> AsyncIterator[Any]:
    config = Config(retries={"mode": "standard", "total_max_attempts": 1})
    async with get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=upstream.url,
        aws_access_key_id="AKIDFAKE",
        aws_secret_access_key="fake",
        config=config,
    ) as client:
        yield client


async def test_fake_converse_answers_text(upstream: FakeBedrock, bedrock: Any) -> None:
    resp = await bedrock.converse(modelId=MODEL, messages=MESSAGES)
    assert resp["output"]["message"]["content"] == [{"text": "Hello from the fake Bedrock."}]
    assert resp["stopReason"] == "end_turn"
    assert resp["usage"]["inputTokens"] == 9
    assert resp["ResponseMetadata"]["RequestId"] == "fake-request-id"
    assert upstream.seen[0].model_id == MODEL
    assert upstream.seen[0].json["messages"] == MESSAGES
    assert upstream.seen[0].headers["authorization"].startswith("AWS4-HMAC-SHA256")


async def test_fake_converse_stream_sends_tool_use_frames(
    bedrock: Any, upstream: FakeBedrock
) -> None:
    upstream.script(Script(tool=("weather", {"city": "Rome"})))
    resp = await bedrock.converse_stream(modelId=MODEL, messages=MESSAGES)
    events = [event async for event in resp["stream"]]
    assert [next(iter(e)) for e in events] == [
        "messageStart",
        "contentBlockStart",
        *["contentBlockDelta"] * 3,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    args = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events[2:5])
    assert args == '{"city":"Rome"}'
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 4


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 429),
        ("ServiceUnavailableException", 503),
        ("ModelTimeoutException", 408),
    ],
)
async def test_fake_answers_typed_errors(
    bedrock: Any, upstream: FakeBedrock, code: str, status: int
) -> None:
    upstream.script(Script(error=code))
    with pytest.raises(ClientError) as e:
        await bedrock.converse(modelId=MODEL, messages=MESSAGES)
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


async def test_fake_stream_ends_with_an_exception_frame(
    bedrock: Any, upstream: FakeBedrock
) -> None:
    upstream.script(Script(end="exception", after=2))
    resp = await bedrock.converse_stream(modelId=MODEL, messages=MESSAGES)
    seen: list[Any] = []

    async def drain() -> None:
        async for event in resp["stream"]:
            seen.append(event)

    with pytest.raises(EventStreamError) as e:
        await drain()
    assert len(seen) == 3
    assert e.value.response["Error"]["Code"] == "throttlingException"


async def test_fake_receives_arn_model_ids_decoded(upstream: FakeBedrock, bedrock: Any) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x-v1:0"
    await bedrock.converse(modelId=arn, messages=MESSAGES)
    assert upstream.seen[0].model_id == arn


async def test_fake_invoke_model_answers_an_anthropic_message(
    upstream: FakeBedrock, bedrock: Any
) -> None:
    body = orjson.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5})
    resp = await bedrock.invoke_model(modelId=MODEL, body=body)
    async with resp["body"] as stream:
        message = orjson.loads(await stream.read())
    assert message["content"] == [{"type": "text", "text": "Hello from the fake Bedrock."}]
    assert upstream.seen[0].operation == "invoke"
    assert upstream.seen[0].json == {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5}


async def test_fake_invoke_stream_sends_anthropic_events_in_chunk_bytes(
    upstream: FakeBedrock, bedrock: Any
) -> None:
    resp = await bedrock.invoke_model_with_response_stream(modelId=MODEL, body=b"{}")
    events = [orjson.loads(e["chunk"]["bytes"]) async for e in resp["body"]]
    assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
    assert events[-1]["type"] == "message_stop"
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 4


async def test_fake_invoke_stream_ends_with_an_exception_frame(
    upstream: FakeBedrock, bedrock: Any
) -> None:
    upstream.script(Script(end="exception", after=1))
    resp = await bedrock.invoke_model_with_response_stream(modelId=MODEL, body=b"{}")
    with pytest.raises(EventStreamError) as e:
        _ = [event async for event in resp["body"]]
    assert e.value.response["Error"]["Code"] == "throttlingException"
