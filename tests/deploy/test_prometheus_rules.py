"""deploy/prometheus/rules: valid, wired into prometheus.yml, firing as their unit tests say."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.test_k8s import exported_metrics
from tests.gateway.test_metrics import require_tool

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.rules.yml"))
UNIT_TESTS = Path(__file__).parent / "alerts.test.yml"


def alerts() -> dict[str, str]:
    groups = [g for path in RULES for g in yaml.safe_load(path.read_text())["groups"]]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def test_the_alerts_operators_need_exist_and_use_exported_metrics() -> None:
    assert set(alerts()) >= {
        "LLMGatewayDown",
        "LLMGatewayHighErrorRatio",
        "LLMGatewayQueueBacklog",
        "LLMGatewayTTFTHigh",
        "LLMGatewayKVCacheNearFull",
    }
    exported = exported_metrics() | {"up"}
    for name, expr in alerts().items():
        used = set(re.findall(r"\b(gateway_[a-z_]+?)(?:_bucket)?\b", expr)) | (
            {"up"} if "up{" in expr else set()
        )
        assert used and used <= exported, f"{name}: {used - exported}"


def test_prometheus_loads_the_rules() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.rules.yml"]
    promtool = require_tool("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", *map(str, RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_each_alert_fires_on_its_unit_test_series() -> None:
    promtool = require_tool("promtool")
    tested = set(re.findall(r"alertname: (\w+)", UNIT_TESTS.read_text()))
    assert tested == set(alerts())
    result = subprocess.run(
        [promtool, "test", "rules", UNIT_TESTS.name],
        cwd=UNIT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
