"""Reasoning across vendors over loopback: Anthropic `thinking` ⇄ `reasoning_effort` ⇄ Converse
`additionalModelRequestFields`, reasoning relayed back as `thinking` blocks, `reasoning_content`
or Responses `reasoning` items, and signed thinking history kept or stripped by destination."""

import json
from typing import Any

import aiohttp
import anthropic
import pytest
from backends.kinds import chain
from conftest import LONG, FakeFactory, SidecarFactory, named_events, post, sse_data
from fakes.anthropic_upstream import FakeAnthropic
from fakes.anthropic_upstream import Script as AScript
from fakes.bedrock_upstream import FakeBedrock
from fakes.bedrock_upstream import Script as BScript
from fakes.openai_upstream import Script as OScript

MESSAGES = "/v1/messages"
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
CLAUDE_4 = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"

SIGNED_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "weather in Oslo?"},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBCkYIARgCKkD+/="},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        ],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
    },
]
WEATHER_TOOL = {"name": "weather", "input_schema": {"type": "object"}}


def message(stream: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body["stream"] = True
    return body | extra


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return body | extra


def deltas(evs: list[tuple[str, dict[str, Any]]], kind: str, key: str) -> str:
    return "".join(
        d["delta"][key] for n, d in evs if n == "content_block_delta" and d["delta"]["type"] == kind
    )


def block_starts(evs: list[tuple[str, dict[str, Any]]]) -> list[tuple[int, str]]:
    return [(d["index"], d["content_block"]["type"]) for n, d in evs if n == "content_block_start"]


def reasoning_deltas(text: str) -> str:
    return "".join(
        c["choices"][0]["delta"].get("reasoning_content") or ""
        for c in sse_data(text)
        if isinstance(c, dict) and c.get("choices")
    )


# --- requests: Anthropic thinking → OpenAI reasoning_effort


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 2048}, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, "medium"),
        ({"type": "enabled", "budget_tokens": 8192}, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, "high"),
    ],
)
async def test_anthropic_thinking_reaches_an_openai_backend_as_reasoning_effort(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    thinking: dict[str, Any],
    effort: str,
) -> None:
    gpt = await fake()
    sc = await sidecar(chain(("gpt", gpt)))
    r = await post(http, sc.url, message(max_tokens=30000, thinking=thinking), MESSAGES)
    assert r.status == 200
    assert gpt.seen[0].json["reasoning_effort"] == effort
    assert "thinking" not in gpt.seen[0].json


@pytest.mark.parametrize(("given", "effort"), [("low", "low"), ("high", "high"), ("max", "high")])
async def test_adaptive_thinking_takes_its_output_config_effort_to_an_openai_backend(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, given: str, effort: str
) -> None:
    gpt = await fake()
    sc = await sidecar(chain(("gpt", gpt)))
    body = message(thinking={"type": "adaptive"}, output_config={"effort": given})
    assert (await post(http, sc.url, body, MESSAGES)).status == 200
    assert gpt.seen[0].json["reasoning_effort"] == effort


@pytest.mark.parametrize("thinking", [{"type": "disabled"}, {"type": "adaptive"}])
async def test_disabled_or_effortless_adaptive_thinking_sends_no_reasoning_effort(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, thinking: Any
) -> None:
    # Adaptive thinking without an effort leaves it to the model, as an OpenAI model does.
    gpt = await fake()
    sc = await sidecar(chain(("gpt", gpt)))
    assert (await post(http, sc.url, message(thinking=thinking), MESSAGES)).status == 200
    assert "reasoning_effort" not in gpt.seen[0].json


# --- requests: thinking and reasoning_effort on Bedrock


async def test_anthropic_thinking_reaches_claude_on_bedrock_as_it_is_without_sampling(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("aws", bedrock), AWS_MODEL=CLAUDE_4))
    thinking = {"type": "enabled", "budget_tokens": 3000}
    body = message(max_tokens=5000, thinking=thinking, top_p=0.99)
    r = await post(http, sc.url, body, MESSAGES)
    assert r.status == 200
    sent = bedrock.seen[0].json
    assert sent["additionalModelRequestFields"] == {"thinking": thinking}
    assert sent["inferenceConfig"] == {"maxTokens": 5000}


async def test_thinking_is_dropped_for_a_bedrock_model_that_does_not_take_it(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    # The kinds' default Bedrock model is Claude 3.5 Sonnet, which has no extended thinking.
    sc = await sidecar(chain(("aws", bedrock)))
    thinking = {"type": "enabled", "budget_tokens": 3000}
    r = await post(http, sc.url, message(max_tokens=5000, thinking=thinking), MESSAGES)
    assert r.status == 200
    assert "additionalModelRequestFields" not in bedrock.seen[0].json


async def test_signed_history_is_stripped_for_bedrock_and_thinking_waits_out_the_tool_loop(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    # Claude wants the last tool-calling turn's signed thinking back; crossing vendors strips it,
    # so thinking waits for the next turn rather than making the request a 400.
    sc = await sidecar(chain(("aws", bedrock), AWS_MODEL=CLAUDE_4))
    body = message(
        max_tokens=5000,
        messages=SIGNED_HISTORY,
        tools=[WEATHER_TOOL],
        thinking={"type": "enabled", "budget_tokens": 3000},
    )
    r = await post(http, sc.url, body, MESSAGES)
    assert r.status == 200
    sent = bedrock.seen[0].json
    assert "additionalModelRequestFields" not in sent
    assert [list(b) for b in sent["messages"][1]["content"]] == [["toolUse"]]
    assert b"signature" not in bedrock.seen[0].body
    assert b"EmwKAhgBEgy3va3pzix" not in bedrock.seen[0].body


@pytest.mark.parametrize(
    ("effort", "budget", "max_tokens"),
    [("low", 2048, 2048 + 300), ("medium", 8192, 8192 + 300), ("high", 16384, 16384 + 300)],
)
async def test_chat_reasoning_effort_becomes_claude_thinking_on_bedrock(
    bedrock: FakeBedrock,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    effort: str,
    budget: int,
    max_tokens: int,
) -> None:
    sc = await sidecar(chain(("aws", bedrock), AWS_MODEL=CLAUDE_4))
    body = chat(reasoning_effort=effort, max_tokens=300, temperature=0.2)
    assert (await post(http, sc.url, body, CHAT)).status == 200
    sent = bedrock.seen[0].json
    assert sent["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": budget}
    }
    assert sent["inferenceConfig"] == {"maxTokens": max_tokens}


async def test_chat_reasoning_effort_without_max_tokens_leaves_bedrock_the_default_answer_room(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("aws", bedrock), AWS_MODEL=CLAUDE_4))
    await post(http, sc.url, chat(reasoning_effort="low"), CHAT)
    assert bedrock.seen[0].json["inferenceConfig"] == {"maxTokens": 4096 + 2048}


# --- requests: reasoning_effort → Anthropic thinking


async def test_chat_reasoning_effort_becomes_anthropic_thinking_with_room_and_no_sampling(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    body = chat(reasoning_effort="medium", max_tokens=300, temperature=0.2, top_p=0.5)
    assert (await post(http, sc.url, body, CHAT)).status == 200
    sent = claude.seen[0].json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert sent["max_tokens"] == 8192 + 300
    assert "temperature" not in sent
    assert "top_p" not in sent


@pytest.mark.parametrize(
    "extra",
    [
        {"reasoning_effort": "none"},
        {"reasoning_effort": "high", "tool_choice": "required"},
        {
            "reasoning_effort": "high",
            "tool_choice": {"type": "function", "function": {"name": "w"}},
        },
    ],
    ids=["none", "required_tool", "named_tool"],
)
async def test_reasoning_effort_sends_no_thinking_when_claude_could_not_take_it(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession, extra: Any
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    tools = [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]
    assert (await post(http, sc.url, chat(tools=tools, **extra), CHAT)).status == 200
    assert "thinking" not in claude.seen[0].json
    assert claude.seen[0].json["max_tokens"] == 4096


async def test_reasoning_effort_sends_no_thinking_to_anthropic_in_a_tool_loop(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
    history = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    sc = await sidecar(chain(("claude", claude)))
    assert (await post(http, sc.url, chat(messages=history, reasoning_effort="low"), CHAT)).status
    assert "thinking" not in claude.seen[0].json


async def test_responses_reasoning_effort_becomes_anthropic_thinking(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    body = {"model": "m", "input": "hi", "reasoning": {"effort": "low"}, "max_output_tokens": 500}
    assert (await post(http, sc.url, body, RESPONSES)).status == 200
    sent = claude.seen[0].json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["max_tokens"] == 2048 + 500


# --- answers: reasoning from OpenAI-compatible servers → Anthropic callers


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_openai_reasoning_is_a_first_thinking_block_for_an_anthropic_caller(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, key: str
) -> None:
    gpt = await fake(OScript(reasoning="Think first.", reasoning_key=key))
    sc = await sidecar(chain(("gpt", gpt)))
    r = await post(http, sc.url, message(), MESSAGES)
    assert r.json["content"] == [
        {"type": "thinking", "thinking": "Think first.", "signature": ""},
        {"type": "text", "text": "Hello from the fake."},
    ]


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_openai_reasoning_streams_as_a_thinking_block_before_the_text(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, key: str
) -> None:
    gpt = await fake(OScript(reasoning="Think first.", reasoning_key=key))
    sc = await sidecar(chain(("gpt", gpt)))
    evs = named_events((await post(http, sc.url, message(stream=True), MESSAGES)).text)
    assert block_starts(evs) == [(0, "thinking"), (1, "text")]
    assert deltas(evs, "thinking_delta", "thinking") == "Think first. "
    assert deltas(evs, "text_delta", "text") == "Hello from the fake."
    stops = [d["index"] for n, d in evs if n == "content_block_stop"]
    assert stops == [0, 1]
    assert evs[-1][0] == "message_stop"


async def test_the_anthropic_sdk_accumulates_relayed_openai_reasoning(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    gpt = await fake(OScript(reasoning="Think first."))
    sc = await sidecar(chain(("gpt", gpt)))
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="k", max_retries=0)
    async with (
        client,
        client.messages.stream(
            model="c", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        final = await stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "Think first. "
    assert text.type == "text"
    assert text.text == "Hello from the fake."


async def test_reasoning_commits_an_anthropic_stream_so_a_cut_after_it_does_not_fall_back(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake(OScript(reasoning="Think long.", text=LONG, end="cut", after=0))
    backup = await fake()
    sc = await sidecar(chain(("gpt", gpt), ("backup", backup)))
    r = await post(http, sc.url, message(stream=True), MESSAGES)
    evs = named_events(r.text)
    assert deltas(evs, "thinking_delta", "thinking") == "Think long. "
    assert evs[-1][0] == "error"
    assert "message_stop" not in [n for n, _ in evs]
    assert backup.seen == []


# --- answers: Bedrock reasoningContent → Anthropic and chat callers


async def test_bedrock_reasoning_is_a_thinking_block_for_an_anthropic_caller(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(BScript(reasoning="Think first."))
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, message(), MESSAGES)
    # Bedrock's signature verifies at Bedrock only: the block carries none.
    assert r.json["content"] == [
        {"type": "thinking", "thinking": "Think first.", "signature": ""},
        {"type": "text", "text": "Hello from the fake Bedrock."},
    ]


async def test_bedrock_reasoning_streams_as_a_thinking_block_to_an_anthropic_caller(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(BScript(reasoning="Think first."))
    sc = await sidecar(chain(("aws", bedrock)))
    evs = named_events((await post(http, sc.url, message(stream=True), MESSAGES)).text)
    assert block_starts(evs) == [(0, "thinking"), (1, "text")]
    assert deltas(evs, "thinking_delta", "thinking") == "Think first. "
    assert deltas(evs, "text_delta", "text") == "Hello from the fake Bedrock."
    assert evs[-1][0] == "message_stop"


async def test_bedrock_reasoning_is_reasoning_content_for_a_chat_caller(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(BScript(reasoning="Think first."), BScript(reasoning="Think first."))
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, chat(), CHAT)
    message_ = r.json["choices"][0]["message"]
    assert message_["reasoning_content"] == "Think first."
    assert message_["content"] == "Hello from the fake Bedrock."
    streamed = await post(http, sc.url, chat(stream=True), CHAT)
    assert reasoning_deltas(streamed.text) == "Think first. "


# --- answers: Anthropic thinking → chat and Responses callers


async def test_anthropic_thinking_is_reasoning_content_for_a_chat_caller(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    claude.script(AScript(thinking="Think first."), AScript(thinking="Think first."))
    sc = await sidecar(chain(("claude", claude)))
    r = await post(http, sc.url, chat(), CHAT)
    assert r.json["choices"][0]["message"]["reasoning_content"] == "Think first."
    streamed = await post(http, sc.url, chat(stream=True), CHAT)
    assert reasoning_deltas(streamed.text) == "Think first. "


async def test_responses_callers_get_reasoning_items_from_bedrock(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(BScript(reasoning="Think first."), BScript(reasoning="Think first."))
    sc = await sidecar(chain(("aws", bedrock)))
    body = {"model": "m", "input": "hi", "store": False}
    r = await post(http, sc.url, body, RESPONSES)
    reasoning, answer = r.json["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Think first."}]
    assert answer["type"] == "message"
    evs = named_events((await post(http, sc.url, body | {"stream": True}, RESPONSES)).text)
    summary = [d["delta"] for n, d in evs if n == "response.reasoning_summary_text.delta"]
    assert "".join(summary) == "Think first. "
    assert evs[-1][0] == "response.completed"


# --- history: signed thinking and anthropic-beta across kinds


async def test_signed_thinking_history_reaches_anthropic_byte_exact(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    body = message(max_tokens=5000, messages=SIGNED_HISTORY, tools=[WEATHER_TOOL])
    body["thinking"] = {"type": "enabled", "budget_tokens": 3000}
    raw = json.dumps(body, indent=1).encode()
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    async with http.post(sc.url + MESSAGES, data=raw, headers=headers) as r:
        assert r.status == 200
    assert claude.seen[0].body == raw


async def test_signed_thinking_history_is_stripped_for_an_openai_backend(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake()
    sc = await sidecar(chain(("gpt", gpt)))
    body = message(messages=SIGNED_HISTORY, tools=[WEATHER_TOOL])
    assert (await post(http, sc.url, body, MESSAGES)).status == 200
    sent = gpt.seen[0]
    assert sent.json["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }
    assert b"signature" not in sent.body
    assert b"EmwKAhgBEgy3va3pzix" not in sent.body


async def test_unknown_anthropic_beta_values_neither_break_nor_reach_an_openai_backend(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake()
    sc = await sidecar(chain(("gpt", gpt)))
    headers = {"anthropic-beta": "no-such-feature-2099-01-01,interleaved-thinking-2025-05-14"}
    r = await post(http, sc.url, message(), MESSAGES, headers=headers)
    assert r.status == 200
    assert r.json["content"][0]["text"] == "Hello from the fake."
    assert not any(k.startswith("anthropic-") for k in gpt.seen[0].headers)


async def test_thinking_relayed_from_openai_is_dropped_when_sent_back_to_anthropic(
    fake: FakeFactory, claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake(OScript(reasoning="Think first."))
    first = await sidecar(chain(("gpt", gpt)))
    answer = (await post(http, first.url, message(), MESSAGES)).json["content"]
    second = await sidecar(chain(("claude", claude)))
    history = [
        SIGNED_HISTORY[0],
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "and tomorrow?"},
    ]
    thinking = {"type": "enabled", "budget_tokens": 3000}
    body = message(max_tokens=5000, messages=history, thinking=thinking)
    assert (await post(http, second.url, body, MESSAGES)).status == 200
    sent = claude.seen[0].json
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "Hello from the fake."}]
    assert sent["thinking"] == thinking


async def test_unsigned_thinking_in_a_tool_loop_takes_thinking_with_it_on_anthropic(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    signed = SIGNED_HISTORY[1]["content"][0]
    unsigned = {"type": "thinking", "thinking": "From elsewhere.", "signature": ""}
    call = {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}}
    history = [
        SIGNED_HISTORY[0],
        {"role": "assistant", "content": [signed, {"type": "text", "text": "Sunny."}]},
        {"role": "user", "content": "and Rome?"},
        {"role": "assistant", "content": [unsigned, call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2"}]},
    ]
    body = message(max_tokens=5000, messages=history, tools=[WEATHER_TOOL])
    body["thinking"] = {"type": "enabled", "budget_tokens": 3000}
    assert (await post(http, sc.url, body, MESSAGES)).status == 200
    sent = claude.seen[0].json
    assert sent["messages"][1]["content"][0] == signed
    assert sent["messages"][3]["content"] == [call]
    assert "thinking" not in sent


async def test_a_recovery_continuation_carries_text_only_not_the_new_backends_reasoning(
    claude: FakeAnthropic, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    claude.script(AScript(text=LONG, end="cut", after=3))
    gpt = await fake(OScript(reasoning="Where was I?"))
    sc = await sidecar(chain(("claude", claude), ("gpt", gpt), GPT_PREFILL="true"))
    evs = named_events((await post(http, sc.url, message(stream=True), MESSAGES)).text)
    assert deltas(evs, "text_delta", "text") == "w0 w1 w2Hello from the fake."
    assert deltas(evs, "thinking_delta", "thinking") == ""
    assert block_starts(evs) == [(0, "text")]
    assert evs[-1][0] == "message_stop"
