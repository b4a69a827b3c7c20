"""OpenAI Chat Completions ⇄ Anthropic Messages requests (pure).

The sidecar's pivot is the OpenAI dialect. Lossy points and their policies (the README repeats
them):

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
|         | `verbosity`, `store`,                        |                                         |
|         | `metadata`, `service_tier`, `prediction`,    |                                         |
|         | `prompt_cache_key`, unknown fields           |                                         |
| O → A   | `reasoning_effort`                           | `thinking` enabled with the effort's    |
|         |                                              | budget, `max_tokens` raised by it,      |
|         |                                              | sampling dropped (`dialects.thinking`); |
|         |                                              | `none`, a forced tool or a tool loop in |
|         |                                              | progress: no thinking                   |
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
| A → O   | `thinking` enabled                           | `reasoning_effort` by `budget_tokens`:  |
|         |                                              | < 4096 low, < 16384 medium, else high   |
|         |                                              | (`dialects.thinking`)                   |
| A → O   | `thinking` adaptive                          | `reasoning_effort` from                 |
|         |                                              | `output_config.effort` (`max` → high),  |
|         |                                              | else none; `disabled` is dropped        |
| A → O   | `thinking`/`redacted_thinking` history blocks| dropped (their signatures verify only   |
|         |                                              | at Anthropic); bytes through to         |
|         |                                              | `anthropic` backends                    |
| A → O   | `cache_control` on system, user and tool     | the part's `prompt_cache_breakpoint`    |
|         | result blocks                                | (Bedrock Converse: `cachePoint`; removed|
|         |                                              | for OpenAI-family upstreams)            |
| A → O   | `top_k`, other `cache_control`, `citations`, | dropped                                 |
|         | `service_tier`, `output_config.effort`       |                                         |
|         | without thinking, `container`,               |                                         |
|         | `inference_geo`, `speed`                     |                                         |
| A → O   | server tools (a `type` other than `custom`), | TranslationError                        |
|         | image by `file_id`, images in tool results,  |                                         |
|         | non-PDF/non-text documents, `mcp_servers`    |                                         |
| A → O   | `tool_result.is_error`                       | content prefixed with `Error: `         |
| A → O   | system blocks                                | one system message of text parts        |
| A → O   | `tool_use` id carrying a thought signature   | split: the call id, and the signature   |
|         | (`thought_signatures`)                       | in `extra_content`                      |
"""

import re
from typing import Any, Final

from sidecar.dialects import openai_request, openai_response
from sidecar.dialects.errors import TranslationError
from sidecar.dialects.thinking import (
    SAMPLING,
    effort_of_thinking,
    openai_forces_tool,
    thinking_for_effort,
)
from sidecar.dialects.thought_signatures import extra_content, split_tool_use_id

JSON = dict[str, Any]

IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# The first version under which sampling parameters are a 400 even at their defaults.
NO_SAMPLING_VERSION: Final = "2026-10-21"

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
    _add_thinking(out, body)
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


def _add_thinking(out: JSON, body: JSON) -> None:
    thinking = thinking_for_effort(
        body,
        ends_tool_loop=_ends_tool_loop(out["messages"]),
        forces_tool=openai_forces_tool,
    )
    if thinking is None:
        return
    out["thinking"] = thinking
    out["max_tokens"] += thinking["budget_tokens"]
    for key in SAMPLING:
        out.pop(key, None)


def _ends_tool_loop(messages: list[JSON]) -> bool:
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    content = last["content"] if last is not None else None
    return isinstance(content, list) and any(b.get("type") == "tool_use" for b in content)


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
# Requests: Anthropic → Anthropic

# The mark of the thinking that the sidecar relays from other vendors
# (`anthropic_response.thinking_block`).
UNSIGNED: Final = re.compile(rb'"signature"\s*:\s*""')


def without_unsigned_thinking(body: JSON) -> JSON | None:
    """The body without the unsigned thinking blocks that Anthropic would reject (they came from
    another vendor through the sidecar), or None when it has none. If one stood in the last
    tool-calling turn, `thinking` goes too: Claude would want that turn's signed thinking back."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    kept: list[Any] = []
    dropped_from, last_turn = None, None
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list) or msg.get("role") != "assistant":
            kept.append(msg)
            continue
        last_turn = i
        blocks = [b for b in content if not _unsigned_thinking(b)]
        if len(blocks) != len(content):
            dropped_from = i
            msg = {**msg, "content": blocks}
        kept.append(msg)
    if dropped_from is None:
        return None
    out = {**body, "messages": kept}
    if dropped_from == last_turn and any(_is(b, "tool_use") for b in kept[last_turn]["content"]):
        out.pop("thinking", None)
    return out


def _is(block: Any, kind: str) -> bool:
    return isinstance(block, dict) and block.get("type") == kind


def _unsigned_thinking(block: Any) -> bool:
    return _is(block, "thinking") and not block.get("signature")


# ---------------------------------------------------------------------------------------------
# Requests: Anthropic → OpenAI


def anthropic_request_to_openai(body: JSON, *, token_limit: str = "max_tokens") -> JSON:
    """`token_limit`: the chat field `max_tokens` goes in (`max_completion_tokens` for OpenAI's
    own servers: `backends.openai.chat_token_limit`)."""
    _reject_untranslatable_anthropic_fields(body)
    messages = _anthropic_system_to_openai(body.get("system"))
    for i, msg in enumerate(body.get("messages") or []):
        messages.extend(_anthropic_message_to_openai(msg, f"messages[{i}]"))
    out: JSON = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out[token_limit] = body["max_tokens"]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("tools"):
        out["tools"] = [_anthropic_tool_to_openai(t, i) for i, t in enumerate(body["tools"])]
    out.update(_anthropic_tool_choice_to_openai(body.get("tool_choice")))
    effort = effort_of_thinking(body)
    if effort is not None:
        out["reasoning_effort"] = effort
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
    if body.get("mcp_servers"):
        raise _err("MCP servers are not supported by this backend", "mcp_servers")


def _anthropic_system_to_openai(system: Any) -> list[JSON]:
    if not system:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    parts = [
        _breakpoint({"type": "text", "text": b.get("text", "")}, b)
        for b in system
        if b.get("type") == "text"
    ]
    if len(parts) == 1 and not _has_breakpoint(parts):
        return [{"role": "system", "content": parts[0]["text"]}]
    return [{"role": "system", "content": parts}]


def _breakpoint(part: JSON, block: JSON) -> JSON:
    # A `cache_control` breakpoint rides in the pivot as the part's `prompt_cache_breakpoint`;
    # Bedrock Converse reads it (`cachePoint`), OpenAI-family upstreams never see it.
    if block.get("cache_control"):
        part["prompt_cache_breakpoint"] = True
    return part


def _has_breakpoint(parts: list[JSON]) -> bool:
    return any(p.get("prompt_cache_breakpoint") for p in parts)


def without_cache_breakpoints(body: JSON) -> JSON:
    """The pivot as an OpenAI server takes it: `prompt_cache_breakpoint` is no OpenAI field."""
    for msg in body.get("messages") or []:
        for part in msg.get("content") if isinstance(msg.get("content"), list) else []:
            if isinstance(part, dict):
                part.pop("prompt_cache_breakpoint", None)
    return body


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
    call_id, signature = split_tool_use_id(block.get("id"))
    call = openai_response.tool_call(call_id, block.get("name"), block.get("input"))
    if signature is not None:
        call["extra_content"] = extra_content(signature)
    return call


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
    if all(p["type"] == "text" for p in parts) and not _has_breakpoint(parts):
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
    call_id, _ = split_tool_use_id(block.get("tool_use_id"))
    if block.get("cache_control"):
        parts = [_breakpoint({"type": "text", "text": text}, block)]
        return {"role": "tool", "tool_call_id": call_id, "content": parts}
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _anthropic_block_to_part(block: JSON, where: str) -> JSON:
    return _breakpoint(_block_part(block, where), block)


def _block_part(block: JSON, where: str) -> JSON:
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
