"""The sidecar's own error bodies in the caller's dialect (`sidecar.dialects.caller`), pure."""

import orjson

from sidecar.call import Dialect
from sidecar.dialects.caller import error_body


def test_an_openai_caller_gets_the_openai_envelope_with_code_and_param() -> None:
    body = error_body(Dialect.OPENAI, 429, "slow down", code="rate_limited", param="model")
    assert orjson.loads(body) == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_exceeded",
            "param": "model",
            "code": "rate_limited",
        }
    }


def test_an_openai_envelope_always_has_param_and_code_even_when_null() -> None:
    error = orjson.loads(error_body(Dialect.OPENAI, 500, "down"))["error"]
    assert (error["type"], error["param"], error["code"]) == ("server_error", None, None)


def test_an_anthropic_caller_gets_the_anthropic_envelope_typed_by_status() -> None:
    body = error_body(Dialect.ANTHROPIC, 503, "busy", code="overloaded", param="x")
    # Anthropic's errors have no code or param: they are not carried over.
    assert orjson.loads(body) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }
