"""The Vertex AI transport's Google token (`sidecar.upstream_google`) against a fake Google token
endpoint: fetched once, refreshed in the background before it expires, kept while a refresh
fails, and an auth failure at once while none is valid. The kind's journeys through the sidecar
are tests/backends/test_vertex_backend.py's."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import wait_until
from fakes.vertex_upstream import FakeGoogleAuth

from sidecar.failure import FailureClass
from sidecar.upstream import UpstreamError
from sidecar.upstream_google import GoogleToken

pytestmark = pytest.mark.usefixtures("no_real_google")


@pytest.fixture
async def token(auth: FakeGoogleAuth, tmp_path: Path) -> AsyncIterator[GoogleToken]:
    # Nothing is fetched until the first header(): a test sets the fake's answers first.
    t = GoogleToken(auth.service_account_file(tmp_path))
    yield t
    await t.close()


async def test_tokens_are_refreshed_before_they_expire_off_the_request_path(
    auth: FakeGoogleAuth, token: GoogleToken
) -> None:
    auth.expires_in = 300.3  # the refresh is due 0.3 s after the first fetch
    assert await token.header() == "Bearer ya29.fake-1"
    await wait_until(lambda: token.refreshes == 2, what="a background refresh")
    assert await token.header() == "Bearer ya29.fake-2"
    assert auth.grants == ["jwt-bearer", "jwt-bearer"]


async def test_a_failed_background_refresh_keeps_the_valid_token(
    auth: FakeGoogleAuth, token: GoogleToken
) -> None:
    auth.expires_in = 300.2
    await token.header()
    auth.fail_with = 503
    await wait_until(lambda: len(auth.grants) == 2, what="a background refresh")
    await asyncio.sleep(0.05)
    assert await token.header() == "Bearer ya29.fake-1"


async def test_a_token_that_cannot_be_had_is_class_auth_and_google_is_not_asked_again_at_once(
    auth: FakeGoogleAuth, token: GoogleToken
) -> None:
    auth.fail_with = 400
    for _ in range(2):
        with pytest.raises(UpstreamError) as e:
            await token.header()
        assert e.value.cls is FailureClass.AUTH
        assert "invalid_grant" not in e.value.detail
    assert auth.grants == ["jwt-bearer"]
