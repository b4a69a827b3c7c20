"""The normalised request (`sidecar.call`): what a caller's body says about usage (pure)."""

from typing import Any

import pytest

from sidecar.call import Call, Dialect, Route


def call(body: dict[str, Any] | None) -> Call:
    return Call(
        route=Route.CHAT_COMPLETIONS,
        dialect=Dialect.OPENAI,
        method="POST",
        path="chat/completions",
        query="",
        raw=b"",
        body=body,
        stream=True,
        model=None,
        headers={},
        request_id="r",
        chain="default",
    )


@pytest.mark.parametrize(
    ("body", "include"),
    [
        ({"stream_options": {"include_usage": True}}, True),
        ({"stream_options": {"include_usage": False}}, False),
        ({"stream_options": {}}, False),
        ({"stream_options": "yes"}, False),
        ({}, False),
        (None, False),  # pass-through: no parsed body
    ],
)
def test_a_caller_includes_usage_only_by_stream_options_include_usage(
    body: dict[str, Any] | None, include: bool
) -> None:
    assert call(body).include_usage is include
