import copy
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator

from .paths import require_schemas

_INLINE_FLAG = re.compile(r"^\^\(\?([imsx]+)\)")


def _move_inline_flags(node: Any) -> Any:
    # Go RE2 accepts "^(?i)..."; Python's re wants global flags first (schemas/README.md).
    if isinstance(node, dict):
        return {
            k: _INLINE_FLAG.sub(r"(?\1)^", v)
            if k == "pattern" and isinstance(v, str)
            else _move_inline_flags(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_move_inline_flags(x) for x in node]
    return node


def _load(rel: str) -> dict[str, Any]:
    path: Path = require_schemas() / rel
    schema: dict[str, Any] = _move_inline_flags(json.loads(path.read_text()))
    return schema


def crd_validator(api_version: str, kind: str) -> Draft7Validator:
    group, version = api_version.split("/")
    return Draft7Validator(_load(f"{group}/{kind.lower()}_{version}.json"))


def dashboard_schema() -> dict[str, Any]:
    """The dashboard schema relaxed where it rejects what Grafana itself writes (README caveats)."""
    schema = copy.deepcopy(_load("grafana/dashboard.jsonschema.json"))
    defs = schema["definitions"]
    defs["MatcherConfig"]["properties"]["options"] = {}
    defs["DynamicConfigValue"]["properties"]["value"] = {}
    for name, definition in defs.items():
        query = definition.get("properties", {}).get("query")
        if name.endswith("VariableModel") and query is not None:
            definition["properties"]["query"] = {"anyOf": [query, {"type": "object"}]}
    return schema


def errors(validator: Draft7Validator, doc: Any) -> list[str]:
    found = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]
