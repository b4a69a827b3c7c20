"""Writing OpenAI Chat Completions answers from a block-based vendor's answer.

Anthropic Messages and Bedrock Converse answers become the same OpenAI shapes: one assistant
message of joined text and tool calls, usage whose `prompt_tokens` includes the cached tokens
(both vendors count them apart), reasoning as `reasoning_content` (what vLLM and DeepSeek send),
and stream chunks that number tool calls in the order they open.
"""

import time
from typing import Any, Final

import orjson

JSON = dict[str, Any]

REASONING_KEYS: Final = ("reasoning_content", "reasoning")


def tool_call(call_id: Any, name: Any, arguments: Any) -> JSON:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments or {}).decode()},
    }


def reasoning_text(holder: JSON) -> str:
    """The reasoning on a chat message or delta. OpenAI-compatible servers name it
    `reasoning_content` (vLLM, DeepSeek) or `reasoning` (Ollama, OpenRouter): both are read; the
    pivot writes `reasoning_content`."""
    for key in REASONING_KEYS:
        value = holder.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def assistant_message(texts: list[str], calls: list[JSON], reasoning: str = "") -> JSON:
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return message


def chat_completion(
    *, completion_id: str, created: int | None, model: str, message: JSON, finish: str, usage: JSON
) -> JSON:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage,
    }


def usage_including_cache(
    *, uncached_prompt: int, cache_read: int, cache_write: int, completion: int
) -> JSON:
    prompt = uncached_prompt + cache_read + cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read, "cache_write_tokens": cache_write},
    }


class OpenAIChunks:
    """The chunks of one translated stream; `id` may be learnt after the first event."""

    def __init__(self, *, model: str, created: int | None, chunk_id: str) -> None:
        self.id = chunk_id
        self._model = model
        self._created = int(time.time()) if created is None else created
        # The vendor's content-block index → the OpenAI tool-call index.
        self._tool_index: dict[int, int] = {}

    def chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def usage_chunk(self, usage: JSON) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": usage,
        }

    def tool_start(self, block: int, call_id: Any, name: Any) -> list[JSON]:
        k = self._tool_index[block] = len(self._tool_index)
        call = {
            "index": k,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return [self.chunk({"tool_calls": [call]})]

    def tool_arguments(self, block: int, fragment: Any) -> list[JSON]:
        k = self._tool_index.get(block)
        if not fragment or k is None:
            return []
        return [self.chunk({"tool_calls": [{"index": k, "function": {"arguments": fragment}}]})]
