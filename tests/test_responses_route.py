"""POST /v1/responses through the chain: native bytes, translation to every kind, fallback
across vendors, the commit point of a Responses stream, and what the caller sees after it."""

import itertools
import json
from typing import Any

import aiohttp
import openai
import pytest
from backends.kinds import OPENAI_KEY, chain
from conftest import LONG, FakeFactory, SidecarFactory, named_events, post, tokens
from fakes.anthropic_upstream import FakeAnthropic
from fakes.anthropic_upstream import Script as AScript
from fakes.bedrock_upstream import FakeBedrock
from fakes.openai_upstream import Script as OScript
from fakes.responses_upstream import FakeResponses
from fakes.responses_upstream import Script as RScript
from fakes.transport import rehomed

from sidecar.backends.openai import DEFAULT_BASE_URL

PATH = "/v1/responses"


@pytest.fixture
async def native() -> Any:
    f = await FakeResponses().start()
    yield f
    await f.stop()


def ask(stream: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-test", "input": "hi", "store": False}
    if stream:
        body["stream"] = True
    return body | extra


def output_text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def streamed(evs: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(d["delta"] for n, d in evs if n == "response.output_text.delta")


def increasing(evs: list[tuple[str, dict[str, Any]]]) -> bool:
    seq = [d["sequence_number"] for _, d in evs]
    return all(a < b for a, b in itertools.pairwise(seq))


# --- JSON


async def test_a_native_backend_gets_the_callers_bytes_and_its_answer_unchanged(
    native: FakeResponses, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("oai", native)))
    raw = b'{"model":"gpt-test",  "input":"hi","store":false}'
    async with http.post(
        sc.url + PATH, data=raw, headers={"content-type": "application/json"}
    ) as r:
        assert r.status == 200
        body = await r.json()
        assert r.headers["x-sidecar-backend"] == "oai"
    assert native.seen[0].path == "/v1/responses"
    assert native.seen[0].body == raw
    assert output_text(body) == "Hello from the fake."
    assert sc.metric("llm_sidecar_requests_total", route="responses", chain="default", status="200")
    assert tokens(sc, "oai") == (11, 4)
    line = sc.log_lines()[-1]
    assert line["route"] == "responses"
    assert [a["backend"] for a in line["attempts"]] == ["oai"]


async def test_a_failing_openai_backend_falls_back_to_anthropic_in_the_responses_shape(
    native: FakeResponses,
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
) -> None:
    native.script(RScript(status=503))
    sc = await sidecar(chain(("oai", native), ("claude", claude)))
    got = await post(http, sc.url, ask(instructions="be brief", max_output_tokens=50), PATH)
    assert got.status == 200
    assert got.headers["x-sidecar-backend"] == "claude"
    assert got.headers["x-sidecar-failures"] == "oai=overloaded"
    body = got.json
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert output_text(body) == "Hello from the fake Anthropic."
    assert body["usage"]["input_tokens"] == 11
    sent = claude.seen[0].json
    assert sent["system"] == "be brief"
    assert sent["max_tokens"] == 50
    assert sent["messages"] == [{"role": "user", "content": "hi"}]


async def test_a_function_call_from_bedrock_comes_back_as_a_function_call_item(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    from fakes.bedrock_upstream import Script as BScript

    bedrock.script(BScript(tool=("get_weather", {"city": "Paris"})))
    sc = await sidecar(chain(("br", bedrock)))
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    got = await post(http, sc.url, ask(tools=tools), PATH)
    assert got.status == 200, got.text
    calls = [i for i in got.json["output"] if i["type"] == "function_call"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert calls[0]["call_id"]


async def test_responses_chat_sends_chat_completions_to_an_openai_compatible_server(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain(("local", a), LOCAL_RESPONSES="chat"))
    got = await post(http, sc.url, ask(input=[{"role": "user", "content": "hi"}]), PATH)
    assert got.status == 200, got.text
    assert a.seen[0].path == "/v1/chat/completions"
    assert a.seen[0].json["messages"] == [{"role": "user", "content": "hi"}]
    assert got.json["object"] == "response"
    assert output_text(got.json)


async def test_azure_v1_serves_responses_at_its_v1_path_with_the_deployment_as_model(
    native: FakeResponses, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    env = {
        "SIDECAR_BACKENDS": "az",
        "AZ_KIND": "azure",
        "AZ_BASE_URL": native.url.removesuffix("/v1"),
        "AZ_API_KEY": "az-canary-0123456789",
        "AZ_DEPLOYMENT": "my-deployment",
    }
    sc = await sidecar(env)
    got = await post(http, sc.url, ask(), PATH)
    assert got.status == 200, got.text
    assert native.seen[0].path == "/openai/v1/responses"
    assert native.seen[0].json["model"] == "my-deployment"
    assert native.seen[0].headers["api-key"] == "az-canary-0123456789"


async def test_previous_response_id_skips_translated_backends_as_unsupported(
    native: FakeResponses,
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
) -> None:
    sc = await sidecar(chain(("claude", claude), ("oai", native)))
    got = await post(http, sc.url, ask(previous_response_id="resp_123"), PATH)
    assert got.status == 200
    assert got.headers["x-sidecar-backend"] == "oai"
    assert got.headers["x-sidecar-failures"] == "claude=unsupported"
    assert claude.seen == []


async def test_previous_response_id_on_a_chain_without_a_native_backend_is_a_clear_400(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    got = await post(http, sc.url, ask(previous_response_id="resp_123"), PATH)
    assert got.status == 400
    assert "previous_response_id" in got.json["error"]["message"]
    assert claude.seen == []


async def test_an_invalid_responses_request_is_refused_in_the_openai_shape_and_not_forwarded(
    native: FakeResponses, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("oai", native)))
    got = await post(http, sc.url, {"model": "gpt-test", "input": 42}, PATH)
    assert got.status == 400
    assert got.json["error"]["type"] == "invalid_request_error"
    assert "input" in got.json["error"]["message"]
    assert native.seen == []


async def test_encrypted_reasoning_is_stripped_before_a_translated_backend(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {
            "type": "reasoning",
            "id": "rs_abc",
            "summary": [{"type": "summary_text", "text": "thought"}],
            "encrypted_content": "gAAAA-secret",
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "ok"}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "again"}]},
    ]
    got = await post(http, sc.url, ask(input=items), PATH)
    assert got.status == 200, got.text
    sent = claude.seen[0].body
    assert b"gAAAA-secret" not in sent
    assert b"rs_abc" not in sent


# --- streams


async def test_a_native_stream_is_relayed_event_by_event(
    native: FakeResponses, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("oai", native)))
    got = await post(http, sc.url, ask(stream=True), PATH)
    assert got.status == 200
    assert got.headers["content-type"].startswith("text/event-stream")
    evs = named_events(got.text)
    assert evs[-1][0] == "response.completed"
    assert streamed(evs) == "Hello from the fake."
    assert increasing(evs)
    assert tokens(sc, "oai") == (11, 4)


@pytest.mark.parametrize("end", ["error_first", "failed_first"])
async def test_an_in_band_failure_before_the_first_delta_falls_back(
    end: str,
    native: FakeResponses,
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
) -> None:
    native.script(RScript(end=end, error_code="rate_limit_exceeded"))
    sc = await sidecar(chain(("oai", native), ("claude", claude)))
    got = await post(http, sc.url, ask(stream=True), PATH)
    assert got.status == 200
    assert got.headers["x-sidecar-backend"] == "claude"
    assert got.headers["x-sidecar-failures"] == "oai=rate_limited"
    evs = named_events(got.text)
    assert [n for n, _ in evs][:2] == ["response.created", "response.in_progress"]
    assert evs[-1][0] == "response.completed"
    assert streamed(evs) == "Hello from the fake Anthropic."
    assert increasing(evs)


async def test_a_stream_that_ends_before_its_first_delta_falls_back_with_no_sse_sent(
    native: FakeResponses,
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
) -> None:
    native.script(RScript(end="cut", after=0))
    sc = await sidecar(chain(("oai", native), ("claude", claude)))
    got = await post(http, sc.url, ask(stream=True), PATH)
    assert got.headers["x-sidecar-backend"] == "claude"
    evs = named_events(got.text)
    # One response.created: the failed backend's lifecycle events never reached the caller.
    assert [n for n, _ in evs].count("response.created") == 1
    assert evs[-1][0] == "response.completed"


@pytest.mark.parametrize("end", ["cut", "stall", "malformed", "error", "failed", "no_final"])
async def test_a_native_stream_broken_after_commit_ends_in_one_error_event_never_completed(
    end: str, native: FakeResponses, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    native.script(RScript(text=LONG, end=end, after=3))
    sc = await sidecar(chain(("oai", native), OAI_STREAM_IDLE_TIMEOUT_S="0.5"))
    got = await post(http, sc.url, ask(stream=True), PATH)
    assert got.status == 200
    evs = named_events(got.text)
    names = [n for n, _ in evs]
    assert "response.completed" not in names
    assert names[-1] == "error"
    assert names.count("error") == 1
    assert evs[-1][1]["type"] == "error"
    assert evs[-1][1]["code"]
    assert increasing(evs)


async def test_a_translated_stream_cut_after_commit_ends_in_an_error_event(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    claude.script(AScript(text=LONG, end="cut", after=3))
    sc = await sidecar(chain(("claude", claude)))
    got = await post(http, sc.url, ask(stream=True), PATH)
    evs = named_events(got.text)
    names = [n for n, _ in evs]
    assert "response.completed" not in names
    assert names[-1] == "error"
    assert increasing(evs)


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_reasoning_from_a_chat_backend_commits_a_responses_stream(
    key: str,
    fake: FakeFactory,
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
) -> None:
    local = await fake(OScript(reasoning="Think first.", reasoning_key=key, end="cut", after=0))
    sc = await sidecar(chain(("local", local), ("claude", claude), LOCAL_RESPONSES="chat"))
    got = await post(http, sc.url, ask(stream=True), PATH)
    # The caller was sent reasoning: the cut after it is after the commit, and not a fallback.
    assert got.headers["x-sidecar-backend"] == "local"
    assert claude.seen == []
    evs = named_events(got.text)
    names = [n for n, _ in evs]
    thought = "".join(d["delta"] for n, d in evs if n == "response.reasoning_summary_text.delta")
    assert thought == "Think first. "
    assert names[-1] == "error" and "response.completed" not in names
    assert increasing(evs)


async def test_a_chat_backend_cut_before_any_reasoning_or_text_falls_back(
    fake: FakeFactory, claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    local = await fake(OScript(end="role_only"))
    sc = await sidecar(chain(("local", local), ("claude", claude), LOCAL_RESPONSES="chat"))
    got = await post(http, sc.url, ask(stream=True), PATH)
    assert got.headers["x-sidecar-backend"] == "claude"
    evs = named_events(got.text)
    assert [n for n, _ in evs].count("response.created") == 1
    assert streamed(evs) == "Hello from the fake Anthropic."


async def test_a_stream_broken_after_commit_is_recovered_on_a_prefill_backend(
    native: FakeResponses, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    native.script(RScript(text=LONG, end="cut", after=3))
    rest = " ".join(LONG.split(" ")[3:])
    b = await fake(OScript(text=" " + rest))
    sc = await sidecar(chain(("oai", native), ("b", b), B_PREFILL="true"))
    got = await post(http, sc.url, ask(stream=True), PATH)
    evs = named_events(got.text)
    assert evs[-1][0] == "response.completed"
    assert streamed(evs) == LONG
    assert increasing(evs)
    assert [n for n, _ in evs].count("response.created") == 1
    assert b.seen[0].json["messages"][-1] == {"role": "assistant", "content": "w0 w1 w2"}
    assert output_text(evs[-1][1]["response"]) == LONG


# --- the official SDK


async def test_the_openai_sdk_creates_and_streams_responses_through_a_fallback(
    native: FakeResponses,
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
) -> None:
    native.script(RScript(status=429), RScript(status=429))
    sc = await sidecar(chain(("oai", native), ("claude", claude)))
    client = openai.AsyncOpenAI(base_url=sc.url + "/v1", api_key="unused", max_retries=0)
    try:
        created = await client.responses.create(model="gpt-test", input="hi", store=False)
        assert created.output_text == "Hello from the fake Anthropic."
        async with client.responses.stream(model="gpt-test", input="hi", store=False) as stream:
            deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            final = await stream.get_final_response()
        assert "".join(deltas) == final.output_text == "Hello from the fake Anthropic."
    finally:
        await client.close()


# --- count_tokens


async def test_count_tokens_is_served_by_an_anthropic_backend(
    fake: FakeFactory, claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    import anthropic

    a = await fake()
    sc = await sidecar(chain(("oai", a), ("claude", claude)))
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="unused", max_retries=0)
    try:
        counted = await client.messages.count_tokens(
            model="claude-test", messages=[{"role": "user", "content": "one two three"}]
        )
    finally:
        await client.close()
    assert counted.input_tokens > 0
    assert claude.seen[0].path == "/v1/messages/count_tokens"
    assert a.seen == []
    assert sc.metric(
        "llm_sidecar_requests_total", route="count_tokens", chain="default", status="200"
    )


async def test_count_tokens_without_an_anthropic_backend_is_a_501_not_supported(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain(("oai", a)))
    body = {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}
    got = await post(http, sc.url, body, "/v1/messages/count_tokens")
    assert got.status == 501
    assert got.json["type"] == "error"
    assert got.json["error"]["type"] == "not_supported"
    assert a.seen == []


async def test_count_tokens_on_bedrock_calls_its_count_tokens_operation(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("br", bedrock)))
    body = {
        "model": "claude-test",
        "system": "be brief",
        "messages": [{"role": "user", "content": "one two three"}],
    }
    got = await post(http, sc.url, body, "/v1/messages/count_tokens")
    assert got.status == 200, got.text
    assert got.json == {"input_tokens": got.json["input_tokens"]}
    assert got.json["input_tokens"] > 0
    seen = bedrock.seen[0]
    assert seen.operation == "count-tokens"
    counted = seen.json["input"]["converse"]
    assert counted["system"] == [{"text": "be brief"}]
    assert counted["messages"] == [{"role": "user", "content": [{"text": "one two three"}]}]


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_chat_sends_max_output_tokens_to_api_openai_com_as_max_completion_tokens(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    o = await fake(reasoning_model=True)  # refuses max_tokens, as o-series and gpt-5 models do
    env = {"SIDECAR_BACKENDS": "o", "O_API_KEY": OPENAI_KEY, "O_RESPONSES": "chat"}
    sc = await sidecar(env, upstream=rehomed(DEFAULT_BASE_URL, o.url))
    got = await post(http, sc.url, ask(stream, max_output_tokens=50), PATH)
    assert got.status == 200, got.text
    sent = o.seen[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["max_completion_tokens"] == 50
    assert "max_tokens" not in sent.json


async def test_responses_chat_sends_max_output_tokens_to_a_compatible_server_as_max_tokens(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    local = await fake()
    sc = await sidecar(chain(("local", local), LOCAL_RESPONSES="chat"))
    got = await post(http, sc.url, ask(max_output_tokens=50), PATH)
    assert got.status == 200, got.text
    assert local.seen[0].json["max_tokens"] == 50
    assert "max_completion_tokens" not in local.seen[0].json
