"""The real Claude Code (`claude -p`) through the sidecar, with ANTHROPIC_BASE_URL at it.

What Claude Code 2.1.332 sends (recorded at the fakes): one streamed `POST /v1/messages` per
model turn (no `count_tokens`, no separate small-model request in print mode with the
nonessential traffic off), `x-api-key`, `anthropic-version: 2023-06-01`, an `anthropic-beta` list
(`claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,…`),
`thinking: {"type": "adaptive", "display": "omitted"}`, `context_management`, `output_config`
(`effort`), `metadata.user_id`, `max_tokens: 128000`, a `system` list of text blocks with
`cache_control`, and a `role: "system"` message inside `messages` after the first user message.
Its tools are custom tools with `input_schema` (`Bash`, `Read`, `Edit`, …; one with
`defer_loading`). The command's output comes back as a `tool_result` block.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from backends.kinds import chain
from conftest import SidecarFactory
from e2e.agents import (
    COMMAND,
    SAW,
    Sentinel,
    anthropic_tool_output,
    chat_tool_output,
    claude,
)
from fakes.anthropic_upstream import FakeAnthropic
from fakes.anthropic_upstream import Script as Claude
from fakes.openai_upstream import FakeOpenAI
from fakes.openai_upstream import Script as Chat

PROMPT = "Run the echo command, then tell me what it printed."
BASH = {"command": COMMAND, "description": "Print the marker"}
# Print mode runs no tool the user did not allow.
ALLOW = ("--allowedTools=Bash(echo:*)",)


async def _fakes() -> tuple[FakeAnthropic, FakeOpenAI, Sentinel]:
    return (
        await FakeAnthropic().start(),
        await FakeOpenAI().start(),
        await Sentinel().start(),
    )


async def _stop(*things: Any) -> None:
    for thing in things:
        await thing.stop()


async def test_claude_code_gets_a_plain_answer_from_an_anthropic_backend(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    ant, oai, sentinel = await _fakes()
    try:
        ant.script(Claude(text="Plain answer through the sidecar."))
        sc = await sidecar(chain(("ant", ant)))
        done = (await claude(sc.url, "Say hello.", tmp_path, sentinel)).check()
        assert "Plain answer through the sidecar." in done.stdout
        assert [r.path for r in ant.seen] == ["/v1/messages"]
        assert ant.seen[0].json["stream"] is True
        assert sentinel.seen == []
    finally:
        await _stop(ant, oai, sentinel)


async def test_claude_code_gets_a_plain_answer_from_an_openai_backend(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    ant, oai, sentinel = await _fakes()
    try:
        oai.script(Chat(text="Plain answer from GPT."))
        sc = await sidecar(chain(("oai", oai), OAI_MODEL="gpt-test"))
        done = (await claude(sc.url, "Say hello.", tmp_path, sentinel)).check()
        assert "Plain answer from GPT." in done.stdout
        assert [r.path for r in oai.seen] == ["/v1/chat/completions"]
        assert sentinel.seen == []
    finally:
        await _stop(ant, oai, sentinel)


async def test_claude_code_runs_a_shell_tool_for_an_anthropic_backend(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    ant, oai, sentinel = await _fakes()
    try:
        ant.script(Claude(tool=("Bash", BASH)), Claude(reply=anthropic_tool_output))
        sc = await sidecar(chain(("ant", ant)))
        done = (await claude(sc.url, PROMPT, tmp_path, sentinel, *ALLOW)).check()
        assert SAW in done.stdout
        assert len(ant.seen) == 2
        assert sentinel.seen == []
    finally:
        await _stop(ant, oai, sentinel)


async def test_claude_code_runs_a_shell_tool_for_an_openai_backend(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    ant, oai, sentinel = await _fakes()
    try:
        oai.script(Chat(call=("Bash", json.dumps(BASH))), Chat(reply=chat_tool_output))
        sc = await sidecar(chain(("oai", oai), OAI_MODEL="gpt-test"))
        done = (await claude(sc.url, PROMPT, tmp_path, sentinel, *ALLOW)).check()
        assert SAW in done.stdout
        assert len(oai.seen) == 2
        assert sentinel.seen == []
    finally:
        await _stop(ant, oai, sentinel)


@pytest.mark.parametrize(
    "failure",
    [Claude(status=529, error_type="overloaded_error"), Claude(end="error_first")],
    ids=["529", "error_event"],
)
async def test_claude_code_session_falls_back_from_anthropic_to_openai_mid_task(
    sidecar: SidecarFactory, tmp_path: Path, failure: Claude
) -> None:
    """Turn 1 (the tool call) comes from Anthropic; on turn 2 Anthropic is overloaded (a 529, or
    an `overloaded_error` event before any content) and
    OpenAI, handed the whole session so far, reads the tool's output and answers."""
    ant, oai, sentinel = await _fakes()
    try:
        ant.script(Claude(tool=("Bash", BASH)), failure)
        oai.script(Chat(reply=chat_tool_output))
        sc = await sidecar(chain(("ant", ant), ("oai", oai), OAI_MODEL="gpt-test"))
        done = (await claude(sc.url, PROMPT, tmp_path, sentinel, *ALLOW)).check()
        assert SAW in done.stdout
        assert len(ant.seen) == 2 and len(oai.seen) == 1
        calls = [m for m in oai.seen[0].json["messages"] if m.get("tool_calls")]
        assert [c["function"]["name"] for m in calls for c in m["tool_calls"]] == ["Bash"]
        assert [line["served_by"] for line in sc.log_lines()] == ["ant", "oai"]
        fell_back = sc.log_lines()[1]["attempts"]
        assert [(a["backend"], a["class"]) for a in fell_back] == [
            ("ant", "overloaded"),
            ("oai", None),
        ]
        assert sentinel.seen == []
    finally:
        await _stop(ant, oai, sentinel)


async def test_claude_code_completes_a_tool_task_on_openai_while_anthropic_is_overloaded(
    sidecar: SidecarFactory, tmp_path: Path
) -> None:
    ant, oai, sentinel = await _fakes()
    try:
        ant.default = Claude(status=529, error_type="overloaded_error")
        oai.script(Chat(call=("Bash", json.dumps(BASH))), Chat(reply=chat_tool_output))
        sc = await sidecar(chain(("ant", ant), ("oai", oai), OAI_MODEL="gpt-test"))
        done = (await claude(sc.url, PROMPT, tmp_path, sentinel, *ALLOW)).check()
        assert SAW in done.stdout
        assert len(oai.seen) == 2
        assert [line["served_by"] for line in sc.log_lines()] == ["oai", "oai"]
        assert sentinel.seen == []
    finally:
        await _stop(ant, oai, sentinel)
