"""Kind `vertex` through the real sidecar: Gemini and Claude publisher models at a fake Vertex AI,
with google-auth getting its tokens from a fake token endpoint or metadata server on loopback.
Nothing reaches Google."""

import subprocess
import sys
from pathlib import Path

import aiohttp
import anthropic
import pytest
from conftest import Running, SidecarFactory, chat, post, sse_data, streamed_text
from fakes import anthropic_upstream
from fakes.gemini_upstream import FakeGemini, Script
from fakes.gemini_upstream import error as gemini_error
from fakes.vertex_upstream import FakeGoogleAuth, FakeVertex

from sidecar.config import load_config
from sidecar.settings import ConfigError

CLAUDE = "publishers/anthropic/models/claude-sonnet-4-5@20250929"
GEMINI = "publishers/google/models/gemini-2.5-pro"


pytestmark = pytest.mark.usefixtures("no_real_google")


def vertex_env(
    vertex: FakeVertex, model: str, credentials: Path | None, name: str = "v"
) -> dict[str, str]:
    p = name.upper() + "_"
    env = {
        p + "KIND": "vertex",
        p + "BASE_URL": vertex.url,
        p + "PROJECT": "my-project",
        p + "REGION": "us-east5",
        p + "MODEL": model,
    }
    if credentials is not None:
        env[p + "CREDENTIALS_FILE"] = str(credentials)
    return env


async def vertex_sidecar(
    sidecar: SidecarFactory, vertex: FakeVertex, model: str, credentials: Path | None
) -> Running:
    return await sidecar({"SIDECAR_BACKENDS": "v", **vertex_env(vertex, model, credentials)})


async def test_gemini_on_vertex_with_a_service_account_file(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    sc = await vertex_sidecar(sidecar, vertex, GEMINI, auth.service_account_file(tmp_path))
    whole = await post(http, sc.url, chat())
    streamed = await post(http, sc.url, chat(stream=True))
    assert whole.status == 200, whole.text
    assert whole.json["choices"][0]["message"]["content"] == "Hello from the fake Gemini."
    assert streamed_text(streamed.text) == "Hello from the fake Gemini."
    first, second = vertex.seen
    assert (first.project, first.location, first.publisher) == ("my-project", "us-east5", "google")
    assert (first.model, first.method) == ("gemini-2.5-pro", "generateContent")
    assert (second.method, second.query) == ("streamGenerateContent", "alt=sse")
    assert first.json["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    # One token, fetched once, for both requests.
    assert auth.grants == ["jwt-bearer"]
    assert first.headers["authorization"] == second.headers["authorization"] == "Bearer ya29.fake-1"
    assert "x-goog-api-key" not in first.headers
    sc.log_lines()  # flushes the access log
    assert "ya29" not in sc.log.getvalue().decode()


async def test_claude_on_vertex_keeps_an_anthropic_callers_body(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    sc = await vertex_sidecar(sidecar, vertex, CLAUDE, auth.service_account_file(tmp_path))
    body = {
        "model": "claude",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {
        "anthropic-beta": "interleaved-thinking-2025-05-14",
        "anthropic-version": "2023-06-01",
    }
    r = await post(http, sc.url, body, path="/v1/messages", headers=headers)
    assert r.status == 200
    assert r.json["content"][0]["text"] == "Hello from the fake Anthropic."
    seen = vertex.seen[0]
    assert (seen.publisher, seen.model, seen.method) == (
        "anthropic",
        "claude-sonnet-4-5@20250929",
        "rawPredict",
    )
    sent = seen.json
    assert sent.pop("anthropic_version") == "vertex-2023-10-16"
    assert sent == {k: v for k, v in body.items() if k != "model"}
    assert seen.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert "anthropic-version" not in seen.headers


async def test_claude_on_vertex_streams_to_the_anthropic_sdk(
    auth: FakeGoogleAuth, vertex: FakeVertex, sidecar: SidecarFactory, tmp_path: Path
) -> None:
    vertex.script(anthropic_upstream.Script())
    sc = await vertex_sidecar(sidecar, vertex, CLAUDE, auth.service_account_file(tmp_path))
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="unused", max_retries=0)
    async with (
        client,
        client.messages.stream(
            model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
    assert text == "Hello from the fake Anthropic."
    assert vertex.seen[0].method == "streamRawPredict"
    assert vertex.seen[0].json["stream"] is True


async def test_openai_callers_reach_claude_on_vertex_translated(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    vertex.script(anthropic_upstream.Script(), anthropic_upstream.Script())
    sc = await vertex_sidecar(sidecar, vertex, CLAUDE, auth.service_account_file(tmp_path))
    whole = await post(http, sc.url, chat(temperature=0.5))
    streamed = await post(http, sc.url, chat(stream=True))
    assert whole.json["choices"][0]["message"]["content"] == "Hello from the fake Anthropic."
    assert streamed_text(streamed.text) == "Hello from the fake Anthropic."
    assert sse_data(streamed.text)[-1] == "[DONE]"
    sent = vertex.seen[0].json
    assert "model" not in sent
    assert sent["anthropic_version"] == "vertex-2023-10-16"
    assert sent["max_tokens"] == 4096
    assert sent["temperature"] == 0.5
    assert sent["messages"] == [{"role": "user", "content": "hi"}]


async def test_application_default_credentials_come_from_the_metadata_server(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GKE Workload Identity: the pod's metadata server hands out the token.
    monkeypatch.setenv("GCE_METADATA_HOST", auth.host)
    monkeypatch.setenv("GCE_METADATA_IP", auth.host)
    sc = await vertex_sidecar(sidecar, vertex, GEMINI, None)
    r = await post(http, sc.url, chat())
    assert r.status == 200
    assert auth.grants == ["metadata"]
    assert vertex.seen[0].headers["authorization"] == "Bearer ya29.fake-1"


async def test_application_default_credentials_read_google_application_credentials(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(auth.service_account_file(tmp_path)))
    sc = await vertex_sidecar(sidecar, vertex, GEMINI, None)
    r = await post(http, sc.url, chat())
    assert r.status == 200
    assert auth.grants == ["jwt-bearer"]


async def test_a_token_that_cannot_be_had_is_class_auth_and_never_shown(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    auth.fail_with = 400
    sc = await vertex_sidecar(sidecar, vertex, GEMINI, auth.service_account_file(tmp_path))
    r = await post(http, sc.url, chat())
    assert r.status == 403
    assert r.headers["x-sidecar-failures"] == "v=auth"
    assert vertex.seen == []
    assert "invalid_grant" not in r.text and "Invalid JWT" not in r.text
    # The next request fails at once: Google is asked again on the retry schedule only.
    again = await post(http, sc.url, chat())
    assert again.status == 403
    assert auth.grants == ["jwt-bearer"]
    assert (
        sc.metric(
            "llm_sidecar_backend_failures_total", chain="default", backend="v", **{"class": "auth"}
        )
        == 2
    )


async def test_a_failed_token_falls_back_when_auth_is_a_fallback_class(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    gemini: FakeGemini,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    auth.fail_with = 401
    env = {
        "SIDECAR_BACKENDS": "v,g",
        "SIDECAR_FALLBACK_ON": "auth,overloaded",
        **vertex_env(vertex, GEMINI, auth.service_account_file(tmp_path)),
        "G_KIND": "gemini",
        "G_BASE_URL": gemini.url,
        "G_API_KEY": "AIza-fake",
    }
    sc = await sidecar(env)
    r = await post(http, sc.url, chat())
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == "v=auth"
    assert r.headers["x-sidecar-backend"] == "g"


async def test_a_vertex_error_in_googles_shape_reaches_an_anthropic_caller_in_its_own(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    vertex.script(gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform"))
    sc = await vertex_sidecar(sidecar, vertex, CLAUDE, auth.service_account_file(tmp_path))
    r = await post(http, sc.url, {**chat(), "max_tokens": 5}, path="/v1/messages")
    assert r.status == 429
    assert r.json == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Quota exceeded for aiplatform"},
    }
    assert r.headers["x-sidecar-failures"] == "v=rate_limited"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_vertex_gemini_429s_retry_info_opens_the_circuit_for_its_delay(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    stream: bool,
) -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "42s"}
    if stream:  # a 200 whose first event is the error
        vertex.script(Script(end="error_first", error_status="RESOURCE_EXHAUSTED", details=[retry]))
    else:
        vertex.script(gemini_error(429, "RESOURCE_EXHAUSTED", details=[retry]))
    sc = await vertex_sidecar(sidecar, vertex, GEMINI, auth.service_account_file(tmp_path))
    r = await post(http, sc.url, chat(stream=stream))
    assert (r.status, r.headers["retry-after"]) == (429, "42")
    backends = sc.app.status()["backends"]
    assert isinstance(backends, list)
    assert backends[0]["circuit"] == "open"
    assert 41 < backends[0]["cooldown_remaining_s"] <= 42


async def test_gemini_falls_back_to_claude_on_vertex(
    auth: FakeGoogleAuth,
    vertex: FakeVertex,
    gemini: FakeGemini,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    gemini.script(*[gemini_error(503, "UNAVAILABLE")] * 4)
    vertex.script(*[anthropic_upstream.Script()] * 4)
    env = {
        "SIDECAR_BACKENDS": "g,v",
        "G_KIND": "gemini",
        "G_BASE_URL": gemini.url,
        "G_API_KEY": "AIza-fake",
        "G_MODEL": "gemini-3-pro-preview",
        **vertex_env(vertex, CLAUDE, auth.service_account_file(tmp_path)),
    }
    sc = await sidecar(env)
    answers = [
        await post(http, sc.url, chat()),
        await post(http, sc.url, chat(stream=True)),
        await post(http, sc.url, {**chat(), "max_tokens": 9}, path="/v1/messages"),
        await post(http, sc.url, {**chat(stream=True), "max_tokens": 9}, path="/v1/messages"),
    ]
    assert [a.headers["x-sidecar-failures"] for a in answers] == ["g=overloaded"] * 4
    assert [a.headers["x-sidecar-backend"] for a in answers] == ["v"] * 4
    assert answers[0].json["choices"][0]["message"]["content"] == "Hello from the fake Anthropic."
    assert answers[2].json["content"][0]["text"] == "Hello from the fake Anthropic."
    assert "event: message_stop" in answers[3].text


def test_kind_vertex_needs_a_project_and_a_region(tmp_path: Path) -> None:
    base = {"SIDECAR_BACKENDS": "v", "V_KIND": "vertex"}
    with pytest.raises(ConfigError) as e:
        load_config({**base, "V_REGION": "global"})
    assert e.value.env_var == "V_PROJECT"
    with pytest.raises(ConfigError) as e:
        load_config({**base, "V_PROJECT": "p"})
    assert e.value.env_var == "V_REGION"
    with pytest.raises(ConfigError) as e:
        load_config({**base, "V_PROJECT": "p", "V_REGION": "global", "V_CREDENTIALS_FILE": "/nope"})
    assert e.value.env_var == "V_CREDENTIALS_FILE"


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("global", "https://aiplatform.googleapis.com"),
        ("us-east5", "https://us-east5-aiplatform.googleapis.com"),
    ],
)
def test_vertex_urls_are_regional_or_global(region: str, host: str) -> None:
    from sidecar.backends.vertex import VertexBackend

    config = load_config(
        {"SIDECAR_BACKENDS": "v", "V_KIND": "vertex", "V_PROJECT": "p", "V_REGION": region}
    )
    backend = VertexBackend(config.backends["v"])
    assert backend.url("claude-opus-4-1@20250805", stream=False) == (
        f"{host}/v1/projects/p/locations/{region}/publishers/anthropic/models/"
        "claude-opus-4-1@20250805:rawPredict"
    )
    assert backend.url("gemini-2.5-flash", stream=True) == (
        f"{host}/v1/projects/p/locations/{region}/publishers/google/models/"
        "gemini-2.5-flash:streamGenerateContent?alt=sse"
    )


def test_google_auth_is_imported_only_with_a_vertex_backend() -> None:
    # A fresh interpreter: this one has imported google-auth for the other tests.
    script = (
        "import asyncio, sys\n"
        "from sidecar.app import create_app\n"
        "from sidecar.config import load_config\n"
        "env = {'SIDECAR_BACKENDS': 'g', 'G_KIND': 'gemini', 'G_API_KEY': 'k',\n"
        "       'SIDECAR_PORT': '0', 'SIDECAR_ADMIN_PORT': '0'}\n"
        "async def main():\n"
        "    app = create_app(load_config(env))\n"
        "    await app.start()\n"
        "    await app.stop()\n"
        "asyncio.run(main())\n"
        "print('google.auth' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
