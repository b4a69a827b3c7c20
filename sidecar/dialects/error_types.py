"""The error type each dialect gives an HTTP status: the one table for every error the caller sees,
whether the sidecar wrote it or translated an upstream's.

Statuses not listed: OpenAI `server_error` from 500 up, else `invalid_request_error`; Anthropic
`api_error` from 500 up, else `invalid_request_error`.
"""

from typing import Final

#        status   OpenAI `error.type`       Anthropic `error.type`
ERROR_TYPES: Final[dict[int, tuple[str, str]]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    402: ("invalid_request_error", "billing_error"),
    403: ("permission_error", "permission_error"),
    404: ("not_found_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    408: ("timeout", "timeout_error"),
    409: ("invalid_request_error", "conflict_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_exceeded", "rate_limit_error"),
    502: ("bad_gateway", "api_error"),
    503: ("service_unavailable", "overloaded_error"),
    504: ("timeout", "timeout_error"),
    529: ("server_error", "overloaded_error"),
}


def openai_error_type(status: int) -> str:
    row = ERROR_TYPES.get(status)
    if row is not None:
        return row[0]
    return "server_error" if status >= 500 else "invalid_request_error"


def anthropic_error_type(status: int) -> str:
    row = ERROR_TYPES.get(status)
    if row is not None:
        return row[1]
    return "api_error" if status >= 500 else "invalid_request_error"
