"""The llm-gateway command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.__main__ import main
from gateway.settings import DEMO_JSON_STRING_MAX_CHARS, Settings


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "demo-model" in out and "bench" in out


def test_serve_help_lists_flags_and_env_vars(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--ctx-size" in out and "LLM_GATEWAY_CTX_SIZE" in out


def test_serve_refuses_a_missing_model_file(tmp_path: Path) -> None:
    assert main(["serve", "--model", str(tmp_path / "nope.gguf")]) == 2


def test_serve_refuses_a_missing_chat_template(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert main(["serve", "--model", str(model), "--chat-template", "nope.jinja"]) == 2


def test_demo_model_writes_a_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo.gguf"
    assert main(["demo-model", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"GGUF"
    assert str(out) in capsys.readouterr().out


def test_bench_gets_the_rest_of_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.bench

    seen: list[list[str]] = []

    def fake_bench(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(gateway.bench, "main", fake_bench)
    assert main(["bench", "--help", "--url", "http://127.0.0.1:1"]) == 0
    assert seen == [["--help", "--url", "http://127.0.0.1:1"]]


def test_python_dash_m_gateway_runs_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and "--served-model-name" in result.stdout


def test_settings_come_from_the_environment_of_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_GATEWAY_SLOTS", "3")
    assert Settings.from_env().slots == 3


def test_serve_without_a_model_serves_the_demo_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.server import GatewayServer

    runs: list[GatewayServer] = []
    monkeypatch.setattr(GatewayServer, "run", lambda self, sockets=None: runs.append(self))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("LLM_GATEWAY_PORT", "8123")
    assert main(["serve", "--slots", "2"]) == 0
    (server,) = runs
    settings = server.config.app.state.gateway.settings
    assert settings.model.parent == tmp_path / "llm-gateway" and settings.model.is_file()
    assert settings.slots == 2
    assert settings.json_string_max_chars == DEMO_JSON_STRING_MAX_CHARS  # random weights
    assert (server.config.host, server.config.port) == ("127.0.0.1", 8123)
    assert "random weights" in caplog.text
