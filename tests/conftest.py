import asyncio
import io
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fakes.anthropic_upstream import FakeAnthropic
from fakes.bedrock_upstream import FakeBedrock
from fakes.gemini_upstream import FakeGemini
from fakes.openai_upstream import FakeOpenAI, Script
from fakes.otlp_receiver import OtlpReceiver
from fakes.vertex_upstream import FakeGoogleAuth, FakeVertex
from prometheus_client import CollectorRegistry

from sidecar.app import Sidecar, create_app
from sidecar.config import load_config
from sidecar.tracing import AttemptInfo


@dataclass
class Running:
    app: Sidecar
    registry: CollectorRegistry
    url: str
    admin: str
    log: io.BytesIO

    def log_lines(self) -> list[dict[str, Any]]:
        self.app.access_log.flush()
        return [json.loads(line) for line in self.log.getvalue().splitlines()]

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class FakeClock:
    """Monotonic seconds that move only when a test says so: circuits run on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until(
    condition: Callable[[], bool], within_s: float = 5.0, what: str = "condition"
) -> None:
    """Polls `condition`; fails the test (rather than hanging it) once `within_s` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        if loop.time() >= deadline:
            pytest.fail(f"{what} not met within {within_s} s")
        await asyncio.sleep(0.005)


def attempt_info(backend: str, attempt: int, model: str | None = "gpt-4o-mini") -> AttemptInfo:
    """An upstream attempt as the chain describes it to the tracer (azure1 is an Azure backend)."""
    return AttemptInfo(
        backend=backend,
        kind="azure" if backend == "azure1" else "openai",
        operation="chat",
        model=model,
        server_address="127.0.0.1",
        server_port=8443,
        attempt=attempt,
    )


SidecarFactory = Callable[..., Awaitable[Running]]
FakeFactory = Callable[..., Awaitable[FakeOpenAI]]

# The W3C Trace Context example: a caller's trace the sidecar must continue.
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
# Message content that no span may record.
PROMPT = "the secret plan is in the prompt"

# Twenty words: a stream that breaks `after=3` deltas has committed and still had more to say.
LONG = " ".join(f"w{i}" for i in range(20))


@pytest.fixture
async def fake() -> AsyncIterator[FakeFactory]:
    started: list[FakeOpenAI] = []

    async def make(default: Script | None = None, **kw: Any) -> FakeOpenAI:
        f = await FakeOpenAI(default, **kw).start()
        started.append(f)
        return f

    yield make
    for f in started:
        await f.stop()


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    f = await FakeAnthropic().start()
    yield f
    await f.stop()


@pytest.fixture
async def bedrock() -> AsyncIterator[FakeBedrock]:
    f = await FakeBedrock().start()
    yield f
    await f.stop()


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    f = await FakeGemini().start()
    yield f
    await f.stop()


@pytest.fixture
async def auth() -> AsyncIterator[FakeGoogleAuth]:
    """Google's token endpoint and metadata server, for vertex backends."""
    f = await FakeGoogleAuth().start()
    yield f
    await f.stop()


@pytest.fixture
def no_real_google(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """google-auth reads the process environment: keep it off this machine's credentials and
    off Google's metadata address."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")


@pytest.fixture
async def vertex(auth: FakeGoogleAuth) -> AsyncIterator[FakeVertex]:
    f = await FakeVertex(auth).start()
    yield f
    await f.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = await OtlpReceiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def sidecar() -> AsyncIterator[SidecarFactory]:
    started: list[Sidecar] = []

    async def make(env: dict[str, str], **wiring: Any) -> Running:
        """`wiring`: create_app's `clock=`, `upstream=` and `credential_poll_s=`."""
        full = {"SIDECAR_PORT": "0", "SIDECAR_ADMIN_PORT": "0", **env}
        registry, log = CollectorRegistry(), io.BytesIO()
        app = create_app(load_config(full), registry=registry, log_stream=log, **wiring)
        started.append(app)
        proxy, admin = await app.start()
        urls = f"http://127.0.0.1:{proxy}", f"http://127.0.0.1:{admin}"
        return Running(app, registry, *urls, log)

    yield make
    for app in started:
        await app.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def typed_tokens(sc: Running, backend: str, kind: str) -> float:
    """`llm_sidecar_tokens_total` of one type on the default chain."""
    return sc.metric("llm_sidecar_tokens_total", chain="default", backend=backend, type=kind)


def class_failures(sc: Running, backend: str, cls: str) -> float:
    """`llm_sidecar_backend_failures_total` of one class on the default chain."""
    labels = {"chain": "default", "backend": backend, "class": cls}
    return sc.metric("llm_sidecar_backend_failures_total", **labels)


def tokens(sc: Running, backend: str) -> tuple[float, float]:
    labels = {"chain": "default", "backend": backend}
    return (
        sc.metric("llm_sidecar_tokens_total", type="prompt", **labels),
        sc.metric("llm_sidecar_tokens_total", type="completion", **labels),
    )


def chain_env(*fakes: FakeOpenAI, **extra: str) -> dict[str, str]:
    """SIDECAR_BACKENDS=b0,b1,... each an openai backend at one fake, with a canary key."""
    env = {"SIDECAR_BACKENDS": ",".join(f"b{i}" for i in range(len(fakes)))}
    for i, f in enumerate(fakes):
        env[f"B{i}_BASE_URL"] = f.url
        env[f"B{i}_API_KEY"] = f"sk-canary-key-{i}-0123456789"
    env.update(extra)
    return env


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


def chat(stream: bool = False, model: str = "gpt-test", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> Answer:
    async with http.post(url + path, json=body, headers=headers) as r:
        text = await r.text()
        return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, text)


def sse_data(text: str) -> list[Any]:
    """The JSON of every `data:` line of an OpenAI stream, `[DONE]` as the string."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def named_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of a stream with `event:` lines (Anthropic, Responses);
    an event without one is named ""."""
    out = []
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        name = next((ln[7:] for ln in lines if ln.startswith("event: ")), "")
        data = next(ln[6:] for ln in lines if ln.startswith("data: "))
        out.append((name, json.loads(data)))
    return out


def streamed_text(text: str) -> str:
    parts = []
    for obj in sse_data(text):
        if isinstance(obj, dict):
            for choice in obj.get("choices", []):
                parts.append(choice.get("delta", {}).get("content") or "")
    return "".join(parts)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at each of `cuts` (modulo its length): the pieces a stream reader is fed."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


Serve = Callable[[bytes], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serves the given bytes as the answer to POST /v1/responses, as an upstream would: for
    dialect tests that need a real client reading real bytes."""
    runners: list[web.AppRunner] = []

    async def start(body: bytes) -> str:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=body, content_type="text/event-stream")

        app = web.Application()
        app.router.add_post("/v1/responses", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()
