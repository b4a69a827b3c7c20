"""The fake Gemini upstream, checked by Google's own client (`google-genai`): what it sends is
what the real API sends, as far as that client reads it."""

import base64
from collections.abc import AsyncIterator

import pytest
from google import genai
from google.genai import errors, types

from fakes.gemini_upstream import SIGNATURE, FakeGemini, Script, error

KEY = "gemini-fake-key"

# google-genai's async client subclasses aiohttp's ClientSession, which aiohttp discourages.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeGemini]:
    fake = await FakeGemini().start()
    yield fake
    await fake.stop()


def client(fake: FakeGemini) -> genai.Client:
    options = types.HttpOptions(
        base_url=fake.url, api_version="v1beta", retry_options=types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key=KEY, http_options=options)


async def test_fake_answers_text_with_usage(upstream: FakeGemini) -> None:
    upstream.script(Script(thought="Let me think."))
    resp = await client(upstream).aio.models.generate_content(model="gemini-3-pro", contents="hi")
    assert resp.text == "Hello from the fake Gemini."
    assert resp.usage_metadata is not None
    assert resp.usage_metadata.thoughts_token_count == 2
    assert resp.usage_metadata.cached_content_token_count == 3
    seen = upstream.seen[0]
    assert (seen.model, seen.method) == ("gemini-3-pro", "generateContent")
    assert seen.headers["x-goog-api-key"] == KEY


async def test_fake_streams_sse_function_calls_with_a_signature(upstream: FakeGemini) -> None:
    upstream.script(Script(calls=[("weather", {"city": "Rome"}), ("time", {})]))
    stream = await client(upstream).aio.models.generate_content_stream(
        model="gemini-3-pro", contents="hi"
    )
    chunks = [c async for c in stream]
    parts = [p for c in chunks if c.candidates for p in c.candidates[0].content.parts]  # type: ignore[union-attr]
    calls = [p for p in parts if p.function_call is not None]
    assert [c.function_call.name for c in calls] == ["weather", "time"]  # type: ignore[union-attr]
    assert calls[0].thought_signature == base64.b64decode(SIGNATURE)
    assert calls[1].thought_signature is None
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert upstream.seen[0].query == "alt=sse"


async def test_fake_rejects_a_function_call_without_its_signature(upstream: FakeGemini) -> None:
    history = [
        types.Content(role="user", parts=[types.Part(text="hi")]),
        types.Content(
            role="model",
            parts=[types.Part(function_call=types.FunctionCall(name="weather", args={}))],
        ),
        types.Content(
            role="user",
            parts=[
                types.Part(
                    function_response=types.FunctionResponse(name="weather", response={"t": 1})
                )
            ],
        ),
    ]
    with pytest.raises(errors.ClientError) as e:
        await client(upstream).aio.models.generate_content(model="m", contents=history)
    assert e.value.code == 400
    assert "thought_signature" in str(e.value.message)


async def test_fake_accepts_the_signature_it_gave(upstream: FakeGemini) -> None:
    signed = types.Part(
        function_call=types.FunctionCall(name="weather", args={}),
        thought_signature=base64.b64decode(SIGNATURE),
    )
    history = [types.Content(role="model", parts=[signed])]
    resp = await client(upstream).aio.models.generate_content(model="m", contents=history)
    assert resp.text == "Hello from the fake Gemini."
    # Google's client writes bytes as URL-safe base64: the API reads either alphabet.
    sent = upstream.seen[0].json["contents"][0]["parts"][0]["thoughtSignature"]
    assert base64.urlsafe_b64decode(sent) == base64.b64decode(SIGNATURE)


@pytest.mark.parametrize("wrapped", [False, True])
async def test_fake_errors_carry_googles_status(upstream: FakeGemini, wrapped: bool) -> None:
    upstream.script(
        error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", wrapped=wrapped)
    )
    with pytest.raises(errors.ClientError) as e:
        await client(upstream).aio.models.generate_content(model="m", contents="hi")
    assert e.value.code == 429
    assert e.value.status == "RESOURCE_EXHAUSTED"
