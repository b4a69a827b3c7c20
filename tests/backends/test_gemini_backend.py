"""Kind `gemini` through the real sidecar against the fake Gemini API on loopback."""

import asyncio
from typing import Any

import aiohttp
import pytest
from backends.kinds import GEMINI_KEY, GEMINI_MODEL, chain
from conftest import (
    LONG,
    FakeFactory,
    Running,
    SidecarFactory,
    chat,
    class_failures,
    post,
    sse_data,
    streamed_text,
    typed_tokens,
)
from fakes.gemini_upstream import SIGNATURE, FakeGemini, Script, error
from fakes.openai_upstream import Script as OScript

from sidecar.config import load_config
from sidecar.settings import ConfigError

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_openai_caller_gets_a_generate_content_answer_as_a_chat_completion(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("g", gemini)))
    body = chat(model="gpt-x", max_tokens=30, temperature=0.2, stop="END")
    body["messages"].insert(0, {"role": "system", "content": "Be brief."})
    r = await post(http, sc.url, body, headers={"authorization": "Bearer caller-token"})
    assert r.status == 200
    assert r.json["choices"][0]["message"]["content"] == "Hello from the fake Gemini."
    assert r.json["choices"][0]["finish_reason"] == "stop"
    assert r.json["model"] == "gpt-x"
    assert r.json["usage"]["prompt_tokens"] == 7
    assert r.json["usage"]["completion_tokens"] == 7  # candidates + thoughts
    assert r.json["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
    assert r.json["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
    sent = gemini.seen[0]
    assert (sent.model, sent.method) == (GEMINI_MODEL, "generateContent")
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert "authorization" not in sent.headers
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 30, "temperature": 0.2, "stopSequences": ["END"]},
    }
    assert (typed_tokens(sc, "g", "prompt"), typed_tokens(sc, "g", "completion")) == (7, 7)
    assert (typed_tokens(sc, "g", "cache_read"), typed_tokens(sc, "g", "reasoning")) == (3, 2)


async def test_openai_caller_streams_gemini_sse_and_gets_done_and_usage(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("g", gemini)))
    r = await post(http, sc.url, chat(stream=True, stream_options={"include_usage": True}))
    assert r.status == 200
    assert streamed_text(r.text) == "Hello from the fake Gemini."
    events = sse_data(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"]["total_tokens"] == 14
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert (gemini.seen[0].method, gemini.seen[0].query) == ("streamGenerateContent", "alt=sse")
    assert (typed_tokens(sc, "g", "prompt"), typed_tokens(sc, "g", "completion")) == (7, 7)
    assert (typed_tokens(sc, "g", "cache_read"), typed_tokens(sc, "g", "reasoning")) == (3, 2)


async def test_thought_parts_are_not_relayed_as_content(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gemini.script(Script(thought="Secret reasoning."), Script(thought="Secret reasoning."))
    sc = await sidecar(chain(("g", gemini)))
    whole = await post(http, sc.url, chat())
    streamed = await post(http, sc.url, chat(stream=True))
    assert whole.json["choices"][0]["message"]["content"] == "Hello from the fake Gemini."
    assert streamed_text(streamed.text) == "Hello from the fake Gemini."
    assert "Secret" not in whole.text + streamed.text


async def test_openai_tool_calls_carry_the_thought_signature_and_get_it_back(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gemini.script(Script(calls=[("weather", {"city": "Rome"}), ("weather", {"city": "Oslo"})]))
    sc = await sidecar(chain(("g", gemini)))
    first = await post(http, sc.url, chat(tools=[WEATHER], tool_choice="required"))
    message = first.json["choices"][0]["message"]
    assert first.json["choices"][0]["finish_reason"] == "tool_calls"
    calls = message["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == ['{"city":"Rome"}', '{"city":"Oslo"}']
    assert calls[0]["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    assert "extra_content" not in calls[1]
    assert calls[0]["id"].startswith("call_") and calls[0]["id"] != calls[1]["id"]
    results = [
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "snow"},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"sky": "clear"}'},
    ]
    follow_up = chat(tools=[WEATHER])
    follow_up["messages"] += [message, *results]
    second = await post(http, sc.url, follow_up)
    assert second.status == 200, second.text
    sent = gemini.seen[1].json
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "The weather in a city",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],  # type: ignore[index]
                }
            ]
        }
    ]
    assert gemini.seen[0].json["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    model_turn, results_turn = sent["contents"][1], sent["contents"][2]
    assert model_turn["role"] == "model"
    assert model_turn["parts"][0] == {
        "functionCall": {"name": "weather", "args": {"city": "Rome"}},
        "thoughtSignature": SIGNATURE,
    }
    assert results_turn == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "weather", "response": {"result": "snow"}}},
            {"functionResponse": {"name": "weather", "response": {"sky": "clear"}}},
        ],
    }


def unsigned_follow_up() -> dict[str, Any]:
    body = chat()
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    body["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sun"},
    ]
    return body


async def test_an_unsigned_call_in_history_gets_googles_stand_in_for_gemini_3(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    # Another vendor's tool call (a fallback mid-conversation) has no signature to give back.
    sc = await sidecar(chain(("g", gemini)))
    r = await post(http, sc.url, unsigned_follow_up())
    assert r.status == 200
    part = gemini.seen[0].json["contents"][1]["parts"][0]
    assert part["thoughtSignature"] == "skip_thought_signature_validator"


async def test_a_gemini_2_follow_up_without_the_signature_is_the_upstreams_400_and_no_fallback(
    gemini: FakeGemini, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    backup = await fake()
    sc = await sidecar(chain(("g", gemini), ("backup", backup), G_MODEL="gemini-2.5-flash"))
    r = await post(http, sc.url, unsigned_follow_up())
    assert r.status == 400
    assert "thought_signature" in r.json["error"]["message"]
    assert r.json["error"]["code"] == "INVALID_ARGUMENT"
    assert r.headers["x-sidecar-failures"] == "g=client_error"
    assert "thoughtSignature" not in gemini.seen[0].json["contents"][1]["parts"][0]
    assert backup.seen == []


async def test_streamed_tool_calls_carry_the_signature(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gemini.script(Script(calls=[("weather", {"city": "Rome"})]))
    sc = await sidecar(chain(("g", gemini)))
    r = await post(http, sc.url, chat(stream=True, tools=[WEATHER]))
    chunks = [e for e in sse_data(r.text) if isinstance(e, dict)]
    fragments = [
        tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls", [])
    ]
    assert len(fragments) == 1
    assert fragments[0]["index"] == 0
    assert fragments[0]["function"] == {"name": "weather", "arguments": '{"city":"Rome"}'}
    assert fragments[0]["extra_content"]["google"]["thought_signature"] == SIGNATURE
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("script", "cls"),
    [
        (error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"), "rate_limited"),
        (error(429, "RESOURCE_EXHAUSTED", wrapped=True), "rate_limited"),
        (
            error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}],
                    }
                ],
            ),
            "quota_exhausted",
        ),
        (error(503, "UNAVAILABLE", "The model is overloaded."), "overloaded"),
        (error(504, "DEADLINE_EXCEEDED", "Deadline expired"), "timeout"),
        (error(500, "INTERNAL", "Internal error"), "server_error"),
        (
            error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (2000000) exceeds the maximum number of tokens allowed "
                "(1048576).",
            ),
            "context_length",
        ),
    ],
)
async def test_gemini_http_errors_fall_back_with_their_class(
    gemini: FakeGemini,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    script: Script,
    cls: str,
    stream: bool,
) -> None:
    gemini.script(script)
    backup = await fake()
    sc = await sidecar(chain(("g", gemini), ("backup", backup)))
    r = await post(http, sc.url, chat(stream))
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == f"g={cls}"
    assert r.headers["x-sidecar-backend"] == "backup"
    assert class_failures(sc, "g", cls) == 1


@pytest.mark.parametrize(
    ("script", "status", "cls"),
    [
        (error(400, "INVALID_ARGUMENT", "Bad schema"), 400, "client_error"),
        (error(403, "PERMISSION_DENIED", "API key not valid"), 403, "auth"),
    ],
)
async def test_gemini_errors_that_do_not_fall_back_reach_each_caller_in_its_dialect(
    gemini: FakeGemini,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    script: Script,
    status: int,
    cls: str,
) -> None:
    gemini.script(script, script)
    backup = await fake()
    sc = await sidecar(chain(("g", gemini), ("backup", backup)))
    openai = await post(http, sc.url, chat())
    anthropic = await post(http, sc.url, {**chat(), "max_tokens": 5}, path="/v1/messages")
    assert (openai.status, anthropic.status) == (status, status)
    assert openai.json["error"]["message"] == script.message
    assert openai.json["error"]["code"] == script.google_status
    assert anthropic.json["type"] == "error"
    assert anthropic.json["error"]["message"] == script.message
    assert openai.headers["x-sidecar-failures"] == f"g={cls}"
    assert backup.seen == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_blocked_prompt_is_content_filter_for_the_caller_never_a_fallback(
    gemini: FakeGemini,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    stream: bool,
) -> None:
    gemini.script(Script(block_reason="SAFETY"))
    backup = await fake()
    sc = await sidecar(chain(("g", gemini), ("backup", backup)))
    r = await post(http, sc.url, chat(stream))
    assert r.status == 200
    if stream:
        events = sse_data(r.text)
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "content_filter"
    else:
        assert r.json["choices"][0]["finish_reason"] == "content_filter"
        assert r.json["choices"][0]["message"]["content"] is None
    assert backup.seen == []
    assert "x-sidecar-failures" not in r.headers


async def test_a_safety_finish_is_content_filter(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gemini.script(Script(finish="SAFETY"))
    sc = await sidecar(chain(("g", gemini)))
    r = await post(http, sc.url, chat())
    assert r.json["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(
    ("status", "cls"), [("UNAVAILABLE", "overloaded"), ("RESOURCE_EXHAUSTED", "rate_limited")]
)
async def test_an_error_event_before_content_falls_back_with_its_class(
    gemini: FakeGemini,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    status: str,
    cls: str,
) -> None:
    gemini.script(Script(end="error_first", error_status=status))
    backup = await fake()
    sc = await sidecar(chain(("g", gemini), ("backup", backup)))
    r = await post(http, sc.url, chat(stream=True))
    assert r.headers["x-sidecar-failures"] == f"g={cls}"
    assert streamed_text(r.text) == "Hello from the fake."


@pytest.mark.parametrize("end", ["cut", "error", "malformed"])
async def test_a_gemini_stream_broken_after_commit_ends_with_one_terminal_error(
    gemini: FakeGemini,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    end: str,
) -> None:
    gemini.script(Script(text=LONG, end=end, after=3))
    backup = await fake()
    sc = await sidecar(chain(("g", gemini), ("backup", backup)))
    r = await post(http, sc.url, chat(stream=True))
    events = sse_data(r.text)
    assert "[DONE]" not in events
    assert [e for e in events if "error" in e] == [events[-1]]
    assert streamed_text(r.text) == "w0 w1 w2"
    assert backup.seen == []
    assert class_failures(sc, "g", "stream_interrupted") == 1


async def test_a_gemini_stream_cut_after_commit_is_an_anthropic_error_event(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gemini.script(Script(text=LONG, end="cut", after=3))
    sc = await sidecar(chain(("g", gemini)))
    body = {**chat(stream=True), "max_tokens": 50}
    r = await post(http, sc.url, body, path="/v1/messages")
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[-1] == "error"
    assert "message_stop" not in names


async def test_openai_primary_falls_back_to_gemini(
    gemini: FakeGemini, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fake(OScript(status=503))
    sc = await sidecar(chain(("primary", primary), ("g", gemini)))
    r = await post(http, sc.url, chat(stream=True))
    assert r.headers["x-sidecar-failures"] == "primary=overloaded"
    assert r.headers["x-sidecar-backend"] == "g"
    assert streamed_text(r.text) == "Hello from the fake Gemini."


@pytest.mark.parametrize(
    ("field", "value"),
    [("n", 2), ("logprobs", True), ("response_format", {"type": "foo"})],
)
async def test_untranslatable_requests_are_a_400_with_nothing_sent(
    gemini: FakeGemini,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    field: str,
    value: Any,
) -> None:
    sc = await sidecar(chain(("g", gemini)))
    r = await post(http, sc.url, chat(**{field: value}))
    assert r.status == 400
    assert gemini.seen == []


def test_kind_gemini_needs_an_api_key() -> None:
    env = {"SIDECAR_BACKENDS": "g", "G_KIND": "gemini"}
    with pytest.raises(ConfigError) as e:
        load_config(env)
    assert e.value.env_var == "G_API_KEY"


def test_kind_gemini_defaults_to_googles_endpoint() -> None:
    config = load_config({"SIDECAR_BACKENDS": "g", "G_KIND": "gemini", "G_API_KEY": "k"})
    assert config.backends["g"].base_url == "https://generativelanguage.googleapis.com"


def retry_info(delay: Any) -> list[dict[str, Any]]:
    return [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
    ]


def waiting(how: str, seconds: str) -> Script:
    """A Gemini 429 asking for `seconds`: in a Retry-After header, or Google's way, in the body;
    or a stream's 200 whose first event is that error (`in_stream`)."""
    if how == "header":
        return error(429, "RESOURCE_EXHAUSTED", headers={"Retry-After": seconds})
    if how == "in_stream":
        details = retry_info(seconds + "s")
        return Script(end="error_first", error_status="RESOURCE_EXHAUSTED", details=details)
    return error(429, "RESOURCE_EXHAUSTED", details=retry_info(seconds + "s"))


WAYS = ["header", "retry_info", "in_stream"]


def circuit_of(sc: Running, name: str) -> dict[str, Any]:
    backends = sc.app.status()["backends"]
    assert isinstance(backends, list)
    found: dict[str, Any] = next(b for b in backends if b["name"] == name)
    return found


@pytest.mark.parametrize("how", WAYS)
async def test_a_short_retry_delay_is_waited_out_in_line_as_a_retry_after_is(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession, how: str
) -> None:
    gemini.script(waiting(how, "0.3"))
    sc = await sidecar(chain(("g", gemini), G_RETRIES="1", G_RETRY_BACKOFF_S="5"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    r = await post(http, sc.url, chat(stream=how == "in_stream"))
    waited = loop.time() - t0
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == "g=rate_limited"
    assert 0.25 <= waited < 3  # the delay asked for, not the 5 s backoff base
    assert circuit_of(sc, "g")["circuit"] == "closed"


@pytest.mark.parametrize("how", WAYS)
async def test_a_long_retry_delay_opens_the_circuit_for_it_and_reaches_the_caller(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession, how: str
) -> None:
    gemini.script(waiting(how, "17"))
    sc = await sidecar(chain(("g", gemini), G_RETRIES="3"))
    r = await post(http, sc.url, chat(stream=how == "in_stream"))
    assert r.status == 429
    assert r.headers["retry-after"] == "17"
    assert r.headers["x-anyllm-fallback-exhausted"] == "true"
    assert len(gemini.seen) == 1  # longer than SIDECAR_RETRY_AFTER_WAIT_MAX_S: not retried
    state = circuit_of(sc, "g")
    assert state["circuit"] == "open"
    assert 16 < state["cooldown_remaining_s"] <= 17  # the delay itself, not a jittered cooldown
    skipped = await post(http, sc.url, chat())
    assert (skipped.status, skipped.headers["retry-after"]) == (503, "17")
    assert len(gemini.seen) == 1


async def test_a_fractional_retry_delay_reaches_the_caller_in_whole_seconds_rounded_up(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gemini.script(error(429, "RESOURCE_EXHAUSTED", details=retry_info("2.5s")))
    sc = await sidecar(chain(("g", gemini), SIDECAR_RETRY_AFTER_WAIT_MAX_S="1"))
    r = await post(http, sc.url, chat(), path="/v1/messages")
    assert (r.status, r.headers["retry-after"]) == (429, "3")
    assert r.json["error"]["type"] == "rate_limit_error"
    assert 1.5 < circuit_of(sc, "g")["cooldown_remaining_s"] <= 2.5


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", {**chat(stream=True), "max_tokens": 5}),
        ("/v1/responses", {"model": "gpt-test", "input": "hi", "stream": True}),
    ],
)
async def test_an_in_stream_retry_delay_counts_for_every_caller_dialect(
    gemini: FakeGemini,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    path: str,
    body: dict[str, Any],
) -> None:
    gemini.script(waiting("in_stream", "2"))
    sc = await sidecar(chain(("g", gemini), SIDECAR_RETRY_AFTER_WAIT_MAX_S="1"))
    r = await post(http, sc.url, body, path=path)
    assert (r.status, r.headers["retry-after"]) == (429, "2")
    state = circuit_of(sc, "g")
    assert (state["circuit"], len(gemini.seen)) == ("open", 1)
    assert 1 < state["cooldown_remaining_s"] <= 2


@pytest.mark.parametrize(
    "delay", ["soon", "-5s", "17", 17, "1e3s", "17 s", "s", ".5s", "9" * 400 + "s"]
)
async def test_a_malformed_retry_delay_is_ignored(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession, delay: Any
) -> None:
    gemini.script(*[error(429, "RESOURCE_EXHAUSTED", details=retry_info(delay))] * 2)
    sc = await sidecar(chain(("g", gemini), G_RETRIES="1", G_RETRY_BACKOFF_S="0.01"))
    r = await post(http, sc.url, chat())
    assert r.status == 429
    assert "retry-after" not in r.headers
    assert len(gemini.seen) == 2  # retried after the backoff, as without any delay
    assert circuit_of(sc, "g")["circuit"] == "closed"
