"""The network code toward Bedrock: aiobotocore's `bedrock-runtime` client as an `Upstream`.

The chain stays provider-agnostic: `send(req)` takes the `Converse` call a `BedrockBackend` built
and returns a response with `status`, `headers`, `read()` (the answer as JSON), `chunk()` (the next
ConverseStream event dict, b"" at the end) and `close()`. botocore's exceptions are mapped here
and nowhere else: a `ClientError` is an HTTP answer (`{"__type": code, "message": …}` with its
status), an in-stream `EventStreamError` is one more event (`{code: {"message": …}}`) for the
backend to classify, a failure without a response is an `UpstreamError`. aiobotocore is imported
only when a bedrock backend exists: it costs a noticeable part of a second at startup.

The client's own retries are off (the chain decides); its read timeout is the longest of this
backend's deadlines, since the chain and the relay enforce the real ones. Credentials are the
backend's `AWS_*` settings when given, else the standard AWS chain (env, web identity/IRSA, SSO,
shared files, container and instance metadata); `AWS_PROFILE` picks a profile of the shared files.
A Bedrock API key (`API_KEY` or `API_KEY_FILE`) replaces SigV4: the client signs nothing and the
key goes as `Authorization: Bearer` (botocore itself does the same for `AWS_BEARER_TOKEN_BEDROCK`,
when no backend credentials are set).

`Invoke` calls (`API=invoke`) answer the model's native body; their stream's `chunk` events are
handed on as the Anthropic SSE events they carry (`invoke_event_to_sse`), so that the Anthropic
stream readers read them as they read Anthropic's own.
"""

import asyncio
import base64
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson

from sidecar.call import UpstreamRequest
from sidecar.dialects.bedrock import Converse, CountTokens, Invoke, invoke_event_to_sse
from sidecar.failure import FailureClass
from sidecar.settings import Backend, BackendSettings
from sidecar.upstream import TAIL_S, Tails, UpstreamError

F = FailureClass

# The headers of the call in progress that go on the wire, for the signing hook (aiobotocore
# takes no headers): the request id and the attempt's trace context.
_TAGGED = ("x-request-id", "traceparent", "tracestate")
_TAGS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("tags", default=None)

# A Bedrock model timeout is a timeout (README "Failure classes"), though it comes as an HTTP 408
# answer.
_TIMEOUT_CODES = frozenset({"ModelTimeoutException"})
# Events read after `metadata` before the connection is given up on (there should be none).
_TAIL_EVENTS = 16


class BedrockResponse:
    __slots__ = ("_body", "_events", "_stream", "_tails", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes = b"",
        stream: Any = None,
        tails: Tails | None = None,
    ) -> None:
        self.status = status
        self._tails = tails
        self.headers = headers
        self._body = body
        self._stream = stream
        self._events: AsyncIterator[Any] | None = None if stream is None else aiter(stream)

    @property
    def content_type(self) -> str:
        return "application/vnd.amazon.eventstream" if self._stream else "application/json"

    async def read(self) -> bytes:
        return self._body

    async def chunk(self) -> Any:
        """The next ConverseStream event dict; b"" at the end."""
        from botocore.exceptions import BotoCoreError, EventStreamError

        if self._events is None:
            return b""
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            self._events = None
            return b""
        except EventStreamError as e:
            self._events = None
            return _stream_exception(e)
        except (BotoCoreError, aiohttp.ClientError, OSError) as e:
            self._events = None
            raise UpstreamError(F.STREAM_INTERRUPTED, _describe(e)) from None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def finish(self) -> None:
        """Complete at `metadata`: the stream's end is read in the background (as `TAIL_S` in
        `sidecar.upstream` says), so that aiobotocore pools the connection."""
        events = self._events
        if (
            events is None
            or self._tails is None
            or not self._tails.spawn(lambda: self._read_tail(events), self.close)
        ):
            self.close()

    async def _read_tail(self, events: AsyncIterator[Any]) -> None:
        # StopAsyncIteration is the body's end: aiohttp has pooled the connection by then.
        # Any other ending drops it, as close() (Tails.spawn's `then`) does.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(TAIL_S):
                for _ in range(_TAIL_EVENTS):
                    await anext(events)


class InvokeResponse(BedrockResponse):
    """InvokeModelWithResponseStream: each `chunk` (or exception) event as Anthropic SSE."""

    __slots__ = ()

    @property
    def content_type(self) -> str:
        return "text/event-stream"

    async def chunk(self) -> Any:
        event = await super().chunk()
        return invoke_event_to_sse(event) if isinstance(event, dict) else event


class BedrockUpstream:
    """One aiobotocore client per backend, opened on first use, closed with the app."""

    def __init__(self, backend: Backend) -> None:
        # No aiohttp session of ours: aiobotocore keeps its own pool (MAX_CONNECTIONS).
        from aiobotocore.session import AioSession

        self.name = backend.name
        self._prefix = backend.prefix
        self._settings = backend.settings
        self._backend = backend
        # A Bedrock API key (API_KEY or API_KEY_FILE) replaces SigV4.
        self._bearer = backend.api_key() is not None
        self._aws = AioSession(profile=backend.settings.aws_profile)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._tails = Tails(backend.settings.max_connections)

    async def _open(self) -> Any:
        async with self._lock:
            if self._client is None:
                client = await self._stack.enter_async_context(self._create())
                client.meta.events.register("before-sign.bedrock-runtime", _tag_request)
                if self._bearer:
                    bearer = _bearer(self._backend.api_key)
                    client.meta.events.register("before-sign.bedrock-runtime", bearer)
                self._client = client
        return self._client

    def _create(self) -> Any:
        from aiobotocore.config import AioConfig

        s = self._settings
        read = max(s.first_token_timeout_s, s.response_timeout_s, s.stream_idle_timeout_s)
        import botocore

        config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=s.connect_timeout_s,
            read_timeout=read,
            max_pool_connections=s.max_connections,
            # With an API key the key is the signature (`_bearer`).
            signature_version=botocore.UNSIGNED if self._bearer else None,
        )
        return self._aws.create_client(
            "bedrock-runtime", config=config, **_client_args(s, self._prefix)
        )

    async def send(self, req: UpstreamRequest) -> BedrockResponse:
        from botocore.exceptions import BotoCoreError, ClientError

        call = req.payload
        assert isinstance(call, Converse | CountTokens | Invoke)
        token = _TAGS.set({k: req.headers[k] for k in _TAGGED if k in req.headers})
        try:
            client = await self._open()
            if isinstance(call, CountTokens):
                counted = await client.count_tokens(**call.params)
                return BedrockResponse(200, _headers(counted), orjson.dumps(counted, default=_blob))
            if isinstance(call, Invoke):
                return await self._invoke(client, call)
            if call.stream:
                resp = await client.converse_stream(**call.params)
                stream = resp["stream"]
                return BedrockResponse(200, _headers(resp), stream=stream, tails=self._tails)
            resp = await client.converse(**call.params)
            return BedrockResponse(200, _headers(resp), orjson.dumps(resp, default=_blob))
        except ClientError as e:
            return _error_answer(e)
        except (BotoCoreError, aiohttp.ClientError, OSError) as e:
            raise _no_response(e) from None
        finally:
            _TAGS.reset(token)

    async def _invoke(self, client: Any, call: Invoke) -> BedrockResponse:
        params = {
            "modelId": call.model_id,
            "body": call.body,
            "contentType": "application/json",
            "accept": "application/json",
        }
        if call.stream:
            resp = await client.invoke_model_with_response_stream(**params)
            return InvokeResponse(200, _headers(resp), stream=resp["body"], tails=self._tails)
        resp = await client.invoke_model(**params)
        async with resp["body"] as body:
            return BedrockResponse(200, _headers(resp), await body.read())

    async def close(self) -> None:
        await self._tails.cancel()
        await self._stack.aclose()


def _client_args(s: BackendSettings, prefix: str) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if s.region:
        args["region_name"] = s.region
    if s.endpoint_url:
        args["endpoint_url"] = s.endpoint_url
    if s.aws_access_key_id:
        args["aws_access_key_id"] = s.aws_access_key_id
    if s.aws_secret_access_key:
        args["aws_secret_access_key"] = s.aws_secret_access_key.get_secret_value()
    if s.aws_session_token:
        args["aws_session_token"] = s.aws_session_token.get_secret_value()
    return args


def _tag_request(request: Any, **_: Any) -> None:
    # The same x-request-id goes to every attempt (README "Routes and headers"), Bedrock included,
    # and each attempt's trace context.
    for name, value in (_TAGS.get() or {}).items():
        request.headers[name] = value


def _bearer(key: Callable[[], str | None]) -> Any:
    # The key as of each request: API_KEY_FILE may have been rotated since the client opened.
    def add(request: Any, **_: Any) -> None:
        request.headers["Authorization"] = f"Bearer {key()}"

    return add


def _headers(resp: Any) -> dict[str, str]:
    headers = (resp.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    return {str(k): str(v) for k, v in headers.items()}


def _blob(value: Any) -> Any:
    # Blobs (redacted reasoning, for one) come back as bytes; JSON carries them as base64.
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError


def _error_answer(e: Any) -> BedrockResponse:
    error = e.response.get("Error") or {}
    meta = e.response.get("ResponseMetadata") or {}
    code = str(error.get("Code") or "")
    if code in _TIMEOUT_CODES:
        raise UpstreamError(F.TIMEOUT, f"Bedrock {code}") from None
    body = orjson.dumps({"__type": code, "message": str(error.get("Message") or "")})
    status = int(meta.get("HTTPStatusCode") or 500)
    return BedrockResponse(status, _headers(e.response), body)


def _stream_exception(e: Any) -> dict[str, Any]:
    error = e.response.get("Error") or {}
    code = str(error.get("Code") or "internalServerException")
    return {code: {"message": str(error.get("Message") or "")}}


def _no_response(e: Exception) -> UpstreamError:
    from botocore import exceptions as x

    match e:
        case x.ConnectTimeoutError():
            return UpstreamError(F.TIMEOUT, "connect timeout")
        case x.ReadTimeoutError():
            return UpstreamError(F.TIMEOUT, "read timeout")
        case x.NoCredentialsError() | x.PartialCredentialsError() | x.CredentialRetrievalError():
            return UpstreamError(F.AUTH, "no usable AWS credentials")
        case x.ProfileNotFound():
            return UpstreamError(F.AUTH, "AWS_PROFILE names no known profile")
        case x.NoRegionError():
            return UpstreamError(F.CONNECT_ERROR, "no AWS region: set REGION or AWS_REGION")
        case x.ParamValidationError():
            return UpstreamError(F.CLIENT_ERROR, "request rejected by botocore's validation")
        case _:
            return UpstreamError(F.CONNECT_ERROR, _describe(e))


def _describe(e: BaseException) -> str:
    # Only the exception class: botocore messages can carry the endpoint URL.
    return type(e).__name__
