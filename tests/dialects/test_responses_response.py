"""Responses answers from the chat pivot: JSON, and the event stream the openai SDK accumulates."""

from typing import Any

import openai
import orjson
import pytest
from conftest import Serve

from sidecar.backends.anthropic import AnthropicSource
from sidecar.backends.openai_messages import OpenAISource
from sidecar.dialects.pivot import PivotStream
from sidecar.dialects.responses_request import ToolNames, to_chat
from sidecar.dialects.responses_response import ResponsesEvents, chat_to_response
from sidecar.dialects.responses_stream import ResponsesSink

JSON = dict[str, Any]
REQUEST: JSON = {"model": "gpt-test", "input": "hi", "stream": True, "instructions": "Be brief."}


def chunk(delta: JSON, finish: str | None = None) -> JSON:
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def usage(prompt: int = 7, completion: int = 3) -> JSON:
    return {
        "id": "c",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }


def call(k: int, call_id: str | None, name: str | None, arguments: str) -> JSON:
    fragment: JSON = {"index": k, "function": {"arguments": arguments}}
    if call_id is not None:
        fragment.update(id=call_id, type="function")
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


TEXT = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hello"}),
    chunk({"content": " there."}),
    chunk({}, "stop"),
    usage(),
]
TOOLS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "Think "}),
    chunk({"reasoning_content": "first."}),
    chunk({"content": "Running it."}),
    call(0, "call_a", "exec_command", '{"cmd":'),
    call(0, None, None, '"ls"}'),
    call(1, "call_b", "multi_agent_v1__close_agent", "{}"),
    chunk({}, "tool_calls"),
    usage(),
]


def write(chunks: list[JSON], names: ToolNames | None = None, request: JSON = REQUEST) -> bytes:
    w = ResponsesEvents(request=request, names=names or ToolNames(), model="gpt-test")
    return b"".join(w.feed(c) for c in chunks) + w.close()


def events(raw: bytes) -> list[JSON]:
    out = []
    for block in raw.split(b"\n\n"):
        if block:
            name, data = block.split(b"\n")
            obj = orjson.loads(data[len(b"data: ") :])
            assert name == b"event: " + obj["type"].encode()
            out.append(obj)
    return out


async def final_response(url: str, **extra: Any) -> Any:
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    try:
        async with client.responses.stream(model="gpt-test", input="hi", **extra) as stream:
            seen = [event async for event in stream]
            return await stream.get_final_response(), seen
    finally:
        await client.close()


def test_a_text_stream_is_the_official_event_sequence() -> None:
    assert [e["type"] for e in events(write(TEXT))] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


@pytest.mark.parametrize("chunks", [TEXT, TOOLS], ids=["text", "tools"])
def test_sequence_numbers_strictly_increase_from_zero(chunks: list[JSON]) -> None:
    numbers = [e["sequence_number"] for e in events(write(chunks))]
    assert numbers == list(range(len(numbers)))


def test_the_final_event_carries_usage_and_every_item() -> None:
    final = events(write(TOOLS, to_chat({"input": "x", "tools": _namespaced()})[1]))[-1]
    response = final["response"]
    assert response["status"] == "completed"
    assert response["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 10,
    }
    assert [i["type"] for i in response["output"]] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    reasoning, message, first, second = response["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Think first."}]
    assert message["content"][0]["text"] == "Running it."
    assert (first["call_id"], first["name"], first["arguments"]) == (
        "call_a",
        "exec_command",
        '{"cmd":"ls"}',
    )
    assert (second["namespace"], second["name"]) == ("multi_agent_v1", "close_agent")


def _namespaced() -> list[JSON]:
    inner = [{"type": "function", "name": "close_agent"}]
    return [{"type": "namespace", "name": "multi_agent_v1", "tools": inner}]


def test_a_stream_cut_before_its_finish_writes_no_final_event() -> None:
    w = ResponsesEvents(request=REQUEST, names=ToolNames(), model="gpt-test")
    out = b"".join(w.feed(c) for c in TEXT[:2])
    assert w.close() == b""
    assert "response.completed" not in [e["type"] for e in events(out)]
    error = events(w.error("stream_interrupted", "upstream stream was cut off"))
    assert error == [
        {
            "type": "error",
            "code": "stream_interrupted",
            "message": "upstream stream was cut off",
            "param": None,
            "sequence_number": len(events(out)),
        }
    ]


def test_without_a_usage_chunk_close_writes_the_final_event() -> None:
    out = write(TEXT[:-1])
    assert events(out)[-1]["type"] == "response.completed"
    assert events(out)[-1]["response"]["usage"]["total_tokens"] == 0


def test_a_length_finish_is_an_incomplete_response() -> None:
    final = events(write([chunk({"content": "Hel"}), chunk({}, "length"), usage()]))[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["status"] == "incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_refusal_streams_as_a_refusal_part() -> None:
    kinds = [e["type"] for e in events(write([chunk({"refusal": "No."}), chunk({}, "stop")]))]
    assert "response.refusal.delta" in kinds and "response.refusal.done" in kinds


def test_a_continuation_goes_on_in_the_open_message() -> None:
    first = ResponsesEvents(request=REQUEST, names=ToolNames(), model="gpt-test")
    head = b"".join(first.feed(c) for c in TEXT[:2])
    cont = ResponsesEvents(request=REQUEST, names=ToolNames(), model="gpt-test")
    cont.resume_from(first.cursor())
    tail = b"".join(cont.feed(c) for c in [chunk({"role": "assistant"}), *TEXT[2:]])
    seen = events(head + tail)
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    assert [e["type"] for e in seen].count("response.created") == 1
    assert [e["type"] for e in seen].count("response.output_item.added") == 1
    final = seen[-1]["response"]
    assert final["id"] == seen[0]["response"]["id"]
    assert final["output"][0]["content"][0]["text"] == "Hello there."


async def test_the_openai_sdk_accumulates_a_translated_text_stream(serve: Serve) -> None:
    final, seen = await final_response(await serve(write(TEXT)))
    assert final.output_text == "Hello there."
    assert final.status == "completed"
    assert final.usage is not None and final.usage.total_tokens == 10
    assert [e.sequence_number for e in seen] == sorted({e.sequence_number for e in seen})


async def test_the_openai_sdk_accumulates_translated_tool_calls_and_reasoning(
    serve: Serve,
) -> None:
    names = to_chat({"input": "x", "tools": _namespaced()})[1]
    final, _ = await final_response(await serve(write(TOOLS, names)))
    calls = [i for i in final.output if i.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_a", "exec_command", '{"cmd":"ls"}'),
        ("call_b", "close_agent", "{}"),
    ]
    assert final.output_text == "Running it."
    assert final.output[0].type == "reasoning"


async def test_the_openai_sdk_accumulates_a_recovered_stream(serve: Serve) -> None:
    first = ResponsesEvents(request=REQUEST, names=ToolNames(), model="gpt-test")
    head = b"".join(first.feed(c) for c in TEXT[:2])
    cont = ResponsesEvents(request=REQUEST, names=ToolNames(), model="gpt-test")
    cont.resume_from(first.cursor())
    tail = b"".join(cont.feed(c) for c in TEXT[2:])
    final, _ = await final_response(await serve(head + tail))
    assert final.output_text == "Hello there."


async def test_the_openai_sdk_sees_no_final_response_after_a_terminal_error(serve: Serve) -> None:
    w = ResponsesEvents(request=REQUEST, names=ToolNames(), model="gpt-test")
    body = b"".join(w.feed(c) for c in TEXT[:2]) + w.error("stream_interrupted", "cut")
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        await final_response(await serve(body))


def test_a_chat_answer_becomes_a_response() -> None:
    chat = {
        "id": "chatcmpl-1",
        "created": 1700000000,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "reasoning": "The user wants a listing.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "multi_agent_v1__close_agent", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4},
    }
    names = to_chat({"input": "x", "tools": _namespaced()})[1]
    response = chat_to_response(chat, request=REQUEST, names=names, model="gpt-test")
    assert response["object"] == "response" and response["id"].startswith("resp_")
    assert response["status"] == "completed" and response["created_at"] == 1700000000
    assert response["instructions"] == "Be brief." and response["store"] is False
    reasoning, message, fc = response["output"]
    assert reasoning["summary"][0]["text"] == "The user wants a listing."
    assert message["content"][0] == {
        "type": "output_text",
        "text": "Let me check.",
        "annotations": [],
        "logprobs": [],
    }
    assert (fc["call_id"], fc["namespace"], fc["name"], fc["status"]) == (
        "call_1",
        "multi_agent_v1",
        "close_agent",
        "completed",
    )
    assert response["usage"]["input_tokens"] == 5 and response["usage"]["output_tokens"] == 4


def test_a_chat_answer_cut_by_length_is_incomplete() -> None:
    chat = {"choices": [{"message": {"content": "Hel"}, "finish_reason": "length"}]}
    response = chat_to_response(chat, request=REQUEST, names=ToolNames(), model="m")
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


def sse(chunks: list[JSON]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def test_an_openai_chat_stream_through_the_pivot_commits_at_the_first_text() -> None:
    stream = PivotStream(
        OpenAISource(), ResponsesSink(request=REQUEST, names=ToolNames(), model="gpt-test")
    )
    raw = sse(TEXT)
    steps = [stream.feed(raw[i : i + 40]) for i in range(0, len(raw), 40)]
    first_content = next(i for i, s in enumerate(steps) if s.content)
    before = b"".join(s.out for s in steps[:first_content])
    assert b"output_text.delta" not in before
    out = b"".join(s.out for s in steps)
    assert [e["type"] for e in events(out)][-1] == "response.completed"
    assert steps[-1].done and stream.usage.prompt == 7 and "".join(stream.text) == "Hello there."


async def test_an_anthropic_stream_through_the_pivot_reaches_the_sdk_whole(serve: Serve) -> None:
    def ev(name: str, data: JSON) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    message = {"id": "msg_1", "usage": {"input_tokens": 9, "output_tokens": 1}}
    anthropic = b"".join(
        [
            ev("message_start", {"type": "message_start", "message": message}),
            ev(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            ),
            ev(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Bonjour."},
                },
            ),
            ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ev(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 2},
                },
            ),
            ev("message_stop", {"type": "message_stop"}),
        ]
    )
    stream = PivotStream(
        AnthropicSource(model="gpt-test", include_usage=True),
        ResponsesSink(request=REQUEST, names=ToolNames(), model="gpt-test"),
    )
    step = stream.feed(anthropic)
    assert step.content and step.done
    final, _ = await final_response(await serve(step.out))
    assert final.output_text == "Bonjour."
    assert final.usage is not None and final.usage.input_tokens == 9
