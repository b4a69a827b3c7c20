"""Reasoning controls across dialects: Anthropic `thinking` ⇄ OpenAI `reasoning_effort` (pure).

The pivot carries a reasoning request as `reasoning_effort`. Rules (the README repeats them):

| from                                   | to                                                    |
|----------------------------------------|-------------------------------------------------------|
| `thinking` enabled or adaptive, with   | `reasoning_effort` of that name (`max` → `high`)      |
| `output_config.effort`                 |                                                       |
| `thinking` enabled, `budget_tokens` N  | `reasoning_effort`: `low` if N < 4096, `medium` if    |
|                                        | N < 16384, else `high` (the values every OpenAI-      |
|                                        | compatible server accepts)                            |
| `thinking` adaptive without an effort  | nothing: the model decides how much to think, as an   |
|                                        | OpenAI model does by default                          |
| `thinking` disabled                    | nothing                                               |
| `reasoning_effort` E (to Claude)       | `thinking: {type: enabled, budget_tokens:             |
|                                        | EFFORT_BUDGET[E]}`; `none` → nothing; the max tokens  |
|                                        | become the budget plus the caller's (or the default): |
|                                        | a budget the caller did not choose must not eat the   |
|                                        | room it asked for the answer                          |

Claude's constraints on a thinking request, applied wherever the sidecar sends one to Claude:
`temperature`, `top_p` and `top_k` are dropped (Claude refuses them with thinking; they are
hints); a budget the sidecar derived is dropped when the tool choice forces a tool (a 400 with
manual thinking, and the tool choice changes the answer where thinking does not); and thinking is
dropped when the history's last assistant turn called a tool, because Claude then requires that
turn's signed thinking blocks, which no other vendor's history has.
"""

import re
from collections.abc import Callable
from typing import Any, Final

JSON = dict[str, Any]

EFFORT_BUDGET: Final[dict[str, int]] = {
    "minimal": 1024,  # Claude's smallest budget
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
}
# Budget → effort: the first effort whose bound the budget is under, else `high`; each effort's
# own budget above maps back to it.
BUDGET_BOUNDS: Final = (("low", 4096), ("medium", 16384))
# Anthropic effort levels as OpenAI reasoning efforts: `max` has no OpenAI peer every reasoning
# model takes, so it asks for the highest one they all do.
ANTHROPIC_EFFORT: Final[dict[str, str]] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "high",
}
SAMPLING: Final = ("temperature", "top_p", "top_k")
# Claude 3.7 and every family named `claude-{family}-{version}` since Claude 4 take thinking;
# the Claude 3 and 3.5 models and older do not.
_CLAUDE_THINKS: Final = re.compile(r"anthropic\.claude-(3-7-|(sonnet|opus|haiku)-\d)")


def effort_of_thinking(body: JSON) -> str | None:
    """The `reasoning_effort` that asks what an Anthropic request's `thinking` asks, or None."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return None
    effort = (body.get("output_config") or {}).get("effort")
    if effort in ANTHROPIC_EFFORT:
        return ANTHROPIC_EFFORT[effort]
    budget = thinking.get("budget_tokens")
    if thinking["type"] == "adaptive" or not isinstance(budget, int):
        return None
    return effort_for_budget(budget)


def effort_for_budget(budget: int) -> str:
    return next((e for e, bound in BUDGET_BOUNDS if budget < bound), "high")


def thinking_for_effort(
    body: JSON, *, ends_tool_loop: bool, forces_tool: Callable[[Any], bool]
) -> JSON | None:
    """The Claude `thinking` that a pivot request's `reasoning_effort` asks for, or None."""
    budget = EFFORT_BUDGET.get(str(body.get("reasoning_effort")))
    if budget is None or ends_tool_loop or forces_tool(body.get("tool_choice")):
        return None
    return {"type": "enabled", "budget_tokens": budget}


def openai_forces_tool(choice: Any) -> bool:
    return choice == "required" or isinstance(choice, dict)


def claude_on_bedrock_thinks(model_id: str) -> bool:
    """Whether a Bedrock model id (or inference profile, or ARN naming one) is a Claude that
    takes `thinking` in `additionalModelRequestFields`."""
    return _CLAUDE_THINKS.search(model_id) is not None
