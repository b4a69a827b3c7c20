import json
from pathlib import Path
from typing import Any

import helm_python
import yaml
from helm_python import _native

# Versions the tests render for: before native sidecars, their beta, their GA, Helm's default.
LEGACY_KUBE = "1.28.0"
NATIVE_KUBE = "1.33.0"
KUBE_VERSIONS = ("1.28.0", "1.29.0", "1.33.0", "1.36.0")
MONITORING_API = "monitoring.coreos.com/v1"


def render(
    chart_dir: Path,
    values: dict[str, Any] | None = None,
    *,
    kube_version: str = NATIVE_KUBE,
    api_versions: tuple[str, ...] = (MONITORING_API,),
    release: str = "demo",
    namespace: str = "apps",
) -> dict[str, str]:
    """The one place that works around helm-python-sdk 0.2.2's public `render()`.

    `Chart.render()` has no kube_version/api_versions arguments, but the bundled libhelm_c's
    `helm_render` options decode both (its Go struct has `kube_version` and `api_versions`), so
    the helper calls it directly. Pinned to helm-python-sdk==0.2.2 in pyproject.
    """
    opts = {
        "name": release,
        "namespace": namespace,
        "is_install": True,
        "kube_version": f"v{kube_version}",
        "api_versions": list(api_versions),
    }
    with helm_python.Chart.load(chart_dir) as chart:
        payload = _native.call_string(
            "helm_render",
            chart._raw(),
            json.dumps(values) if values is not None else None,
            json.dumps(opts),
        )
    rendered: dict[str, str] = json.loads(payload)
    return rendered


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def notes(rendered: dict[str, str]) -> str:
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = only(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def sidecar_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = pod_spec(docs)
    found = [
        c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "llm-sidecar"
    ]
    assert len(found) == 1
    container: dict[str, Any] = found[0]
    return container
