"""OpenAI Responses requests: what the sidecar checks, and their translation to Chat Completions.

Chat Completions is the sidecar's pivot: a Responses request for a translated backend becomes a
chat request here, and the existing Chat → Messages / Chat → Converse mappings take it from
there. Lossy points and their policies (the README repeats them):

| input                                           | policy                                       |
|-------------------------------------------------|----------------------------------------------|
| `previous_response_id`, `conversation`,         | native backends only (`NativeOnly`: other    |
|   stored `prompt`, `background`, `item_reference`|   kinds are skipped as `unsupported`)        |
| `instructions`                                  | a system message before the input            |
| `developer`/`system` input messages             | system messages, in place                    |
| `reasoning` input items (summaries, encrypted   | dropped: they verify only at the provider    |
|   content, `rs_…` ids)                          |   that issued them                           |
| item `id`s and `status`                         | dropped                                      |
| `input_image` by `file_id`, `input_file` by     | TranslationError (400)                       |
|   `file_id` / `file_url`                        |                                              |
| `function` tools                                | chat `function` tools                        |
| `namespace` tools                               | flattened: `{namespace}__{name}`, and back   |
| other tools (`web_search`, `file_search`, …)    | dropped when offered; TranslationError when  |
|                                                 |   `tool_choice` requires one                 |
| `tool_choice` `allowed_tools`, hosted types     | TranslationError                             |
| `max_output_tokens`                             | `max_tokens`, or `max_completion_tokens` for |
|                                                 |   OpenAI's own servers (`token_limit`, from  |
|                                                 |   `backends.openai.chat_token_limit`)        |
| `text.format` `json_schema` / `json_object`     | `response_format`                            |
| `text.verbosity`                                | `verbosity`                                  |
| `reasoning.effort`                              | `reasoning_effort`                           |
| `reasoning.summary`, `store`, `metadata`,       | dropped (hints: nothing is stored, nothing   |
|   `include`, `truncation`, `max_tool_calls`,    |   is kept for a later request)               |
|   `client_metadata`, unknown fields             |                                              |
| `custom_tool_call`, `web_search_call`, other    | TranslationError                             |
|   non-message, non-function input items        |                                              |
"""

from dataclasses import dataclass, field
from typing import Any, Final

from sidecar.dialects.errors import TranslationError

JSON = dict[str, Any]

# A namespaced tool's flat chat name: `{namespace}{SEP}{name}`. Anthropic tool names allow
# `[a-zA-Z0-9_-]{1,128}`, so the separator must be made of those characters.
NAMESPACE_SEP: Final = "__"

NATIVE_ONLY_FIELDS: Final[dict[str, str]] = {
    "previous_response_id": "`previous_response_id` is only known to the backend that issued it",
    "conversation": "a stored `conversation` can only be served by OpenAI-family backends",
    "prompt": "a stored `prompt` template can only be served by OpenAI-family backends",
    "background": "`background` responses can only be served by OpenAI-family backends",
}
_ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
_SKIPPED_ITEMS: Final = frozenset({"reasoning"})


class NativeOnly(Exception):
    """The request can only be served by a backend that speaks Responses natively."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class ToolNames:
    """How the chat tool names of a translated request map back to Responses names."""

    # flat chat name → (namespace, name)
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)

    def flat(self, name: Any, namespace: Any) -> Any:
        return f"{namespace}{NAMESPACE_SEP}{name}" if namespace else name

    def split(self, flat: Any) -> tuple[str | None, Any]:
        found = self.namespaced.get(flat) if isinstance(flat, str) else None
        return found if found is not None else (None, flat)


def check(body: JSON) -> str | None:
    """Why the body cannot be a Responses request (a 400), or None."""
    inp = body.get("input")
    if inp is None:
        if body.get("previous_response_id") or body.get("conversation") or body.get("prompt"):
            return None
        return "`input` is required"
    if not isinstance(inp, str | list):
        return "`input` must be a string or a list of items"
    if isinstance(inp, list) and not all(isinstance(item, dict) for item in inp):
        return "`input` items must be objects"
    return None


def native_only(body: JSON) -> NativeOnly | None:
    for key, why in NATIVE_ONLY_FIELDS.items():
        if body.get(key):
            return NativeOnly(why, key)
    for i, item in enumerate(_items(body.get("input"))):
        if item.get("type") == "item_reference":
            return NativeOnly("item references need the stored response", f"input[{i}]")
    return None


def _items(inp: Any) -> list[JSON]:
    return [item for item in inp if isinstance(item, dict)] if isinstance(inp, list) else []


def to_chat(body: JSON, *, token_limit: str = "max_tokens") -> tuple[JSON, ToolNames]:
    """The chat request that asks the same as `body`, and how its tool names map back;
    `token_limit`: the field the output limit goes in (the backend's to say)."""
    reason = native_only(body)
    if reason is not None:
        raise TranslationError(reason.message, reason.param)
    names = ToolNames()
    messages: list[JSON] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    messages.extend(_input_messages(body.get("input"), names))
    out: JSON = {"model": body.get("model"), "messages": messages}
    tools = _tools(body.get("tools"), names)
    if tools:
        out["tools"] = tools
    out.update(_tool_choice(body.get("tool_choice"), body.get("tools"), names))
    if body.get("parallel_tool_calls") is not None and tools:
        out["parallel_tool_calls"] = body["parallel_tool_calls"]
    _copy_sampling(body, out, token_limit)
    out.update(_text(body.get("text")))
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        out["reasoning_effort"] = effort
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, names


def _copy_sampling(body: JSON, out: JSON, token_limit: str) -> None:
    if body.get("max_output_tokens") is not None:
        out[token_limit] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "service_tier", "prompt_cache_key", "safety_identifier"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("user"):
        out["user"] = body["user"]
    if body.get("top_logprobs"):
        out["logprobs"] = True
        out["top_logprobs"] = body["top_logprobs"]


# ---------------------------------------------------------------------------------------------
# Input items


def _input_messages(inp: Any, names: ToolNames) -> list[JSON]:
    if inp is None:
        return []
    if isinstance(inp, str):
        return [{"role": "user", "content": inp}]
    messages: list[JSON] = []
    for i, item in enumerate(inp):
        where = f"input[{i}]"
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            _append_call(messages, item, names)
        elif kind == "function_call_output":
            messages.append(_call_output(item, where))
        elif kind not in _SKIPPED_ITEMS:
            raise TranslationError(f"input items of type {kind!r} are not supported", where)
    return messages


def _message(item: JSON, where: str) -> JSON:
    role = item.get("role")
    if role not in _ROLES:
        raise TranslationError(f"messages with role {role!r} are not supported", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str) or content is None:
        return {"role": role, "content": content or ""}
    parts = [_part(p, role, f"{where}.content[{j}]") for j, p in enumerate(content)]
    if role == "user":
        return {"role": role, "content": parts}
    # System, developer and assistant messages take text parts only in the chat dialect.
    for j, part in enumerate(parts):
        if part["type"] not in ("text", "refusal"):
            at = f"{where}.content[{j}]"
            raise TranslationError(f"{role} messages take text content only", at)
    return {"role": role, "content": parts}


def _part(part: JSON, role: str, where: str) -> JSON:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text") or ""}
    if kind == "refusal":
        return {"type": "refusal", "refusal": part.get("refusal") or ""}
    if kind == "input_image":
        return _image(part, where)
    if kind == "input_file":
        return _file(part, where)
    raise TranslationError(f"content parts of type {kind!r} are not supported", where)


def _image(part: JSON, where: str) -> JSON:
    url = part.get("image_url")
    if not url:
        raise TranslationError("images by `file_id` are not supported by this backend", where)
    image: JSON = {"url": url}
    if part.get("detail"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file(part: JSON, where: str) -> JSON:
    data = part.get("file_data")
    if not data:
        raise TranslationError(
            "files by `file_id` or `file_url` are not supported by this backend", where
        )
    if not str(data).startswith("data:"):
        # The Responses API takes a bare base64 string; a chat `file` part takes a data URI.
        data = f"data:{_media_type(part.get('filename'))};base64,{data}"
    file: JSON = {"file_data": data}
    if part.get("filename"):
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _media_type(filename: Any) -> str:
    name = str(filename or "").lower()
    if name.endswith(".pdf") or not name:
        return "application/pdf"
    if name.endswith((".txt", ".md")):
        return "text/plain" if name.endswith(".txt") else "text/markdown"
    return "application/octet-stream"


def _append_call(messages: list[JSON], item: JSON, names: ToolNames) -> None:
    call = {
        "id": item.get("call_id"),
        "type": "function",
        "function": {
            "name": names.flat(item.get("name"), item.get("namespace")),
            "arguments": item.get("arguments") or "",
        },
    }
    last = messages[-1] if messages else None
    # A model turn is one assistant message: its text and every call it made.
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if last.get("content") in ("", []):
            last["content"] = None
        return
    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _call_output(item: JSON, where: str) -> JSON:
    output = item.get("output")
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if part.get("type") not in ("input_text", "output_text", "text"):
                raise TranslationError(
                    "function call outputs with non-text content are not supported",
                    f"{where}.output[{j}]",
                )
            texts.append(part.get("text") or "")
        output = "".join(texts)
    return {"role": "tool", "tool_call_id": item.get("call_id"), "content": output or ""}


# ---------------------------------------------------------------------------------------------
# Tools


def _tools(tools: Any, names: ToolNames) -> list[JSON]:
    out: list[JSON] = []
    for tool in tools or []:
        kind = tool.get("type")
        if kind == "function":
            out.append(_function(tool, None))
        elif kind == "namespace":
            for inner in tool.get("tools") or []:
                if inner.get("type", "function") != "function":
                    continue
                flat = names.flat(inner.get("name"), tool.get("name"))
                names.namespaced[flat] = (str(tool.get("name")), str(inner.get("name")))
                out.append(_function(inner, flat))
        # Hosted tools (web search, file search, code interpreter, …) are capabilities the
        # model may use; without them it answers from what it has. `_tool_choice` refuses a
        # request that requires one.
    return out


def _function(tool: JSON, name: str | None) -> JSON:
    fn: JSON = {"name": name or tool.get("name")}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        fn["strict"] = tool["strict"]
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any, tools: Any, names: ToolNames) -> JSON:
    if choice is None:
        return {}
    if choice in ("auto", "none"):
        return {"tool_choice": choice} if tools else {}
    if choice == "required":
        if not any(t.get("type") in ("function", "namespace") for t in tools or []):
            raise TranslationError(
                "`tool_choice` requires a tool this backend lacks", "tool_choice"
            )
        return {"tool_choice": "required"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = names.flat(choice.get("name"), choice.get("namespace"))
        return {"tool_choice": {"type": "function", "function": {"name": name}}}
    raise TranslationError("this `tool_choice` is not supported by this backend", "tool_choice")


# ---------------------------------------------------------------------------------------------
# Text


def _text(text: Any) -> JSON:
    if not isinstance(text, dict):
        return {}
    out: JSON = {}
    if text.get("verbosity"):
        out["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return out
    if fmt["type"] == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        spec: JSON = {"name": fmt.get("name") or "output", "schema": fmt.get("schema") or {}}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    else:
        raise TranslationError(f"text format {fmt['type']!r} is not supported", "text.format")
    return out


def with_prefill(body: JSON, text: str) -> JSON:
    """The request that continues `text`, an answer already partly delivered (stream recovery)."""
    inp = body.get("input")
    items: list[JSON] = (
        [{"role": "user", "content": inp}] if isinstance(inp, str) else list(_items(inp))
    )
    items.append({"type": "message", "role": "assistant", "content": text.rstrip()})
    return {**body, "input": items, "stream": True}
