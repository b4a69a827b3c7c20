import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from .contract import series_names
from .dashboard import (
    label_values,
    load,
    metric_names,
    panel_queries,
    substitute,
    variable_queries,
)
from .paths import DASHBOARD, GRAFANA_PROVISIONING, require_tool
from .schemas import dashboard_schema, errors

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ALL = {"chain": ".*", "backend": ".*"}


def _non_row_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_matches_the_grafana_schema() -> None:
    schema = dashboard_schema()
    dashboard = load()
    assert errors(Draft7Validator(schema), dashboard) == []
    panel = Draft7Validator({"$ref": "#/definitions/Panel", "definitions": schema["definitions"]})
    for p in _non_row_panels(dashboard):
        assert errors(panel, p) == [], p["title"]


def test_dashboard_is_provisioning_ready() -> None:
    dashboard = load()
    assert dashboard["uid"] == "llm-sidecar"
    assert not {"__inputs", "__requires", "__elements"} & dashboard.keys()
    assert dashboard.get("id") is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in _non_row_panels(dashboard):
        assert p["datasource"] == DATASOURCE, p["title"]
        for target in p["targets"]:
            assert target["datasource"] == DATASOURCE, p["title"]
    for name in ("chain", "backend"):
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["includeAll"] is True


def test_backend_variable_follows_the_chain_variable() -> None:
    variables = {v.where: v.expr for v in variable_queries(load())}
    assert label_values(variables["variable chain"]) == ("llm_sidecar_backend_info", "chain")
    assert label_values(variables["variable backend"]) == (
        'llm_sidecar_backend_info{chain=~"$chain"}',
        "backend",
    )


def test_dashboard_uses_only_contract_metrics() -> None:
    used = metric_names(DASHBOARD.read_text())
    assert used, "no llm_sidecar metric in the dashboard"
    assert used <= series_names()


def test_panels_answer_the_operator_questions() -> None:
    panels = {p["title"]: p for p in _non_row_panels(load())}
    exprs = {title: " ".join(t["expr"] for t in p["targets"]) for title, p in panels.items()}
    classes = panels["Why backends fail (by failure class)"]
    assert "sum by (class)" in exprs[classes["title"]]
    assert classes["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    assert 'outcome="success"' in exprs["Which backend serves the answers"]
    assert "llm_sidecar_fallback_exhausted_total" in exprs["Chain exhausted"]
    assert "histogram_quantile(0.99" in exprs["Request latency"]
    assert "llm_sidecar_backend_first_token_seconds_bucket" in exprs["Time to first token"]
    assert "llm_sidecar_tokens_total" in exprs["Tokens by backend"]
    assert "llm_sidecar_backend_circuit_state" in exprs["Circuit state"]
    # The kinds are parts of prompt and completion: stacking them all would double count.
    assert 'type=~"prompt|completion"' in exprs["Tokens by backend"]
    headroom = exprs["Rate-limit headroom"]
    assert "llm_sidecar_backend_ratelimit_remaining" in headroom
    assert "llm_sidecar_backend_ratelimit_limit" in headroom
    assert panels["Rate-limit headroom"]["fieldConfig"]["defaults"]["unit"] == "percentunit"
    cache = exprs["Prompt cache hit ratio"]
    assert 'type="cache_read"' in cache
    assert 'type="prompt"' in cache


@pytest.mark.parametrize(
    "title", ["Why backends fail (by failure class)", "Failures by backend and class"]
)
def test_skips_are_their_own_series_never_stacked_on_failures(title: str) -> None:
    (panel,) = [p for p in _non_row_panels(load()) if p["title"] == title]
    failures, skips = panel["targets"]
    assert 'class!~"circuit_open|unsupported"' in failures["expr"]
    assert 'class=~"circuit_open|unsupported"' in skips["expr"]
    assert skips["legendFormat"].startswith("skipped: ")
    (override,) = panel["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byFrameRefID", "options": skips["refId"]}
    stacking = {p["id"]: p["value"] for p in override["properties"]}["custom.stacking"]
    assert stacking["group"] != panel["fieldConfig"]["defaults"]["custom"]["stacking"]["group"]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = load()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, p["title"]
        cells |= area


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    queries = panel_queries(load())
    # promtool parses PromQL offline only inside rule files, so each query becomes a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": substitute(q.expr, ALL)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["dashboards.yaml", "datasources.yaml"])
def test_provisioning_files_are_grafana_provisioning_yaml(name: str) -> None:
    doc = yaml.safe_load((GRAFANA_PROVISIONING / name).read_text())
    assert doc["apiVersion"] == 1
    if name == "dashboards.yaml":
        (provider,) = doc["providers"]
        assert provider["type"] == "file"
        assert provider["options"]["path"]
    else:
        assert doc["datasources"][0]["type"] == "prometheus"
