"""Issue 13's chain, `gemini → vertex-claude → bedrock-invoke`, serving the openai and anthropic
SDKs over several tool-calling turns, streaming and not, each turn answered by a different
backend as the ones before it fail; a Gemini 3 thought signature survives the whole session."""

import re
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
from conftest import Running, SidecarFactory
from fakes import anthropic_upstream
from fakes.bedrock_upstream import FakeBedrock
from fakes.bedrock_upstream import Script as BScript
from fakes.gemini_upstream import SIGNATURE, FakeGemini, error
from fakes.gemini_upstream import Script as GScript
from fakes.vertex_upstream import FakeGoogleAuth, FakeVertex
from openai.types.chat import ChatCompletionMessageParam

CLAUDE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
WEATHER: anthropic.types.ToolParam = {
    "name": "weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


async def three_vendors(
    sidecar: SidecarFactory,
    gemini: FakeGemini,
    vertex: FakeVertex,
    bedrock: FakeBedrock,
    key_file: Path,
) -> Running:
    return await sidecar(
        {
            "SIDECAR_BACKENDS": "g,vc,br",
            "G_KIND": "gemini",
            "G_BASE_URL": gemini.url,
            "G_API_KEY": "AIza-fake-key-0123456789",
            "G_MODEL": "gemini-3-pro-preview",
            "VC_KIND": "vertex",
            "VC_BASE_URL": vertex.url,
            "VC_PROJECT": "my-project",
            "VC_REGION": "global",
            "VC_CREDENTIALS_FILE": str(key_file),
            "VC_MODEL": "publishers/anthropic/models/claude-sonnet-4-5@20250929",
            "BR_KIND": "bedrock",
            "BR_API": "invoke",
            "BR_ENDPOINT_URL": bedrock.url,
            "BR_REGION": "us-east-1",
            "BR_API_KEY": "ABSK-fake-bedrock-key",
            "BR_MODEL": "anthropic.claude-3-5-sonnet-20240620-v1:0",
        }
    )


def script_turns(gemini: FakeGemini, vertex: FakeVertex, bedrock: FakeBedrock) -> None:
    down = error(503, "UNAVAILABLE", "The model is overloaded.")
    gemini.script(GScript(calls=[("weather", {"city": "Rome"})]), down, down, GScript(text="Done."))
    vertex.script(
        anthropic_upstream.Script(tool=("weather", {"city": "Oslo"})),
        anthropic_upstream.overloaded(),
    )
    bedrock.script(BScript(text="Rome sunny, Oslo snowing."))


def gemini_signatures(gemini: FakeGemini) -> list[Any]:
    contents = gemini.seen[-1].json["contents"]
    return [p.get("thoughtSignature") for c in contents for p in c["parts"] if "functionCall" in p]


async def test_the_anthropic_sdk_keeps_one_tool_session_across_three_vendors(
    sidecar: SidecarFactory,
    gemini: FakeGemini,
    vertex: FakeVertex,
    bedrock: FakeBedrock,
    auth: FakeGoogleAuth,
    tmp_path: Path,
) -> None:
    script_turns(gemini, vertex, bedrock)
    sc = await three_vendors(sidecar, gemini, vertex, bedrock, auth.service_account_file(tmp_path))
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="unused", max_retries=0)
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "weather?"}]
    served: list[str] = []

    def answered(content: Any, by: str, result: str | None = None) -> None:
        served.append(by)
        messages.append({"role": "assistant", "content": content})
        if result is not None:
            tool_use = next(b for b in content if b.type == "tool_use")
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": tool_use.id, "content": result}
                    ],
                }
            )

    async with client:
        # 1: Gemini, streamed: a signed tool call.
        async with client.messages.stream(
            model="m", max_tokens=99, messages=messages, tools=[WEATHER]
        ) as stream:
            first = await stream.get_final_message()
        answered(first.content, "g", "sunny")
        # 2: Gemini overloaded, Claude on Vertex: another tool call.
        raw2 = await client.messages.with_raw_response.create(
            model="m", max_tokens=99, messages=messages, tools=[WEATHER]
        )
        second = await raw2.parse()
        answered(second.content, raw2.headers["x-sidecar-backend"], "snowing")
        # 3: Gemini and Vertex down, Claude on Bedrock, streamed.
        async with client.messages.stream(
            model="m", max_tokens=99, messages=messages, tools=[WEATHER]
        ) as stream:
            third = await stream.get_final_message()
        answered(third.content, "br")
        messages.append({"role": "user", "content": "thanks"})
        # 4: Gemini is back and reads the whole history.
        fourth = await client.messages.create(
            model="m", max_tokens=99, messages=messages, tools=[WEATHER]
        )
    assert served == ["g", "vc", "br"]
    assert [len(f.seen) for f in (gemini, vertex, bedrock)] == [4, 2, 1]
    assert third.content[0].type == "text" and third.content[0].text == "Rome sunny, Oslo snowing."
    assert fourth.content[0].type == "text" and fourth.content[0].text == "Done."
    # Gemini's own call comes back signed; Claude's gets Google's stand-in.
    assert gemini_signatures(gemini) == [SIGNATURE, "skip_thought_signature_validator"]
    # Claude (Vertex, then Bedrock) got ids it accepts, the caller's bytes otherwise.
    for seen in (vertex.seen[0].json, bedrock.seen[0].json):
        blocks = [
            b for m in seen["messages"] if isinstance(m["content"], list) for b in m["content"]
        ]
        ids = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        assert ids and all(CLAUDE_ID.match(i) for i in ids)
    assert bedrock.seen[0].headers["authorization"] == "Bearer ABSK-fake-bedrock-key"


async def test_the_openai_sdk_keeps_one_tool_session_across_three_vendors(
    sidecar: SidecarFactory,
    gemini: FakeGemini,
    vertex: FakeVertex,
    bedrock: FakeBedrock,
    auth: FakeGoogleAuth,
    tmp_path: Path,
) -> None:
    script_turns(gemini, vertex, bedrock)
    sc = await three_vendors(sidecar, gemini, vertex, bedrock, auth.service_account_file(tmp_path))
    client = openai.AsyncOpenAI(base_url=sc.url + "/v1", api_key="unused", max_retries=0)
    tools: list[Any] = [
        {"type": "function", "function": {"name": "weather", "parameters": WEATHER["input_schema"]}}
    ]
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "weather?"}]
    served: list[str] = []
    async with client:
        for result in ("sunny", "snowing"):
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=messages, tools=tools
            )
            served.append(raw.headers["x-sidecar-backend"])
            message = raw.parse().choices[0].message
            assert message.tool_calls
            messages.append(message.model_dump(exclude_none=True))  # type: ignore[arg-type]
            call_id = message.tool_calls[0].id
            messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        stream = await client.chat.completions.create(
            model="m", messages=messages, tools=tools, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "thanks"}]
        final = await client.chat.completions.create(model="m", messages=messages, tools=tools)
    assert served == ["g", "vc"]
    assert text == "Rome sunny, Oslo snowing."
    assert bedrock.seen[0].operation == "invoke-with-response-stream"
    assert final.choices[0].message.content == "Done."
    assert gemini_signatures(gemini) == [SIGNATURE, "skip_thought_signature_validator"]


async def test_status_and_backend_info_name_the_new_kinds(
    sidecar: SidecarFactory,
    gemini: FakeGemini,
    vertex: FakeVertex,
    bedrock: FakeBedrock,
    auth: FakeGoogleAuth,
    tmp_path: Path,
) -> None:
    sc = await three_vendors(sidecar, gemini, vertex, bedrock, auth.service_account_file(tmp_path))
    async with aiohttp.ClientSession() as http, http.get(sc.admin + "/status") as r:
        status = await r.json()
    assert [(b["name"], b["kind"]) for b in status["backends"]] == [
        ("g", "gemini"),
        ("vc", "vertex"),
        ("br", "bedrock"),
    ]
    assert "AIza" not in str(status) and "ABSK" not in str(status)
    for position, (name, kind) in enumerate([("g", "gemini"), ("vc", "vertex"), ("br", "bedrock")]):
        labels = {"chain": "default", "backend": name, "kind": kind, "position": str(position)}
        assert sc.metric("llm_sidecar_backend_info", **labels) == 1


async def test_responses_callers_are_served_by_each_of_the_three_vendors_in_turn(
    sidecar: SidecarFactory,
    gemini: FakeGemini,
    vertex: FakeVertex,
    bedrock: FakeBedrock,
    auth: FakeGoogleAuth,
    tmp_path: Path,
) -> None:
    down = error(503, "UNAVAILABLE", "The model is overloaded.")
    gemini.script(GScript(text="From Gemini."), down, down, down)
    vertex.script(
        anthropic_upstream.Script(text="From Claude on Vertex."), anthropic_upstream.overloaded()
    )
    bedrock.script(BScript(text="From Claude on Bedrock."))
    sc = await three_vendors(sidecar, gemini, vertex, bedrock, auth.service_account_file(tmp_path))
    client = openai.AsyncOpenAI(base_url=sc.url + "/v1", api_key="unused", max_retries=0)
    try:
        first = await client.responses.create(model="m", input="hi", store=False)
        async with client.responses.stream(model="m", input="hi", store=False) as stream:
            second = await stream.get_final_response()
        third = await client.responses.create(model="m", input="hi", store=False)
    finally:
        await client.close()
    assert [r.output_text for r in (first, second, third)] == [
        "From Gemini.",
        "From Claude on Vertex.",
        "From Claude on Bedrock.",
    ]
    methods = [g.method for g in gemini.seen]
    assert methods == ["generateContent", "streamGenerateContent", "generateContent"]
    assert vertex.seen[0].method == "streamRawPredict"
    assert "messages" in vertex.seen[0].json and "input" not in vertex.seen[0].json
    answered = [line["served_by"] for line in sc.log_lines() if line.get("route") == "responses"]
    assert answered == ["g", "vc", "br"]
