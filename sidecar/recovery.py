"""Stream recovery (README "Stream recovery"): a committed stream that is plain text in one choice
breaks, and a later `PREFILL=true` backend of the chain with a closed circuit continues it.

The continuation is the original request plus the text already delivered as a trailing assistant
message; the chain makes one attempt at it, on the first eligible backend after the one that
broke (`FallbackChain.continuation`), and `sidecar.stream` relays it into the same stream.
"""

from dataclasses import replace

import orjson

from sidecar.call import Call, Route, StreamAdapter
from sidecar.chain import AttemptRecord, FallbackChain
from sidecar.dialects import responses_request
from sidecar.stream import Committed


class Recovery:
    """The `recover` callback of one request's `StreamRelay`."""

    __slots__ = ("_call", "_chain", "attempts")

    def __init__(self, chain: FallbackChain, call: Call) -> None:
        self._chain = chain
        self._call = call
        # The continuation's attempt, for the request's log line (the caller's headers are long
        # sent).
        self.attempts: list[AttemptRecord] = []

    async def __call__(self, broken: Committed) -> Committed | None:
        call = self._call
        # One plain-text choice only: n > 1 interleaves choices in one stream.
        if call.body is None or call.body.get("n") not in (None, 1):
            return None
        text = broken.adapter.text
        if not broken.adapter.text_only or not all(isinstance(t, str) for t in text):
            return None
        if call.route is Route.RESPONSES:
            cont = with_responses_prefill(call, "".join(text), broken.adapter)
        else:
            cont = with_prefill(call, "".join(text))
        return await self._chain.continuation(cont, after=broken.backend, trail=self.attempts)


def with_responses_prefill(call: Call, text: str, adapter: StreamAdapter) -> Call:
    """The continuation of a Responses stream: the text as a trailing assistant item, and where
    the caller's stream stands, so that the continuation goes on in its open message with the
    next sequence numbers."""
    assert call.body is not None
    body = responses_request.with_prefill(call.body, text)
    cursor = adapter.cursor()
    return replace(call, body=body, raw=orjson.dumps(body), stream=True, resume_from=cursor)


def with_prefill(call: Call, text: str) -> Call:
    assert call.body is not None
    messages = list(call.body["messages"])
    last = messages[-1] if messages else None
    if (
        isinstance(last, dict)
        and last.get("role") == "assistant"
        and isinstance(last.get("content"), str)
    ):
        # The caller prefilled the answer itself: what was delivered continues that prefill.
        text = last["content"] + text
        messages.pop()
    # Anthropic rejects a prefill that ends in whitespace; every backend accepts it stripped.
    messages.append({"role": "assistant", "content": text.rstrip()})
    body = {**call.body, "messages": messages, "stream": True}
    return replace(call, body=body, raw=orjson.dumps(body), stream=True)
