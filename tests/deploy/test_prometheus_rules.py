import subprocess
from typing import Any

import yaml

from .paths import RULES, RULES_TEST, require_tool

RUNBOOK_MARKER = "Runbook:"


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _alert_names() -> set[str]:
    return {rule["alert"] for rule in _rules() if "alert" in rule}


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name],
        cwd=RULES_TEST.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    silent = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case["exp_alerts"]
    }
    assert fired == _alert_names()
    assert silent == _alert_names()


def test_every_alert_has_severity_summary_and_runbook() -> None:
    for rule in _rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert RUNBOOK_MARKER in rule["annotations"]["description"], rule["alert"]
        assert "for" in rule, rule["alert"]


def test_rules_cover_the_issue_alerts_and_recordings() -> None:
    assert _alert_names() == {
        "LLMSidecarBackendFailing",
        "LLMSidecarCircuitOpen",
        "LLMSidecarFallbackExhausted",
        "LLMSidecarDown",
        "LLMSidecarRateLimitHeadroomLow",
    }
    records = {rule["record"] for rule in _rules() if "record" in rule}
    assert {
        "llm_sidecar:backend_success_ratio:rate5m",
        "llm_sidecar:fallback_rate:rate5m",
    } <= records
