"""OpenAI Chat Completions → Bedrock Converse / ConverseStream, and Bedrock's answers back.

Requests become the keyword arguments of aiobotocore's `client.converse(**kw)` and
`client.converse_stream(**kw)` (shapes from botocore's `bedrock-runtime` model); botocore does the
base64 of image and document bytes. Lossy points and their policies:

| input                                        | policy                                          |
|----------------------------------------------|-------------------------------------------------|
| system/developer messages anywhere           | hoisted, in order, into `system`                |
| `n` > 1, `input_audio`, audio output         | TranslationError                                |
| http(s) image URLs, `file_id` files          | TranslationError (Bedrock takes bytes only)     |
| `logprobs`, `logit_bias`, `json_object`      | TranslationError                                |
| `custom` tools, `allowed_tools`, legacy      | TranslationError                                |
| `functions`/`function_call`                  |                                                 |
| tool-call arguments that are not a JSON      | TranslationError                                |
| object                                       |                                                 |
| `tool_choice: none`                          | `toolConfig` omitted when the history has no    |
|                                              | tool blocks; otherwise tools kept, choice       |
|                                              | omitted (Bedrock needs `toolConfig` then)       |
| `parallel_tool_calls: false`                 | dropped (no equivalent)                         |
| `temperature`, `top_p`                       | passed as is; the model's range is Bedrock's    |
|                                              | to validate                                     |
| `seed`, penalties, `user`, `metadata`,       | dropped                                         |
| unknown fields                               |                                                 |
| `reasoning_effort` (or an Anthropic caller's | Claude 3.7 and 4+ model ids (`anthropic.claude- |
| own `thinking`, as it is)                    | 3-7-…`, `…claude-{sonnet,opus,haiku}-N…`, with  |
|                                              | any profile prefix or ARN): `additionalModel-   |
|                                              | RequestFields.thinking` by `dialects.thinking`; |
|                                              | a derived budget is added to `maxTokens`        |
|                                              | (4096 when unset); `temperature`/`topP`         |
|                                              | dropped; no thinking in a tool loop in progress.|
|                                              | Other models: dropped (a hint)                  |
| image `detail`, message `name`               | dropped                                         |
| trailing assistant message (prefill)         | kept last; trailing whitespace stripped         |
| part `prompt_cache_breakpoint` (an Anthropic | a `cachePoint` block after it (after its tool   |
| caller's `cache_control`)                    | result), the first 4 in order; later ones       |
|                                              | dropped                                         |
| `reasoningContent` in answers and stream     | `reasoning_content` on the message / delta      |
| deltas                                       | (text only: `signature`, `redactedContent`      |
|                                              | dropped)                                        |
| `stopReason` `malformed_model_output`,       | InvalidUpstreamResponse (the upstream's fault)  |
| `malformed_tool_use`                         |                                                 |

ConverseStream sends `metadata` (usage) after `messageStop`. The translator emits the finish chunk
at `messageStop` and the usage chunk (`choices: []`) at `metadata`, which is OpenAI's own order.
"""

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

import orjson

from sidecar.call import Usage
from sidecar.dialects import openai_request, openai_response
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError
from sidecar.dialects.openai import usage_of
from sidecar.dialects.thinking import (
    claude_on_bedrock_thinks,
    openai_forces_tool,
    thinking_for_effort,
)

__all__ = [
    "INVOKE_ANTHROPIC_VERSION",
    "Converse",
    "ConverseStreamToOpenAI",
    "CountTokens",
    "Invoke",
    "bedrock_error_to_openai",
    "converse_response_to_openai",
    "count_tokens_params",
    "invoke_event_to_sse",
    "openai_request_to_converse",
]

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Converse:
    """One Converse (or ConverseStream) call: what the Bedrock seam sends."""

    stream: bool
    params: JSON


@dataclass(frozen=True, slots=True)
class CountTokens:
    """One CountTokens call (Anthropic callers' `/v1/messages/count_tokens`): the Converse
    request's messages, system and tools, counted by the model's own tokenizer."""

    params: JSON


# What of a Converse request CountTokens counts (its `input.converse` shape).
COUNTED: Final = ("messages", "system", "toolConfig", "additionalModelRequestFields")


def count_tokens_params(converse: JSON) -> JSON:
    counted = {k: converse[k] for k in COUNTED if k in converse}
    return {"modelId": converse["modelId"], "input": {"converse": counted}}


@dataclass(frozen=True, slots=True)
class Invoke:
    """One InvokeModel (or InvokeModelWithResponseStream) call: the model's native body."""

    stream: bool
    model_id: str
    body: bytes


# Claude's Messages body on InvokeModel: legacy ARN-versioned models refuse newer versions.
INVOKE_ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
# The Anthropic error type an in-stream Bedrock exception reads as (its class follows from it).
INVOKE_EXCEPTION_TYPES: Final[dict[str, str]] = {
    "throttlingexception": "rate_limit_error",
    "serviceunavailableexception": "overloaded_error",
    "modelnotreadyexception": "overloaded_error",
    "modeltimeoutexception": "timeout_error",
    "validationexception": "invalid_request_error",
}

IMAGE_FORMATS: Final[dict[str, str]] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
DOCUMENT_FORMATS: Final[dict[str, str]] = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/html": "html",
}
STOP_REASON_TO_FINISH: Final[dict[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# The answer's room when the sidecar adds a thinking budget to a request without a maximum:
# Anthropic's own backend default (`sidecar.backends.anthropic.DEFAULT_MAX_TOKENS`).
DEFAULT_MAX_TOKENS: Final = 4096
MALFORMED_STOP_REASONS: Final = frozenset({"malformed_model_output", "malformed_tool_use"})
# OpenAI error `type` by Bedrock's HTTP status (README "Errors and streams across dialects").
STATUS_TO_OPENAI_TYPE: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    424: "model_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}
# Bedrock document names allow only these characters, and no runs of whitespace.
DOCUMENT_NAME_JUNK: Final = re.compile(r"[^A-Za-z0-9\-()\[\] ]+|\s{2,}")


def _err(message: str, param: str | None) -> TranslationError:
    return TranslationError(message, param)


# ---------------------------------------------------------------------------------------------
# Requests


def openai_request_to_converse(body: JSON, *, model_id: str, thinking: JSON | None = None) -> JSON:
    """`thinking`: an Anthropic caller's own, sent as it is to a Claude that takes it."""
    openai_request.reject_untranslatable(body)
    system, messages = openai_request.split_messages(body.get("messages") or [], SHAPES)
    system, messages = _cache_points(system, messages)
    out: JSON = {"modelId": model_id, "messages": messages}
    if system:
        out["system"] = system
    inference = _inference_config(body)
    claude_thinking = _claude_thinking(body, model_id, messages, thinking)
    if claude_thinking is not None:
        _fit_thinking(inference, claude_thinking, derived=thinking is None)
        out["additionalModelRequestFields"] = {"thinking": claude_thinking}
    if inference:
        out["inferenceConfig"] = inference
    tool_config = _tool_config(body, messages)
    if tool_config:
        out["toolConfig"] = tool_config
    output = _output_config(body.get("response_format"))
    if output:
        out["outputConfig"] = output
    return out


# Bedrock takes at most this many cache checkpoints in one request.
MAX_CACHE_POINTS: Final = 4
CACHE_POINT: Final[JSON] = {"cachePoint": {"type": "default"}}


def _cache_points(system: list[JSON], messages: list[JSON]) -> tuple[list[JSON], list[JSON]]:
    """A `cachePoint` after each block a part marked `prompt_cache_breakpoint` (an Anthropic
    `cache_control`) became, the first `MAX_CACHE_POINTS` in request order; a text part inside a
    tool result puts it after the tool result (it may not stand inside one)."""
    budget = [MAX_CACHE_POINTS]

    def placed(blocks: list[JSON]) -> list[JSON]:
        out: list[JSON] = []
        for block in blocks:
            marked = block.pop(_CACHE, False)
            result = block.get("toolResult")
            if result is not None:
                for inner in result["content"]:
                    marked = inner.pop(_CACHE, False) or marked
            out.append(block)
            if marked and budget[0] > 0:
                budget[0] -= 1
                out.append(dict(CACHE_POINT))
        return out

    system = placed(system)
    return system, [{**m, "content": placed(m["content"])} for m in messages]


def _inference_config(body: JSON) -> JSON:
    out: JSON = {}
    for source in ("max_completion_tokens", "max_tokens"):
        if body.get(source) is not None:
            out["maxTokens"] = body[source]
            break
    if body.get("temperature") is not None:
        out["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        out["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    return out


def _claude_thinking(
    body: JSON, model_id: str, messages: list[JSON], own: JSON | None
) -> JSON | None:
    # Other models' reasoning controls differ by model; for them reasoning is a dropped hint.
    if not claude_on_bedrock_thinks(model_id):
        return None
    ends_tool_loop = _ends_tool_loop(messages)
    if own is not None:
        return None if ends_tool_loop or own.get("type") == "disabled" else own
    return thinking_for_effort(body, ends_tool_loop=ends_tool_loop, forces_tool=openai_forces_tool)


def _ends_tool_loop(messages: list[JSON]) -> bool:
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    return last is not None and any("toolUse" in block for block in last["content"])


def _fit_thinking(inference: JSON, thinking: JSON, *, derived: bool) -> None:
    inference.pop("temperature", None)
    inference.pop("topP", None)
    if derived:
        answer = inference.get("maxTokens") or DEFAULT_MAX_TOKENS
        inference["maxTokens"] = answer + thinking["budget_tokens"]


def _tool_config(body: JSON, messages: list[JSON]) -> JSON:
    tools = body.get("tools")
    if not tools:
        return {}
    choice = body.get("tool_choice")
    has_tool_history = any(
        "toolUse" in block or "toolResult" in block for m in messages for block in m["content"]
    )
    if choice == "none" and not has_tool_history:
        return {}
    out: JSON = {"tools": [_tool_spec(t, i) for i, t in enumerate(tools)]}
    if choice == "required":
        out["toolChoice"] = {"any": {}}
    elif choice in (None, "auto"):
        out["toolChoice"] = {"auto": {}}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name")}}
    elif choice != "none":
        raise _err("this `tool_choice` is not supported by this backend", "tool_choice")
    return out


def _tool_spec(tool: JSON, i: int) -> JSON:
    fn = openai_request.function_of(tool, i)
    spec: JSON = {"name": fn.get("name")}
    if fn.get("description"):
        spec["description"] = fn["description"]
    spec["inputSchema"] = {"json": fn.get("parameters") or {"type": "object", "properties": {}}}
    if fn.get("strict") is not None:
        spec["strict"] = bool(fn["strict"])
    return {"toolSpec": spec}


def _output_config(fmt: Any) -> JSON:
    spec = openai_request.json_schema_of(fmt)
    if spec is None:
        return {}
    schema: JSON = {"schema": orjson.dumps(spec.get("schema") or {"type": "object"}).decode()}
    for key in ("name", "description"):
        if spec.get(key):
            schema[key] = spec[key]
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}}


def _image_block(image: JSON, where: str) -> JSON:
    url = str(image.get("url") or "")
    if url.startswith(("http://", "https://")):
        raise _err("image URLs are not supported by this backend; send a data URI", where)
    media_type, data = _decode_data_uri(url, where)
    if media_type not in IMAGE_FORMATS:
        raise _err(f"image type {media_type!r} is not supported (jpeg, png, gif, webp)", where)
    return {"image": {"format": IMAGE_FORMATS[media_type], "source": {"bytes": data}}}


def _document_block(file: JSON, where: str, j: int) -> JSON:
    media_type, data = _decode_data_uri(openai_request.file_data(file, where), where)
    if media_type not in DOCUMENT_FORMATS:
        raise _err(f"file type {media_type!r} is not supported by this backend", where)
    stem = str(file.get("filename") or "").rsplit(".", 1)[0]
    name = DOCUMENT_NAME_JUNK.sub(" ", stem).strip() or f"document {j}"
    return {
        "document": {
            "format": DOCUMENT_FORMATS[media_type],
            "name": name[:200],
            "source": {"bytes": data},
        }
    }


def _decode_data_uri(url: str, where: str) -> tuple[str, bytes]:
    media_type, data = openai_request.data_uri(url, where, expected="expected a base64 data URI")
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise _err("the data URI is not valid base64", where) from None
    return media_type, raw


def _tool_result(tool_call_id: Any, blocks: list[JSON]) -> JSON:
    result = {"toolUseId": tool_call_id, "content": blocks or [{"text": ""}], "status": "success"}
    return {"toolResult": result}


_CACHE: Final = "__cache_point"


def _mark(block: JSON, part: JSON) -> JSON:
    if part.get("prompt_cache_breakpoint"):
        block[_CACHE] = True
    return block


SHAPES: Final = openai_request.BlockShapes(
    text=lambda text: {"text": text},
    image=_image_block,
    document=_document_block,
    tool_use=lambda id_, name, input_: {
        "toolUse": {"toolUseId": id_, "name": name, "input": input_}
    },
    tool_result=_tool_result,
    mark=_mark,
)


# ---------------------------------------------------------------------------------------------
# Responses


def converse_response_to_openai(resp: JSON, *, model: str, created: int | None = None) -> JSON:
    finish = _finish_reason(resp.get("stopReason"))
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[JSON] = []
    for block in ((resp.get("output") or {}).get("message") or {}).get("content") or []:
        if "text" in block:
            texts.append(block["text"])
        elif "reasoningContent" in block:
            thoughts.append(_reasoning(block["reasoningContent"]))
        elif "toolUse" in block:
            tool_use = block["toolUse"]
            calls.append(
                openai_response.tool_call(
                    tool_use.get("toolUseId"), tool_use.get("name"), tool_use.get("input")
                )
            )
    request_id = (resp.get("ResponseMetadata") or {}).get("RequestId")
    return openai_response.chat_completion(
        completion_id=f"chatcmpl-{request_id}" if request_id else _fallback_id(),
        created=created,
        model=model,
        message=openai_response.assistant_message(texts, calls, "".join(thoughts)),
        finish=finish,
        usage=converse_usage_to_openai(resp.get("usage") or {}),
    )


def _reasoning(content: Any) -> str:
    # `{"reasoningText": {"text", "signature"}}` or `{"redactedContent": bytes}`: only the text
    # means anything outside Bedrock.
    text = ((content or {}).get("reasoningText") or {}).get("text")
    return text if isinstance(text, str) else ""


def _finish_reason(stop_reason: Any) -> str:
    if stop_reason in MALFORMED_STOP_REASONS:
        raise InvalidUpstreamResponse(f"Bedrock stopped with {stop_reason}")
    return STOP_REASON_TO_FINISH.get(str(stop_reason), "stop")


def converse_usage_to_openai(usage: JSON) -> JSON:
    # Like Anthropic's, Bedrock's inputTokens excludes the cached ones.
    return openai_response.usage_including_cache(
        cache_read=int(usage.get("cacheReadInputTokens") or 0),
        cache_write=int(usage.get("cacheWriteInputTokens") or 0),
        uncached_prompt=int(usage.get("inputTokens") or 0),
        completion=int(usage.get("outputTokens") or 0),
    )


def _fallback_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


# ---------------------------------------------------------------------------------------------
# Errors


def bedrock_error_to_openai(code: str, message: str, status: int) -> JSON:
    kind = STATUS_TO_OPENAI_TYPE.get(status) or ("server_error" if status >= 500 else None)
    kind = kind or "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# ---------------------------------------------------------------------------------------------
# Streams


class ConverseStreamToOpenAI:
    def __init__(self, *, model: str, include_usage: bool, created: int | None = None) -> None:
        self._include_usage = include_usage
        self._out = openai_response.OpenAIChunks(
            model=model, created=created, chunk_id=_fallback_id()
        )
        self._usage: JSON | None = None

    @property
    def prompt_tokens(self) -> int | None:
        return None if self._usage is None else int(self._usage["prompt_tokens"])

    @property
    def completion_tokens(self) -> int | None:
        return None if self._usage is None else int(self._usage["completion_tokens"])

    @property
    def usage(self) -> Usage:
        return usage_of({"usage": self._usage}) or Usage()

    def feed(self, event: JSON) -> list[JSON]:
        if "messageStart" in event:
            return [self._out.chunk({"role": "assistant", "content": ""})]
        if "contentBlockStart" in event:
            return self._block_start(event["contentBlockStart"])
        if "contentBlockDelta" in event:
            return self._block_delta(event["contentBlockDelta"])
        if "messageStop" in event:
            finish = _finish_reason(event["messageStop"].get("stopReason"))
            return [self._out.chunk({}, finish)]
        if "metadata" in event:
            self._usage = converse_usage_to_openai(event["metadata"].get("usage") or {})
            return [self._out.usage_chunk(self._usage)] if self._include_usage else []
        return []

    def _block_start(self, data: JSON) -> list[JSON]:
        tool_use = (data.get("start") or {}).get("toolUse")
        if tool_use is None:
            return []
        block = int(data.get("contentBlockIndex", 0))
        return self._out.tool_start(block, tool_use.get("toolUseId"), tool_use.get("name"))

    def _block_delta(self, data: JSON) -> list[JSON]:
        delta = data.get("delta") or {}
        if delta.get("text"):
            return [self._out.chunk({"content": delta["text"]})]
        # A stream's reasoning delta is `{"text"}`, `{"signature"}` or `{"redactedContent"}`.
        thought = (delta.get("reasoningContent") or {}).get("text")
        if thought:
            return [self._out.chunk({"reasoning_content": thought})]
        fragment = (delta.get("toolUse") or {}).get("input")
        return self._out.tool_arguments(int(data.get("contentBlockIndex", 0)), fragment)


# ---------------------------------------------------------------------------------------------
# InvokeModelWithResponseStream: event-stream `chunk` frames carrying Anthropic events


def invoke_event_to_sse(event: JSON) -> bytes:
    """One decoded InvokeModelWithResponseStream event as the Anthropic SSE event it carries:
    a `chunk`'s bytes are one Anthropic stream event's JSON, relayed byte for byte; an
    in-stream exception becomes an Anthropic `error` event of the same meaning."""
    chunk = event.get("chunk")
    if isinstance(chunk, dict) and isinstance(chunk.get("bytes"), bytes | bytearray):
        raw = bytes(chunk["bytes"])
        try:
            name = orjson.loads(raw).get("type")
        except (orjson.JSONDecodeError, AttributeError):
            name = None
        head = b"event: " + str(name).encode() + b"\n" if isinstance(name, str) else b""
        return head + b"data: " + raw + b"\n\n"
    name = next(iter(event), "internalServerException")
    detail = event.get(name)
    message = detail.get("message") if isinstance(detail, dict) else None
    error = {
        "type": INVOKE_EXCEPTION_TYPES.get(name.lower(), "api_error"),
        "message": str(message or name),
    }
    body = orjson.dumps({"type": "error", "error": error})
    return b"event: error\ndata: " + body + b"\n\n"
