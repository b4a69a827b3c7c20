"""OpenAI Chat Completions ⇄ Anthropic Messages: requests, responses, errors and streams.

The sidecar's pivot is the OpenAI dialect; every function here is pure (no I/O, no clock except a
default `created`). Lossy points and their policies, in one table (the README repeats it):

| where   | input                                        | policy                                  |
|---------|----------------------------------------------|-----------------------------------------|
| O → A   | system/developer messages anywhere           | hoisted, in order, into `system`        |
| O → A   | `n` > 1                                      | TranslationError                        |
| O → A   | `input_audio` parts, `audio`, audio modality | TranslationError                        |
| O → A   | `file` part by `file_id`, non-PDF file       | TranslationError                        |
| O → A   | image of another type than jpeg/png/gif/webp | TranslationError                        |
| O → A   | image `detail`, message `name`               | dropped                                 |
| O → A   | `temperature` > 1 (2023-06-01)               | clamped to 1 (Anthropic's range is 0–1) |
| O → A   | `temperature`/`top_p`/`top_k` (2026-10-21+)  | dropped (they are a 400 there)          |
| O → A   | `seed`, `frequency_/presence_penalty`,       | dropped (sampling hints, no equivalent) |
|         | `reasoning_effort`, `verbosity`, `store`,    |                                         |
|         | `metadata`, `service_tier`, `prediction`,    |                                         |
|         | `prompt_cache_key`, unknown fields           |                                         |
| O → A   | `logprobs`/`top_logprobs`, `logit_bias`      | TranslationError when asked for         |
| O → A   | `response_format` `json_object`              | TranslationError (no schema to enforce) |
| O → A   | `response_format` `json_schema`              | `output_config.format`; name, strict    |
|         |                                              | dropped (Anthropic's is always strict)  |
| O → A   | `custom` tools, `allowed_tools` choice,      | TranslationError                        |
|         | legacy `functions`/`function_call`/`function`|                                         |
|         | role, `web_search_options`                   |                                         |
| O → A   | tool-call `arguments` that are not a JSON    | TranslationError                        |
|         | object                                       |                                         |
| O → A   | trailing assistant message (prefill)         | kept last; trailing whitespace stripped |
|         |                                              | (Anthropic rejects it with a 400)       |
| O → A   | assistant `refusal` part in history          | sent as a text block                    |
| O → A   | part `prompt_cache_breakpoint`               | `cache_control: {type: ephemeral}`      |
| A → O   | `thinking` enabled/adaptive                  | TranslationError; `disabled` is dropped |
| A → O   | `thinking`/`redacted_thinking` history blocks| dropped (only Anthropic reads them)     |
| A → O   | `top_k`, `cache_control`, `citations`,       | dropped                                 |
|         | `service_tier`, `output_config.effort`,      |                                         |
|         | `container`, `inference_geo`, `speed`        |                                         |
| A → O   | server tools (a `type` other than `custom`), | TranslationError                        |
|         | image by `file_id`, images in tool results,  |                                         |
|         | non-PDF/non-text documents, `mcp_servers`    |                                         |
| A → O   | `tool_result.is_error`                       | content prefixed with `Error: `         |
| A → O   | system blocks                                | one system message of text parts        |
| response| `thinking` blocks, server-tool blocks        | dropped                                 |
| response| `stop_sequence` (which one matched)          | lost: `finish_reason: stop`; OpenAI     |
|         |                                              | `stop` becomes `end_turn`               |
| response| `pause_turn`                                 | `stop`                                  |
| response| `refusal`                                    | `content_filter` (and back)             |
| response| OpenAI tool `arguments` not a JSON object    | InvalidUpstreamResponse (non-streaming);|
|         |                                              | streamed fragments are relayed verbatim |
| response| `model`                                      | the `model` argument (the caller's)     |
| streams | OpenAI input usage                           | known only at the end: `message_start`  |
|         |                                              | says 0, `message_delta` carries it      |
"""

import uuid
from typing import Any, Final

import orjson

from sidecar.dialects import openai_request, openai_response
from sidecar.dialects.caller import anthropic_error_type
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError

__all__ = [
    "AnthropicToOpenAIStream",
    "InvalidUpstreamResponse",
    "OpenAIToAnthropicStream",
    "TranslationError",
    "anthropic_error_to_openai",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "openai_error_to_anthropic",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
]

JSON = dict[str, Any]

IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# The first version under which sampling parameters are a 400 even at their defaults.
NO_SAMPLING_VERSION: Final = "2026-10-21"

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

# OpenAI `code` for the Anthropic error types that OpenAI clients recognise by code.
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

OPENAI_REJECTED_FIELDS: Final[dict[str, str]] = {
    "functions": "legacy `functions` are not supported; use `tools`",
    "function_call": "legacy `function_call` is not supported; use `tool_choice`",
    "audio": "audio output has no equivalent at this backend",
    "web_search_options": "web search has no equivalent at this backend",
}


def _err(message: str, param: str | None) -> TranslationError:
    return TranslationError(message, param)


# ---------------------------------------------------------------------------------------------
# Requests: OpenAI → Anthropic


def openai_request_to_anthropic(
    body: JSON, *, anthropic_version: str, default_max_tokens: int
) -> JSON:
    _reject_untranslatable_openai_fields(body)
    system_blocks, turns = openai_request.split_messages(body.get("messages") or [], SHAPES)
    system = _system_value(system_blocks)
    messages = [_compact_turn(t) for t in turns]
    out: JSON = {"model": body.get("model"), "messages": messages}
    if system is not None:
        out["system"] = system
    out["max_tokens"] = _first_present(
        body, "max_completion_tokens", "max_tokens", default_max_tokens
    )
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    out.update(_sampling(body, anthropic_version))
    tools = body.get("tools")
    if tools:
        out["tools"] = [_openai_tool_to_anthropic(t, i) for i, t in enumerate(tools)]
        choice = _openai_tool_choice_to_anthropic(body)
        if choice is not None:
            out["tool_choice"] = choice
    fmt = _openai_response_format_to_anthropic(body.get("response_format"))
    if fmt is not None:
        out["output_config"] = {"format": fmt}
    user = body.get("safety_identifier") or body.get("user")
    if user:
        out["metadata"] = {"user_id": user}
    if body.get("stream"):
        out["stream"] = True
    return out


def _reject_untranslatable_openai_fields(body: JSON) -> None:
    for field, why in OPENAI_REJECTED_FIELDS.items():
        if body.get(field):
            raise _err(why, field)
    n = body.get("n")
    if n is not None and n != 1:
        raise _err("`n` > 1 is not supported by this backend", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _err("logprobs are not supported by this backend", "logprobs")
    if body.get("logit_bias"):
        raise _err("`logit_bias` is not supported by this backend", "logit_bias")
    if "audio" in (body.get("modalities") or []):
        raise _err("audio output has no equivalent at this backend", "modalities")


def _first_present(body: JSON, *keys_then_default: Any) -> Any:
    *keys, default = keys_then_default
    for key in keys:
        if body.get(key) is not None:
            return body[key]
    return default


def _sampling(body: JSON, version: str) -> JSON:
    if version >= NO_SAMPLING_VERSION:
        return {}
    out: JSON = {}
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    for key in ("top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    return out


def _openai_tool_to_anthropic(tool: JSON, i: int) -> JSON:
    fn = openai_request.function_of(tool, i)
    out: JSON = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if fn.get("strict") is not None:
        out["strict"] = fn["strict"]
    return out


def _openai_tool_choice_to_anthropic(body: JSON) -> JSON | None:
    choice = body.get("tool_choice")
    out: JSON | None
    if choice is None:
        out = {"type": "auto"} if body.get("parallel_tool_calls") is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise _err("this `tool_choice` is not supported by this backend", "tool_choice")
    if out is not None and body.get("parallel_tool_calls") is False:
        out["disable_parallel_tool_use"] = True
    return out


def _openai_response_format_to_anthropic(fmt: Any) -> JSON | None:
    spec = openai_request.json_schema_of(fmt)
    if spec is None:
        return None
    return {"type": "json_schema", "schema": spec.get("schema") or {"type": "object"}}


def _compact_turn(turn: JSON) -> JSON:
    blocks = turn["content"]
    if len(blocks) == 1 and blocks[0]["type"] == "text" and set(blocks[0]) == {"type", "text"}:
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return turn


def _system_value(blocks: list[JSON]) -> str | list[JSON] | None:
    if not blocks:
        return None
    if len(blocks) == 1 and set(blocks[0]) == {"type", "text"}:
        return str(blocks[0]["text"])
    return blocks


def _with_cache_control(block: JSON, part: JSON) -> JSON:
    if part.get("prompt_cache_breakpoint"):
        block["cache_control"] = {"type": "ephemeral"}
    return block


def _image_block(image: JSON, where: str) -> JSON:
    url = str(image.get("url") or "")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, data = _parse_data_uri(url, where)
    if media_type not in IMAGE_TYPES:
        raise _err(f"image type {media_type!r} is not supported (jpeg, png, gif, webp)", where)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _document_block(file: JSON, where: str, j: int) -> JSON:
    media_type, data = _parse_data_uri(openai_request.file_data(file, where), where)
    if media_type != "application/pdf":
        raise _err(f"file type {media_type!r} is not supported (application/pdf)", where)
    source = {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "document", "source": source}


def _parse_data_uri(url: str, where: str) -> tuple[str, str]:
    expected = "expected an http(s) URL or a base64 data URI"
    return openai_request.data_uri(url, where, expected=expected)


def _tool_result_block(tool_call_id: Any, blocks: list[JSON]) -> JSON:
    content: str | list[JSON] = blocks if len(blocks) != 1 else blocks[0]["text"]
    return {"type": "tool_result", "tool_use_id": tool_call_id, "content": content}


SHAPES: Final = openai_request.BlockShapes(
    text=lambda text: {"type": "text", "text": text},
    image=_image_block,
    document=_document_block,
    tool_use=lambda id_, name, input_: {
        "type": "tool_use",
        "id": id_,
        "name": name,
        "input": input_,
    },
    tool_result=_tool_result_block,
    mark=_with_cache_control,
    rejects_function_call=True,
)


# ---------------------------------------------------------------------------------------------
# Requests: Anthropic → OpenAI


def anthropic_request_to_openai(body: JSON) -> JSON:
    _reject_untranslatable_anthropic_fields(body)
    messages = _anthropic_system_to_openai(body.get("system"))
    for i, msg in enumerate(body.get("messages") or []):
        messages.extend(_anthropic_message_to_openai(msg, f"messages[{i}]"))
    out: JSON = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("tools"):
        out["tools"] = [_anthropic_tool_to_openai(t, i) for i, t in enumerate(body["tools"])]
    out.update(_anthropic_tool_choice_to_openai(body.get("tool_choice")))
    fmt = (body.get("output_config") or {}).get("format")
    if fmt:
        out["response_format"] = _anthropic_format_to_openai(fmt)
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out["user"] = user
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _reject_untranslatable_anthropic_fields(body: JSON) -> None:
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        raise _err("extended thinking is not supported by this backend", "thinking")
    if body.get("mcp_servers"):
        raise _err("MCP servers are not supported by this backend", "mcp_servers")


def _anthropic_system_to_openai(system: Any) -> list[JSON]:
    if not system:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    parts = [{"type": "text", "text": b.get("text", "")} for b in system if b.get("type") == "text"]
    if len(parts) == 1:
        return [{"role": "system", "content": parts[0]["text"]}]
    return [{"role": "system", "content": parts}]


def _anthropic_message_to_openai(msg: JSON, where: str) -> list[JSON]:
    role = msg.get("role")
    content = msg.get("content")
    if role == "system":
        return [{"role": "system", "content": _joined_text(content, f"{where}.content")}]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        return [_anthropic_assistant_to_openai(content or [], where)]
    if role == "user":
        return _anthropic_user_to_openai(content or [], where)
    raise _err(f"messages with role {role!r} are not supported", f"{where}.role")


def _joined_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for block in content or []:
        if block.get("type") != "text":
            raise _err(f"blocks of type {block.get('type')!r} are not allowed here", where)
        texts.append(block.get("text", ""))
    return "".join(texts)


def _anthropic_assistant_to_openai(blocks: list[JSON], where: str) -> JSON:
    texts: list[str] = []
    calls: list[JSON] = []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(_tool_use_to_openai_call(block))
        elif kind not in ("thinking", "redacted_thinking"):
            raise _err(f"assistant blocks of type {kind!r} are not supported", f"{where}[{j}]")
    out: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _tool_use_to_openai_call(block: JSON) -> JSON:
    return openai_response.tool_call(block.get("id"), block.get("name"), block.get("input"))


def _anthropic_user_to_openai(blocks: list[JSON], where: str) -> list[JSON]:
    # OpenAI wants each tool result as its own `tool` message right after the assistant turn,
    # so results go first and any other content follows as one user message.
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        if block.get("type") == "tool_result":
            tool_messages.append(_tool_result_to_openai(block, at))
        else:
            parts.append(_anthropic_block_to_part(block, at))
    if not parts:
        return tool_messages
    if all(p["type"] == "text" for p in parts):
        content: str | list[JSON] = "".join(p["text"] for p in parts) if len(parts) == 1 else parts
    else:
        content = parts
    return [*tool_messages, {"role": "user", "content": content}]


def _tool_result_to_openai(block: JSON, where: str) -> JSON:
    content = block.get("content")
    try:
        text = _joined_text(content, f"{where}.content")
    except TranslationError:
        raise _err("tool results with non-text content are not supported", where) from None
    if block.get("is_error"):
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _anthropic_block_to_part(block: JSON, where: str) -> JSON:
    kind = block.get("type")
    source = block.get("source") or {}
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image" and source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "image" and source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url")}}
    if kind == "document" and source.get("type") == "text":
        return {"type": "text", "text": source.get("data", "")}
    if kind == "document" and source.get("media_type") == "application/pdf":
        data = f"data:application/pdf;base64,{source.get('data')}"
        file = {"file_data": data, "filename": block.get("title") or "document.pdf"}
        return {"type": "file", "file": file}
    raise _err(f"content blocks of type {kind!r} with this source are not supported", where)


def _anthropic_tool_to_openai(tool: JSON, i: int) -> JSON:
    if tool.get("type") not in (None, "custom"):
        raise _err(f"server tools ({tool['type']!r}) are not supported", f"tools[{i}]")
    fn: JSON = {"name": tool.get("name")}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        fn["strict"] = tool["strict"]
    return {"type": "function", "function": fn}


def _anthropic_tool_choice_to_openai(choice: Any) -> JSON:
    if not isinstance(choice, dict):
        return {}
    kind = choice.get("type")
    out: JSON
    if kind == "auto":
        out = {"tool_choice": "auto"}
    elif kind == "any":
        out = {"tool_choice": "required"}
    elif kind == "none":
        return {"tool_choice": "none"}
    elif kind == "tool":
        out = {"tool_choice": {"type": "function", "function": {"name": choice.get("name")}}}
    else:
        raise _err(f"tool_choice {kind!r} is not supported", "tool_choice")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def _anthropic_format_to_openai(fmt: JSON) -> JSON:
    if fmt.get("type") != "json_schema":
        raise _err(f"output format {fmt.get('type')!r} is not supported", "output_config.format")
    schema = {"name": "output", "schema": fmt.get("schema") or {}, "strict": True}
    return {"type": "json_schema", "json_schema": schema}


# ---------------------------------------------------------------------------------------------
# Responses


def anthropic_response_to_openai(body: JSON, *, model: str, created: int | None = None) -> JSON:
    texts: list[str] = []
    calls: list[JSON] = []
    for block in body.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(_tool_use_to_openai_call(block))
    return openai_response.chat_completion(
        completion_id=body.get("id") or _fallback_id("chatcmpl-"),
        created=created,
        model=model,
        message=openai_response.assistant_message(texts, calls),
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
        "id": body.get("id") or _fallback_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(choices[0].get("finish_reason"), has_tool_use),
        "stop_sequence": None,
        "usage": openai_usage_to_anthropic(body.get("usage") or {}),
    }


def _openai_message_blocks(message: JSON) -> list[JSON]:
    blocks: list[JSON] = []
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
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": arguments}
        )
    return blocks


def _openai_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _stop_reason(finish: Any, has_tool_use: bool) -> str:
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


def _fallback_id(prefix: str) -> str:
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


# ---------------------------------------------------------------------------------------------
# Streams: Anthropic events → OpenAI chunks


class AnthropicToOpenAIStream:
    def __init__(self, *, model: str, include_usage: bool, created: int | None = None) -> None:
        self._include_usage = include_usage
        self._out = openai_response.OpenAIChunks(model=model, created=created, chunk_id="")
        self._usage: JSON = {}
        self._saw_start = False
        self._saw_delta = False

    @property
    def prompt_tokens(self) -> int | None:
        if not self._saw_start:
            return None
        return int(anthropic_usage_to_openai(self._usage)["prompt_tokens"])

    @property
    def completion_tokens(self) -> int | None:
        if not (self._saw_start or self._saw_delta):
            return None
        return int(self._usage.get("output_tokens") or 0)

    def feed(self, event: str, data: JSON) -> list[JSON]:
        match event:
            case "message_start":
                return self._message_start(data.get("message") or {})
            case "content_block_start":
                return self._block_start(data)
            case "content_block_delta":
                return self._block_delta(data)
            case "message_delta":
                return self._message_delta(data)
            case "message_stop":
                return [self._usage_chunk()] if self._include_usage else []
            case _:
                # ping, content_block_stop and unknown events carry nothing for OpenAI; `error`
                # is the caller's to classify before it reaches this translator.
                return []

    def _message_start(self, message: JSON) -> list[JSON]:
        self._out.id = message.get("id") or _fallback_id("chatcmpl-")
        self._usage.update({k: v for k, v in (message.get("usage") or {}).items() if v is not None})
        self._saw_start = True
        return [self._out.chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: JSON) -> list[JSON]:
        block = data.get("content_block") or {}
        if block.get("type") == "text" and block.get("text"):
            return [self._out.chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return []
        return self._out.tool_start(int(data.get("index", 0)), block.get("id"), block.get("name"))

    def _block_delta(self, data: JSON) -> list[JSON]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._out.chunk({"content": delta["text"]})]
        fragment = delta.get("partial_json") if kind == "input_json_delta" else None
        return self._out.tool_arguments(int(data.get("index", 0)), fragment)

    def _usage_chunk(self) -> JSON:
        return self._out.usage_chunk(anthropic_usage_to_openai(self._usage))

    def _message_delta(self, data: JSON) -> list[JSON]:
        # message_delta usage counts are cumulative: they replace, never add.
        self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        self._saw_delta = True
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        if stop_reason is None:
            return []
        return [self._out.chunk({}, STOP_REASON_TO_FINISH.get(stop_reason, "stop"))]


# ---------------------------------------------------------------------------------------------
# Streams: OpenAI chunks → Anthropic events

Event = tuple[str, JSON]


class OpenAIToAnthropicStream:
    """OpenAI chunks in, Anthropic events out.

    `message_start` comes with the first chunk. A `finish_reason` closes the open block at once,
    but `message_delta` (with `stop_reason` and usage) and `message_stop` wait for the usage chunk
    that OpenAI sends after it (`choices: []`, or usage on the finishing chunk itself), because
    Anthropic clients read the final usage from `message_delta`. If no usage chunk comes,
    `finish()` (called at `[DONE]` or EOF) emits them. Without a `finish_reason`, `finish()` emits
    nothing: the stream was cut, and the caller ends it with an error event.
    """

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._started = False
        self._stopped = False
        self._stop_reason: str | None = None
        self._open_block: int | None = None
        self._open_kind: str | None = None
        self._blocks = 0
        self._tool_blocks: dict[int, int] = {}
        self._usage: JSON | None = None

    @property
    def prompt_tokens(self) -> int | None:
        return None if self._usage is None else int(self._usage.get("prompt_tokens") or 0)

    @property
    def completion_tokens(self) -> int | None:
        return None if self._usage is None else int(self._usage.get("completion_tokens") or 0)

    def feed(self, chunk: JSON) -> list[Event]:
        if self._stopped or "error" in chunk:
            return []
        events: list[Event] = [] if self._started else [self._message_start(chunk)]
        self._started = True
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:
                events.extend(self._choice(choice))
        if chunk.get("usage"):
            self._usage = chunk["usage"]
            if self._stop_reason is not None:
                events.extend(self._message_end())
        return events

    def finish(self) -> list[Event]:
        if self._stopped or self._stop_reason is None:
            return []
        return self._message_end()

    def _message_start(self, chunk: JSON) -> Event:
        message: JSON = {
            "id": chunk.get("id") or _fallback_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return ("message_start", {"type": "message_start", "message": message})

    def _choice(self, choice: JSON) -> list[Event]:
        # Azure sends annotation-only choices without `delta`; they carry no content.
        delta = choice.get("delta") or {}
        events: list[Event] = []
        text = delta.get("content") or delta.get("refusal")
        if text:
            events.extend(self._text(text))
        for fragment in delta.get("tool_calls") or []:
            events.extend(self._tool_fragment(fragment))
        finish = choice.get("finish_reason")
        if finish is not None and self._stop_reason is None:
            events.extend(self._close_block())
            self._stop_reason = _stop_reason(finish, bool(self._tool_blocks))
        return events

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open_kind != "text":
            events.extend(self._close_block())
            events.append(self._open({"type": "text", "text": ""}, "text"))
        delta = {"type": "text_delta", "text": text}
        events.append(("content_block_delta", self._block_event("content_block_delta", delta)))
        return events

    def _tool_fragment(self, fragment: JSON) -> list[Event]:
        events: list[Event] = []
        k = int(fragment.get("index", 0))
        fn = fragment.get("function") or {}
        if k not in self._tool_blocks:
            events.extend(self._close_block())
            block: JSON = {
                "type": "tool_use",
                "id": fragment.get("id") or f"toolu_{k}",
                "name": fn.get("name"),
                "input": {},
            }
            events.append(self._open(block, "tool_use"))
            self._tool_blocks[k] = self._open_block if self._open_block is not None else 0
        if fn.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": fn["arguments"]}
            data = {"type": "content_block_delta", "index": self._tool_blocks[k], "delta": delta}
            events.append(("content_block_delta", data))
        return events

    def _open(self, block: JSON, kind: str) -> Event:
        self._open_block, self._open_kind = self._blocks, kind
        self._blocks += 1
        data = {"type": "content_block_start", "index": self._open_block, "content_block": block}
        return ("content_block_start", data)

    def _block_event(self, kind: str, delta: JSON) -> JSON:
        return {"type": kind, "index": self._open_block, "delta": delta}

    def _close_block(self) -> list[Event]:
        if self._open_block is None:
            return []
        index, self._open_block, self._open_kind = self._open_block, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _message_end(self) -> list[Event]:
        self._stopped = True
        usage = openai_usage_to_anthropic(self._usage or {})
        delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
        return [
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
            ("message_stop", {"type": "message_stop"}),
        ]
