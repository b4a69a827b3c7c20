import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# CI places a copy of shared/ beside the clone, so the path is relative to the repository.
SHARED = REPO.parent / "shared"
SCHEMAS = SHARED / "schemas"
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
        pytest.fail(
            f"{SCHEMAS} is missing; CI must place shared/ beside the repository", pytrace=False
        )
    return SCHEMAS
