import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Vendored with their licences (schemas/README.md): the suite reads nothing outside the repository.
SCHEMAS = Path(__file__).resolve().parent / "schemas"
LIBRARY_CHART = REPO / "deploy" / "helm" / "llm-sidecar"
DEMO_CHART = REPO / "deploy" / "helm" / "llm-sidecar-demo"
RULES = REPO / "deploy" / "prometheus" / "rules.yaml"
RULES_TEST = REPO / "deploy" / "prometheus" / "rules.test.yaml"
DASHBOARD = REPO / "grafana" / "dashboards" / "llm-sidecar.json"
GRAFANA_PROVISIONING = REPO / "grafana" / "provisioning"


def require_tool(name: str) -> str:
    """Missing tools fail the suite: a skipped deployment test reads as a passing one."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed; run scripts/ensure-tools (Debian package `prometheus`)",
            pytrace=False,
        )
    return path


def require_schemas() -> Path:
    if not SCHEMAS.is_dir():
        pytest.fail(f"{SCHEMAS} is missing from the checkout", pytrace=False)
    return SCHEMAS
