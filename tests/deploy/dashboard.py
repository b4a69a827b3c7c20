import json
import re
from dataclasses import dataclass
from typing import Any

from .paths import DASHBOARD, RULES

METRIC_NAME = re.compile(r"\bllm_sidecar_[a-z_]+\b")
# Grafana's own interval variables, replaced by what a 1-minute dashboard range would use.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


@dataclass(frozen=True)
class Query:
    where: str
    expr: str


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in {**GRAFANA_BUILTINS, **variables}.items():
        expr = expr.replace(name if name.startswith("$__") else f"${name}", value)
    return expr


def panel_queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def variable_queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(f"variable {var['name']}", var["query"]["query"])
        for var in dashboard["templating"]["list"]
        if var["type"] == "query"
    ]


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def label_values(query: str) -> tuple[str, str]:
    # (selector, label), the way Grafana's Prometheus data source reads label_values().
    parsed = LABEL_VALUES.match(query.strip())
    assert parsed is not None, f"unsupported variable query {query!r}"
    return parsed["match"] or "", parsed["label"]


def metric_names(text: str) -> set[str]:
    return set(METRIC_NAME.findall(text))


def rules_text() -> str:
    return RULES.read_text()
