"""OpenAI Chat Completions → Gemini `generateContent`, and Gemini's answers, errors and SSE
chunks back (pure). Anthropic callers reach it through the OpenAI pivot both ways.

Gemini function calls carry no ids on the wire: answers get stable synthetic `call_…` ids (a
hash of the response id, the call's position, name and arguments), and tool results are mapped
back to `functionResponse` parts by the name of the call they answer, in order. Thought signatures
travel as `tool_calls[].extra_content.google.thought_signature` (`thought_signatures`).

Lossy points and their policies:

| input                                        | policy                                          |
|----------------------------------------------|-------------------------------------------------|
| system/developer messages anywhere           | hoisted, in order, into `systemInstruction`     |
| `n` > 1, `input_audio`, audio output         | TranslationError                                |
| `logprobs`, `logit_bias`, legacy `functions` | TranslationError                                |
| / `function_call`, `custom` tools,           |                                                 |
| `web_search_options`                         |                                                 |
| `file_id` files                              | TranslationError (no Files API mapping)         |
| http(s) / gs:// image URLs                   | `fileData.fileUri` (Gemini fetches them)        |
| data-URI images and files                    | `inlineData`                                    |
| tool result text                             | `functionResponse.response`: the JSON object it |
|                                              | holds, else `{"result": text}`                  |
| tool result without a matching call          | TranslationError (Gemini maps results by name)  |
| `response_format` `json_object`              | `responseMimeType: application/json`            |
| `response_format` `json_schema`              | `responseJsonSchema`; name and strict dropped   |
| `reasoning_effort`                           | `thinkingConfig`: `thinkingLevel` (Gemini 3),   |
|                                              | `thinkingBudget` (Gemini 2.x)                   |
| `parallel_tool_calls`, `user`, `metadata`,   | dropped                                         |
| `store`, `service_tier`, image `detail`,     |                                                 |
| message `name`, unknown fields               |                                                 |
| a model turn's first function call without   | `skip_thought_signature_validator` (Google's    |
| a signature (another vendor's, or dropped by | stand-in), so a history from a fallback works;  |
| the caller), Gemini 3 and later              | none for `gemini-1*` / `gemini-2*` models       |
| thought parts (`thought: true`) in answers   | dropped (never requested: no `includeThoughts`) |
| `finishReason` SAFETY and other blocks,      | `finish_reason: content_filter` (a 200 answer,  |
| `promptFeedback.blockReason`                 | never a fallback)                               |
| `finishReason` MALFORMED_FUNCTION_CALL,      | InvalidUpstreamResponse (the upstream's fault)  |
| UNEXPECTED_TOOL_CALL                         |                                                 |
| `usageMetadata`                              | `prompt_tokens` = `promptTokenCount` (cached    |
|                                              | included); `completion_tokens` = candidates +   |
|                                              | thoughts, thoughts as `reasoning_tokens`        |
"""

import hashlib
import math
import mimetypes
import re
import uuid
from typing import Any, Final

import orjson

from sidecar.dialects import openai_request, openai_response
from sidecar.dialects.error_types import openai_error_type
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError
from sidecar.dialects.thought_signatures import extra_content, signature_of

__all__ = [
    "GeminiStreamToOpenAI",
    "gemini_error_to_openai",
    "gemini_response_to_openai",
    "gemini_retry_delay_s",
    "gemini_usage_to_openai",
    "openai_request_to_gemini",
]

JSON = dict[str, Any]

FINISH_REASONS: Final[dict[str, str]] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "LANGUAGE": "stop",
    "OTHER": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
}
MALFORMED_FINISH: Final = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})
# Gemini 2.x thinks by token budget (Google's OpenAI-compatible endpoint's own mapping).
THINKING_BUDGETS: Final[dict[str, int]] = {
    "none": 0,
    "minimal": 0,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
}
TOOL_MODES: Final[dict[str, str]] = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


def _err(message: str, param: str | None) -> TranslationError:
    return TranslationError(message, param)


# ---------------------------------------------------------------------------------------------
# Requests


def openai_request_to_gemini(body: JSON, *, model: str) -> JSON:
    openai_request.reject_untranslatable(body)
    messages = body.get("messages") or []
    system, turns = openai_request.split_messages(messages, _shapes(messages))
    out: JSON = {
        "contents": [
            {"role": "model" if t["role"] == "assistant" else "user", "parts": t["content"]}
            for t in turns
        ]
    }
    if not _before_gemini_3(model):
        _sign_foreign_calls(out["contents"])
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config:
            out["toolConfig"] = tool_config
    generation = _generation_config(body, model)
    if generation:
        out["generationConfig"] = generation
    return out


# Google's documented stand-in for a function call no Gemini model made (a history from another
# vendor, after a fallback): Gemini 3 then skips its signature check for that turn.
FOREIGN_CALL_SIGNATURE: Final = "skip_thought_signature_validator"


def _sign_foreign_calls(contents: list[JSON]) -> None:
    # Gemini 3 checks the first function call of each model turn.
    for content in contents:
        if content["role"] != "model":
            continue
        calls = [p for p in content["parts"] if "functionCall" in p]
        if calls and "thoughtSignature" not in calls[0]:
            calls[0]["thoughtSignature"] = FOREIGN_CALL_SIGNATURE


def _before_gemini_3(model: str) -> bool:
    return model.removeprefix("models/").startswith(("gemini-1", "gemini-2"))


def _shapes(messages: list[JSON]) -> openai_request.BlockShapes:
    """Block shapes for one request: function calls get back their thought signatures, and
    function results the name of the call they answer (Gemini matches results by name)."""
    signatures: dict[Any, str] = {}
    names: dict[Any, Any] = {}
    for msg in messages:
        for call in msg.get("tool_calls") or [] if isinstance(msg, dict) else []:
            names[call.get("id")] = (call.get("function") or {}).get("name")
            if (sig := signature_of(call)) is not None:
                signatures[call.get("id")] = sig

    def tool_use(call_id: Any, name: Any, args: JSON) -> JSON:
        part: JSON = {"functionCall": {"name": name, "args": args}}
        if call_id in signatures:
            part["thoughtSignature"] = signatures[call_id]
        return part

    def tool_result(call_id: Any, blocks: list[JSON]) -> JSON:
        if call_id not in names:
            raise _err("a tool result answers no tool call of the conversation", "messages")
        text = "".join(b.get("text", "") for b in blocks)
        response = {"name": names[call_id], "response": _function_response(text)}
        return {"functionResponse": response}

    return openai_request.BlockShapes(
        text=lambda text: {"text": text},
        image=_image_part,
        document=_document_part,
        tool_use=tool_use,
        tool_result=tool_result,
    )


def _function_response(text: str) -> JSON:
    # Gemini's `response` is a JSON object (a protobuf Struct).
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def _image_part(image: JSON, where: str) -> JSON:
    url = str(image.get("url") or "")
    if url.startswith(("http://", "https://", "gs://")):
        file: JSON = {"fileUri": url}
        mime, _ = mimetypes.guess_type(url.split("?", 1)[0])
        if mime:
            file["mimeType"] = mime
        return {"fileData": file}
    media_type, data = openai_request.data_uri(url, where, expected="expected a data URI or URL")
    return {"inlineData": {"mimeType": media_type, "data": data}}


def _document_part(file: JSON, where: str, j: int) -> JSON:
    url = openai_request.file_data(file, where)
    media_type, data = openai_request.data_uri(url, where, expected="expected a base64 data URI")
    return {"inlineData": {"mimeType": media_type, "data": data}}


def _tools(tools: Any) -> list[JSON]:
    if not tools:
        return []
    declarations = []
    for i, tool in enumerate(tools):
        fn = openai_request.function_of(tool, i)
        decl: JSON = {"name": fn.get("name")}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if fn.get("parameters"):
            # Full JSON Schema; `parameters` takes only Gemini's OpenAPI subset.
            decl["parametersJsonSchema"] = fn["parameters"]
        declarations.append(decl)
    return [{"functionDeclarations": declarations}]


def _tool_config(choice: Any) -> JSON:
    if choice is None:
        return {}
    if isinstance(choice, str) and choice in TOOL_MODES:
        return {"functionCallingConfig": {"mode": TOOL_MODES[choice]}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        mode = TOOL_MODES.get(str(allowed.get("mode") or "auto"), "AUTO")
        names = [(t.get("function") or {}).get("name") for t in allowed.get("tools") or []]
        return {"functionCallingConfig": {"mode": mode, "allowedFunctionNames": names}}
    raise _err("this `tool_choice` is not supported by this backend", "tool_choice")


def _generation_config(body: JSON, model: str) -> JSON:
    out: JSON = {}
    for source in ("max_completion_tokens", "max_tokens"):
        if body.get(source) is not None:
            out["maxOutputTokens"] = body[source]
            break
    for source, target in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(source) is not None:
            out[target] = body[source]
    stop = body.get("stop")
    if stop:
        out["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    out.update(_output_format(body.get("response_format")))
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort:
        out["thinkingConfig"] = _thinking(effort, model)
    return out


def _output_format(fmt: Any) -> JSON:
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"responseMimeType": "application/json"}
    spec = openai_request.json_schema_of(fmt)
    if spec is None:
        return {}
    schema = spec.get("schema") or {"type": "object"}
    return {"responseMimeType": "application/json", "responseJsonSchema": schema}


def _thinking(effort: str, model: str) -> JSON:
    if _before_gemini_3(model):
        return {"thinkingBudget": THINKING_BUDGETS.get(effort, THINKING_BUDGETS["medium"])}
    # Gemini 3 thinks by level and cannot turn thinking off: "none" is its least.
    return {"thinkingLevel": "minimal" if effort == "none" else effort}


# ---------------------------------------------------------------------------------------------
# Responses


def gemini_response_to_openai(resp: JSON, *, model: str, created: int | None = None) -> JSON:
    candidates = resp.get("candidates") or []
    candidate = candidates[0] if candidates else {}
    texts: list[str] = []
    calls: list[JSON] = []
    for i, part in enumerate(_parts(candidate)):
        if part.get("thought"):
            continue
        if "functionCall" in part:
            calls.append(_tool_call(resp, i, part))
        elif part.get("text"):
            texts.append(part["text"])
    finish = finish_reason(candidate, resp, bool(calls))
    return openai_response.chat_completion(
        completion_id=_completion_id(resp),
        created=created,
        model=model,
        message=openai_response.assistant_message(texts, calls),
        finish=finish,
        usage=gemini_usage_to_openai(resp.get("usageMetadata") or {}),
    )


def _parts(candidate: Any) -> list[JSON]:
    content = candidate.get("content") if isinstance(candidate, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _tool_call(resp: JSON, position: int, part: JSON) -> JSON:
    fn = part["functionCall"] or {}
    name = fn.get("name")
    args = fn.get("args")
    call = openai_response.tool_call(call_id(resp, position, name, args), name, args)
    if isinstance(part.get("thoughtSignature"), str):
        call["extra_content"] = extra_content(part["thoughtSignature"])
    return call


def call_id(resp: JSON, position: int, name: Any, args: Any) -> str:
    """A stable id for the function call at `position` of an answer: Gemini's wire has none."""
    seed = f"{resp.get('responseId') or ''}|{position}|{name}|".encode() + orjson.dumps(args)
    return "call_" + hashlib.sha256(seed).hexdigest()[:24]


def finish_reason(candidate: Any, resp: JSON, has_calls: bool) -> str:
    if not candidate and (resp.get("promptFeedback") or {}).get("blockReason"):
        return "content_filter"
    reason = str((candidate or {}).get("finishReason") or "STOP")
    if reason in MALFORMED_FINISH:
        raise InvalidUpstreamResponse(f"Gemini stopped with {reason}")
    finish = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if has_calls and finish == "stop" else finish


def gemini_usage_to_openai(usage: JSON) -> JSON:
    prompt = int(usage.get("promptTokenCount") or 0)
    thoughts = int(usage.get("thoughtsTokenCount") or 0)
    completion = int(usage.get("candidatesTokenCount") or 0) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(usage.get("cachedContentTokenCount") or 0)},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def _completion_id(resp: JSON) -> str:
    rid = resp.get("responseId")
    return f"chatcmpl-{rid}" if isinstance(rid, str) and rid else "chatcmpl-" + uuid.uuid4().hex


# ---------------------------------------------------------------------------------------------
# Errors


def google_error(body: Any) -> JSON:
    """The `error` object of a Google error body, bare or wrapped in a list."""
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


# A protobuf Duration in its JSON form: seconds, an optional fraction, `s` ("17s", "0.5s").
_DURATION = re.compile(r"[0-9]+(?:\.[0-9]+)?s")
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def gemini_retry_delay_s(body: bytes) -> float | None:
    """The wait a Google error body asks for (`google.rpc.RetryInfo.retryDelay`), or None: Gemini
    and Vertex AI say it there rather than in a Retry-After header."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return google_retry_delay_s(parsed)


def google_retry_delay_s(parsed: Any) -> float | None:
    """`gemini_retry_delay_s` of an error already parsed (a stream's in-band error event)."""
    details = google_error(parsed).get("details")
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and _DURATION.fullmatch(delay):
                seconds = float(delay[:-1])
                return seconds if math.isfinite(seconds) else None
    return None


def gemini_error_to_openai(body: Any, status: int, code: str | None = None) -> JSON:
    """`code`: the OpenAI code the sidecar's class gave it (`insufficient_quota`,
    `context_length_exceeded`), else Google's `status` is the code."""
    error = google_error(body)
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"Gemini answered {status}"
    google_status = error.get("status")
    return {
        "error": {
            "message": message,
            "type": openai_error_type(status),
            "param": None,
            "code": code or (google_status if isinstance(google_status, str) else None),
        }
    }


# ---------------------------------------------------------------------------------------------
# Streams


class GeminiStreamToOpenAI:
    """`streamGenerateContent?alt=sse` chunks (each a whole GenerateContentResponse) → OpenAI
    chunks. Gemini sends function calls whole, never in fragments; `usageMetadata` rides on the
    chunks and is complete on the one with the `finishReason`."""

    def __init__(self, *, model: str, include_usage: bool, created: int | None = None) -> None:
        self._include_usage = include_usage
        self._out = openai_response.OpenAIChunks(model=model, created=created, chunk_id="")
        self._started = False
        self._calls = 0
        self._position = 0
        self.usage: JSON | None = None
        self.finished = False

    def feed(self, resp: JSON) -> list[JSON]:
        chunks: list[JSON] = []
        if not self._started:
            self._out.id = _completion_id(resp)
            self._started = True
            chunks.append(self._out.chunk({"role": "assistant", "content": ""}))
        if isinstance(resp.get("usageMetadata"), dict):
            self.usage = gemini_usage_to_openai(resp["usageMetadata"])
        candidates = resp.get("candidates") or []
        candidate = candidates[0] if candidates else {}
        for part in _parts(candidate):
            chunks.extend(self._part(resp, part))
        if (candidate or {}).get("finishReason") or (not candidates and _blocked(resp)):
            chunks.append(self._out.chunk({}, finish_reason(candidate, resp, self._calls > 0)))
            self.finished = True
            if self._include_usage:
                chunks.append(self._out.usage_chunk(self.usage or gemini_usage_to_openai({})))
        return chunks

    def _part(self, resp: JSON, part: JSON) -> list[JSON]:
        position, self._position = self._position, self._position + 1
        if part.get("thought"):
            return []
        if "functionCall" in part:
            call = _tool_call(resp, position, part)
            call["index"], self._calls = self._calls, self._calls + 1
            return [self._out.chunk({"tool_calls": [call]})]
        if part.get("text"):
            return [self._out.chunk({"content": part["text"]})]
        return []


def _blocked(resp: JSON) -> bool:
    return bool((resp.get("promptFeedback") or {}).get("blockReason"))
