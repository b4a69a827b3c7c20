"""The reasoning-control tables of `sidecar.dialects.thinking`."""

import pytest

from sidecar.dialects.thinking import (
    EFFORT_BUDGET,
    claude_on_bedrock_thinks,
    effort_for_budget,
    effort_of_thinking,
    openai_forces_tool,
    thinking_for_effort,
)


@pytest.mark.parametrize(
    ("budget", "effort"),
    [
        (1024, "low"),
        (4095, "low"),
        (4096, "medium"),
        (16383, "medium"),
        (16384, "high"),
        (10**6, "high"),
    ],
)
def test_a_budget_maps_to_the_first_effort_it_is_under(budget: int, effort: str) -> None:
    assert effort_for_budget(budget) == effort


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_effort_and_budget_round_trip(effort: str) -> None:
    assert effort_for_budget(EFFORT_BUDGET[effort]) == effort


def test_an_effort_named_in_output_config_wins_over_the_budget() -> None:
    body = {
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "output_config": {"effort": "high"},
    }
    assert effort_of_thinking(body) == "high"


def test_a_budget_that_is_not_a_number_asks_no_effort() -> None:
    assert effort_of_thinking({"thinking": {"type": "enabled", "budget_tokens": "lots"}}) is None


@pytest.mark.parametrize("thinking", [None, "enabled", {"type": "disabled"}, {"type": "other"}])
def test_no_thinking_asks_no_effort(thinking: object) -> None:
    assert effort_of_thinking({"thinking": thinking}) is None


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "global.anthropic.claude-opus-4-1-20250805-v1:0",
        "eu.anthropic.claude-haiku-4-5-20251001-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ],
)
def test_claude_models_with_extended_thinking_take_it_on_bedrock(model_id: str) -> None:
    assert claude_on_bedrock_thinks(model_id)


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-3-haiku-20240307-v1:0",
        "anthropic.claude-v2:1",
        "amazon.nova-pro-v1:0",
        "meta.llama3-70b-instruct-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",
    ],
)
def test_other_bedrock_models_get_no_thinking(model_id: str) -> None:
    assert not claude_on_bedrock_thinks(model_id)


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high", "xhigh"])
def test_every_openai_effort_has_a_budget_claude_accepts(effort: str) -> None:
    thinking = thinking_for_effort(
        {"reasoning_effort": effort}, ends_tool_loop=False, forces_tool=openai_forces_tool
    )
    assert thinking is not None
    assert thinking["budget_tokens"] >= 1024


@pytest.mark.parametrize("effort", [None, "none", "unknown"])
def test_no_or_unknown_effort_asks_no_thinking(effort: str | None) -> None:
    body = {"reasoning_effort": effort}
    assert thinking_for_effort(body, ends_tool_loop=False, forces_tool=openai_forces_tool) is None
