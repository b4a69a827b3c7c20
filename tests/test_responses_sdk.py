"""The official openai SDK's Responses client through the sidecar on a translated backend: a
function call round trip, as an agent makes it (the call streamed or created, its output sent
back in the next request's input), with the first backend failing."""

import json
from typing import Any

import openai
import pytest
from backends.kinds import chain
from conftest import SidecarFactory
from fakes.anthropic_upstream import FakeAnthropic
from fakes.anthropic_upstream import Script as AScript
from fakes.responses_upstream import FakeResponses
from fakes.responses_upstream import Script as RScript

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Looks a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
        "strict": False,
    }
]


def _result_text(body: dict[str, Any]) -> str:
    results = [
        block
        for m in body["messages"]
        if isinstance(m["content"], list)
        for block in m["content"]
        if block["type"] == "tool_result"
    ]
    return f"lookup said {results[0]['content']}" if results else "no result"


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_the_openai_sdk_makes_a_function_call_round_trip_on_anthropic_after_a_429(
    claude: FakeAnthropic, sidecar: SidecarFactory, stream: bool
) -> None:
    native = await FakeResponses(RScript(status=429)).start()
    claude.script(AScript(tool=("lookup", {"word": "sidecar"})), AScript(reply=_result_text))
    sc = await sidecar(chain(("oai", native), ("claude", claude)))
    client = openai.AsyncOpenAI(base_url=sc.url + "/v1", api_key="unused", max_retries=0)
    ask: dict[str, Any] = {"model": "gpt-test", "tools": TOOLS, "store": False}
    try:
        first_input: Any = [{"role": "user", "content": "Look up 'sidecar'."}]
        if stream:
            async with client.responses.stream(input=first_input, **ask) as s:
                first = await s.get_final_response()
        else:
            first = await client.responses.create(input=first_input, **ask)
        (call,) = [item for item in first.output if item.type == "function_call"]
        assert call.name == "lookup" and json.loads(call.arguments) == {"word": "sidecar"}
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "a proxy"}
        again = [*first_input, call.model_dump(exclude_none=True), output]
        second = await client.responses.create(input=again, **ask)
        assert second.output_text == "lookup said a proxy"
    finally:
        await client.close()
        await native.stop()
    (use,) = [m for m in claude.seen[1].json["messages"] if m["role"] == "assistant"]
    assert use["content"][0]["type"] == "tool_use"
    assert use["content"][0]["id"] == call.call_id
