"""The real Codex CLI (`codex exec`, `wire_api = "responses"`) through the sidecar.

What Codex 0.171 sends (recorded at the fakes): one streamed `POST /v1/responses` per model turn,
nothing else (no `/v1/models`, no compaction call for a short session), `store: false`,
`include: ["reasoning.encrypted_content"]`, `reasoning: {"summary": "auto"}`, `client_metadata`,
`prompt_cache_key`; input items are `developer`/`user` messages and, on the turn after a tool
ran, its `function_call` and `function_call_output` items; tools are `function`s
(`exec_command`, …), a `namespace` (`multi_agent_v1`) and a hosted `web_search`. The command it
runs comes back as the `function_call_output` text.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from backends.kinds import chain
from conftest import LONG, SidecarFactory
from e2e.agents import COMMAND, SAW, Sentinel, anthropic_tool_output, codex, responses_tool_output
from fakes.anthropic_upstream import FakeAnthropic
from fakes.anthropic_upstream import Script as Claude
from fakes.openai_upstream import FakeOpenAI
from fakes.openai_upstream import Script as Chat
from fakes.responses_upstream import FakeResponses
from fakes.responses_upstream import Script as Resp

PROMPT = "Run the echo command, then tell me what it printed."
CALL = ("exec_command", json.dumps({"cmd": COMMAND}))


async def _fakes() -> tuple[FakeResponses, FakeAnthropic, Sentinel]:
    return (
        await FakeResponses().start(),
        await FakeAnthropic().start(),
        await Sentinel().start(),
    )


async def _stop(*things: Any) -> None:
    for thing in things:
        await thing.stop()


def _inputs(body: dict[str, Any]) -> list[str]:
    return [str(i.get("type", "message")) for i in body["input"]]


async def test_codex_gets_a_plain_answer_from_a_native_openai_backend(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    oai, ant, sentinel = await _fakes()
    try:
        oai.script(Resp(text="Plain answer through the sidecar."))
        sc = await sidecar(chain(("oai", oai)))
        done = (await codex(sc.url, "Say hello.", tmp_path, sentinel)).check()
        assert "Plain answer through the sidecar." in done.stdout
        (req,) = oai.seen
        assert req.path == "/v1/responses" and req.json["stream"] is True
        assert req.json["store"] is False
        assert sentinel.seen == []
    finally:
        await _stop(oai, ant, sentinel)


async def test_codex_gets_a_plain_answer_from_an_anthropic_backend(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    oai, ant, sentinel = await _fakes()
    try:
        ant.script(Claude(text="Plain answer from Claude."))
        sc = await sidecar(chain(("ant", ant)))
        done = (await codex(sc.url, "Say hello.", tmp_path, sentinel)).check()
        assert "Plain answer from Claude." in done.stdout
        (req,) = ant.seen
        assert req.path == "/v1/messages" and req.json["stream"] is True
        assert sentinel.seen == []
    finally:
        await _stop(oai, ant, sentinel)


async def test_codex_runs_a_shell_tool_for_a_native_openai_backend(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    oai, ant, sentinel = await _fakes()
    try:
        oai.script(Resp(call=CALL), Resp(reply=responses_tool_output))
        sc = await sidecar(chain(("oai", oai)))
        done = (await codex(sc.url, PROMPT, tmp_path, sentinel)).check()
        assert SAW in done.stdout
        _, second = oai.seen
        assert _inputs(second.json)[-2:] == ["function_call", "function_call_output"]
        assert sentinel.seen == []
    finally:
        await _stop(oai, ant, sentinel)


async def test_codex_runs_a_shell_tool_for_an_anthropic_backend(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    oai, ant, sentinel = await _fakes()
    try:
        ant.script(
            Claude(tool=("exec_command", {"cmd": COMMAND})), Claude(reply=anthropic_tool_output)
        )
        sc = await sidecar(chain(("ant", ant)))
        done = (await codex(sc.url, PROMPT, tmp_path, sentinel)).check()
        assert SAW in done.stdout
        assert len(ant.seen) == 2
        assert sentinel.seen == []
    finally:
        await _stop(oai, ant, sentinel)


@pytest.mark.parametrize(
    ("failure", "cls"),
    [
        (Resp(status=503), "overloaded"),
        (Resp(end="failed_first"), "server_error"),
        (Resp(end="error_first", error_code="rate_limit_exceeded"), "rate_limited"),
    ],
    ids=["503", "response.failed", "error_event"],
)
async def test_codex_session_falls_back_from_openai_to_anthropic_mid_task(
    sidecar: SidecarFactory, tmp_path: Path, failure: Resp, cls: str
) -> None:
    """Turn 1 (reasoning and the tool call) comes from OpenAI; on turn 2 OpenAI fails before any
    output (a status, `response.failed`, an `error` event) and Anthropic, handed the whole
    session so far, reads the tool's output and answers. The encrypted reasoning Codex sends
    back verifies only at OpenAI: it never reaches Anthropic."""
    oai, ant, sentinel = await _fakes()
    try:
        oai.script(Resp(call=CALL, reasoning="I should run echo."), failure)
        ant.script(Claude(reply=anthropic_tool_output))
        sc = await sidecar(chain(("oai", oai), ("ant", ant)))
        done = (await codex(sc.url, PROMPT, tmp_path, sentinel)).check()
        assert SAW in done.stdout
        assert len(oai.seen) == 2 and len(ant.seen) == 1
        assert "reasoning" in _inputs(oai.seen[1].json)
        assert b"gAAAA-fake" in oai.seen[1].body and b"gAAAA-fake" not in ant.seen[0].body
        (turn,) = [m for m in ant.seen[0].json["messages"] if m["role"] == "assistant"]
        assert [b["type"] for b in turn["content"]] == ["tool_use"]
        served = [line["served_by"] for line in sc.log_lines()]
        assert served == ["oai", "ant"]
        fell_back = sc.log_lines()[1]["attempts"]
        assert [(a["backend"], a["class"]) for a in fell_back] == [
            ("oai", cls),
            ("ant", None),
        ]
        assert sentinel.seen == []
    finally:
        await _stop(oai, ant, sentinel)


async def test_codex_completes_a_tool_task_on_anthropic_while_openai_is_rate_limited(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    oai, ant, sentinel = await _fakes()
    try:
        oai.default = Resp(status=429, headers={"retry-after": "30"})
        ant.script(
            Claude(tool=("exec_command", {"cmd": COMMAND})), Claude(reply=anthropic_tool_output)
        )
        sc = await sidecar(chain(("oai", oai), ("ant", ant)))
        done = (await codex(sc.url, PROMPT, tmp_path, sentinel)).check()
        assert SAW in done.stdout
        assert len(ant.seen) == 2
        assert [line["served_by"] for line in sc.log_lines()] == ["ant", "ant"]
        assert sentinel.seen == []
    finally:
        await _stop(oai, ant, sentinel)


async def test_codex_gets_the_whole_answer_when_a_stream_cut_after_commit_is_recovered(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    oai, ant, sentinel = await _fakes()
    chat = await FakeOpenAI().start()
    try:
        oai.script(Resp(text=LONG, end="cut", after=3))
        chat.script(Chat(text=" " + " ".join(LONG.split(" ")[3:])))
        sc = await sidecar(chain(("oai", oai), ("b", chat), B_RESPONSES="chat", B_PREFILL="true"))
        done = (await codex(sc.url, "Say twenty words.", tmp_path, sentinel)).check()
        assert LONG in done.stdout
        assert chat.seen[0].json["messages"][-1] == {"role": "assistant", "content": "w0 w1 w2"}
        assert sentinel.seen == []
    finally:
        await _stop(oai, ant, chat, sentinel)


async def test_codex_fails_loudly_when_a_stream_is_cut_after_commit_and_nothing_recovers_it(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    oai, ant, sentinel = await _fakes()
    try:
        oai.script(Resp(text=LONG, end="cut", after=3))
        sc = await sidecar(chain(("oai", oai)))
        done = await codex(sc.url, "Say twenty words.", tmp_path, sentinel)
        # Codex 0.171 does not show the `error` event's message; what matters is that the
        # partial answer is never taken for a complete one.
        assert done.rc != 0
        assert "before response.completed" in done.stderr
        assert LONG not in done.stdout
        assert sentinel.seen == []
    finally:
        await _stop(oai, ant, sentinel)
