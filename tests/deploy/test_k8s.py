"""deploy/k8s: schema-valid, strictly (no unknown field), and consistent with how the gateway runs.

Built-in kinds go through `kubernetes-validate --strict`. It has no schema for custom resources
(PodMonitor, ScaledObject, InferencePool, HTTPRoute) and only warns about them, so those are
validated here against the openAPIV3Schema of their CRDs at the versions we target (vendored in
schemas/, see its README), made strict the way the API server is: with kubectl's default
`--validate=strict`, a field the structural schema does not declare is an error.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.gateway.test_metrics import engine_stats, make_metrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = Path(__file__).parent / "schemas"
MANIFESTS = sorted(K8S.glob("*.yaml"))
NAMESPACE = "llm"
POD_LABELS = {"app.kubernetes.io/name": "llm-gateway"}


def documents() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc
    ]


def find(kind: str, name: str = "llm-gateway") -> dict[str, Any]:
    (doc,) = (d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)
    return doc


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict JSON schema of that custom resource."""
    schemas = {}
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        crd = schema.pop("x-crd")
        schemas[(crd["apiVersion"], crd["kind"])] = strict(schema)
    return schemas


def strict(node: Any) -> Any:
    """Reject undeclared fields wherever the schema lists properties and keeps no unknown ones."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: (strict(v) if k != "properties" else {p: strict(s) for p, s in v.items()})
           for k, v in node.items()}  # fmt: skip
    keeps_unknown = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in node and "additionalProperties" not in node and not keeps_unknown:
        out["additionalProperties"] = False
    return out


def test_manifests_parse_and_live_in_one_namespace() -> None:
    kinds = {d["kind"] for _, d in documents()}
    assert {"Deployment", "Service", "PodDisruptionBudget", "PersistentVolumeClaim"} <= kinds
    assert {"PodMonitor", "ScaledObject", "InferencePool", "HTTPRoute", "NetworkPolicy"} <= kinds
    for path, doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, f"{path.name}: {doc['kind']}"


def test_kubernetes_validate_strict_passes_and_only_custom_kinds_lack_a_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *map(str, MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout
    no_schema = set(
        re.findall(r"Couldn't find schema for kind (\w+) with api version (\S+)", result.stdout)
    )
    assert no_schema == {(kind, api) for api, kind in crd_schemas()}
    built_in = [d for _, d in documents() if (d["apiVersion"], d["kind"]) not in crd_schemas()]
    assert result.stdout.count("passed for resource") == len(built_in)


def test_custom_resources_match_their_crd_schemas_strictly() -> None:
    schemas = crd_schemas()
    checked = 0
    for _, doc in documents():
        schema = schemas.get((doc["apiVersion"], doc["kind"]))
        if schema is not None:
            jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator)
            checked += 1
    assert checked == len(schemas) == 4


def test_the_crd_check_rejects_an_unknown_field() -> None:
    monitor = copy.deepcopy(find("PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"][0]["scrapeIntervall"] = "5s"  # a typo
    schema = crd_schemas()[("monitoring.coreos.com/v1", "PodMonitor")]
    with pytest.raises(jsonschema.ValidationError, match="scrapeIntervall"):
        jsonschema.validate(monitor, schema, cls=jsonschema.Draft7Validator)


def gateway_pod() -> dict[str, Any]:
    spec: dict[str, Any] = find("Deployment")["spec"]["template"]
    return spec


def gateway_container() -> dict[str, Any]:
    (container,) = gateway_pod()["spec"]["containers"]
    return dict(container)


def test_probes_all_ask_health_and_startup_covers_a_slow_model_load() -> None:
    container = gateway_container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_grace_period_covers_prestop_and_the_drain_and_liveness_never_cuts_a_drain() -> None:
    container, pod_spec = gateway_container(), gateway_pod()["spec"]
    env = {e["name"]: e["value"] for e in container["env"]}
    drain_s = int(env["LLM_GATEWAY_SHUTDOWN_GRACE"])
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = int(command[1])
    assert pod_spec["terminationGracePeriodSeconds"] >= pre_stop_s + drain_s + 5
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain_s
    assert container["readinessProbe"]["failureThreshold"] == 1  # leaves the endpoints at once
    rollout = find("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxUnavailable"] == 0
    epp = find("Deployment", "llm-gateway-epp")["spec"]["template"]["spec"]
    assert epp["terminationGracePeriodSeconds"] > pod_spec["terminationGracePeriodSeconds"]


def test_gpu_requests_pinned_images_served_name_and_no_root() -> None:
    container, pod_spec = gateway_container(), gateway_pod()["spec"]
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert "--n-gpu-layers=-1" in container["args"]
    assert any(a.startswith("--served-model-name=") for a in container["args"])
    for _, doc in documents():
        if doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                tag = c["image"].rsplit(":", 1)[1]
                assert tag != "latest" and re.match(r"v?\d+\.\d+\.\d+", tag), c["image"]
                security = c["securityContext"]
                assert security["allowPrivilegeEscalation"] is False
                assert security["readOnlyRootFilesystem"] is True
                assert security["capabilities"]["drop"] == ["ALL"]
                assert security["runAsNonRoot"] is True
            pod_security = doc["spec"]["template"]["spec"]["securityContext"]
            assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/models", "/tmp"}
    assert pod_spec["automountServiceAccountToken"] is False


def test_the_model_volume_can_be_shared_by_every_replica() -> None:
    claim = find("PersistentVolumeClaim", "llm-models")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    (volume,) = (v for v in gateway_pod()["spec"]["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"] == {"claimName": "llm-models", "readOnly": True}
    assert find("Deployment")["spec"]["replicas"] >= 2


def test_everything_selects_the_gateway_pods() -> None:
    labels = gateway_pod()["metadata"]["labels"]
    selectors = [
        find("Deployment")["spec"]["selector"]["matchLabels"],
        find("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        find("PodMonitor")["spec"]["selector"]["matchLabels"],
        find("InferencePool")["spec"]["selector"]["matchLabels"],
        find("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
        find("Service")["spec"]["selector"],
    ]
    for selector in selectors:
        assert selector == POD_LABELS and selector.items() <= labels.items()
    assert find("ScaledObject")["spec"]["scaleTargetRef"]["name"] == "llm-gateway"
    (port,) = find("InferencePool")["spec"]["targetPorts"]
    assert port["number"] == gateway_container()["ports"][0]["containerPort"]


def test_one_scrape_per_pod_and_the_job_the_dashboard_expects() -> None:
    for _, doc in documents():
        annotations = doc["metadata"].get("annotations", {})
        pod_annotations = (
            doc.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
        )
        for key in (*annotations, *pod_annotations):
            assert not key.startswith("prometheus.io/"), f"{doc['kind']}: {key}"
    (endpoint,) = find("PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": "llm-gateway"} in endpoint[
        "relabelings"
    ]


def exported_metrics() -> set[str]:
    body, _ = make_metrics(engine_stats()).render()
    return set(re.findall(r"^# TYPE (\w+) ", body.decode(), re.MULTILINE))


def test_the_endpoint_picker_reads_metrics_the_gateway_exports() -> None:
    config = yaml.safe_load(find("ConfigMap", "llm-gateway-epp")["data"]["config.yaml"])
    plugins = {p["type"]: p.get("parameters", {}) for p in config["plugins"]}
    extractor = plugins["core-metrics-extractor"]
    (engine,) = extractor["engineConfigs"]
    assert gateway_pod()["metadata"]["labels"][extractor["engineLabelKey"]] == engine["name"]
    assert extractor["defaultEngine"] == engine["name"]
    specs = [engine[k] for k in ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec")]
    assert specs == [
        "gateway_requests_waiting",
        "gateway_requests_running",
        "gateway_kv_cache_usage_ratio",
    ]
    assert set(specs) <= exported_metrics()
    scorers = {p["pluginRef"] for p in config["schedulingProfiles"][0]["plugins"]}
    assert {
        "queue-scorer",
        "running-requests-size-scorer",
        "kv-cache-utilization-scorer",
    } <= scorers
    assert config["data"]["sources"][0]["extractors"] == [{"pluginRef": "core-metrics-extractor"}]


def test_autoscaling_follows_the_queue_depth() -> None:
    (trigger,) = find("ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    names = set(re.findall(r"\b(gateway_\w+)", trigger["metadata"]["query"]))
    assert names == {"gateway_requests_waiting"} and names <= exported_metrics()
