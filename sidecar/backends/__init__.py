"""The backend kinds: one module per kind builds the upstream request and reads its answer (pure),
and exports its `SPEC` (`sidecar.backends.base.KindSpec`). `KINDS` is the one list of them.

A kind's module is imported only when a backend of that kind is configured: the Anthropic and
Bedrock translations, and aiobotocore, cost memory and startup time a sidecar without them need
not pay.
"""

import importlib
from typing import Any

KINDS = (
    "openai",
    "azure",
    "anthropic",
    "bedrock",
    "gemini",
    "vertex",
)


def spec_of(kind: str) -> Any:
    """The `KindSpec` of `kind` (typed Any here: this package's root imports nothing of ours, so
    that `sidecar.config` can reach it without a cycle)."""
    return importlib.import_module(f"sidecar.backends.{kind}").SPEC
