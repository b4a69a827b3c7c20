"""End to end with the official openai SDK (max_retries=0) through a fallback."""

from collections.abc import AsyncIterator

import openai
import pytest
from conftest import FakeFactory, Running, SidecarFactory, chain_env
from fakes.openai_upstream import Script
from openai.types.chat import ChatCompletionMessageParam

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def flaky_chain(fake: FakeFactory, sidecar: SidecarFactory) -> Running:
    a, b = await fake(Script(status=429)), await fake()
    return await sidecar(chain_env(a, b))


@pytest.fixture
async def client(flaky_chain: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=flaky_chain.url + "/v1", api_key="unused", max_retries=0)
    yield c
    await c.close()


async def test_openai_sdk_gets_an_answer_through_a_fallback(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake."
    assert raw.headers["x-sidecar-backend"] == "b1"
    assert raw.headers["x-sidecar-failures"] == "b0=rate_limited"
    assert completion.usage is not None and completion.usage.total_tokens == 12


async def test_openai_sdk_streams_through_a_fallback(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from the fake."


async def test_openai_sdk_stream_helper_accumulates_the_final_completion(
    client: openai.AsyncOpenAI,
) -> None:
    async with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == "Hello from the fake."


async def test_openai_sdk_raises_on_a_stream_cut_after_commit(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    a = await fake(Script(text="one two three four", end="cut", after=2))
    sc = await sidecar(chain_env(a))
    client = openai.AsyncOpenAI(base_url=sc.url + "/v1", api_key="unused", max_retries=0)
    got: list[str] = []

    async def read_all() -> None:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        async for c in stream:
            got.append(c.choices[0].delta.content or "")

    with pytest.raises(openai.APIError):
        await read_all()
    await client.close()
    assert "".join(got) == "one two"


async def test_openai_sdk_sees_exhaustion_as_the_last_status(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    a, b = await fake(Script(status=503)), await fake(Script(status=429))
    sc = await sidecar(chain_env(a, b))
    client = openai.AsyncOpenAI(base_url=sc.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    await client.close()
    assert e.value.response.headers["x-anyllm-fallback-exhausted"] == "true"


async def test_openai_sdk_embeddings(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    sc = await sidecar(chain_env(await fake()))
    client = openai.AsyncOpenAI(base_url=sc.url + "/v1", api_key="unused", max_retries=0)
    result = await client.embeddings.create(model="text-embedding-3-small", input="hi")
    models = await client.models.list()
    await client.close()
    assert result.data[0].embedding == [0.1, 0.2, 0.3]
    assert [m.id for m in models.data] == ["default"]
