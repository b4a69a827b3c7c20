"""The official SDKs end to end across vendors, and three-kind chains whose first two fail.

openai SDK → anthropic and bedrock; anthropic SDK → openai-compatible, bedrock and anthropic.
"""

from typing import Any

import anthropic
import openai
import pytest
from backends.kinds import chain
from conftest import LONG, FakeFactory, Running, SidecarFactory, tokens
from fakes.anthropic_upstream import FakeAnthropic, overloaded
from fakes.anthropic_upstream import Script as AScript
from fakes.bedrock_upstream import FakeBedrock
from fakes.bedrock_upstream import Script as BScript
from fakes.openai_upstream import FakeOpenAI
from fakes.openai_upstream import Script as OScript
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

OPENAI_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
ANTHROPIC_MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}
TOKEN = "sidecar-inbound-token"


@pytest.fixture
async def gpt(fake: FakeFactory) -> FakeOpenAI:
    return await fake()


def openai_client(sc: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sc.url + "/v1", api_key=TOKEN, max_retries=0)


def anthropic_client(sc: Running) -> anthropic.AsyncAnthropic:
    # The 2.x SDK sends `Authorization: Bearer` and `anthropic-version: 2026-10-21`.
    return anthropic.AsyncAnthropic(base_url=sc.url, api_key=TOKEN, max_retries=0)


async def sidecar_for(sidecar: SidecarFactory, *members: tuple[str, Any]) -> Running:
    return await sidecar(chain(*members, SIDECAR_AUTH_TOKEN=TOKEN))


# --- openai SDK → anthropic, bedrock


async def test_openai_sdk_gets_an_answer_from_anthropic(
    claude: FakeAnthropic, sidecar: SidecarFactory
) -> None:
    sc = await sidecar_for(sidecar, ("claude", claude))
    async with openai_client(sc) as client:
        done = await client.chat.completions.create(model="claude-x", messages=OPENAI_MESSAGES)
    assert done.choices[0].message.content == "Hello from the fake Anthropic."
    assert done.usage is not None and done.usage.prompt_tokens == 11
    assert claude.seen[0].headers["x-api-key"] != TOKEN
    assert tokens(sc, "claude") == (11, 5)


async def test_openai_sdk_stream_helper_assembles_an_anthropic_tool_call(
    claude: FakeAnthropic, sidecar: SidecarFactory
) -> None:
    claude.script(AScript(tool=("weather", {"city": "Rome"})))
    sc = await sidecar_for(sidecar, ("claude", claude))
    async with (
        openai_client(sc) as client,
        client.chat.completions.stream(
            model="claude-x", messages=OPENAI_MESSAGES, tools=[WEATHER]
        ) as stream,
    ):
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("weather", '{"city":"Rome"}')
    sent = claude.seen[0].json
    assert sent["tools"][0]["name"] == "weather"


async def test_openai_sdk_streams_from_bedrock(
    bedrock: FakeBedrock, sidecar: SidecarFactory
) -> None:
    sc = await sidecar_for(sidecar, ("aws", bedrock))
    async with openai_client(sc) as client:
        stream = await client.chat.completions.create(
            model="m", messages=OPENAI_MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake Bedrock."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 13
    assert tokens(sc, "aws") == (9, 4)


async def test_openai_sdk_raises_on_an_anthropic_stream_broken_after_commit(
    claude: FakeAnthropic, sidecar: SidecarFactory
) -> None:
    claude.script(AScript(text=LONG, end="error", after=3))
    sc = await sidecar_for(sidecar, ("claude", claude))
    seen: list[str] = []

    async def drain(client: openai.AsyncOpenAI) -> None:
        stream = await client.chat.completions.create(
            model="m", messages=OPENAI_MESSAGES, stream=True
        )
        async for c in stream:
            seen.append(c.choices[0].delta.content or "" if c.choices else "")

    async with openai_client(sc) as client:
        with pytest.raises(openai.APIError):
            await drain(client)
    assert "".join(seen) == "w0 w1 w2"


# --- anthropic SDK → openai-compatible, bedrock, anthropic


async def test_anthropic_sdk_gets_an_answer_from_an_openai_backend(
    gpt: FakeOpenAI, sidecar: SidecarFactory
) -> None:
    sc = await sidecar_for(sidecar, ("gpt", gpt))
    async with anthropic_client(sc) as client:
        msg = await client.messages.create(
            model="gpt-4o", max_tokens=50, messages=ANTHROPIC_MESSAGES
        )
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hello from the fake."
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == 5
    sent = gpt.seen[0]
    assert sent.headers["authorization"] != f"Bearer {TOKEN}"
    assert "anthropic-version" not in sent.headers
    assert tokens(sc, "gpt") == (7, 5)


async def test_anthropic_sdk_stream_helper_reads_an_openai_stream(
    gpt: FakeOpenAI, sidecar: SidecarFactory
) -> None:
    sc = await sidecar_for(sidecar, ("gpt", gpt))
    async with (
        anthropic_client(sc) as client,
        client.messages.stream(
            model="gpt-4o", max_tokens=50, messages=ANTHROPIC_MESSAGES
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hello from the fake."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4


async def test_anthropic_sdk_stream_helper_assembles_a_bedrock_tool_use(
    bedrock: FakeBedrock, sidecar: SidecarFactory
) -> None:
    bedrock.script(BScript(tool=("weather", {"city": "Oslo"})))
    sc = await sidecar_for(sidecar, ("aws", bedrock))
    tool: anthropic.types.ToolParam = {
        "name": "weather",
        "input_schema": {"type": "object", "properties": {}},
    }
    async with (
        anthropic_client(sc) as client,
        client.messages.stream(
            model="claude", max_tokens=50, messages=ANTHROPIC_MESSAGES, tools=[tool]
        ) as stream,
    ):
        final = await stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("weather", {"city": "Oslo"})
    assert final.stop_reason == "tool_use"
    assert bedrock.seen[0].json["toolConfig"]["tools"][0]["toolSpec"]["name"] == "weather"


async def test_anthropic_sdk_raises_on_an_error_event_after_commit(
    claude: FakeAnthropic, sidecar: SidecarFactory
) -> None:
    claude.script(AScript(text=LONG, end="error", after=3))
    sc = await sidecar_for(sidecar, ("claude", claude))
    seen: list[str] = []

    async def drain(client: anthropic.AsyncAnthropic) -> None:
        async with client.messages.stream(
            model="claude", max_tokens=50, messages=ANTHROPIC_MESSAGES
        ) as stream:
            async for t in stream.text_stream:
                seen.append(t)

    async with anthropic_client(sc) as client:
        with pytest.raises(anthropic.APIStatusError) as e:
            await drain(client)
    assert "".join(seen) == "w0 w1 w2"
    assert "overloaded_error" in str(e.value.body)


async def test_anthropic_sdk_sees_529_as_overloaded_when_the_chain_is_exhausted(
    claude: FakeAnthropic, sidecar: SidecarFactory
) -> None:
    claude.script(overloaded())
    sc = await sidecar_for(sidecar, ("claude", claude))
    async with anthropic_client(sc) as client:
        with pytest.raises(anthropic.OverloadedError) as e:
            await client.messages.create(model="c", max_tokens=5, messages=ANTHROPIC_MESSAGES)
    assert e.value.response.headers["x-anyllm-fallback-exhausted"] == "true"
    assert e.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "fake 529"},
        "request_id": "req_fake",
    }


async def test_anthropic_sdk_gets_an_anthropic_400_for_an_untranslatable_request(
    gpt: FakeOpenAI, sidecar: SidecarFactory
) -> None:
    sc = await sidecar_for(sidecar, ("gpt", gpt))
    async with anthropic_client(sc) as client:
        with pytest.raises(anthropic.BadRequestError) as e:
            await client.messages.create(
                model="c",
                max_tokens=2000,
                messages=ANTHROPIC_MESSAGES,
                extra_body={
                    "mcp_servers": [{"type": "url", "url": "https://m.example", "name": "m"}]
                },
            )
    assert isinstance(e.value.body, dict)
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert gpt.seen == []


# --- three kinds: the first two fail, the third answers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_openai_sdk_falls_through_openai_and_anthropic_to_bedrock(
    fake: FakeFactory,
    claude: FakeAnthropic,
    bedrock: FakeBedrock,
    sidecar: SidecarFactory,
    stream: bool,
) -> None:
    gpt = await fake(OScript(status=429))
    claude.script(overloaded())
    sc = await sidecar_for(sidecar, ("gpt", gpt), ("claude", claude), ("aws", bedrock))
    async with openai_client(sc) as client:
        if stream:
            s = await client.chat.completions.with_raw_response.create(
                model="m", messages=OPENAI_MESSAGES, stream=True
            )
            headers = s.headers
            text = "".join([c.choices[0].delta.content or "" async for c in s.parse() if c.choices])
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=OPENAI_MESSAGES
            )
            headers = raw.headers
            text = raw.parse().choices[0].message.content or ""
    assert text == "Hello from the fake Bedrock."
    assert headers["x-sidecar-backend"] == "aws"
    assert headers["x-sidecar-failures"] == "gpt=rate_limited,claude=overloaded"
    assert headers["x-sidecar-attempts"] == "3"
    assert tokens(sc, "aws") == (9, 4)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_anthropic_sdk_falls_through_anthropic_and_bedrock_to_openai(
    gpt: FakeOpenAI,
    claude: FakeAnthropic,
    bedrock: FakeBedrock,
    sidecar: SidecarFactory,
    stream: bool,
) -> None:
    claude.script(AScript(end="error_first") if stream else overloaded())
    bedrock.script(BScript(error="ThrottlingException"))
    sc = await sidecar_for(sidecar, ("claude", claude), ("aws", bedrock), ("gpt", gpt))
    async with anthropic_client(sc) as client:
        if stream:
            async with client.messages.with_streaming_response.create(
                model="m", max_tokens=50, messages=ANTHROPIC_MESSAGES, stream=True
            ) as resp:
                headers = resp.headers
                text = "".join(
                    [
                        ev.delta.text
                        async for ev in await resp.parse()
                        if ev.type == "content_block_delta" and ev.delta.type == "text_delta"
                    ]
                )
        else:
            raw = await client.messages.with_raw_response.create(
                model="m", max_tokens=50, messages=ANTHROPIC_MESSAGES
            )
            headers = raw.headers
            block = (await raw.parse()).content[0]
            assert block.type == "text"
            text = block.text
    assert text == "Hello from the fake."
    assert headers["x-sidecar-backend"] == "gpt"
    assert headers["x-sidecar-failures"] == "claude=overloaded,aws=rate_limited"
    assert tokens(sc, "gpt")[0] == 7
