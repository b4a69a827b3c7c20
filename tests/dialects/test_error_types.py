"""The one status → error type table (`sidecar.dialects.error_types`) and its rules for the
statuses it does not list (pure)."""

import pytest

from sidecar.dialects.error_types import ERROR_TYPES, anthropic_error_type, openai_error_type


@pytest.mark.parametrize("status", [500, 501, 507, 599])
def test_unlisted_server_statuses_are_server_errors_in_both_dialects(status: int) -> None:
    assert status not in ERROR_TYPES
    assert (openai_error_type(status), anthropic_error_type(status)) == (
        "server_error",
        "api_error",
    )


@pytest.mark.parametrize("status", [406, 410, 418, 422, 451])
def test_unlisted_client_statuses_are_invalid_requests_in_both_dialects(status: int) -> None:
    assert status not in ERROR_TYPES
    assert openai_error_type(status) == anthropic_error_type(status) == "invalid_request_error"


@pytest.mark.parametrize(
    ("status", "openai", "anthropic"),
    [
        (429, "rate_limit_exceeded", "rate_limit_error"),
        (503, "service_unavailable", "overloaded_error"),
        (529, "server_error", "overloaded_error"),  # Anthropic's own overload status
        (402, "invalid_request_error", "billing_error"),
        (504, "timeout", "timeout_error"),
        (401, "authentication_error", "authentication_error"),
    ],
)
def test_listed_statuses_have_each_dialects_own_type(
    status: int, openai: str, anthropic: str
) -> None:
    assert (openai_error_type(status), anthropic_error_type(status)) == (openai, anthropic)


def test_the_table_lists_only_error_statuses() -> None:
    assert all(400 <= status < 600 for status in ERROR_TYPES)
