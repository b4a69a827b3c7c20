"""Cache and reasoning tokens (README "Metrics reference") counted from every kind's usage, over
loopback: `cache_read` and `cache_write` are parts of `prompt`, `reasoning` of `completion`."""

from typing import Any

import aiohttp
import pytest
from backends.kinds import chain
from conftest import FakeFactory, Running, SidecarFactory, chat, post
from fakes.anthropic_upstream import FakeAnthropic
from fakes.anthropic_upstream import Script as AScript
from fakes.bedrock_upstream import FakeBedrock
from fakes.bedrock_upstream import Script as BScript
from fakes.openai_upstream import Script as OScript
from fakes.responses_upstream import FakeResponses
from fakes.responses_upstream import Script as RScript

KINDS = ("prompt", "completion", "cache_read", "cache_write", "reasoning")


def counted(sc: Running, backend: str) -> dict[str, float]:
    labels = {"chain": "default", "backend": backend}
    return {t: sc.metric("llm_sidecar_tokens_total", type=t, **labels) for t in KINDS}


OPENAI_DETAILS: dict[str, Any] = {
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_cached_and_reasoning_tokens_are_counted(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    f = await fake(OScript(text="one two three", usage_extra=OPENAI_DETAILS))
    sc = await sidecar(chain(("gpt", f)))
    r = await post(http, sc.url, chat(stream=stream))
    assert r.status == 200
    completion = 3 if stream else 5  # the fake's usage chunk counts words; its answer says 5
    assert counted(sc, "gpt") == {
        "prompt": 7,
        "completion": completion,
        "cache_read": 4,
        "cache_write": 0,
        "reasoning": 2,
    }


ANTHROPIC_USAGE = {
    "input_tokens": 3,
    "cache_read_input_tokens": 20,
    "cache_creation_input_tokens": 6,
    "output_tokens": 0,
}


@pytest.mark.parametrize(
    ("path", "stream"),
    [
        ("/v1/chat/completions", False),
        ("/v1/chat/completions", True),
        ("/v1/messages", False),
        ("/v1/messages", True),
    ],
)
async def test_anthropic_cache_reads_and_writes_are_counted_within_prompt(
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    path: str,
    stream: bool,
) -> None:
    claude.script(AScript(text="a b c d", usage=ANTHROPIC_USAGE))
    sc = await sidecar(chain(("claude", claude)))
    body = chat(stream=stream, model="claude-test") | {"max_tokens": 50}
    r = await post(http, sc.url, body, path=path)
    assert r.status == 200
    got = counted(sc, "claude")
    # Anthropic's input_tokens leaves the cached part out; the sidecar's prompt includes it.
    assert (got["prompt"], got["cache_read"], got["cache_write"]) == (29, 20, 6)
    assert got["completion"] == 4
    assert got["reasoning"] == 0


BEDROCK_USAGE = {
    "inputTokens": 5,
    "outputTokens": 4,
    "totalTokens": 29,
    "cacheReadInputTokens": 12,
    "cacheWriteInputTokens": 8,
}


@pytest.mark.parametrize("stream", [False, True])
async def test_bedrock_cache_tokens_are_counted_within_prompt(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    bedrock.script(BScript(usage=BEDROCK_USAGE))
    sc = await sidecar(chain(("br", bedrock)))
    r = await post(http, sc.url, chat(stream=stream))
    assert r.status == 200
    assert counted(sc, "br") == {
        "prompt": 25,
        "completion": 4,
        "cache_read": 12,
        "cache_write": 8,
        "reasoning": 0,
    }


RESPONSES_USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 24},
    "output_tokens": 9,
    "output_tokens_details": {"reasoning_tokens": 6},
    "total_tokens": 39,
}


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_responses_cached_and_reasoning_tokens_are_counted(
    sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    native = await FakeResponses().start()
    try:
        native.script(RScript(usage=RESPONSES_USAGE))
        sc = await sidecar(chain(("oai", native)))
        body = {"model": "gpt-test", "input": "hi", "store": False, "stream": stream}
        r = await post(http, sc.url, body, path="/v1/responses")
        assert r.status == 200
    finally:
        await native.stop()
    assert counted(sc, "oai") == {
        "prompt": 30,
        "completion": 9,
        "cache_read": 24,
        "cache_write": 0,
        "reasoning": 6,
    }
