from collections.abc import AsyncIterator

import anthropic
import pytest

from fakes.anthropic_upstream import FakeAnthropic, Script, overloaded, rate_limited


@pytest.fixture
async def upstream() -> AsyncIterator[FakeAnthropic]:
    fake = await FakeAnthropic().start()
    yield fake
    await fake.stop()


def client(fake: FakeAnthropic) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="k", base_url=fake.url, max_retries=0)


MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]


async def test_fake_answers_json_and_records_the_request(upstream: FakeAnthropic) -> None:
    async with client(upstream) as c:
        msg = await c.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hello from the fake Anthropic."
    assert msg.stop_reason == "end_turn"
    assert upstream.seen[0].json["model"] == "claude-x"
    assert upstream.seen[0].headers["authorization"] == "Bearer k"
    assert upstream.seen[0].headers["anthropic-version"]


async def test_fake_streams_tool_use_that_the_sdk_rebuilds(upstream: FakeAnthropic) -> None:
    upstream.script(Script(tool=("weather", {"city": "Paris", "days": 3})))
    async with (
        client(upstream) as c,
        c.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as stream,
    ):
        final = await stream.get_final_message()
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"city": "Paris", "days": 3}
    assert final.stop_reason == "tool_use"


async def test_fake_streams_text(upstream: FakeAnthropic) -> None:
    async with (
        client(upstream) as c,
        c.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hello from the fake Anthropic."
    assert final.usage.output_tokens == 5


async def test_fake_answers_529_overloaded(upstream: FakeAnthropic) -> None:
    upstream.script(overloaded())
    async with client(upstream) as c:
        with pytest.raises(anthropic.OverloadedError) as e:
            await c.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    assert e.value.status_code == 529


async def test_fake_answers_429_with_retry_after(upstream: FakeAnthropic) -> None:
    upstream.script(rate_limited(7))
    async with client(upstream) as c:
        with pytest.raises(anthropic.RateLimitError) as e:
            await c.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    assert e.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("end", ["error_first", "error"])
async def test_fake_sends_error_events(upstream: FakeAnthropic, end: str) -> None:
    upstream.script(Script(end=end, after=2))
    async with client(upstream) as c:
        with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
            async with c.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as stream:
                await stream.get_final_message()


async def test_fake_cuts_the_stream(upstream: FakeAnthropic) -> None:
    upstream.script(Script(end="cut", after=2))
    async with client(upstream) as c:
        # The SDK's public error for a body cut short; older releases let the transport's through.
        with pytest.raises(anthropic.APIConnectionError, match="incomplete"):
            async with c.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as stream:
                await stream.get_final_message()
