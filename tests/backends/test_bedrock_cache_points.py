"""Anthropic `cache_control` breakpoints on Bedrock Converse: `cachePoint` blocks (at most 4, in
order), and cache tokens counted; OpenAI-family upstreams never see the pivot's marker."""

from typing import Any

import aiohttp
from backends.kinds import chain
from conftest import FakeFactory, SidecarFactory, post, typed_tokens
from fakes.bedrock_upstream import FakeBedrock, Script

from sidecar.dialects.anthropic_request import anthropic_request_to_openai
from sidecar.dialects.bedrock import openai_request_to_converse

CACHED = {"type": "ephemeral"}
POINT = {"cachePoint": {"type": "default"}}


def text(t: str, cached: bool = True) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": t}
    if cached:
        block["cache_control"] = CACHED
    return block


def messages_body() -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 10,
        "system": [text("rules"), text("more rules", cached=False)],
        "messages": [
            {"role": "user", "content": [text("doc one"), text("question")]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "42",
                        **{"cache_control": CACHED},
                    },
                    text("and five?"),
                ],
            },
        ],
    }


def test_breakpoints_become_cache_points_after_their_blocks_first_four_in_order() -> None:
    converse = openai_request_to_converse(
        anthropic_request_to_openai(messages_body()), model_id="m"
    )
    assert converse["system"] == [{"text": "rules"}, POINT, {"text": "more rules"}]
    assert converse["messages"][0]["content"] == [
        {"text": "doc one"},
        POINT,
        {"text": "question"},
        POINT,
    ]
    last = converse["messages"][2]["content"]
    assert last[0]["toolResult"]["content"] == [{"text": "42"}]
    # The fourth point follows the tool result; the fifth breakpoint finds none left.
    assert last[1:] == [POINT, {"text": "and five?"}]


async def test_an_anthropic_caller_caches_on_converse_and_cache_tokens_count(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    usage = {
        "inputTokens": 3,
        "outputTokens": 4,
        "cacheReadInputTokens": 100,
        "cacheWriteInputTokens": 20,
    }
    bedrock.script(Script(usage=usage))
    sc = await sidecar(chain(("aws", bedrock)))
    body = {
        "model": "claude",
        "max_tokens": 10,
        "system": [text("long rules")],
        "messages": [{"role": "user", "content": "hi"}],
    }
    r = await post(http, sc.url, body, path="/v1/messages")
    assert r.status == 200
    assert bedrock.seen[0].json["system"] == [{"text": "long rules"}, POINT]
    assert r.json["usage"]["cache_read_input_tokens"] == 100
    assert r.json["usage"]["cache_creation_input_tokens"] == 20
    assert typed_tokens(sc, "aws", "prompt") == 123


async def test_openai_family_upstreams_never_see_the_breakpoint_marker(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    upstream = await fake()
    sc = await sidecar(chain(("gpt", upstream)))
    r = await post(http, sc.url, messages_body(), path="/v1/messages")
    assert r.status == 200
    assert b"prompt_cache_breakpoint" not in upstream.seen[0].body
