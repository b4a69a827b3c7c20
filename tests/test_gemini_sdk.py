"""The openai and anthropic SDKs as callers of a Gemini backend: answers, streams, and a tool
session over several turns whose Gemini 3 thought signature survives each round trip (the fake
answers 400 to a function call sent back without it, as Gemini 3 does)."""

import re
from typing import Any

import anthropic
import openai
import pytest
from backends.kinds import chain
from conftest import Running, SidecarFactory
from fakes.anthropic_upstream import FakeAnthropic
from fakes.gemini_upstream import SIGNATURE, FakeGemini, Script, error
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

TOKEN = "sidecar-inbound-token"
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_TOOL: anthropic.types.ToolParam = {
    "name": "weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
# What Claude allows in a tool_use id.
CLAUDE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def openai_client(sc: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sc.url + "/v1", api_key=TOKEN, max_retries=0)


def anthropic_client(sc: Running) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sc.url, api_key=TOKEN, max_retries=0)


async def sidecar_for(sidecar: SidecarFactory, *members: tuple[str, Any]) -> Running:
    return await sidecar(chain(*members, SIDECAR_AUTH_TOKEN=TOKEN))


def signed_calls(gemini: FakeGemini, turn: int) -> list[Any]:
    contents = gemini.seen[turn].json["contents"]
    return [p.get("thoughtSignature") for c in contents for p in c["parts"] if "functionCall" in p]


async def test_openai_sdk_tool_session_keeps_the_signature_over_three_turns(
    gemini: FakeGemini, sidecar: SidecarFactory
) -> None:
    gemini.script(
        Script(calls=[("weather", {"city": "Rome"})]),
        Script(calls=[("weather", {"city": "Oslo"})], signature="c2Vjb25kIHR1cm4="),
        Script(text="Rome is sunny, Oslo snows."),
    )
    sc = await sidecar_for(sidecar, ("g", gemini))
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "weather?"}]
    async with openai_client(sc) as client:
        for _ in range(2):
            done = await client.chat.completions.create(
                model="gemini", messages=messages, tools=[WEATHER]
            )
            message = done.choices[0].message
            assert done.choices[0].finish_reason == "tool_calls"
            assert message.tool_calls is not None
            # What an app does with an answer: send the message back as it came.
            messages.append(message.model_dump(exclude_none=True))  # type: ignore[arg-type]
            call = message.tool_calls[0]
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "fine"})
        final = await client.chat.completions.create(
            model="gemini", messages=messages, tools=[WEATHER]
        )
    assert final.choices[0].message.content == "Rome is sunny, Oslo snows."
    assert signed_calls(gemini, 2) == [SIGNATURE, "c2Vjb25kIHR1cm4="]


async def test_openai_sdk_streams_from_gemini(gemini: FakeGemini, sidecar: SidecarFactory) -> None:
    sc = await sidecar_for(sidecar, ("g", gemini))
    async with openai_client(sc) as client:
        stream = await client.chat.completions.create(
            model="gemini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake Gemini."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 14


async def test_openai_sdk_sees_a_gemini_rate_limit_as_its_own_error(
    gemini: FakeGemini, sidecar: SidecarFactory
) -> None:
    gemini.script(error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"))
    sc = await sidecar_for(sidecar, ("g", gemini))
    async with openai_client(sc) as client:
        with pytest.raises(openai.RateLimitError) as e:
            await client.chat.completions.create(
                model="gemini", messages=[{"role": "user", "content": "hi"}]
            )
    assert e.value.code == "RESOURCE_EXHAUSTED"


async def test_anthropic_sdk_tool_session_keeps_the_signature_in_the_tool_use_id(
    gemini: FakeGemini, sidecar: SidecarFactory
) -> None:
    gemini.script(Script(calls=[("weather", {"city": "Rome"})]), Script(text="Sunny."))
    sc = await sidecar_for(sidecar, ("g", gemini))
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "weather?"}]
    async with anthropic_client(sc) as client:
        first = await client.messages.create(
            model="gemini", max_tokens=100, messages=messages, tools=[WEATHER_TOOL]
        )
        assert first.stop_reason == "tool_use"
        tool_use = next(b for b in first.content if b.type == "tool_use")
        assert CLAUDE_ID.match(tool_use.id)
        assert tool_use.input == {"city": "Rome"}
        messages += [
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sun"}],
            },
        ]
        second = await client.messages.create(
            model="gemini", max_tokens=100, messages=messages, tools=[WEATHER_TOOL]
        )
    assert second.content[0].type == "text" and second.content[0].text == "Sunny."
    assert signed_calls(gemini, 1) == [SIGNATURE]
    results = gemini.seen[1].json["contents"][2]["parts"]
    assert results == [{"functionResponse": {"name": "weather", "response": {"result": "sun"}}}]


async def test_anthropic_sdk_stream_helper_gets_a_signed_tool_use(
    gemini: FakeGemini, sidecar: SidecarFactory
) -> None:
    gemini.script(Script(calls=[("weather", {"city": "Rome"})]), Script(text="Sunny."))
    sc = await sidecar_for(sidecar, ("g", gemini))
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "weather?"}]
    async with anthropic_client(sc) as client:
        async with client.messages.stream(
            model="gemini", max_tokens=100, messages=messages, tools=[WEATHER_TOOL]
        ) as stream:
            first = await stream.get_final_message()
        tool_use = next(b for b in first.content if b.type == "tool_use")
        messages += [
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sun"}],
            },
        ]
        async with client.messages.stream(
            model="gemini", max_tokens=100, messages=messages, tools=[WEATHER_TOOL]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
    assert first.stop_reason == "tool_use"
    assert first.usage.output_tokens == 7
    assert text == "Sunny."
    assert signed_calls(gemini, 1) == [SIGNATURE]


async def test_a_signed_anthropic_history_falls_back_from_gemini_to_claude(
    gemini: FakeGemini, claude: FakeAnthropic, sidecar: SidecarFactory
) -> None:
    gemini.script(
        Script(calls=[("weather", {"city": "Rome"})]), error(503, "UNAVAILABLE", "overloaded")
    )
    sc = await sidecar_for(sidecar, ("g", gemini), ("claude", claude))
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "weather?"}]
    async with anthropic_client(sc) as client:
        first = await client.messages.create(
            model="m", max_tokens=100, messages=messages, tools=[WEATHER_TOOL]
        )
        tool_use = next(b for b in first.content if b.type == "tool_use")
        messages += [
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sun"}],
            },
        ]
        raw = await client.messages.with_raw_response.create(
            model="m", max_tokens=100, messages=messages, tools=[WEATHER_TOOL]
        )
    assert raw.headers["x-sidecar-failures"] == "g=overloaded"
    assert (await raw.parse()).content[0].type == "text"
    # Claude gets the caller's bytes: the id it is sent is one it accepts.
    sent = claude.seen[0].json["messages"][1]["content"][0]
    assert sent["id"] == tool_use.id and CLAUDE_ID.match(sent["id"])
