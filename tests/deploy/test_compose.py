"""deploy/compose*.yaml as docker-compose renders them: demo model by default, a model on demand."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.gateway.test_metrics import require_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HINT = "apt-get install -y docker-compose (Debian's package; `config` needs no Docker daemon)"


def rendered(*files: str, **env: str) -> dict[str, Any]:
    """`docker-compose config` of the files, with only `env` set of the LLM_GATEWAY_* variables."""
    compose = require_tool("docker-compose", HINT)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLM_GATEWAY_")}
    argv = [compose, *(a for f in files for a in ("-f", f)), "config"]
    result = subprocess.run(
        argv, cwd=DEPLOY, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_without_a_model_the_gateway_serves_the_demo_model() -> None:
    gateway = rendered("compose.yaml")["services"]["gateway"]
    assert gateway["environment"]["LLM_GATEWAY_MODEL"] == ""  # empty: the demo model
    assert gateway["read_only"] is True and gateway["tmpfs"] == ["/tmp"]
    assert gateway["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in gateway["security_opt"]
    assert gateway["image"].rsplit(":", 1)[1] == "0.1.0"


def test_a_model_file_and_the_gpu_variant() -> None:
    config = rendered("compose.yaml", "compose.gpu.yaml", LLM_GATEWAY_MODEL="/models/vicuna.gguf")
    gateway = config["services"]["gateway"]
    assert gateway["environment"]["LLM_GATEWAY_MODEL"] == "/models/vicuna.gguf"
    assert gateway["environment"]["LLM_GATEWAY_N_GPU_LAYERS"] == "-1"
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    (device,) = gateway["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["device_ids"] == ["0"]
    assert any(v.endswith(":/etc/prometheus/rules:ro") for v in _volumes(config, "prometheus"))


def test_the_stop_grace_outlasts_the_drain() -> None:
    gateway = rendered("compose.yaml")["services"]["gateway"]
    drain_s = int(gateway["environment"]["LLM_GATEWAY_SHUTDOWN_GRACE"])
    assert int(gateway["stop_grace_period"].removesuffix("s")) > drain_s


def _volumes(config: dict[str, Any], service: str) -> list[str]:
    volumes = config["services"][service]["volumes"]
    return [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in volumes]
