"""What went wrong with an attempt, and what the chain does about it.

Rules (README "Failure classes"), in the order they are applied to an upstream answer:

    upstream answer                                  class
    -----------------------------------------------  ------------------
    no response: refused, DNS, TLS, reset            connect_error
    no response in time (connect / first token /     timeout
      response deadline, before commit)
    3xx (redirects are never followed)               invalid_response
    2xx that cannot be parsed                        invalid_response
    429 + code insufficient_quota, 402, or           quota_exhausted
      Anthropic billing_error, or Google
      RESOURCE_EXHAUSTED with a per-day quota or
      depleted credits
    429 (Google RESOURCE_EXHAUSTED otherwise)        rate_limited
    400 + context_length_exceeded, or Anthropic      context_length
      invalid_request_error "prompt is too long",
      or Google INVALID_ARGUMENT "exceeds the
      maximum number of tokens"
    401, 403                                         auth
    424 + Bedrock ModelErrorException                server_error
    504 + Google DEADLINE_EXCEEDED                   timeout
    503, 529 (Google UNAVAILABLE)                    overloaded
    other 5xx                                        server_error
    other 4xx                                        client_error

An error event before the first content event is classified by meaning (`ERROR_CODES` below);
after commit a cut or stall is `stream_interrupted` / `stream_timeout`. A body cut before the
commit point is what the upstream did before any content: `server_error` (`before_commit`).

How a backend's turn that ended in a fallback class counts for its circuit (`opens_at_once`):

    class                                            circuit
    -----------------------------------------------  ------------------------------------------
    quota_exhausted                                  opens at once, for the cooldown
    rate_limited with a Retry-After                  opens at once, for the Retry-After (capped)
    any other fallback class                         one more in the run of consecutive failures

Which classes move on to the next backend is configuration (`SIDECAR_FALLBACK_ON`); which classes
get the per-backend `RETRIES` is fixed (`RETRYABLE`): a timeout is never retried on the same
backend, since a slow backend stays slow and the budget is the caller's.
"""

import enum
from dataclasses import dataclass, field
from typing import Any

import orjson


class FailureClass(enum.StrEnum):
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    CONTEXT_LENGTH = "context_length"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    CONNECT_ERROR = "connect_error"
    TIMEOUT = "timeout"
    AUTH = "auth"
    CLIENT_ERROR = "client_error"
    INVALID_RESPONSE = "invalid_response"
    CIRCUIT_OPEN = "circuit_open"
    UNSUPPORTED = "unsupported"
    STREAM_INTERRUPTED = "stream_interrupted"
    STREAM_TIMEOUT = "stream_timeout"


F = FailureClass

DEFAULT_FALLBACK_ON = frozenset(
    {
        F.RATE_LIMITED,
        F.QUOTA_EXHAUSTED,
        F.OVERLOADED,
        F.SERVER_ERROR,
        F.CONNECT_ERROR,
        F.TIMEOUT,
        F.CONTEXT_LENGTH,
    }
)

RETRYABLE = frozenset({F.RATE_LIMITED, F.OVERLOADED, F.SERVER_ERROR, F.CONNECT_ERROR})

# What an I/O failure means when it happens before the commit point.
_BEFORE_COMMIT: dict[FailureClass, FailureClass] = {F.STREAM_INTERRUPTED: F.SERVER_ERROR}


def before_commit(cls: FailureClass) -> FailureClass:
    return _BEFORE_COMMIT.get(cls, cls)


def opens_at_once(cls: FailureClass, retry_after_s: float | None) -> bool:
    return cls is F.QUOTA_EXHAUSTED or (cls is F.RATE_LIMITED and retry_after_s is not None)


@dataclass(slots=True)
class Failure:
    """The one shape of "the upstream failed", before or after the commit point."""

    cls: FailureClass
    detail: str
    status: int | None = None
    # The upstream's error body or error event, already in the caller's dialect and redacted.
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None
    # The chain's budget, not the backend, cut the attempt short.
    budget_spent: bool = False
    content_type: str = "application/json"


# Provider error codes and types (OpenAI `error.code`/`error.type`, Anthropic `error.type`,
# Bedrock exception names). They refine an ambiguous status (`_REFINES`) and classify error
# events before content, which can only be overloaded, rate_limited, quota or server_error.
ERROR_CODES: dict[str, FailureClass] = {
    "insufficient_quota": F.QUOTA_EXHAUSTED,
    "billing_error": F.QUOTA_EXHAUSTED,
    "credit_balance_exhausted": F.QUOTA_EXHAUSTED,
    "context_length_exceeded": F.CONTEXT_LENGTH,
    "rate_limit_error": F.RATE_LIMITED,
    "rate_limit_exceeded": F.RATE_LIMITED,
    "throttlingexception": F.RATE_LIMITED,
    "overloaded_error": F.OVERLOADED,
    "server_is_overloaded": F.OVERLOADED,
    "slow_down": F.OVERLOADED,
    "serviceunavailableexception": F.OVERLOADED,
    "modelnotreadyexception": F.OVERLOADED,
    "modelerrorexception": F.SERVER_ERROR,
    # Google's `error.status` (Gemini, Vertex AI).
    "resource_exhausted": F.RATE_LIMITED,
    "unavailable": F.OVERLOADED,
    "deadline_exceeded": F.TIMEOUT,
}

# Statuses whose meaning a provider code may refine; elsewhere the status alone decides.
_REFINES: dict[int, frozenset[FailureClass]] = {
    400: frozenset({F.CONTEXT_LENGTH, F.QUOTA_EXHAUSTED}),
    402: frozenset({F.QUOTA_EXHAUSTED}),
    403: frozenset({F.QUOTA_EXHAUSTED}),
    424: frozenset({F.SERVER_ERROR}),
    429: frozenset({F.QUOTA_EXHAUSTED}),
    504: frozenset({F.TIMEOUT}),
}

_PROMPT_TOO_LONG = "prompt is too long"
# Google's words for a prompt over the model's window (INVALID_ARGUMENT), and for a quota that
# waiting a minute will not restore (RESOURCE_EXHAUSTED): a per-day quota id, or credits gone.
_GOOGLE_TOO_LONG = "exceeds the maximum number of tokens"
_GOOGLE_QUOTA_WORDS = ("perday", "credits are depleted", "billing account")


# The status a caller sees for a failure that had no HTTP status of its own (an in-band error
# event, a malformed answer, no answer at all).
_STATUS_OF: dict[FailureClass, int] = {
    F.RATE_LIMITED: 429,
    F.QUOTA_EXHAUSTED: 429,
    F.OVERLOADED: 503,
    F.TIMEOUT: 504,
    F.AUTH: 403,
    F.CLIENT_ERROR: 400,
    F.CONTEXT_LENGTH: 400,
}


def status_of(cls: FailureClass) -> int:
    return _STATUS_OF.get(cls, 502)


def classify_status(status: int, body: bytes) -> FailureClass | None:
    """The class of a non-2xx upstream answer, or None for a 2xx."""
    if 200 <= status < 300:
        return None
    refinable = _REFINES.get(status)
    if refinable is not None:
        by_code = code_class(error_codes(body))
        if by_code in refinable:
            return by_code
    return _by_status(status)


def _by_status(status: int) -> FailureClass:
    if 300 <= status < 400:
        return F.INVALID_RESPONSE
    if status == 429:
        return F.RATE_LIMITED
    if status in (401, 403):
        return F.AUTH
    if status in (503, 529):
        return F.OVERLOADED
    if status >= 500:
        return F.SERVER_ERROR
    return F.CLIENT_ERROR


def classify_error_event(error: Any) -> FailureClass:
    """An in-band error event received before the first content event."""
    cls = code_class(_codes_of(error))
    return cls if cls in (F.OVERLOADED, F.RATE_LIMITED, F.QUOTA_EXHAUSTED) else F.SERVER_ERROR


def code_class(codes: list[str]) -> FailureClass | None:
    for code in codes:
        cls = ERROR_CODES.get(code.lower())
        if cls is not None:
            return cls
        if code.startswith(_PROMPT_TOO_LONG):
            return F.CONTEXT_LENGTH
    return None


def error_codes(body: bytes) -> list[str]:
    """Codes and types named by an upstream error body, in any of the providers' shapes."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    return _codes_of(parsed)


def _codes_of(parsed: Any) -> list[str]:
    # Gemini wraps its error object in a list.
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        return []
    error = parsed.get("error", parsed)
    if not isinstance(error, dict):
        return []
    codes = _google_codes(error)
    codes += [str(error[k]) for k in ("code", "type", "status", "__type") if error.get(k)]
    message = error.get("message")
    prompt_too_long = isinstance(message, str) and _PROMPT_TOO_LONG in message.lower()
    if error.get("type") == "invalid_request_error" and prompt_too_long:
        codes.append(_PROMPT_TOO_LONG)
    return codes


def _google_codes(error: dict[str, Any]) -> list[str]:
    """The OpenAI code a Google error means, where its `status` alone says less: first, so that
    it wins over the status."""
    status, message = error.get("status"), str(error.get("message") or "").lower()
    if status == "INVALID_ARGUMENT" and _GOOGLE_TOO_LONG in message:
        return ["context_length_exceeded"]
    if status == "RESOURCE_EXHAUSTED":
        said = message + orjson.dumps(error.get("details") or []).decode().lower()
        if any(word in said for word in _GOOGLE_QUOTA_WORDS):
            return ["insufficient_quota"]
    return []
