"""What the caller gets when the chain has no answer to relay (`sidecar.replies`): the upstream's
own failure when it has one, else the sidecar's error in the caller's dialect (pure)."""

from typing import Any

import orjson
import pytest

from sidecar.call import Dialect, Route
from sidecar.failure import Failure, FailureClass
from sidecar.replies import (
    budget_spent,
    circuits_open,
    failure_reply,
    unsupported,
    untranslatable,
)

F = FailureClass


def error_of(body: bytes) -> dict[str, Any]:
    error: dict[str, Any] = orjson.loads(body)["error"]
    return error


def test_an_upstream_error_answer_is_relayed_with_its_status_headers_and_content_type() -> None:
    f = Failure(
        F.RATE_LIMITED,
        "429",
        status=429,
        body=b"slow down",
        headers={"retry-after": "7"},
        content_type="text/plain",
    )
    reply = failure_reply(Dialect.OPENAI, f, "b0")
    assert (reply.status, reply.body, reply.headers, reply.content_type) == (
        429,
        b"slow down",
        {"retry-after": "7"},
        "text/plain",
    )
    reply.headers["x"] = "y"
    assert f.headers == {"retry-after": "7"}  # the reply's headers are its own copy


def test_an_unreadable_answer_is_replaced_by_the_sidecars_own_502_naming_the_backend() -> None:
    f = Failure(F.INVALID_RESPONSE, "a redirect", status=302, body=b"<html>moved</html>")
    reply = failure_reply(Dialect.OPENAI, f, "b0")
    assert reply.status == 502
    error = error_of(reply.body)
    assert error["code"] == "invalid_response"
    assert error["message"] == "backend 'b0' failed: a redirect (invalid_response)"
    assert b"moved" not in reply.body


@pytest.mark.parametrize(
    ("event", "json"),
    [
        (b'data: {"error": {"message": "busy"}}\n\n', b'{"error": {"message": "busy"}}'),
        (
            b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error"}}\n\n',
            b'{"type": "error", "error": {"type": "overloaded_error"}}',
        ),
    ],
    ids=["openai", "anthropic"],
)
def test_an_error_event_before_content_becomes_its_json_with_a_status_of_its_meaning(
    event: bytes, json: bytes
) -> None:
    reply = failure_reply(Dialect.OPENAI, Failure(F.OVERLOADED, "event", body=event), "b0")
    assert (reply.status, reply.body) == (503, json)


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (F.CONNECT_ERROR, 502),
        (F.TIMEOUT, 504),
        (F.OVERLOADED, 503),
        (F.RATE_LIMITED, 429),
        (F.STREAM_INTERRUPTED, 502),
    ],
)
def test_a_failure_without_an_answer_is_the_sidecars_error_with_the_class_as_code(
    cls: FailureClass, status: int
) -> None:
    reply = failure_reply(Dialect.OPENAI, Failure(cls, "no answer"), "b1")
    assert reply.status == status
    assert reply.content_type == "application/json"
    assert error_of(reply.body)["code"] == cls.value
    assert "'b1'" in error_of(reply.body)["message"]


def test_the_sidecars_errors_for_anthropic_callers_have_the_anthropic_shape() -> None:
    reply = failure_reply(Dialect.ANTHROPIC, Failure(F.OVERLOADED, "busy"), "b0")
    body = orjson.loads(reply.body)
    assert body["type"] == "error"
    assert body["error"]["type"] == "overloaded_error"
    assert "busy" in body["error"]["message"]


def test_a_spent_budget_is_a_504_naming_the_setting() -> None:
    reply = budget_spent(Dialect.OPENAI, "default")
    assert reply.status == 504
    error = error_of(reply.body)
    assert error["code"] == "timeout"
    assert "SIDECAR_REQUEST_TIMEOUT_S" in error["message"]
    assert "'default'" in error["message"]


@pytest.mark.parametrize(("wait_s", "header"), [(12.5, "13"), (0.2, "1"), (0.0, "1")])
def test_open_circuits_are_a_503_with_retry_after_the_wait_in_whole_seconds_at_least_one(
    wait_s: float, header: str
) -> None:
    reply = circuits_open(Dialect.ANTHROPIC, "default", wait_s)
    assert reply.status == 503
    assert reply.headers == {"retry-after": header}
    assert orjson.loads(reply.body)["error"]["type"] == "overloaded_error"


def test_an_untranslatable_request_is_a_400_naming_the_parameter() -> None:
    reply = untranslatable(Dialect.OPENAI, "audio input is not supported", "messages[0]")
    assert reply.status == 400
    error = error_of(reply.body)
    assert (error["param"], error["type"]) == ("messages[0]", "invalid_request_error")


def test_a_route_no_backend_serves_is_a_400_coded_unsupported() -> None:
    reply = unsupported(Dialect.OPENAI, "default", Route.EMBEDDINGS)
    assert reply.status == 400
    assert error_of(reply.body)["code"] == "unsupported"


def test_token_counting_no_backend_serves_is_a_501_naming_the_kinds_that_can() -> None:
    reply = unsupported(Dialect.ANTHROPIC, "default", Route.COUNT_TOKENS)
    assert reply.status == 501
    error = orjson.loads(reply.body)["error"]
    assert error["type"] == "not_supported"
    assert "anthropic or bedrock" in error["message"]
