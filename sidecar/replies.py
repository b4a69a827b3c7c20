"""What the caller gets when the chain has no answer to relay: an upstream's failure, or the
sidecar's own error when every backend failed, was skipped, or the budget ran out (README
"Failure classes"). Bodies are in the caller's dialect; error types come from one table
(`sidecar.dialects.error_types`).
"""

from dataclasses import dataclass, field

import orjson

from sidecar.call import Dialect, Route
from sidecar.circuit import retry_after_header
from sidecar.dialects.caller import error_body
from sidecar.failure import Failure, FailureClass, status_of

F = FailureClass


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def failure_reply(dialect: Dialect, f: Failure, backend: str) -> Reply:
    if f.status is not None and f.body is not None and f.cls is not F.INVALID_RESPONSE:
        return Reply(f.status, f.body, dict(f.headers), f.content_type)
    status = status_of(f.cls)
    if f.body is not None and f.status is None and f.cls is not F.INVALID_RESPONSE:
        # An in-band error event before content: its own body, a status of the same meaning,
        # and the wait it asked for (Gemini's RetryInfo) as the caller's Retry-After.
        headers = dict(f.headers)
        if f.retry_after_s is not None:
            headers.setdefault("retry-after", retry_after_header(f.retry_after_s))
        return Reply(status, _event_body(f.body), headers)
    message = f"backend {backend!r} failed: {f.detail} ({f.cls})"
    return Reply(status, error_body(dialect, status, message, code=f.cls.value))


def budget_spent(dialect: Dialect, chain: str) -> Reply:
    msg = f"no backend of chain {chain!r} answered within SIDECAR_REQUEST_TIMEOUT_S"
    return Reply(504, error_body(dialect, 504, msg, code="timeout"))


def circuits_open(dialect: Dialect, chain: str, wait_s: float) -> Reply:
    """`wait_s`: until the first of them may be tried again (circuit cooldown or rate-limit
    reset)."""
    msg = f"every backend of chain {chain!r} is cooling down (circuit open)"
    return Reply(
        503,
        error_body(dialect, 503, msg, code="circuit_open"),
        {"retry-after": retry_after_header(wait_s)},
    )


def untranslatable(dialect: Dialect, message: str, param: str | None) -> Reply:
    return Reply(400, error_body(dialect, 400, message, param=param))


def unsupported(dialect: Dialect, chain: str, route: Route) -> Reply:
    msg = f"no backend of chain {chain!r} serves this route"
    if route is Route.COUNT_TOKENS:
        # Counting is the serving model's own tokenizer: no other backend can guess it.
        error = {
            "type": "not_supported",
            "message": msg + " (count_tokens needs an anthropic or bedrock backend)",
        }
        return Reply(501, orjson.dumps({"type": "error", "error": error}))
    return Reply(400, error_body(dialect, 400, msg, code="unsupported"))


def _event_body(event: bytes) -> bytes:
    # `data: {...}\n\n` (OpenAI) or `event: error\ndata: {...}\n\n` (Anthropic) → the JSON.
    for line in event.splitlines():
        if line.startswith(b"data:"):
            return line[5:].strip()
    return event
