"""The normalised inbound request that routes hand to a chain."""

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Route(enum.StrEnum):
    CHAT_COMPLETIONS = "chat_completions"
    MESSAGES = "messages"
    EMBEDDINGS = "embeddings"
    MODELS = "models"
    PASSTHROUGH = "passthrough"
    OTHER = "other"


class Dialect(enum.StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


@dataclass(slots=True)
class Call:
    route: Route
    dialect: Dialect
    method: str
    # The path after `/v1/` and the raw query string, for pass-through.
    path: str
    query: str
    raw: bytes
    # Parsed JSON for the routes the sidecar understands; None for pass-through.
    body: dict[str, Any] | None
    stream: bool
    model: str | None
    # Caller headers that may go upstream (already filtered), lower-case names.
    headers: Mapping[str, str]
    request_id: str
    chain: str

    @property
    def include_usage(self) -> bool:
        opts = self.body.get("stream_options") if self.body else None
        return isinstance(opts, dict) and bool(opts.get("include_usage"))
