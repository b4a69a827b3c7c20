import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from .paths import DASHBOARD, DEMO_CHART, LIBRARY_CHART, REPO, RULES, require_schemas
from .render import (
    KUBE_VERSIONS,
    LEGACY_KUBE,
    NATIVE_KUBE,
    manifests,
    notes,
    only,
    pod_spec,
    render,
    sidecar_container,
)
from .schemas import crd_validator, errors

ALL_MONITORING: dict[str, Any] = {
    "monitoring": {
        "podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboard": {"enabled": True, "namespace": "monitoring"},
    }
}
CHAINS_ONLY: dict[str, Any] = {
    "sidecar": {
        "backends": "",
        "chains": {
            "default": [
                {"name": "azure", "env_prefix": "AZURE_FALLBACK_"},
                {"name": "openai", "env_prefix": "OPENAI_FALLBACK_"},
            ],
            "gpt-4o": [{"name": "openai", "env_prefix": "OPENAI_FALLBACK_"}],
        },
        "secret": {
            "name": "keys",
            # null deletes the demo's defaults: Helm merges maps key by key.
            "env": {
                "AZURE_FALLBACK_API_KEY": "azure",
                "OPENAI_FALLBACK_API_KEY": "openai",
                "PRIMARY_API_KEY": None,
                "SECONDARY_API_KEY": None,
            },
        },
    }
}
SECRET_FILES: dict[str, Any] = {
    "sidecar": {
        "secret": {
            "name": "keys",
            # null deletes the demo's secretKeyRef defaults: one form per credential.
            "env": {"PRIMARY_API_KEY": None, "SECONDARY_API_KEY": None},
            "files": {
                "PRIMARY_API_KEY_FILE": "primary-api-key",
                "SECONDARY_API_KEY_FILE": "secondary-api-key",
                "SIDECAR_AUTH_TOKEN_FILE": "inbound-token",
            },
        },
    }
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-monitoring": ALL_MONITORING,
    "chains-only": CHAINS_ONLY,
    "backends-and-chains": {
        "sidecar": {
            "chains": {"gpt-4o": [{"name": "openai", "env_prefix": "OPENAI_"}]},
            "secret": {"env": {"OPENAI_API_KEY": "openai-api-key"}},
        }
    },
    "forced-legacy": {"sidecar": {"mode": "legacy"}},
    "secret-files": SECRET_FILES,
    "exposed-pinned": {
        "sidecar": {
            "exposeProxy": True,
            "image": {"digest": "sha256:" + "a" * 64},
            "ports": {"proxy": 9000, "admin": 9001},
        }
    },
}
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _docs(values: dict[str, Any] | None = None, kube: str = NATIVE_KUBE) -> list[dict[str, Any]]:
    return manifests(render(DEMO_CHART, values, kube_version=kube))


def _configmap_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    env = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-env")
    )
    data: dict[str, str] = env["data"]
    return data


def _checksum(docs: list[dict[str, Any]]) -> str:
    annotations = only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    checksum: str = annotations["checksum/llm-sidecar-config"]
    return checksum


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_demo_chart_lints_without_warnings(name: str, kube: str) -> None:
    report = helm_python.lint(DEMO_CHART, VALUE_SETS[name], strict=True, kube_version=f"v{kube}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == []
    assert problems == []


def test_library_chart_lints_as_a_library() -> None:
    report = helm_python.lint(LIBRARY_CHART, strict=True)
    assert report["errors"] == []
    with helm_python.Chart.load(LIBRARY_CHART) as chart:
        assert chart.metadata["type"] == "library"


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_passes_strict_kubernetes_validation(name: str, kube: str) -> None:
    require_schemas()
    for doc in _docs(VALUE_SETS[name], kube):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            validator = crd_validator(doc["apiVersion"], doc["kind"])
            assert errors(validator, doc) == [], doc["kind"]
        else:
            kubernetes_validate.validate(doc, kube, strict=True)


@pytest.mark.parametrize(("kube", "mode"), [("1.28.0", "legacy"), ("1.29.0", "native")])
def test_auto_mode_uses_native_sidecars_from_kubernetes_1_29(kube: str, mode: str) -> None:
    spec = pod_spec(_docs(kube=kube))
    in_init = [c["name"] for c in spec.get("initContainers", [])]
    in_main = [c["name"] for c in spec["containers"]]
    assert ("llm-sidecar" in in_init) == (mode == "native")
    assert ("llm-sidecar" in in_main) == (mode == "legacy")


def test_native_sidecar_is_an_init_container_that_restarts_always() -> None:
    spec = pod_spec(_docs({"sidecar": {"mode": "native"}}, kube=NATIVE_KUBE))
    (sidecar,) = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["app"]


def test_legacy_sidecar_is_a_regular_container_without_restart_policy() -> None:
    spec = pod_spec(_docs({"sidecar": {"mode": "legacy"}}, kube=NATIVE_KUBE))
    assert "initContainers" not in spec
    sidecar = sidecar_container(_docs({"sidecar": {"mode": "legacy"}}))
    assert "restartPolicy" not in sidecar


@pytest.mark.parametrize("kube", [LEGACY_KUBE, NATIVE_KUBE])
def test_containers_run_restricted(kube: str) -> None:
    docs = _docs(kube=kube)
    sidecar = sidecar_container(docs)
    for key, value in CONTAINER_SECURITY.items():
        assert sidecar["securityContext"][key] == value, key
    assert isinstance(sidecar["securityContext"]["runAsUser"], int)
    assert sidecar["securityContext"]["runAsUser"] > 0
    spec = pod_spec(docs)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    app = next(c for c in spec["containers"] if c["name"] == "app")
    assert app["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert app["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("kube", [LEGACY_KUBE, NATIVE_KUBE])
def test_probes_use_the_admin_port_and_readiness_ignores_backends(kube: str) -> None:
    sidecar = sidecar_container(_docs({"sidecar": {"ports": {"admin": 9101}}}, kube))
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 9101}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 9101}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9101}
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"sidecar-proxy": 8700, "sidecar-admin": 9101}


def test_admin_listens_on_all_interfaces_and_proxy_stays_on_loopback() -> None:
    data = _configmap_data(_docs())
    assert data["SIDECAR_ADMIN_HOST"] == "0.0.0.0"
    assert data["SIDECAR_HOST"] == "127.0.0.1"
    assert (data["SIDECAR_PORT"], data["SIDECAR_ADMIN_PORT"]) == ("8700", "8701")
    exposed = _configmap_data(_docs({"sidecar": {"exposeProxy": True}}))
    assert exposed["SIDECAR_HOST"] == "0.0.0.0"


def test_app_reaches_the_sidecar_on_loopback_without_a_key() -> None:
    spec = pod_spec(_docs({"sidecar": {"ports": {"proxy": 9000}}}))
    app = next(c for c in spec["containers"] if c["name"] == "app")
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:9000/v1"
    assert not any("KEY" in name for name in env)


def test_api_keys_come_only_from_the_existing_secret() -> None:
    docs = _docs(CHAINS_ONLY)
    assert not [d for d in docs if d["kind"] == "Secret"]
    sidecar = sidecar_container(docs)
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in sidecar["env"]}
    assert refs == {
        "AZURE_FALLBACK_API_KEY": {"name": "keys", "key": "azure"},
        "OPENAI_FALLBACK_API_KEY": {"name": "keys", "key": "openai"},
    }
    assert all("value" not in e for e in sidecar["env"])
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert not any(k.endswith("API_KEY") for k in doc.get("data", {}))
    assert sidecar["envFrom"] == [{"configMapRef": {"name": "demo-llm-sidecar-env"}}]


def test_secret_files_mount_the_secret_directory_and_point_file_vars_at_it() -> None:
    docs = _docs(SECRET_FILES)
    sidecar = sidecar_container(docs)
    env = {e["name"]: e for e in sidecar["env"]}
    assert env == {
        "PRIMARY_API_KEY_FILE": {
            "name": "PRIMARY_API_KEY_FILE",
            "value": "/var/run/secrets/llm-sidecar/primary-api-key",
        },
        "SECONDARY_API_KEY_FILE": {
            "name": "SECONDARY_API_KEY_FILE",
            "value": "/var/run/secrets/llm-sidecar/secondary-api-key",
        },
        "SIDECAR_AUTH_TOKEN_FILE": {
            "name": "SIDECAR_AUTH_TOKEN_FILE",
            "value": "/var/run/secrets/llm-sidecar/inbound-token",
        },
    }
    (mount,) = [m for m in sidecar["volumeMounts"] if m["name"] == "llm-sidecar-secret"]
    # A subPath mount would never see the kubelet's updates: the rotation would need a restart.
    assert mount == {
        "name": "llm-sidecar-secret",
        "mountPath": "/var/run/secrets/llm-sidecar",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["llm-sidecar-secret"]["secret"] == {
        "secretName": "keys",
        "defaultMode": 0o444,
        "items": [
            {"key": k, "path": k} for k in ("inbound-token", "primary-api-key", "secondary-api-key")
        ],
    }
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_secret_files_take_a_custom_mount_path() -> None:
    values = {
        "sidecar": {
            **SECRET_FILES["sidecar"],
            "secret": {**SECRET_FILES["sidecar"]["secret"], "mountPath": "/keys"},
        }
    }
    env = {e["name"]: e["value"] for e in sidecar_container(_docs(values))["env"]}
    assert env["PRIMARY_API_KEY_FILE"] == "/keys/primary-api-key"


def test_chains_are_mounted_as_the_sidecar_config_file() -> None:
    docs = _docs(CHAINS_ONLY)
    data = _configmap_data(docs)
    assert "SIDECAR_BACKENDS" not in data
    assert data["SIDECAR_CONFIG"] == "/etc/llm-sidecar/chains.yaml"
    chains = next(d for d in docs if d["metadata"]["name"] == "demo-llm-sidecar-chains")
    parsed = yaml.safe_load(chains["data"]["chains.yaml"])
    assert parsed == {"fallback_chains": CHAINS_ONLY["sidecar"]["chains"]}
    mounts = {m["mountPath"]: m["name"] for m in sidecar_container(docs)["volumeMounts"]}
    assert mounts["/etc/llm-sidecar"] == "llm-sidecar-config"
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["llm-sidecar-config"]["configMap"]["name"] == "demo-llm-sidecar-chains"


def test_backends_become_sidecar_backends_and_no_config_file() -> None:
    docs = _docs()
    assert _configmap_data(docs)["SIDECAR_BACKENDS"] == "primary,secondary"
    assert "SIDECAR_CONFIG" not in _configmap_data(docs)
    assert {v["name"] for v in pod_spec(docs)["volumes"]} == {"llm-sidecar-tmp"}


def test_checksum_changes_when_sidecar_config_changes() -> None:
    base = _checksum(_docs())
    assert _checksum(_docs({"sidecar": {"env": {"SIDECAR_FALLBACK_ON": "rate_limited"}}})) != base
    assert _checksum(_docs({"sidecar": {"backends": "primary"}})) != base
    assert _checksum(_docs(CHAINS_ONLY)) != base
    assert _checksum(_docs({"replicaCount": 3})) == base


def test_termination_grace_adds_the_apps_stop_to_a_native_sidecars() -> None:
    # 10 + 40 + 5 for the sidecar; the app's own 10 s come first, then the sidecar's stop.
    shutdown = {"sidecar": {"shutdown": {"delaySeconds": 10, "graceSeconds": 40}}}
    assert pod_spec(_docs(shutdown))["terminationGracePeriodSeconds"] == 10 + 55
    slow_app = pod_spec(_docs({"terminationGracePeriodSeconds": 120}))
    assert slow_app["terminationGracePeriodSeconds"] == 120 + 35
    data = _configmap_data(_docs({"sidecar": {"shutdown": {"delaySeconds": 10}}}))
    assert (data["SIDECAR_SHUTDOWN_DELAY_S"], data["SIDECAR_SHUTDOWN_GRACE_S"]) == ("10", "25")


def test_termination_grace_is_the_larger_need_with_a_legacy_sidecar() -> None:
    shutdown = {"sidecar": {"shutdown": {"delaySeconds": 10, "graceSeconds": 40}}}
    assert pod_spec(_docs(shutdown, LEGACY_KUBE))["terminationGracePeriodSeconds"] == 55
    slow_app = pod_spec(_docs({"terminationGracePeriodSeconds": 120}, LEGACY_KUBE))
    assert slow_app["terminationGracePeriodSeconds"] == 120


def test_chart_comments_point_at_files_that_exist() -> None:
    for path in sorted(DEMO_CHART.parent.rglob("*")):
        if path.is_file() and path.suffix in (".yaml", ".tpl", ".txt", ".json"):
            for ref in re.findall(r"[\w./-]+\.md\b", path.read_text()):
                assert (REPO / ref).is_file() or (path.parent / ref).is_file(), (path, ref)


def test_resources_are_requested() -> None:
    resources = sidecar_container(_docs())["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]


def test_monitoring_objects_exist_only_when_enabled() -> None:
    kinds = {d["kind"] for d in _docs()}
    assert kinds.isdisjoint({"PodMonitor", "ServiceMonitor", "PrometheusRule"})
    assert not [d for d in _docs() if d["metadata"]["name"].endswith("-dashboard")]
    docs = _docs(ALL_MONITORING)
    for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule"):
        assert only(docs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert only(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "sidecar-admin"


def test_service_monitor_targets_the_admin_port_of_the_pods() -> None:
    docs = _docs(ALL_MONITORING)
    service = only(docs, "Service")
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["targetPort"]) == ("sidecar-admin", 8701)
    monitor = only(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "sidecar-admin"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_prometheus_rule_is_the_rules_file() -> None:
    rule = only(_docs(ALL_MONITORING), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_dashboard_configmap_is_labelled_for_grafana_and_is_the_dashboard_file() -> None:
    docs = _docs(ALL_MONITORING)
    cm = next(d for d in docs if d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["data"]["llm-sidecar.json"] == DASHBOARD.read_text().rstrip("\n")


def test_chart_files_link_to_the_single_sources() -> None:
    files = DEMO_CHART / "files"
    assert (files / "rules.yaml").is_symlink()
    assert (files / "rules.yaml").resolve() == RULES.resolve()
    assert (files / "llm-sidecar.json").is_symlink()
    assert (files / "llm-sidecar.json").resolve() == DASHBOARD.resolve()
    library = DEMO_CHART / "charts" / "llm-sidecar"
    assert library.is_symlink()
    assert library.resolve() == LIBRARY_CHART.resolve()


def test_notes_explain_the_secret_and_the_mode() -> None:
    text = notes(render(DEMO_CHART, kube_version=LEGACY_KUBE))
    assert "legacy sidecar" in text
    assert "create secret generic llm-sidecar-keys" in text
    assert "--from-literal=primary-api-key=" in text
    assert "native sidecar" in notes(render(DEMO_CHART, kube_version=NATIVE_KUBE))


@pytest.mark.parametrize(
    "values",
    [
        {"sidecar": {"mode": "sometimes"}},
        {"sidecar": {"apiKey": "sk-live"}},
        {"sidecar": {"env": {"PRIMARY_API_KEY": "sk-live"}}},
        {"sidecar": {"env": {"SIDECAR_AUTH_TOKEN": "t"}}},
        {"sidecar": {"env": {"SIDECAR_ADMIN_HOST": "127.0.0.1"}}},
        {"sidecar": {"backends": "primary,,secondary"}},
        {"sidecar": {"chains": {"default": []}}},
        {"sidecar": {"ports": {"admin": 70000}}},
        {"sidecar": {"securityContext": {"runAsNonRoot": False}}},
        {"sidecar": {"shutdown": {"graceSeconds": 0}}},
        {"monitoring": {"podMonitor": {"enabled": True, "interval": "30 seconds"}}},
        {"monitoring": {"serviceMonitor": {"enabeld": True}}},
        {"sidecar": {"secret": {"files": {"PRIMARY_API_KEY": "k"}}}},
        {"sidecar": {"secret": {"files": {"PRIMARY_API_KEY_FILE": "a/b"}}}},
        {"sidecar": {"secret": {"mountPath": "relative"}}},
        {"replicas": 2},
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with helm_python.Chart.load(DEMO_CHART) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(values)


def test_schema_accepts_every_value_set() -> None:
    with helm_python.Chart.load(DEMO_CHART) as chart:
        for values in VALUE_SETS.values():
            chart.validate_schema(values)


@pytest.fixture
def schemaless_app(tmp_path: Path) -> Path:
    """An app chart with no values schema: the library's own checks are all that protects it."""
    chart = tmp_path / "app"
    (chart / "templates").mkdir(parents=True)
    (chart / "charts").mkdir()
    os.symlink(LIBRARY_CHART, chart / "charts" / "llm-sidecar")
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n"
        "  - {name: llm-sidecar, version: 0.1.0, repository: file://../llm-sidecar}\n"
    )
    shutil.copy(DEMO_CHART / "templates" / "configmap.yaml", chart / "templates")
    (chart / "templates" / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  annotations:\n"
        '    {{- include "llm-sidecar.podAnnotations" . | nindent 4 }}\nspec:\n'
        '  initContainers:\n    {{- include "llm-sidecar.initContainers" . | nindent 4 }}\n'
        "  containers:\n    - {name: app, image: busybox}\n"
        '    {{- include "llm-sidecar.containers" . | nindent 4 }}\n'
        '  volumes:\n    {{- include "llm-sidecar.volumes" . | nindent 4 }}\n'
    )
    return chart


def test_library_needs_only_backends_from_an_app_chart(schemaless_app: Path) -> None:
    keyless = {"backends": "primary", "env": {"PRIMARY_BASE_URL": "http://vllm:8000/v1"}}
    docs = manifests(render(schemaless_app, {"sidecar": keyless}))
    pod = only(docs, "Pod")
    kubernetes_validate.validate(pod, NATIVE_KUBE, strict=True)
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar["image"].startswith("ghcr.io/llm-sidecar/llm-sidecar:")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "sidecar.backends"),
        ({"sidecar": {"backends": "p", "env": {"P_API_KEY": "sk"}}}, "is a credential"),
        ({"sidecar": {"backends": "p", "secret": {"env": {"P_API_KEY": "k"}}}}, "secret.name"),
        (
            {"sidecar": {"backends": "p", "mode": "maybe", "env": {"P_BASE_URL": "http://l/v1"}}},
            "sidecar.mode",
        ),
        (
            {"sidecar": {"backends": "p", "chains": {"default": [{"name": "q"}]}}},
            "defines `default`",
        ),
        ({"sidecar": {"backends": "primary"}}, "needs PRIMARY_API_KEY"),
        (
            {
                "sidecar": {
                    "backends": "p",
                    "env": {"P_BASE_URL": "http://vllm:8000/v1"},
                    "chains": {"gpt-4o": [{"name": "openai", "env_prefix": "OPENAI_FALLBACK_"}]},
                }
            },
            'chain gpt-4o: backend "openai" .kind openai. needs OPENAI_FALLBACK_API_KEY',
        ),
        (
            {
                "sidecar": {
                    "backends": "eu=AZURE_EU_",
                    "env": {
                        "AZURE_EU_KIND": "Azure",
                        "AZURE_EU_BASE_URL": "https://r.openai.azure.com",
                    },
                }
            },
            "needs AZURE_EU_API_KEY",
        ),
        (
            {
                "sidecar": {
                    "chains": {"claude": ["claude-eu"]},
                    "env": {"CLAUDE_EU_KIND": "anthropic"},
                }
            },
            "needs CLAUDE_EU_API_KEY",
        ),
        (
            {"sidecar": {"backends": "p", "secret": {"files": {"P_API_KEY_FILE": "k"}}}},
            "secret.name",
        ),
        (
            {
                "sidecar": {
                    "backends": "p",
                    "secret": {"name": "s", "files": {"P_API_KEY": "k"}},
                }
            },
            "must end in _FILE",
        ),
        (
            {
                "sidecar": {
                    "backends": "p",
                    "secret": {
                        "name": "s",
                        "env": {"P_API_KEY": "k"},
                        "files": {"P_API_KEY_FILE": "k"},
                    },
                }
            },
            "P_API_KEY_FILE and P_API_KEY are both set",
        ),
        (
            {
                "sidecar": {
                    "backends": "p",
                    "env": {"P_API_KEY_FILE": "/mine"},
                    "secret": {"name": "s", "files": {"P_API_KEY_FILE": "k"}},
                }
            },
            "also set in sidecar.env",
        ),
    ],
)
def test_library_refuses_bad_config_without_a_schema(
    schemaless_app: Path, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(schemaless_app, values)


@pytest.mark.parametrize(
    "sidecar",
    [
        {"backends": "local", "env": {"LOCAL_BASE_URL": "http://vllm:8000/v1"}},
        {"backends": "aws", "env": {"AWS_KIND": "bedrock", "AWS_REGION": "eu-west-1"}},
        {
            "backends": "primary",
            "secret": {"name": "keys", "env": {"PRIMARY_API_KEY": "primary"}},
        },
        {
            "backends": "primary",
            "secret": {"name": "keys", "files": {"PRIMARY_API_KEY_FILE": "primary"}},
        },
    ],
    ids=["keyless openai-compatible", "bedrock", "mapped key", "key as a file"],
)
def test_library_renders_backends_whose_kind_needs_no_key_or_has_one(
    schemaless_app: Path, sidecar: dict[str, Any]
) -> None:
    assert only(manifests(render(schemaless_app, {"sidecar": sidecar})), "Pod")


def test_packaged_chart_carries_the_linked_files_and_library(tmp_path: Path) -> None:
    archive = helm_python.package(DEMO_CHART, destination=tmp_path)
    with tarfile.open(archive) as tar:
        rules = tar.getmember("llm-sidecar-demo/files/rules.yaml")
        assert rules.isfile()
        extracted = tar.extractfile(rules)
        assert extracted is not None
        assert extracted.read() == RULES.read_bytes()
        assert "llm-sidecar-demo/charts/llm-sidecar/templates/_helpers.tpl" in tar.getnames()
