"""`llm-sidecar demo`: the real proxy in front of embedded fake providers on loopback.

The fakes: `flaky`, an OpenAI-compatible primary that fails on a fixed schedule (429 with
Retry-After, 503, a response slower than its timeout, a stream cut mid-answer, a 500); `claude`,
an Anthropic Messages secondary (kind `anthropic`, so every fallback to it is translated) that is
overloaded (529) every other time; and `healthy`, an OpenAI-compatible third. The proxy is
configured through the same mechanism as `serve`, from an environment the demo builds itself: a
shell with real provider settings exported must never send demo traffic to a real provider (the
banner names what it ignored). Only the ports come from the command line.
"""

import asyncio
import hashlib
import itertools
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import ClientSession, ClientTimeout, web

from sidecar.config import load_config
from sidecar.failure import FailureClass
from sidecar.settings import ConfigError, default_prefix

# What the flaky primary does with its n-th request, cycling.
FLAKY_SCHEDULE = ("ok", "429", "ok", "503", "slow", "ok", "cut", "ok", "500", "ok")
# The Anthropic fake is overloaded every other time, so that `healthy` gets traffic too.
CLAUDE_SCHEDULE = ("ok", "529")
_WORDS = ["The", "sidecar", "answered", "this", "request", "through", "its", "fallback", "chain."]


def completion(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(model: str, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": completion_tokens,
            "total_tokens": 7 + completion_tokens,
        },
    }


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class FakeProvider:
    """An OpenAI-compatible fake whose n-th request follows `schedule[n % len]`."""

    def __init__(self, name: str, schedule: tuple[str, ...] = ("ok",)) -> None:
        self.name = name
        self._plan: Iterator[str] = itertools.cycle(schedule)
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_post("/v1/embeddings", self._embeddings)
        self.runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)

    async def start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model", "demo"))
        match next(self._plan):
            case "429":
                return _error(429, "rate_limit_exceeded", {"Retry-After": "1"})
            case "503":
                return _error(503, "server_is_overloaded")
            case "500":
                return _error(500, "server_error")
            case "slow":
                await asyncio.sleep(30)
            case "cut" if body.get("stream"):
                return await self._stream(request, model, cut_after=3)
        tool = _first_tool(body, "function")
        if tool is not None:
            return await self._tool_call(request, model, tool, stream=body.get("stream") is True)
        if body.get("stream"):
            return await self._stream(request, model)
        return web.json_response(completion(" ".join(_WORDS), model))

    async def _tool_call(
        self, request: web.Request, model: str, tool: str, *, stream: bool
    ) -> web.StreamResponse:
        call = {
            "id": "call_demo",
            "type": "function",
            "function": {"name": tool, "arguments": "{}"},
        }
        if not stream:
            answer = completion("", model)
            answer["choices"][0]["message"] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [call],
            }
            answer["choices"][0]["finish_reason"] = "tool_calls"
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        delta = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}
        await resp.write(sse(chunk(model, delta)))
        await resp.write(sse(chunk(model, {}, "tool_calls")))
        await resp.write(sse(usage_chunk(model, 3)))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _stream(
        self, request: web.Request, model: str, cut_after: int | None = None
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse(chunk(model, {"role": "assistant", "content": ""})))
        for i, word in enumerate(_WORDS):
            if i == cut_after and request.transport is not None:
                request.transport.abort()
                return resp
            await asyncio.sleep(0.02)
            await resp.write(sse(chunk(model, {"content": word if i == 0 else " " + word})))
        await resp.write(sse(chunk(model, {}, "stop")))
        await resp.write(sse(usage_chunk(model, len(_WORDS))))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        given = body.get("input", "")
        # One vector per input, as a real provider answers: a string, or a list of strings or
        # of token arrays.
        inputs = [given] if isinstance(given, str) or _is_tokens(given) else list(given)
        tokens = sum(len(x) if isinstance(x, list) else len(str(x).split()) or 1 for x in inputs)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(x))}
            for i, x in enumerate(inputs)
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "demo"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


class FakeClaude:
    """An Anthropic Messages fake (`POST /v1/messages`) whose n-th request follows `schedule`."""

    def __init__(self, schedule: tuple[str, ...] = ("ok",)) -> None:
        self._plan: Iterator[str] = itertools.cycle(schedule)
        self.app = web.Application()
        self.app.router.add_post("/v1/messages", self._messages)
        self.app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        self.runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)

    async def start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model", "claude-demo"))
        if next(self._plan) == "529":
            error = {"type": "overloaded_error", "message": "demo overloaded"}
            return web.json_response({"type": "error", "error": error}, status=529)
        tool = _first_tool(body, "custom")
        if tool is not None:
            return await self._tool_use(request, model, tool, stream=body.get("stream") is True)
        if body.get("stream"):
            return await self._stream(request, model)
        text = {"type": "text", "text": " ".join(_WORDS)}
        return web.json_response(_claude_message(model, [text], "end_turn", len(_WORDS)))

    async def _count_tokens(self, request: web.Request) -> web.Response:
        # A word is a token here: Claude Code asks before it sends, the number is what it shows.
        body = await request.read()
        return web.json_response({"input_tokens": len(body.split())})

    async def _tool_use(
        self, request: web.Request, model: str, tool: str, *, stream: bool
    ) -> web.StreamResponse:
        block = {"type": "tool_use", "id": "toolu_demo", "name": tool, "input": {}}
        if not stream:
            return web.json_response(_claude_message(model, [block], "tool_use", 3))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start = {"type": "message_start", "message": _claude_message(model, [], None, 1)}
        await resp.write(_named("message_start", start))
        opened = {"type": "content_block_start", "index": 0, "content_block": block}
        await resp.write(_named("content_block_start", opened))
        delta = {"type": "input_json_delta", "partial_json": "{}"}
        event = {"type": "content_block_delta", "index": 0, "delta": delta}
        await resp.write(_named("content_block_delta", event))
        await resp.write(_named("content_block_stop", {"type": "content_block_stop", "index": 0}))
        end = {"stop_reason": "tool_use", "stop_sequence": None}
        await resp.write(
            _named(
                "message_delta",
                {"type": "message_delta", "delta": end, "usage": {"output_tokens": 3}},
            )
        )
        await resp.write(_named("message_stop", {"type": "message_stop"}))
        return resp

    async def _stream(self, request: web.Request, model: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start = {"type": "message_start", "message": _claude_message(model, [], None, 1)}
        await resp.write(_named("message_start", start))
        block = {"type": "content_block_start", "index": 0, "content_block": _EMPTY_TEXT}
        await resp.write(_named("content_block_start", block))
        for i, word in enumerate(_WORDS):
            await asyncio.sleep(0.02)
            delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
            event = {"type": "content_block_delta", "index": 0, "delta": delta}
            await resp.write(_named("content_block_delta", event))
        await resp.write(_named("content_block_stop", {"type": "content_block_stop", "index": 0}))
        end = {"stop_reason": "end_turn", "stop_sequence": None}
        usage = {"output_tokens": len(_WORDS)}
        await resp.write(
            _named("message_delta", {"type": "message_delta", "delta": end, "usage": usage})
        )
        await resp.write(_named("message_stop", {"type": "message_stop"}))
        return resp


_EMPTY_TEXT = {"type": "text", "text": ""}


def _first_tool(body: dict[str, Any], wire: str) -> str | None:
    """The name of the request's first tool, if it has any: the fakes call it, as a model would.
    `wire` is the dialect: OpenAI's `{"type": "function", "function": {"name"}}` or Anthropic's
    `{"name", "input_schema"}`."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    first = tools[0]
    spec = first.get("function") if wire == "function" else first
    name = spec.get("name") if isinstance(spec, dict) else None
    return name if isinstance(name, str) else None


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)


def _vector(text: str) -> list[float]:
    # Made-up but stable: the same input always gets the same vector.
    return [round(byte / 255, 4) for byte in hashlib.sha256(text.encode()).digest()[:8]]


def _claude_message(
    model: str, content: list[dict[str, Any]], stop_reason: str | None, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": "msg_demo",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": output_tokens},
    }


def _named(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": f"demo {code}", "type": code, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def demo_env(flaky_url: str, claude_url: str, healthy_url: str) -> dict[str, str]:
    return {
        "SIDECAR_BACKENDS": "flaky,claude,healthy",
        "SIDECAR_CIRCUIT_COOLDOWN_S": "3",
        "SIDECAR_LOG_LEVEL": "WARNING",
        "FLAKY_BASE_URL": flaky_url,
        "FLAKY_API_KEY": "sk-demo-flaky-key",
        # The OpenAI-like fakes have chat completions only, like vLLM or Ollama: Responses
        # callers are translated for them.
        "FLAKY_RESPONSES": "chat",
        "FLAKY_FIRST_TOKEN_TIMEOUT_S": "1.5",
        "FLAKY_RESPONSE_TIMEOUT_S": "1.5",
        "CLAUDE_KIND": "anthropic",
        "CLAUDE_BASE_URL": claude_url,
        "CLAUDE_API_KEY": "sk-ant-demo-claude-key",
        "HEALTHY_BASE_URL": healthy_url,
        "HEALTHY_API_KEY": "sk-demo-healthy-key",
        "HEALTHY_PREFILL": "true",
        "HEALTHY_RESPONSES": "chat",
    }


def ignored_settings(environ: Mapping[str, str]) -> list[str]:
    """Names (never values) of inherited variables the demo ignores: every `SIDECAR_*`, and
    those of the backends an inherited `SIDECAR_BACKENDS` names or the demo's own use."""
    backends = environ.get("SIDECAR_BACKENDS", "")
    prefixes = {"FLAKY_", "CLAUDE_", "HEALTHY_"}
    for item in backends.split(","):
        name, sep, prefix = item.partition("=")
        if sep and prefix.strip():
            prefixes.add(prefix.strip().upper())
        elif name.strip():
            prefixes.add(default_prefix(name.strip()))
    ours = ("SIDECAR_", *prefixes)
    return sorted(k for k in environ if k.upper().startswith(ours))


def run_demo(*, traffic: bool, requests: int = 0, port: int = 8700, admin_port: int = 8701) -> int:
    try:
        return asyncio.run(_demo(traffic, requests, port, admin_port))
    except KeyboardInterrupt:
        return 0


async def _demo(traffic: bool, requests: int, port: int, admin_port: int) -> int:
    fakes: list[FakeProvider | FakeClaude] = [
        FakeProvider("flaky", FLAKY_SCHEDULE),
        FakeClaude(CLAUDE_SCHEDULE),
        FakeProvider("healthy"),
    ]
    try:
        urls = [await f.start() for f in fakes]
        # The demo's own settings only: never {**demo_env, **os.environ}, which would send the
        # demo's traffic, with a real key, to whatever provider the shell has configured.
        env = {
            **demo_env(*urls),
            "SIDECAR_PORT": str(port),
            "SIDECAR_ADMIN_PORT": str(admin_port),
        }
        return await _serve_demo(env, traffic, requests, ignored_settings(os.environ))
    finally:
        for f in fakes:
            await f.runner.cleanup()


async def _serve_demo(env: dict[str, str], traffic: bool, requests: int, ignored: list[str]) -> int:
    from sidecar.app import create_app
    from sidecar.logs import configure
    from sidecar.redact import Redactor

    try:
        config = load_config(env)
    except ConfigError as e:
        e.report()
        return 2
    configure(config.settings.log_level, config.settings.log_format, Redactor(config.secrets()))
    sidecar = create_app(config)
    try:
        try:
            proxy_port, admin_port = await sidecar.start()
        except OSError as e:
            print(
                f"llm-sidecar demo: cannot listen: {e.strerror or e} "
                "(choose other ports with --port and --admin-port)",
                file=sys.stderr,
            )
            return 1
        url = f"http://{config.settings.host}:{proxy_port}"
        admin = f"http://{config.settings.admin_host}:{admin_port}"
        banner = _banner(url, admin, sidecar.status(), ignored)
        print(banner, flush=True)
        if traffic:
            await _traffic(url, sidecar, requests, banner)
        else:
            await asyncio.Event().wait()
    finally:
        await sidecar.stop()
    return 0


def _banner(url: str, admin: str, status: dict[str, Any], ignored: list[str]) -> str:
    chains = status["chains"]
    assert isinstance(chains, dict)
    chain = " → ".join(chains.get("default", []))
    found = ", ".join(ignored) if ignored else "none found"
    return f"""llm-sidecar demo
  proxy  {url}/v1   (chain default: {chain}; `flaky` fails on a schedule,
         `claude` speaks Anthropic and is overloaded every other time)
  admin  {admin}/metrics  {admin}/status
  config the demo's own, fakes on loopback only: no real provider is ever called.
         Ignored from your shell ({len(ignored)}): {found}

Try it:
  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}]}}' -i
  curl -sN {url}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}'
  curl -s {url}/v1/messages -H 'content-type: application/json' \\
       -d '{{"model":"claude-demo","max_tokens":64,"messages":[{{"role":"user","content":"hi"}}]}}'
  curl -sN {url}/v1/responses -H 'content-type: application/json' \\
       -d '{{"model":"gpt-4o-mini","stream":true,"input":"hi"}}'
  (the README shows the same with the openai and anthropic SDKs)
Ctrl-C stops it.
"""


@dataclass
class _Tally:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    cut: int = 0


_HEADER = (
    "backend",
    "circuit",
    "success",
    "failure",
    "skipped",
    "failed before an answer",
    "skipped as",
    "broke after commit",
    "continued (recovery)",
)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    # Counts align right, names and class lists left.
    return [
        "  ".join(
            cell.rjust(w) if 2 <= i <= 4 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _summary(sidecar: Any, tally: _Tally) -> str:
    return (
        f"requests: {tally.sent} sent, {sidecar.proxy.inflight} in flight, {tally.ok} answered "
        f"whole, {tally.cut} ended with a terminal error (never a fake success), "
        f"{tally.errors} errors"
    )


async def _traffic(url: str, sidecar: Any, limit: int, banner: str) -> None:
    tally = _Tally()
    async with ClientSession(timeout=ClientTimeout(total=30)) as http:
        stop = asyncio.Event()
        workers = [asyncio.create_task(_worker(http, url, tally, limit, stop)) for _ in range(2)]
        every = 1.0 if sys.stdout.isatty() else 5.0
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.25)
            if time.monotonic() - last >= every:
                last = time.monotonic()
                _print_table(sidecar, tally, banner)
        await asyncio.gather(*workers)
        _print_table(sidecar, tally, banner)


_CHAT = ("/v1/chat/completions", "data: [DONE]")
_MESSAGES = ("/v1/messages", 'data: {"type":"message_stop"}')
_RESPONSES = ("/v1/responses", "event: response.completed")


async def _worker(
    http: ClientSession, url: str, tally: _Tally, limit: int, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        n = tally.sent
        if limit and n >= limit:
            stop.set()
            return
        tally.sent += 1
        stream = n % 3 == 0
        # One request in four speaks Anthropic and one the Responses API, to show translation
        # every way.
        path, end = {2: _MESSAGES, 3: _RESPONSES}.get(n % 4, _CHAT)
        body: dict[str, Any] = {"model": "gpt-4o-mini", "stream": stream}
        if path == _RESPONSES[0]:
            body |= {"input": "hi", "max_output_tokens": 64}
        else:
            body |= {"max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
        try:
            async with http.post(url + path, json=body) as r:
                text = await r.text()
            if r.status != 200:
                tally.errors += 1
            elif stream and end not in text.rstrip().rsplit("\n\n", 1)[-1]:
                tally.cut += 1
            else:
                tally.ok += 1
        except Exception:
            tally.errors += 1
        await asyncio.sleep(0.2)


# Skips sent nothing, and a stream that broke after its first token was a success when it
# committed: neither is a failure of that attempt, so each has its own column.
_SKIPS = (FailureClass.CIRCUIT_OPEN, FailureClass.UNSUPPORTED)
_AFTER_COMMIT = (FailureClass.STREAM_INTERRUPTED, FailureClass.STREAM_TIMEOUT)


def _print_table(sidecar: Any, tally: _Tally, banner: str) -> None:
    reg = sidecar.registry

    def value(metric: str, **labels: str) -> int:
        return int(reg.get_sample_value(metric, {"chain": "default", **labels}) or 0)

    def classes(name: str, which: tuple[FailureClass, ...]) -> str:
        found = [
            f"{c}={n}"
            for c in which
            if (n := value("llm_sidecar_backend_failures_total", backend=name, **{"class": c}))
        ]
        return " ".join(found) or "-"

    before = tuple(c for c in FailureClass if c not in _SKIPS + _AFTER_COMMIT)
    rows: list[tuple[str, ...]] = [_HEADER]
    recovered = 0
    for b in sidecar.status()["backends"]:
        name = b["name"]
        counts = [
            str(value("llm_sidecar_backend_attempts_total", backend=name, outcome=o))
            for o in ("success", "failure", "skipped")
        ]
        continued = value("llm_sidecar_stream_recoveries_total", backend=name, outcome="success")
        recovered += continued
        rows.append(
            (
                name,
                b["circuit"],
                *counts,
                classes(name, before),
                classes(name, _SKIPS),
                classes(name, _AFTER_COMMIT),
                str(continued or "-"),
            )
        )
    lines = [_summary(sidecar, tally), *_columns(rows)]
    broke = sum(
        value("llm_sidecar_backend_failures_total", backend=b["name"], **{"class": c})
        for b in sidecar.status()["backends"]
        for c in _AFTER_COMMIT
    )
    lines.append(
        f"streams that broke after their first token: {broke}; recovered into one whole answer "
        f"by a later PREFILL backend: {recovered}; the rest ended with a terminal error event"
    )
    out = "\n".join(lines)
    if sys.stdout.isatty():
        print("\x1b[2J\x1b[H" + banner + "\n" + out, flush=True)
    else:
        print(out + "\n", flush=True)
