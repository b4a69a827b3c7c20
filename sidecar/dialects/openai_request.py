"""Reading an OpenAI Chat Completions request the way both block-based targets need it.

Anthropic Messages and Bedrock Converse read an OpenAI request alike: system/developer messages
are hoisted, in order, out of the turns; consecutive turns of one role merge; a trailing assistant
turn (prefill) loses its trailing whitespace; tool-call arguments must be a JSON object. They
differ only in the shape of the blocks they build, which each target passes in as `BlockShapes`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from sidecar.dialects.errors import TranslationError

JSON = dict[str, Any]


def _keep(block: JSON, part: JSON) -> JSON:
    return block


@dataclass(frozen=True, slots=True)
class BlockShapes:
    text: Callable[[str], JSON]
    # (file, where, index of the part): Bedrock names unnamed documents by their index.
    document: Callable[[JSON, str, int], JSON]
    image: Callable[[JSON, str], JSON]
    tool_use: Callable[[Any, Any, JSON], JSON]  # (id, name, input)
    tool_result: Callable[[Any, list[JSON]], JSON]  # (tool_call_id, text blocks)
    # A block built from a content part gets what the part asks for beyond its content.
    mark: Callable[[JSON, JSON], JSON] = _keep
    # The Anthropic translation has always refused a legacy `function_call` in an assistant
    # message; the Bedrock one drops it.
    rejects_function_call: bool = False


def split_messages(messages: list[JSON], shapes: BlockShapes) -> tuple[list[JSON], list[JSON]]:
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(text_blocks(msg.get("content"), f"{where}.content", shapes))
        elif role == "user":
            _append_turn(
                turns, "user", _user_blocks(msg.get("content"), f"{where}.content", shapes)
            )
        elif role == "assistant":
            _append_turn(turns, "assistant", _assistant_blocks(msg, where, shapes))
        elif role == "tool":
            _append_turn(turns, "user", [_tool_result(msg, where, shapes)])
        else:
            raise TranslationError(
                f"messages with role {role!r} are not supported", f"{where}.role"
            )
    _strip_prefill(turns)
    return system, turns


def _append_turn(turns: list[JSON], role: str, blocks: list[JSON]) -> None:
    # Converse requires alternating roles; merging for Anthropic too keeps the targets alike.
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _strip_prefill(turns: list[JSON]) -> None:
    # Anthropic rejects a prefill that ends in whitespace (a 400). In both shapes only text blocks
    # have a `text` key.
    if not turns or turns[-1]["role"] != "assistant":
        return
    blocks = turns[-1]["content"]
    last = blocks[-1]
    if "text" in last:
        last["text"] = last["text"].rstrip()
        if not last["text"]:
            blocks.pop()
    if not blocks:
        turns.pop()


def text_blocks(content: Any, where: str, shapes: BlockShapes) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [shapes.text(content)] if content else []
    blocks: list[JSON] = []
    for part in content:
        if part.get("type") not in ("text", "refusal"):
            raise TranslationError(
                f"content parts of type {part.get('type')!r} are not allowed here", where
            )
        text = part.get("text") if part["type"] == "text" else part.get("refusal")
        if text:
            blocks.append(shapes.mark(shapes.text(text), part))
    return blocks


def _user_blocks(content: Any, where: str, shapes: BlockShapes) -> list[JSON]:
    if content is None or isinstance(content, str):
        return text_blocks(content, where, shapes)
    blocks: list[JSON] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        at = f"{where}[{j}]"
        if kind == "text":
            blocks.extend(text_blocks([part], at, shapes))
        elif kind == "image_url":
            blocks.append(shapes.mark(shapes.image(part.get("image_url") or {}, at), part))
        elif kind == "file":
            blocks.append(shapes.mark(shapes.document(part.get("file") or {}, at, j), part))
        elif kind == "input_audio":
            raise TranslationError("audio input is not supported by this backend", at)
        else:
            raise TranslationError(f"content parts of type {kind!r} are not supported", at)
    return blocks


def _assistant_blocks(msg: JSON, where: str, shapes: BlockShapes) -> list[JSON]:
    if shapes.rejects_function_call and msg.get("function_call"):
        raise TranslationError("legacy `function_call` is not supported; use `tool_calls`", where)
    blocks = text_blocks(msg.get("content"), f"{where}.content", shapes)
    if msg.get("refusal") and not blocks:
        blocks.append(shapes.text(msg["refusal"]))
    for j, call in enumerate(msg.get("tool_calls") or []):
        fn = call.get("function") or {}
        arguments = arguments_object(
            fn.get("arguments"), f"{where}.tool_calls[{j}].function.arguments"
        )
        blocks.append(shapes.tool_use(call.get("id"), fn.get("name"), arguments))
    return blocks


def _tool_result(msg: JSON, where: str, shapes: BlockShapes) -> JSON:
    blocks = text_blocks(msg.get("content"), f"{where}.content", shapes)
    return shapes.tool_result(msg.get("tool_call_id"), blocks)


def arguments_object(arguments: Any, where: str) -> JSON:
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise TranslationError("tool call arguments are not valid JSON", where) from None
    if not isinstance(value, dict):
        raise TranslationError("tool call arguments must be a JSON object", where)
    return value


def file_data(file: JSON, where: str) -> str:
    if not file.get("file_data"):
        raise TranslationError("files by `file_id` are not supported by this backend", where)
    return str(file["file_data"])


def data_uri(url: str, where: str, *, expected: str) -> tuple[str, str]:
    """The media type and the still-encoded base64 data of a `data:` URI."""
    head, sep, data = url.partition(",")
    if not (sep and head.startswith("data:") and head.endswith(";base64")):
        raise TranslationError(expected, where)
    return head[5 : -len(";base64")].lower(), data


def function_of(tool: JSON, i: int) -> JSON:
    if tool.get("type", "function") != "function":
        raise TranslationError(
            f"tools of type {tool.get('type')!r} are not supported", f"tools[{i}].type"
        )
    fn: JSON = tool.get("function") or {}
    return fn


def json_schema_of(fmt: Any) -> JSON | None:
    """The `json_schema` of a `response_format`, or None when the answer is plain text."""
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] != "json_schema":
        raise TranslationError(
            f"response_format {fmt['type']!r} is not supported by this backend; use json_schema",
            "response_format",
        )
    spec: JSON = fmt.get("json_schema") or {}
    return spec


def reject_untranslatable(body: JSON) -> None:
    """What of a chat request no vendor but OpenAI can answer (Converse, Gemini): a
    TranslationError naming the field."""
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("`n` > 1 is not supported by this backend", "n")
    for field in ("functions", "function_call", "audio", "logit_bias", "web_search_options"):
        if body.get(field):
            raise TranslationError(f"`{field}` is not supported by this backend", field)
    if body.get("logprobs") or body.get("top_logprobs"):
        raise TranslationError("logprobs are not supported by this backend", "logprobs")
    if "audio" in (body.get("modalities") or []):
        raise TranslationError("audio output is not supported by this backend", "modalities")
