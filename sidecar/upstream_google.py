"""The Vertex AI transport: the HTTP one, with a Google OAuth access token on every request.

Credentials come from google-auth (imported only when a vertex backend is configured):
`{PREFIX}CREDENTIALS_FILE` when set (a service-account key: google-auth deprecates loading
files of any type unchecked), else Application Default Credentials:
`GOOGLE_APPLICATION_CREDENTIALS` (any type ADC takes, workload identity federation included),
gcloud's user credentials, or the metadata server (GKE Workload Identity, Compute Engine).

The token is fetched once before the first request and then refreshed in the background
`REFRESH_MARGIN_S` before it expires, so requests never wait for Google's token endpoint after
the first. google-auth's refresh is blocking I/O: it runs in a worker thread. A refresh that
fails leaves the last token in use while it is still valid and is retried every `RETRY_S`; with
none valid, requests fail at once with class `auth` until the next try. Nothing of the token or
of the credential ever reaches a log, metric or error (the detail names the exception class
only).
"""

import asyncio
import datetime
import logging
from pathlib import Path
from typing import Any, Final

from sidecar.call import UpstreamRequest
from sidecar.failure import FailureClass
from sidecar.settings import Backend
from sidecar.upstream import HttpUpstream, UpstreamError, UpstreamResponse

log = logging.getLogger("sidecar.upstream_google")

SCOPES: Final = ("https://www.googleapis.com/auth/cloud-platform",)
# google-auth itself counts a token as expired 3 min 45 s early; refreshing 5 min early keeps
# its own check from refreshing on the request path.
REFRESH_MARGIN_S: Final = 300.0
# After a failed background refresh, try again this soon (the old token may still be valid).
RETRY_S: Final = 10.0


class GoogleToken:
    def __init__(self, credentials_file: Path | None, *, margin_s: float = REFRESH_MARGIN_S):
        self._file = credentials_file
        self._margin_s = margin_s
        self._credentials: Any = None
        self._http: Any = None
        self._token: str | None = None
        self._expires_at = 0.0  # loop time
        # After a failed fetch, requests fail at once until then rather than each asking
        # Google again (the scheduled retry goes on in the background).
        self._failed_until = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.refreshes = 0

    async def header(self) -> str:
        loop = asyncio.get_running_loop()
        stale = self._token is None or loop.time() >= self._expires_at
        if stale and loop.time() >= self._failed_until:
            await self._refresh_now()
        if self._token is None or loop.time() >= self._expires_at:
            raise UpstreamError(FailureClass.AUTH, "no valid Google credentials")
        return f"Bearer {self._token}"

    async def _refresh_now(self) -> None:
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            token, expiry = await asyncio.to_thread(self._fetch)
        except Exception as e:  # google-auth raises its own and transport errors alike
            log.warning("cannot refresh Google credentials: %s", type(e).__name__)
            self._failed_until = loop.time() + RETRY_S
            self._schedule(RETRY_S)
            return
        finally:
            self._refreshing = None
        remaining = (expiry - _utcnow()).total_seconds() if expiry is not None else 3600.0
        self._token = token
        self._expires_at = loop.time() + remaining
        self.refreshes += 1
        self._schedule(max(remaining - self._margin_s, 1.0))

    def _schedule(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay_s, self._in_background)

    def _in_background(self) -> None:
        self._timer = None
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh())

    def _fetch(self) -> tuple[str, datetime.datetime | None]:
        import google.auth  # only with a vertex backend
        import google.auth.transport.urllib3
        import urllib3
        from google.oauth2 import service_account

        if self._credentials is None:
            if self._file is not None:
                self._credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                    str(self._file), scopes=SCOPES
                )
            else:
                self._credentials, _ = google.auth.default(scopes=SCOPES)
            # Bounded, and no retries of its own: a failed refresh is retried by the schedule.
            self._http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=5.0, read=30.0), retries=False
            )
        request = google.auth.transport.urllib3.Request(self._http)  # type: ignore[no-untyped-call]
        self._credentials.refresh(request)
        return str(self._credentials.token), self._credentials.expiry

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._refreshing is not None:
            self._refreshing.cancel()


def _utcnow() -> datetime.datetime:
    # google-auth's expiry is a naive UTC datetime.
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class VertexUpstream(HttpUpstream):
    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.token = GoogleToken(backend.settings.credentials_file)

    async def send(self, req: UpstreamRequest) -> UpstreamResponse:
        req.headers["authorization"] = await self.token.header()
        return await super().send(req)

    async def close(self) -> None:
        await self.token.close()
        await super().close()
