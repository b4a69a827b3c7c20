"""The one classification table (README "Failure classes")."""

import orjson
import pytest

from sidecar.failure import DEFAULT_FALLBACK_ON, FailureClass, classify_error_event, classify_status

F = FailureClass


def err(**error: str) -> bytes:
    return orjson.dumps({"error": error})


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (200, b"", None),
        (204, b"", None),
        (301, b"", F.INVALID_RESPONSE),
        (307, b"", F.INVALID_RESPONSE),
        (400, b"", F.CLIENT_ERROR),
        (400, err(code="context_length_exceeded"), F.CONTEXT_LENGTH),
        (
            400,
            err(type="invalid_request_error", message="prompt is too long: 210000 tokens > 200000"),
            F.CONTEXT_LENGTH,
        ),
        (
            400,
            err(type="invalid_request_error", message="temperature is not supported"),
            F.CLIENT_ERROR,
        ),
        (401, b"", F.AUTH),
        (
            402,
            orjson.dumps({"type": "error", "error": {"type": "billing_error", "message": "x"}}),
            F.QUOTA_EXHAUSTED,
        ),
        (402, b"", F.CLIENT_ERROR),
        (403, b"", F.AUTH),
        (404, b"", F.CLIENT_ERROR),
        (408, b"", F.CLIENT_ERROR),
        (
            424,
            orjson.dumps({"message": "model failed", "__type": "ModelErrorException"}),
            F.SERVER_ERROR,
        ),
        (424, b"", F.CLIENT_ERROR),
        (422, b"", F.CLIENT_ERROR),
        (429, b"", F.RATE_LIMITED),
        (429, err(code="insufficient_quota", type="insufficient_quota"), F.QUOTA_EXHAUSTED),
        (429, b'[{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}]', F.RATE_LIMITED),
        (
            429,
            err(code="429", message="Requests to the ChatCompletions_Create Operation"),
            F.RATE_LIMITED,
        ),
        (500, b"", F.SERVER_ERROR),
        (500, err(code="context_length_exceeded"), F.SERVER_ERROR),
        (502, b"not json", F.SERVER_ERROR),
        (503, b"", F.OVERLOADED),
        (529, b"", F.OVERLOADED),
        (504, b"", F.SERVER_ERROR),
    ],
)
def test_status_and_provider_code_decide_the_class(
    status: int, body: bytes, cls: FailureClass | None
) -> None:
    assert classify_status(status, body) == cls


@pytest.mark.parametrize(
    ("event", "cls"),
    [
        ({"error": {"type": "overloaded_error", "message": "busy"}}, F.OVERLOADED),
        ({"type": "error", "error": {"type": "overloaded_error"}}, F.OVERLOADED),
        ({"error": {"code": "server_is_overloaded"}}, F.OVERLOADED),
        ({"error": {"code": "slow_down"}}, F.OVERLOADED),
        ({"error": {"type": "rate_limit_error"}}, F.RATE_LIMITED),
        ({"__type": "ThrottlingException"}, F.RATE_LIMITED),
        ({"__type": "serviceUnavailableException"}, F.OVERLOADED),
        ({"error": {"type": "server_error", "message": "boom"}}, F.SERVER_ERROR),
        ({"error": "a string"}, F.SERVER_ERROR),
    ],
)
def test_error_events_before_content_are_classified_by_meaning(
    event: object, cls: FailureClass
) -> None:
    assert classify_error_event(event) == cls


def test_default_fallback_classes_are_the_contracts() -> None:
    assert {c.value for c in DEFAULT_FALLBACK_ON} == {
        "rate_limited",
        "quota_exhausted",
        "overloaded",
        "server_error",
        "connect_error",
        "timeout",
        "context_length",
    }


def google(status: int, google_status: str, message: str = "x", **extra: object) -> bytes:
    return orjson.dumps(
        {"error": {"code": status, "message": message, "status": google_status, **extra}}
    )


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (429, google(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"), F.RATE_LIMITED),
        (
            429,
            google(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded",
                details=[{"violations": [{"quotaId": "GenerateRequestsPerDayPerProject"}]}],
            ),
            F.QUOTA_EXHAUSTED,
        ),
        (
            429,
            google(429, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted"),
            F.QUOTA_EXHAUSTED,
        ),
        (
            429,
            orjson.dumps(
                [{"error": {"code": 429, "message": "x", "status": "RESOURCE_EXHAUSTED"}}]
            ),
            F.RATE_LIMITED,
        ),
        (503, google(503, "UNAVAILABLE"), F.OVERLOADED),
        (504, google(504, "DEADLINE_EXCEEDED"), F.TIMEOUT),
        (504, b"", F.SERVER_ERROR),
        (
            400,
            google(
                400,
                "INVALID_ARGUMENT",
                "The input token count exceeds the maximum number of tokens allowed 1048576",
            ),
            F.CONTEXT_LENGTH,
        ),
        (400, google(400, "INVALID_ARGUMENT", "Invalid JSON payload"), F.CLIENT_ERROR),
        (403, google(403, "PERMISSION_DENIED"), F.AUTH),
    ],
)
def test_google_errors_are_classified_by_status_and_wording(
    status: int, body: bytes, cls: FailureClass
) -> None:
    assert classify_status(status, body) is cls


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        ("RESOURCE_EXHAUSTED", F.RATE_LIMITED),
        ("UNAVAILABLE", F.OVERLOADED),
        ("INTERNAL", F.SERVER_ERROR),
    ],
)
def test_google_error_events_before_content_are_classified_by_status(
    status: str, cls: FailureClass
) -> None:
    assert classify_error_event({"error": {"code": 500, "message": "x", "status": status}}) is cls
