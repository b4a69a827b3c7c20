"""Errors the sidecar itself writes, in the caller's dialect (README "Routes and headers")."""

import orjson

from sidecar.call import Dialect
from sidecar.dialects import openai
from sidecar.dialects.error_types import anthropic_error_type


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
