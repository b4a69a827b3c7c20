"""The fallback chain over real loopback HTTP: every failure class, retries, budgets, exhaustion;
and the chain and its circuits on a fake transport and a fake clock (`fakes.transport`)."""

import asyncio
import contextlib
import socket
from collections import deque

import aiohttp
import orjson
import pytest
from conftest import (
    FakeClock,
    FakeFactory,
    SidecarFactory,
    chain_env,
    chat,
    post,
    sse_data,
    streamed_text,
)
from fakes.anthropic_upstream import FakeAnthropic
from fakes.openai_upstream import Script, chunk
from fakes.transport import FakeResponse, FakeTransport

QUOTA = {
    "error": {
        "message": "You exceeded your quota",
        "type": "insufficient_quota",
        "code": "insufficient_quota",
    }
}
CONTEXT = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens",
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
    }
}

# (name, script for the first backend, class it must be counted as)
FALLING_BACK: list[tuple[str, Script, str]] = [
    ("429", Script(status=429), "rate_limited"),
    ("insufficient_quota", Script(status=429, body=QUOTA), "quota_exhausted"),
    ("context_length", Script(status=400, body=CONTEXT), "context_length"),
    ("503", Script(status=503), "overloaded"),
    ("529", Script(status=529), "overloaded"),
    ("500", Script(status=500), "server_error"),
    ("502", Script(status=502), "server_error"),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("name", "script", "cls"), FALLING_BACK, ids=[c[0] for c in FALLING_BACK])
async def test_chain_falls_back_on_retryable_status(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    name: str,
    script: Script,
    cls: str,
    stream: bool,
) -> None:
    a, b = await fake(script), await fake()
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat(stream))
    assert r.status == 200
    assert r.headers["x-sidecar-backend"] == "b1"
    assert r.headers["x-sidecar-attempts"] == "2"
    assert r.headers["x-sidecar-failures"] == f"b0={cls}"
    assert "x-anyllm-fallback-exhausted" not in r.headers
    if stream:
        assert streamed_text(r.text) == "Hello from the fake."
        assert sse_data(r.text)[-1] == "[DONE]"
    assert (
        sc.metric(
            "llm_sidecar_backend_failures_total", chain="default", backend="b0", **{"class": cls}
        )
        == 1
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_chain_falls_back_on_connect_error(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    b = await fake()
    env = chain_env(b, b)
    env["B0_BASE_URL"] = f"http://127.0.0.1:{closed_port()}/v1"
    sc = await sidecar(env)
    r = await post(http, sc.url, chat(stream))
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == "b0=connect_error"
    assert r.headers["x-sidecar-attempts"] == "2"


@pytest.mark.parametrize("stream", [False, True], ids=["response_timeout", "first_token_timeout"])
async def test_chain_falls_back_on_timeout(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    a, b = await fake(Script(delay_s=5)), await fake()
    env = chain_env(a, b, B0_RESPONSE_TIMEOUT_S="0.3", B0_FIRST_TOKEN_TIMEOUT_S="0.3")
    sc = await sidecar(env)
    r = await post(http, sc.url, chat(stream))
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == "b0=timeout"


async def test_first_token_timeout_counts_a_slow_first_content_not_the_headers(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    # Headers and the role chunk arrive at once; the first content does not.
    a, b = await fake(Script(chunk_delay_s=2)), await fake()
    sc = await sidecar(chain_env(a, b, B0_FIRST_TOKEN_TIMEOUT_S="0.3"))
    r = await post(http, sc.url, chat(stream=True))
    assert r.headers["x-sidecar-failures"] == "b0=timeout"
    assert streamed_text(r.text) == "Hello from the fake."


async def test_connect_timeout_is_a_timeout(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    b = await fake()
    # A listener that never accepts, with its backlog full, never completes a handshake.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(blackhole.getsockname())
        fillers.append(s)
    try:
        env = chain_env(b, b, B0_CONNECT_TIMEOUT_S="0.3")
        env["B0_BASE_URL"] = f"http://127.0.0.1:{blackhole.getsockname()[1]}/v1"
        sc = await sidecar(env)
        r = await post(http, sc.url, chat())
        assert r.status == 200
        assert r.headers["x-sidecar-failures"] in ("b0=timeout", "b0=connect_error")
    finally:
        for s in fillers:
            s.close()
        blackhole.close()


NOT_FALLING_BACK: list[tuple[str, Script, int, str]] = [
    ("400", Script(status=400), 400, "client_error"),
    ("404", Script(status=404), 404, "client_error"),
    ("401", Script(status=401), 401, "auth"),
    ("403", Script(status=403), 403, "auth"),
    ("invalid_json_2xx", Script(body=b"<html>oops"), 502, "invalid_response"),
    (
        "redirect",
        Script(status=302, headers={"Location": "http://example.invalid/"}),
        502,
        "invalid_response",
    ),
]


@pytest.mark.parametrize(
    ("name", "script", "status", "cls"), NOT_FALLING_BACK, ids=[c[0] for c in NOT_FALLING_BACK]
)
async def test_chain_returns_non_fallback_failures_at_once(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    name: str,
    script: Script,
    status: int,
    cls: str,
) -> None:
    a, b = await fake(script), await fake()
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat())
    assert r.status == status
    assert r.headers["x-sidecar-backend"] == "b0"
    assert r.headers["x-sidecar-attempts"] == "1"
    assert r.headers["x-sidecar-failures"] == f"b0={cls}"
    assert "error" in r.json
    assert b.seen == []


async def test_upstream_4xx_body_reaches_the_caller_unchanged(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    body = {
        "error": {
            "message": "bad temperature",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        }
    }
    a = await fake(Script(status=400, body=body))
    sc = await sidecar(chain_env(a, await fake()))
    r = await post(http, sc.url, chat())
    assert r.json == body


async def test_fallback_on_setting_decides_which_classes_move_on(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=401)), await fake(Script(status=503))
    sc = await sidecar(chain_env(a, b, SIDECAR_FALLBACK_ON="auth"))
    r = await post(http, sc.url, chat())
    # auth moves on; overloaded (no longer listed) is the caller's answer.
    assert r.headers["x-sidecar-failures"] == "b0=auth,b1=overloaded"
    assert r.status == 503
    assert "x-anyllm-fallback-exhausted" not in r.headers


STREAM_PRE_COMMIT: list[tuple[str, Script, str]] = [
    ("error_event_first", Script(end="error_first"), "server_error"),
    (
        "overloaded_event_first",
        Script(end="error_first", error={"message": "busy", "type": "overloaded_error"}),
        "overloaded",
    ),
    (
        "rate_limit_event_first",
        Script(end="error_first", error={"message": "slow", "type": "rate_limit_error"}),
        "rate_limited",
    ),
    ("role_only_then_eof", Script(end="role_only"), "server_error"),
    ("cut_before_content", Script(end="cut", after=0), "server_error"),
    ("error_after_role_chunk", Script(end="error", after=0), "server_error"),
]


@pytest.mark.parametrize(
    ("name", "script", "cls"), STREAM_PRE_COMMIT, ids=[c[0] for c in STREAM_PRE_COMMIT]
)
async def test_stream_failures_before_first_content_fall_back(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    name: str,
    script: Script,
    cls: str,
) -> None:
    a, b = await fake(script), await fake()
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat(stream=True))
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == f"b0={cls}"
    assert streamed_text(r.text) == "Hello from the fake."
    # Nothing of the failed attempt (its role chunk) reached the caller twice.
    roles = [
        o
        for o in sse_data(r.text)
        if isinstance(o, dict) and o["choices"] and "role" in o["choices"][0]["delta"]
    ]
    assert len(roles) == 1


async def test_malformed_event_before_content_is_invalid_response_502(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(end="malformed", after=0)), await fake()
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat(stream=True))
    assert r.status == 502
    assert r.headers["x-sidecar-failures"] == "b0=invalid_response"
    assert r.json["error"]["code"] == "invalid_response"
    assert b.seen == []


async def test_stream_that_finishes_without_content_commits_at_its_finish(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(text="")), await fake()
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat(stream=True))
    assert r.headers["x-sidecar-backend"] == "b0"
    assert sse_data(r.text)[-1] == "[DONE]"
    assert b.seen == []


async def test_exhausted_chain_returns_last_error_with_retry_after(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    last = {"error": {"message": "slow down", "type": "rate_limit_exceeded", "code": None}}
    a = await fake(Script(status=503))
    b = await fake(Script(status=429, body=last, headers={"Retry-After": "7"}))
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat())
    assert r.status == 429
    assert r.json == last
    assert r.headers["retry-after"] == "7"
    assert r.headers["x-anyllm-fallback-exhausted"] == "true"
    assert r.headers["x-sidecar-backend"] == "b1"
    assert r.headers["x-sidecar-failures"] == "b0=overloaded,b1=rate_limited"
    assert sc.metric("llm_sidecar_fallback_exhausted_total", chain="default") == 1
    assert (
        sc.metric(
            "llm_sidecar_requests_total", route="chat_completions", chain="default", status="429"
        )
        == 1
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_exhausted_by_connect_errors_is_502_naming_the_backend(
    sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    env = {"SIDECAR_BACKENDS": "only", "ONLY_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"}
    sc = await sidecar(env)
    r = await post(http, sc.url, chat(stream))
    assert r.status == 502
    assert r.headers["x-anyllm-fallback-exhausted"] == "true"
    assert "'only'" in r.json["error"]["message"]
    assert "127.0.0.1" not in r.text


async def test_exhausted_by_timeouts_is_504(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(delay_s=5))
    sc = await sidecar(chain_env(a, B0_RESPONSE_TIMEOUT_S="0.2"))
    r = await post(http, sc.url, chat())
    assert r.status == 504
    assert r.headers["x-anyllm-fallback-exhausted"] == "true"


async def test_request_budget_bounds_the_whole_chain(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(delay_s=5)), await fake()
    sc = await sidecar(chain_env(a, b, SIDECAR_REQUEST_TIMEOUT_S="0.3"))
    r = await post(http, sc.url, chat(stream=True))
    assert r.status == 504
    assert r.headers["x-anyllm-fallback-exhausted"] == "true"
    assert b.seen == []


async def test_retries_stay_on_the_backend_for_retryable_classes(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(), await fake()
    a.script(Script(status=503), Script(status=500))
    sc = await sidecar(chain_env(a, b, B0_RETRIES="2", B0_RETRY_BACKOFF_S="0.01"))
    r = await post(http, sc.url, chat())
    assert r.status == 200
    assert r.headers["x-sidecar-backend"] == "b0"
    assert r.headers["x-sidecar-attempts"] == "3"
    assert r.headers["x-sidecar-failures"] == "b0=overloaded,b0=server_error"
    assert len(a.seen) == 3
    assert b.seen == []


async def test_timeouts_are_never_retried_on_the_same_backend(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(delay_s=5)), await fake()
    sc = await sidecar(chain_env(a, b, B0_RETRIES="3", B0_RESPONSE_TIMEOUT_S="0.2"))
    r = await post(http, sc.url, chat())
    assert r.headers["x-sidecar-failures"] == "b0=timeout"
    assert len(a.seen) == 1


async def test_a_wait_given_only_in_milliseconds_reaches_the_caller_as_a_retry_after(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(status=429, headers={"retry-after-ms": "29500"}))
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat())
    assert (r.status, r.headers["retry-after"]) == (429, "30")


async def test_short_retry_after_is_waited_out_in_line(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(), await fake()
    a.script(Script(status=429, headers={"Retry-After": "0.3"}))
    sc = await sidecar(chain_env(a, b, B0_RETRIES="1", B0_RETRY_BACKOFF_S="5"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    r = await post(http, sc.url, chat())
    waited = loop.time() - t0
    assert r.headers["x-sidecar-backend"] == "b0"
    assert r.headers["x-sidecar-failures"] == "b0=rate_limited"
    assert 0.25 <= waited < 3  # the Retry-After, not the 5 s backoff base
    status = sc.app.status()["backends"]
    assert isinstance(status, list)
    assert status[0]["circuit"] == "closed"


async def test_retry_after_longer_than_the_wait_max_ends_the_turn(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=429, headers={"Retry-After": "30"})), await fake()
    sc = await sidecar(chain_env(a, b, B0_RETRIES="3"))
    r = await post(http, sc.url, chat())
    assert r.headers["x-sidecar-backend"] == "b1"
    assert len(a.seen) == 1


async def test_same_request_id_goes_to_every_attempt(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat(), headers={"x-request-id": "req-abc-123"})
    assert r.headers["x-request-id"] == "req-abc-123"
    assert a.seen[0].headers["x-request-id"] == "req-abc-123"
    assert b.seen[0].headers["x-request-id"] == "req-abc-123"


async def test_model_override_and_model_map_rewrite_only_the_model(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    sc = await sidecar(
        chain_env(a, b, B0_MODEL="forced-model", B1_MODEL_MAP="gpt-test=mapped-model")
    )
    body = chat(temperature=0.5)
    r = await post(http, sc.url, body)
    assert r.status == 200
    sent_a, sent_b = a.seen[0].json, b.seen[0].json
    assert sent_a["model"] == "forced-model"
    assert sent_b["model"] == "mapped-model"
    assert sent_b["temperature"] == 0.5
    assert sent_b["messages"] == body["messages"]


async def test_unchanged_body_is_forwarded_byte_for_byte(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    raw = b'{"model":"gpt-test",  "messages":[{"role":"user","content":"hi"}], "x": 1.50}'
    async with http.post(
        sc.url + "/v1/chat/completions", data=raw, headers={"content-type": "application/json"}
    ) as r:
        assert r.status == 200
    assert a.seen[0].body == raw


async def test_streams_ask_upstream_for_usage_and_count_tokens(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat(stream=True))
    assert a.seen[0].json["stream_options"] == {"include_usage": True}
    # The caller did not ask for the usage chunk, so it does not get one.
    assert all(o == "[DONE]" or o["choices"] for o in sse_data(r.text))
    labels = {"chain": "default", "backend": "b0"}
    assert sc.metric("llm_sidecar_tokens_total", type="prompt", **labels) == 7
    assert sc.metric("llm_sidecar_tokens_total", type="completion", **labels) == 4


async def test_caller_asking_for_usage_gets_the_usage_chunk(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat(stream=True, stream_options={"include_usage": True}))
    usage = [o for o in sse_data(r.text) if isinstance(o, dict) and not o["choices"]]
    assert usage[0]["usage"]["completion_tokens"] == 4


async def test_metrics_count_a_fallback(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    sc = await sidecar(chain_env(a, b))
    await post(http, sc.url, chat())
    m = sc.metric
    assert (
        m("llm_sidecar_backend_attempts_total", chain="default", backend="b0", outcome="failure")
        == 1
    )
    assert (
        m("llm_sidecar_backend_attempts_total", chain="default", backend="b1", outcome="success")
        == 1
    )
    assert (
        m(
            "llm_sidecar_backend_failures_total",
            chain="default",
            backend="b0",
            **{"class": "overloaded"},
        )
        == 1
    )
    assert m("llm_sidecar_fallback_exhausted_total", chain="default") == 0
    assert (
        m("llm_sidecar_requests_total", route="chat_completions", chain="default", status="200")
        == 1
    )
    assert (
        m("llm_sidecar_backend_attempt_duration_seconds_count", chain="default", backend="b0") == 1
    )
    assert m("llm_sidecar_tokens_total", chain="default", backend="b1", type="prompt") == 7


async def test_embeddings_go_through_the_chain(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=500)), await fake()
    sc = await sidecar(chain_env(a, b))
    r = await post(
        http, sc.url, {"model": "text-embedding-3-small", "input": "hi"}, path="/v1/embeddings"
    )
    assert r.status == 200
    assert r.json["data"][0]["embedding"] == [0.1, 0.2, 0.3]
    assert b.seen[0].path == "/v1/embeddings"
    assert r.headers["x-sidecar-failures"] == "b0=server_error"


async def test_stream_body_keeps_the_callers_bytes_after_the_usage_option(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    raw = b'  {"model":"gpt-test", "stream": true,  "messages":[{"role":"user","content":"hi"}]}'
    headers = {"content-type": "application/json"}
    async with http.post(sc.url + "/v1/chat/completions", data=raw, headers=headers) as r:
        assert r.status == 200
        await r.read()
    sent = a.seen[0].body
    assert sent == b'{"stream_options":{"include_usage":true},' + raw.lstrip()[1:]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_answer_of_an_unexpected_shape_is_invalid_response_not_a_crash(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    # Anthropic-shaped answers whose blocks are not what the translation expects.
    weird = {"id": "m", "type": "message", "role": "assistant", "content": [1]}
    start = b'event: message_start\ndata: {"type":"message_start","message":{"id":"m"}}\n\n'
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":[1]}\n\n'
    script = (
        Script(body=start + delta, headers={"Content-Type": "text/event-stream"})
        if stream
        else Script(body=weird)
    )
    a = await fake(script)
    env = {
        "SIDECAR_BACKENDS": "c",
        "C_KIND": "anthropic",
        "C_BASE_URL": a.url.removesuffix("/v1"),
        "C_API_KEY": "sk-ant-canary-0123456789",
    }
    sc = await sidecar(env)
    r = await post(http, sc.url, chat(stream))
    assert r.status == 502
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-sidecar-failures"] == "c=invalid_response"


async def test_request_of_an_unexpected_shape_is_a_400_and_nothing_is_sent(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    env = {
        "SIDECAR_BACKENDS": "c",
        "C_KIND": "anthropic",
        "C_BASE_URL": a.url.removesuffix("/v1"),
        "C_API_KEY": "sk-ant-canary-0123456789",
    }
    sc = await sidecar(env)
    r = await post(http, sc.url, {"model": "m", "messages": [1]})
    assert r.status == 400
    assert "'c'" in r.json["error"]["message"]
    assert a.seen == []


async def test_stream_with_only_a_role_chunk_and_done_falls_back(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    role = b"data: " + orjson.dumps(chunk("m", {"role": "assistant", "content": ""})) + b"\n\n"
    a = await fake(
        Script(body=role + b"data: [DONE]\n\n", headers={"Content-Type": "text/event-stream"})
    )
    b = await fake()
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat(stream=True))
    assert r.headers["x-sidecar-failures"] == "b0=server_error"
    assert streamed_text(r.text) == "Hello from the fake."


async def test_request_budget_gives_504_even_when_timeout_does_not_fall_back(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(delay_s=5))
    sc = await sidecar(
        chain_env(a, SIDECAR_REQUEST_TIMEOUT_S="0.3", SIDECAR_FALLBACK_ON="overloaded")
    )
    r = await post(http, sc.url, chat())
    assert r.status == 504
    assert r.headers["x-anyllm-fallback-exhausted"] == "true"
    assert sc.app.members["b0"].circuit.consecutive_failures == 0


async def test_a_request_the_translation_chokes_on_is_a_400_naming_why_and_the_request_id(
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sc = await sidecar(
        {"SIDECAR_BACKENDS": "c", "C_KIND": "anthropic", "C_BASE_URL": claude.url, "C_API_KEY": "k"}
    )
    body = {"model": "m", "messages": [{"role": "user", "content": 5}]}
    r = await post(http, sc.url, body, headers={"x-request-id": "req-untranslatable"})
    assert r.status == 400
    assert "req-untranslatable" in r.json["error"]["message"]
    (record,) = [x for x in caplog.records if "cannot translate" in x.getMessage()]
    assert "TypeError" in record.getMessage()
    assert record.fields == {"request_id": "req-untranslatable", "backend": "c"}  # type: ignore[attr-defined]
    assert claude.seen == []


# ------------------------------------------------- on a fake transport and a fake clock
# The `Upstream` protocol and `create_app(upstream=, clock=)`: the chain and its circuits with no
# upstream server; the wire itself is the loopback tests' business.

FAKE_TRANSPORT_ENV = {
    "SIDECAR_BACKENDS": "a,b",
    "A_BASE_URL": "http://a.invalid/v1",
    "B_BASE_URL": "http://b.invalid/v1",
    "SIDECAR_CIRCUIT_FAILURES": "1",
    "SIDECAR_CIRCUIT_COOLDOWN_S": "10",
}


def overloaded() -> FakeResponse:
    return FakeResponse(503, b'{"error": {"message": "busy"}}')


async def test_a_503_falls_back_and_every_response_is_closed_once_read(
    sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    transport = FakeTransport()
    transport.queues["a"] = deque([overloaded()])
    sc = await sidecar(FAKE_TRANSPORT_ENV, upstream=transport, clock=FakeClock())
    r = await post(http, sc.url, chat())
    assert (r.status, r.headers["x-sidecar-backend"]) == (200, "b")
    assert r.headers["x-sidecar-failures"] == "a=overloaded"
    assert [name for name, _ in transport.sent] == ["a", "b"]
    assert all(resp.closed for resp in transport.responses)


async def test_an_open_circuit_skips_the_backend_until_the_clock_passes_its_cooldown(
    sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    transport, clock = FakeTransport(), FakeClock()
    transport.queues["a"] = deque([overloaded()])
    sc = await sidecar(FAKE_TRANSPORT_ENV, upstream=transport, clock=clock)
    await post(http, sc.url, chat())
    skipped = await post(http, sc.url, chat())
    assert skipped.headers["x-sidecar-failures"] == "a=circuit_open"
    clock.advance(10 * 1.2)  # the longest jittered cooldown
    probe = await post(http, sc.url, chat())
    assert probe.headers["x-sidecar-backend"] == "a"
    assert [name for name, _ in transport.sent] == ["a", "b", "b", "a"]


async def test_each_attempt_carries_the_backends_own_credential_and_the_request_id(
    sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    transport = FakeTransport()
    sc = await sidecar({**FAKE_TRANSPORT_ENV, "A_API_KEY": "sk-a-0123456789"}, upstream=transport)
    await post(http, sc.url, chat(), headers={"x-request-id": "rid-7", "authorization": "x"})
    _, req = transport.sent[0]
    assert req.headers["authorization"] == "Bearer sk-a-0123456789"
    assert req.headers["x-request-id"] == "rid-7"
    assert req.url == "http://a.invalid/v1/chat/completions"
