"""OpenAI Chat Completions ⇄ Anthropic Messages answers and error bodies (pure; no clock except
a default `created`). Lossy points:

| where   | input                                        | policy                                  |
|---------|----------------------------------------------|-----------------------------------------|
| response| `thinking` blocks (and `thinking_delta`s)    | `reasoning_content` (and back: OpenAI   |
|         |                                              | `reasoning_content` or `reasoning`      |
|         |                                              | becomes a first `thinking` block with   |
|         |                                              | an empty `signature`)                   |
| response| `redacted_thinking`, `signature`s,           | dropped                                 |
|         | server-tool blocks                           |                                         |
| response| `stop_sequence` (which one matched)          | lost: `finish_reason: stop`; OpenAI     |
|         |                                              | `stop` becomes `end_turn`               |
| response| `pause_turn`                                 | `stop`                                  |
| response| `refusal`                                    | `content_filter` (and back)             |
| response| OpenAI tool `arguments` not a JSON object    | InvalidUpstreamResponse (non-streaming);|
|         |                                              | streamed fragments are relayed verbatim |
| response| `model`                                      | the `model` argument (the caller's)     |
| response| Gemini thought signature (`extra_content`)   | carried in the `tool_use` id            |
|         |                                              | (`thought_signatures`), and back        |
"""

import uuid
from typing import Any, Final

import orjson

from sidecar.dialects import openai_request, openai_response
from sidecar.dialects.error_types import anthropic_error_type
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError
from sidecar.dialects.thought_signatures import signature_of, tool_use_id

JSON = dict[str, Any]

STOP_REASON_TO_FINISH: Final[dict[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_TO_STOP_REASON: Final[dict[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

ANTHROPIC_ERROR_TO_OPENAI_CODE: Final[dict[str, str]] = {
    "rate_limit_error": "rate_limit_exceeded",
    "overloaded_error": "server_is_overloaded",
    "billing_error": "insufficient_quota",
}
OPENAI_CODE_TO_ANTHROPIC_ERROR: Final[dict[str, str]] = {
    "insufficient_quota": "billing_error",
    "server_is_overloaded": "overloaded_error",
    "slow_down": "overloaded_error",
}


# ---------------------------------------------------------------------------------------------
# Responses


def anthropic_response_to_openai(body: JSON, *, model: str, created: int | None = None) -> JSON:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[JSON] = []
    for block in body.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "thinking":
            thoughts.append(block.get("thinking") or "")
        elif block.get("type") == "tool_use":
            calls.append(
                openai_response.tool_call(block.get("id"), block.get("name"), block.get("input"))
            )
    return openai_response.chat_completion(
        completion_id=body.get("id") or fallback_id("chatcmpl-"),
        created=created,
        model=model,
        message=openai_response.assistant_message(texts, calls, "".join(thoughts)),
        finish=STOP_REASON_TO_FINISH.get(body.get("stop_reason") or "", "stop"),
        usage=anthropic_usage_to_openai(body.get("usage") or {}),
    )


def anthropic_usage_to_openai(usage: JSON) -> JSON:
    out = openai_response.usage_including_cache(
        cache_read=int(usage.get("cache_read_input_tokens") or 0),
        cache_write=int(usage.get("cache_creation_input_tokens") or 0),
        uncached_prompt=int(usage.get("input_tokens") or 0),
        completion=int(usage.get("output_tokens") or 0),
    )
    thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
    if thinking is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": thinking}
    return out


def openai_response_to_anthropic(body: JSON, *, model: str) -> JSON:
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content = _openai_message_blocks(message)
    has_tool_use = any(b["type"] == "tool_use" for b in content)
    return {
        "id": body.get("id") or fallback_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choices[0].get("finish_reason"), has_tool_use),
        "stop_sequence": None,
        "usage": openai_usage_to_anthropic(body.get("usage") or {}),
    }


def _openai_message_blocks(message: JSON) -> list[JSON]:
    blocks: list[JSON] = []
    if thought := openai_response.reasoning_text(message):
        blocks.append(thinking_block(thought))
    text = _openai_text(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    elif message.get("refusal"):
        blocks.append({"type": "text", "text": message["refusal"]})
    for j, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function") or {}
        try:
            arguments = openai_request.arguments_object(fn.get("arguments"), f"tool_calls[{j}]")
        except TranslationError as e:
            raise InvalidUpstreamResponse(f"upstream {e.message} ({e.param})") from None
        call_id = tool_use_id(call.get("id"), signature_of(call))
        blocks.append(
            {"type": "tool_use", "id": call_id, "name": fn.get("name"), "input": arguments}
        )
    return blocks


def thinking_block(thought: str) -> JSON:
    # Only Anthropic signs thinking; an empty signature marks reasoning from another vendor,
    # which `sidecar.backends.anthropic` drops should the caller send it back there.
    return {"type": "thinking", "thinking": thought, "signature": ""}


def _openai_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def stop_reason(finish: Any, has_tool_use: bool) -> str:
    # Some OpenAI-compatible servers finish a tool call with "stop"; Anthropic clients loop on
    # "tool_use", so the content decides.
    if has_tool_use and finish in (None, "stop"):
        return "tool_use"
    return FINISH_TO_STOP_REASON.get(finish or "", "end_turn")


def openai_usage_to_anthropic(usage: JSON) -> JSON:
    details = usage.get("prompt_tokens_details") or {}
    cache_read = int(details.get("cached_tokens") or 0)
    cache_write = int(details.get("cache_write_tokens") or 0)
    prompt = int(usage.get("prompt_tokens") or 0)
    return {
        "input_tokens": max(prompt - cache_read - cache_write, 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }


def fallback_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


# ---------------------------------------------------------------------------------------------
# Errors


def anthropic_error_to_openai(body: Any) -> JSON:
    error = _inner_error(body)
    kind = str(error.get("type") or "api_error")
    message = _error_message(error, body)
    code = ANTHROPIC_ERROR_TO_OPENAI_CODE.get(kind)
    if kind == "invalid_request_error" and "prompt is too long" in message.lower():
        code = "context_length_exceeded"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def openai_error_to_anthropic(status: int, body: Any) -> JSON:
    error = _inner_error(body)
    kind = OPENAI_CODE_TO_ANTHROPIC_ERROR.get(str(error.get("code")), anthropic_error_type(status))
    return {"type": "error", "error": {"type": kind, "message": _error_message(error, body)}}


def _inner_error(body: Any) -> JSON:
    # Gemini's OpenAI endpoint wraps the envelope in a list: [{"error": {...}}].
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            return inner
        if isinstance(inner, str):
            return {"message": inner}
        return body
    return {}


def _error_message(error: JSON, body: Any) -> str:
    message = error.get("message")
    if isinstance(message, str) and message:
        return message
    if isinstance(body, str | bytes) and body:
        return body if isinstance(body, str) else body.decode("utf-8", "replace")
    return "upstream error" if body in (None, "", b"") else orjson.dumps(body).decode()
