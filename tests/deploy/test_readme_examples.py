"""Every README code block that configures the sidecar or a chart runs here, as a user would run
it: shell exports through `llm-sidecar check`, the Kubernetes steps assembled into an app chart,
rendered, validated and their environment checked. A new block of that sort fails
`test_every_configuring_block_is_exercised` until a test here runs it."""

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .paths import DEMO_CHART, LIBRARY_CHART, REPO
from .render import LEGACY_KUBE, NATIVE_KUBE, manifests, only, render

README = REPO / "README.md"
_FENCE = re.compile(r"^( *)```(\w+)\n(.*?)^\1```$", re.M | re.S)

# A marker that names each configuring block, and what exercises it.
SHELL_SETUPS = ("export PRIMARY_API_KEY=sk-...", "export PRIMARY_BASE_URL=https://api.openai.com")
CHAINS_FILE = "fallback_chains:"
DEPENDENCY = "dependencies:"
CONFIGMAPS = '{{ include "llm-sidecar.configMaps" . }}'
POD_TEMPLATE = 'include "llm-sidecar.initContainers"'
VALUES = "secret:                              # an existing Secret"
SECRET_FILES = "files:                             # *_FILE env var"
SECRET = "kubectl create secret generic llm-sidecar-keys"
EXTRA_INIT = "extraInitContainers:"
DEMO_MONITORING = "monitoring:\n  podMonitor:"
DOCKER_RUN = "docker run"
IMAGE_BUILD = "docker buildx build --push"
# The agent CLIs' set-up: tests/e2e runs the real CLIs with these blocks.
CLAUDE_CODE = "export ANTHROPIC_BASE_URL="
EXERCISED = (
    *SHELL_SETUPS,
    CHAINS_FILE,
    DEPENDENCY,
    CONFIGMAPS,
    POD_TEMPLATE,
    VALUES,
    SECRET_FILES,
    SECRET,
    EXTRA_INIT,
    DEMO_MONITORING,
    DOCKER_RUN,
    IMAGE_BUILD,
    CLAUDE_CODE,
)
# Blocks that run make targets: they configure nothing.
NOT_CONFIGURING = ("make run ", "make lint ")


def blocks(lang: str | None = None) -> list[str]:
    text = README.read_text()
    return [
        textwrap.dedent(m.group(3))
        for m in _FENCE.finditer(text)
        if lang is None or m.group(2) == lang
    ]


def block(marker: str) -> str:
    (found,) = [b for b in blocks() if marker in b]
    return found


def test_every_configuring_block_is_exercised() -> None:
    for text in blocks("sh") + blocks("yaml"):
        markers = [m for m in EXERCISED + NOT_CONFIGURING if m in text]
        assert len(markers) == 1, f"README block not exercised by a test:\n{text}"


def _exports(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            env.update(word.split("=", 1) for word in words[1:])  # type: ignore[misc]
    return env


def _check(env: dict[str, str]) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    r = subprocess.run(
        [sys.executable, "-m", "sidecar", "check"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    assert doc["warnings"] == []
    return doc


@pytest.mark.parametrize("marker", SHELL_SETUPS)
def test_shell_setups_pass_check(marker: str) -> None:
    doc = _check(_exports(block(marker)))
    assert doc["chains"] == {"default": ["primary", "secondary"]}


def test_chains_file_passes_check_with_a_key_per_prefix(tmp_path: Path) -> None:
    path = tmp_path / "chains.yaml"
    path.write_text(block(CHAINS_FILE))
    prefixes = {
        i["env_prefix"]
        for c in yaml.safe_load(path.read_text())["fallback_chains"].values()
        for i in c
    }
    env = {f"{p}API_KEY": "sk-test-0123456789" for p in prefixes}
    doc = _check({"SIDECAR_CONFIG": str(path), **env})
    assert doc["chains"] == {"default": ["azure", "openai"], "gpt-4o": ["openai"]}


@pytest.fixture
def readme_app(tmp_path: Path) -> Path:
    """An app chart made of the README's steps 1-3, verbatim."""
    chart = tmp_path / "app"
    (chart / "templates").mkdir(parents=True)
    (chart / "charts").mkdir()
    os.symlink(LIBRARY_CHART, chart / "charts" / "llm-sidecar")
    meta = {"apiVersion": "v2", "name": "app", "version": "1.0.0"}
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta) + block(DEPENDENCY))
    (chart / "templates" / "llm-sidecar.yaml").write_text(block(CONFIGMAPS))
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n"
    pod = textwrap.indent(block(POD_TEMPLATE), "  ")
    (chart / "templates" / "deployment.yaml").write_text(deployment + pod)
    return chart


def _readme_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(block(VALUES))
    return values


@pytest.mark.parametrize("kube", [NATIVE_KUBE, LEGACY_KUBE])
def test_kubernetes_steps_render_a_valid_pod_whose_env_passes_check(
    readme_app: Path, tmp_path: Path, kube: str
) -> None:
    docs = manifests(render(readme_app, _readme_values(), kube_version=kube))
    deployment = only(docs, "Deployment")
    spec = deployment["spec"]
    # What the README leaves to the app chart: its selector and its own image.
    spec["selector"] = {"matchLabels": {"app": "app"}}
    spec["template"]["metadata"]["labels"] = {"app": "app"}
    spec["template"]["spec"]["containers"][0]["image"] = "app:1"
    for doc in docs:
        kubernetes_validate.validate(doc, kube, strict=True)
    pod = spec["template"]["spec"]
    init = pod["initContainers"] or []  # the README's `initContainers:` is empty in legacy mode
    (sidecar,) = [c for c in init + pod["containers"] if c["name"] == "llm-sidecar"]
    assert (sidecar in init) == (kube == NATIVE_KUBE)
    _check(_container_env(docs, sidecar, tmp_path))


def _container_env(
    docs: list[dict[str, Any]], container: dict[str, Any], tmp_path: Path
) -> dict[str, str]:
    """The environment the kubelet would give the container, with made-up secret values."""
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        env.update(config_maps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:  # a *_FILE variable: a path into the mounted Secret
            secret = tmp_path / "secret" / Path(var["value"]).name
            secret.parent.mkdir(exist_ok=True)
            secret.write_text(f"sk-test-{secret.name}-0123456789\n")
            env[var["name"]] = str(secret)
            continue
        key = var["valueFrom"]["secretKeyRef"]["key"]
        env[var["name"]] = f"sk-test-{key}-0123456789"
    if "SIDECAR_CONFIG" in env:
        (chains,) = [data["chains.yaml"] for data in config_maps.values() if "chains.yaml" in data]
        path = tmp_path / "chains.yaml"
        path.write_text(chains)
        env["SIDECAR_CONFIG"] = str(path)
    env["SIDECAR_PORT"] = env["SIDECAR_ADMIN_PORT"] = "0"
    return env


def test_secret_files_mount_the_secret_directory_and_pass_check(
    readme_app: Path, tmp_path: Path
) -> None:
    values = _readme_values()
    files: dict[str, Any] = yaml.safe_load(block(SECRET_FILES))["sidecar"]["secret"]
    secret = values["sidecar"]["secret"]
    secret["env"] = {k: v for k, v in secret["env"].items() if f"{k}_FILE" not in files["files"]}
    secret.update(files)
    docs = manifests(render(readme_app, values, kube_version=NATIVE_KUBE))
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "llm-sidecar"]
    env = {v["name"]: v for v in sidecar["env"]}
    assert env["PRIMARY_API_KEY_FILE"]["value"] == f"{files['mountPath']}/primary-api-key"
    assert "PRIMARY_API_KEY" not in env
    (mount,) = [m for m in sidecar["volumeMounts"] if m["mountPath"] == files["mountPath"]]
    assert "subPath" not in mount  # the kubelet never updates a subPath mount
    doc = _check(_container_env(docs, sidecar, tmp_path))
    assert doc["backends"]["primary"]["api_key_file"].endswith("primary-api-key")


def test_secret_command_creates_every_key_the_values_map() -> None:
    created = set(re.findall(r"--from-literal=([\w-]+)=", block(SECRET)))
    assert created == set(_readme_values()["sidecar"]["secret"]["env"].values())


def test_extra_init_container_is_a_valid_native_sidecar_like_the_librarys(
    readme_app: Path,
) -> None:
    pasted = yaml.safe_load(block(EXTRA_INIT))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app"},
        "spec": {
            "initContainers": pasted["extraInitContainers"],
            "containers": [{"name": "app", "image": "app:1"}],
            "volumes": pasted["extraVolumes"],
        },
    }
    kubernetes_validate.validate(pod, NATIVE_KUBE, strict=True)
    (container,) = pasted["extraInitContainers"]
    docs = manifests(render(readme_app, _readme_values()))
    (library,) = only(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert container["restartPolicy"] == library["restartPolicy"] == "Always"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == library[probe]["httpGet"]
    for key in ("securityContext", "resources", "image"):
        assert container[key] == library[key], key
    assert [p["containerPort"] for p in container["ports"]] == [8700, 8701]


def test_demo_chart_monitoring_values_render_the_monitoring_objects() -> None:
    docs = manifests(render(DEMO_CHART, yaml.safe_load(block(DEMO_MONITORING))))
    for kind in ("PodMonitor", "PrometheusRule"):
        assert only(docs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboards = [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
    assert [d["metadata"]["namespace"] for d in dashboards] == ["monitoring"]


def test_images_in_the_readme_are_the_charts_default_or_the_one_being_built() -> None:
    defaults = yaml.safe_load(
        (LIBRARY_CHART / "templates" / "_defaults.tpl")
        .read_text()
        .split("-}}", 1)[1]
        .rsplit("{{-", 1)[0]
    )["image"]
    default = f"{defaults['repository']}:{defaults['tag']}"
    assert block(DOCKER_RUN).split()[-1] == default
    assert yaml.safe_load(block(EXTRA_INIT))["extraInitContainers"][0]["image"] == default
    built = shlex.split(block(IMAGE_BUILD))
    assert built[:4] == ["docker", "buildx", "build", "--push"] and built[-1] == "."
