"""A scripted Gemini API upstream (`POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`) on loopback.

Each request takes the next `Script` from the queue (or the default): a text answer (with a
thought part first, if asked), function calls (the first carrying a Gemini 3 style
`thoughtSignature`), a blocked prompt, an error status with Google's error body (bare or wrapped
in a list), or a stream that is cut, errors or turns malformed after some parts. Streams are SSE
with CRLF line ends and no terminator, as Google sends them. Like Gemini 3, it answers 400 when
the history holds a `functionCall` part without the signature it gave (`require_signature`).
Every request is recorded with its path, query, headers and body.
"""

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from fakes.loopback import JsonBody, Loopback, lower_headers

JSON = dict[str, Any]

# Base64, as Google sends it (the client decodes it), with the characters ids may not hold.
SIGNATURE = "CiT7/75nZW1pbmkzIHNpZ25hdHVyZfr+AQ=="
USAGE: JSON = {
    "promptTokenCount": 7,
    "candidatesTokenCount": 5,
    "thoughtsTokenCount": 2,
    "cachedContentTokenCount": 3,
    "totalTokenCount": 14,
}


@dataclass
class Script:
    status: int = 200
    text: str = "Hello from the fake Gemini."
    # Function calls answered instead of text: (name, args) each; the first is signed.
    calls: list[tuple[str, JSON]] = field(default_factory=list)
    signature: str | None = SIGNATURE
    thought: str | None = None
    finish: str = "STOP"
    block_reason: str | None = None
    google_status: str = "INTERNAL"
    message: str = "fake error"
    details: list[JSON] = field(default_factory=list)
    wrapped: bool = False  # the error body as a list: [{"error": {...}}]
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    # Streams: how they end after `after` text parts.
    end: str = "done"  # done | cut | error | error_first | malformed
    after: int = 10**9
    error_status: str = "UNAVAILABLE"
    usage: JSON = field(default_factory=lambda: dict(USAGE))
    require_signature: bool = True


def error(status: int, google_status: str, message: str = "fake error", **kw: Any) -> Script:
    return Script(status=status, google_status=google_status, message=message, **kw)


@dataclass
class Seen(JsonBody):
    model: str
    method: str
    query: str
    headers: dict[str, str]
    body: bytes


class FakeGemini(Loopback[Script, Seen]):
    def __init__(self, default: Script | None = None) -> None:
        super().__init__(default or Script())
        self.app.router.add_post("/v1beta/models/{tail:.+}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["tail"].rpartition(":")
        body = await request.read()
        seen = Seen(model, method, request.query_string, lower_headers(request), body)
        s = await self.take(seen)
        if s.status != 200:
            return error_response(s.status, s)
        req = orjson.loads(body)
        if s.require_signature and _unsigned_call(req):
            missing = "Function call is missing a thought_signature in functionCall parts."
            return error_response(400, error(400, "INVALID_ARGUMENT", missing))
        if method == "streamGenerateContent":
            return await stream(request, s)
        return web.json_response(answer(s), headers=s.headers)


def _unsigned_call(req: JSON) -> bool:
    # Gemini 3 checks the first functionCall part of each model turn.
    for content in req.get("contents") or []:
        calls = [p for p in content.get("parts") or [] if "functionCall" in p]
        if content.get("role") == "model" and calls and "thoughtSignature" not in calls[0]:
            return True
    # Google's stand-in for a call no Gemini model made ("skip_thought_signature_validator")
    # passes, as any other value does: the fake checks presence, not provenance.
    return False


def _parts(s: Script) -> list[JSON]:
    parts: list[JSON] = []
    if s.thought is not None:
        parts.append({"text": s.thought, "thought": True})
    if s.calls:
        for i, (name, args) in enumerate(s.calls):
            part: JSON = {"functionCall": {"name": name, "args": args}}
            if i == 0 and s.signature is not None:
                part["thoughtSignature"] = s.signature
            parts.append(part)
        return parts
    words = s.text.split(" ")
    parts.extend({"text": w if i == 0 else " " + w} for i, w in enumerate(words))
    return parts


def answer(s: Script) -> JSON:
    if s.block_reason is not None:
        return {"promptFeedback": {"blockReason": s.block_reason}, "usageMetadata": s.usage}
    parts = _parts(s)
    if not s.calls:
        # A whole answer's text is one part.
        texts = [p for p in parts if not p.get("thought")]
        joined = {"text": "".join(p["text"] for p in texts)}
        parts = [p for p in parts if p.get("thought")] + [joined]
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": s.finish, "index": 0}
        ],
        "usageMetadata": s.usage,
        "modelVersion": "gemini-fake",
        "responseId": f"fake-response-{id(s)}",
    }


def error_body(s: Script, status: int) -> Any:
    err: JSON = {"code": status, "message": s.message, "status": s.google_status}
    if s.details:
        err["details"] = s.details
    return [{"error": err}] if s.wrapped else {"error": err}


def error_response(status: int, s: Script) -> web.Response:
    body = orjson.dumps(error_body(s, status))
    headers = {"Content-Type": "application/json", **s.headers}
    return web.Response(status=status, body=body, headers=headers)


def sse(data: Any) -> bytes:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return b"data: " + raw + b"\r\n\r\n"


def _chunk(parts: list[JSON], finish: str | None = None, usage: JSON | None = None) -> JSON:
    candidate: JSON = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    out: JSON = {"candidates": [candidate], "responseId": "fake-stream"}
    if usage is not None:
        out["usageMetadata"] = usage
    return out


async def stream(request: web.Request, s: Script) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **s.headers})
    await resp.prepare(request)
    if s.end == "error_first":
        status = {"UNAVAILABLE": 503, "RESOURCE_EXHAUSTED": 429}.get(s.error_status, 500)
        # `details` as in an error answer: Google's RetryInfo comes in-band too.
        await resp.write(sse(error_body(error(status, s.error_status, details=s.details), status)))
        return resp
    if s.block_reason is not None:
        await resp.write(sse(answer(s)))
        return resp
    parts = _parts(s)
    for i, part in enumerate(parts):
        if i == s.after:
            return await _bad_end(request, resp, s)
        await resp.write(sse(_chunk([part], usage={"promptTokenCount": 7})))
    # Gemini 3 signs a text answer on its last, empty part.
    last: JSON = {"text": ""}
    if not s.calls and s.signature is not None:
        last["thoughtSignature"] = s.signature
    await resp.write(sse(_chunk([last], finish=s.finish, usage=s.usage)))
    return resp


async def _bad_end(request: web.Request, resp: web.StreamResponse, s: Script) -> web.StreamResponse:
    if s.end == "error":
        await resp.write(sse(error_body(error(503, "UNAVAILABLE", "The model is overloaded"), 503)))
        return resp
    if s.end == "malformed":
        await resp.write(sse(b"{not json"))
        return resp
    assert request.transport is not None
    request.transport.abort()
    return resp
