"""Stream recovery: a broken text stream continued on a later PREFILL backend, one whole answer."""

import time

import aiohttp
import orjson
import pytest
from conftest import FakeFactory, SidecarFactory, chain_env, chat, post, sse_data, streamed_text
from fakes.openai_upstream import Script, chunk

FULL = " ".join(f"word{i}" for i in range(12))


def recovering(**extra: str) -> dict[str, str]:
    return {"B1_PREFILL": "true", "B0_STREAM_IDLE_TIMEOUT_S": "0.3", **extra}


@pytest.mark.parametrize("end", ["cut", "stall", "malformed", "error"])
async def test_broken_stream_is_continued_into_one_whole_answer(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, end: str
) -> None:
    a = await fake(Script(text=FULL, end=end, after=4))
    b = await fake(Script(continues=FULL))
    sc = await sidecar(chain_env(a, b, **recovering()))
    r = await post(http, sc.url, chat(stream=True))
    events = sse_data(r.text)
    assert streamed_text(r.text) == FULL
    assert events[-1] == "[DONE]"
    assert not [e for e in events if isinstance(e, dict) and "error" in e]
    # One role chunk: the continuation's opening was not relayed a second time.
    roles = [
        e
        for e in events
        if isinstance(e, dict) and e["choices"] and "role" in e["choices"][0]["delta"]
    ]
    assert len(roles) == 1
    sent = b.seen[0].json
    assert sent["messages"][-1] == {"role": "assistant", "content": "word0 word1 word2 word3"}
    assert sent["messages"][:-1] == chat()["messages"]
    labels = {"chain": "default", "backend": "b1", "outcome": "success"}
    assert sc.metric("llm_sidecar_stream_recoveries_total", **labels) == 1
    line = sc.log_lines()[0]
    assert [x["backend"] for x in line["attempts"]] == ["b0", "b1"]
    assert line["stream"] == "recovered"


async def test_the_broken_upstream_is_hung_up_on_before_the_continuation_is_relayed(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    # After its in-band error the first upstream keeps the body open: it must not be left
    # generating (and billing) while the continuation streams.
    a = await fake(Script(text=FULL, end="error", after=4, done_gap_s=10))
    b = await fake(Script(continues=FULL, chunk_delay_s=0.1))
    sc = await sidecar(chain_env(a, b, **recovering()))
    r = await post(http, sc.url, chat(stream=True))
    ended = time.monotonic()
    assert streamed_text(r.text) == FULL
    assert a.cancelled
    assert a.cancelled[0] < ended - 0.5  # the continuation took over a second


async def test_rejected_prefill_ends_with_the_original_failure(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    rejection = {
        "error": {
            "message": "This model does not support assistant prefill",
            "type": "invalid_request_error",
        }
    }
    a = await fake(Script(text=FULL, end="cut", after=4))
    b = await fake(Script(status=400, body=rejection))
    sc = await sidecar(chain_env(a, b, **recovering()))
    r = await post(http, sc.url, chat(stream=True))
    events = sse_data(r.text)
    assert "[DONE]" not in events
    assert streamed_text(r.text) == "word0 word1 word2 word3"
    assert events[-1]["error"]["message"] == "upstream stream was cut off"
    assert "prefill" not in r.text
    labels = {"chain": "default", "backend": "b1", "outcome": "failure"}
    assert sc.metric("llm_sidecar_stream_recoveries_total", **labels) == 1


async def test_continuation_that_breaks_too_ends_with_the_original_failure(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(
        Script(
            text=FULL, end="error", after=4, error={"message": "first died", "type": "server_error"}
        )
    )
    b = await fake(Script(continues=FULL, end="cut", after=2))
    sc = await sidecar(chain_env(a, b, **recovering()))
    r = await post(http, sc.url, chat(stream=True))
    events = sse_data(r.text)
    assert "[DONE]" not in events
    assert events[-1]["error"]["message"] == "first died"


async def test_no_recovery_without_a_prefill_backend_or_with_its_circuit_open(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(text=FULL, end="cut", after=4))
    b = await fake(Script(continues=FULL))
    sc = await sidecar(chain_env(a, b, B0_STREAM_IDLE_TIMEOUT_S="0.3"))
    r = await post(http, sc.url, chat(stream=True))
    assert "[DONE]" not in sse_data(r.text)
    assert b.seen == []

    sc2 = await sidecar(chain_env(a, b, **recovering(SIDECAR_CIRCUIT_FAILURES="1")))
    sc2.app.members["b1"].circuit.record_failure()
    r2 = await post(http, sc2.url, chat(stream=True))
    assert "[DONE]" not in sse_data(r2.text)
    assert b.seen == []


async def test_no_recovery_once_a_tool_call_started(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    tool = b"data: " + orjson.dumps(chunk("m", {"tool_calls": [call]})) + b"\n\n"
    a = await fake(Script(body=tool, headers={"Content-Type": "text/event-stream"}))
    b = await fake(Script(continues=FULL))
    sc = await sidecar(chain_env(a, b, **recovering()))
    r = await post(http, sc.url, chat(stream=True))
    assert "error" in sse_data(r.text)[-1]
    assert b.seen == []


async def test_no_recovery_for_a_request_with_several_choices(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(text=FULL, end="cut", after=4))
    b = await fake(Script(continues=FULL))
    sc = await sidecar(chain_env(a, b, **recovering()))
    r = await post(http, sc.url, chat(stream=True, n=2))
    assert "error" in sse_data(r.text)[-1]
    assert b.seen == []


async def test_a_caller_prefill_is_extended_not_repeated(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    rest = " ".join(f"word{i}" for i in range(1, 12))
    a = await fake(Script(text=rest, end="cut", after=4))
    b = await fake(Script(continues=FULL))
    sc = await sidecar(chain_env(a, b, **recovering()))
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word0 "}]
    r = await post(http, sc.url, chat(stream=True, messages=messages))
    assert streamed_text(r.text) == rest
    sent = b.seen[0].json["messages"]
    assert sent == [messages[0], {"role": "assistant", "content": "word0 word1 word2 word3 word4"}]
