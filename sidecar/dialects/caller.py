"""Errors the sidecar itself writes, in the caller's dialect (CONTRACT §8)."""

import orjson

from sidecar.call import Dialect
from sidecar.dialects import openai

_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(
    dialect: Dialect,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    if dialect is Dialect.ANTHROPIC:
        error = {"type": anthropic_error_type(status), "message": message}
        return orjson.dumps({"type": "error", "error": error})
    return openai.error_body(message, status=status, code=code, param=param)
