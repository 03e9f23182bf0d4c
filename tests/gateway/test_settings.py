"""Settings: defaults, LLM_GATEWAY_* variables, flags over variables, the engine config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.settings import Settings, add_arguments


def parse(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Settings.from_env(env or {}))
    return Settings.from_args(parser.parse_args(argv))


def test_defaults_serve_on_loopback_port_8000() -> None:
    settings = parse([])
    assert (settings.host, settings.port, settings.slots) == ("127.0.0.1", 8000, 8)
    assert (settings.ctx_size, settings.batch_size, settings.n_gpu_layers) == (16384, 1024, 0)
    assert settings.model is None and settings.api_key is None and settings.cors_origins == ()


def test_environment_variables_set_defaults_and_flags_win() -> None:
    env = {
        "LLM_GATEWAY_MODEL": "/m/a.gguf",
        "LLM_GATEWAY_PORT": "9000",
        "LLM_GATEWAY_CORS_ORIGINS": "http://a.test, http://b.test",
        "LLM_GATEWAY_API_KEY": "k",
        "LLM_GATEWAY_LOG_LEVEL": "DEBUG",
    }
    settings = parse(["--port", "9100", "--served-model-name", "vicuna"], env)
    assert settings.model == Path("/m/a.gguf") and settings.port == 9100
    assert settings.cors_origins == ("http://a.test", "http://b.test")
    assert settings.api_key == "k" and settings.log_level == "debug"
    assert settings.model_name == "vicuna"


def test_an_empty_model_variable_means_the_demo_model() -> None:
    # compose passes ${LLM_GATEWAY_MODEL:-} through: empty when the operator set no model
    settings = parse([], {"LLM_GATEWAY_MODEL": "", "LLM_GATEWAY_SERVED_MODEL_NAME": ""})
    assert settings.model is None and settings.served_model_name is None
    assert settings.model_name == "demo"


def test_a_bad_environment_value_names_the_variable_and_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^LLM_GATEWAY_PORT='eighty': not a number$"):
        Settings.from_env({"LLM_GATEWAY_PORT": "eighty"})
    with pytest.raises(ValueError, match=r"^LLM_GATEWAY_SEND_TIMEOUT='soon': not a number$"):
        Settings.from_env({"LLM_GATEWAY_SEND_TIMEOUT": "soon"})


def test_help_lists_every_flag_with_its_variable_and_hides_the_key() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Settings.from_env({"LLM_GATEWAY_API_KEY": "hunter2"}))
    text = parser.format_help()
    for flag in (
        "--model", "--host", "--port", "--slots", "--ctx-size", "--batch-size", "--n-gpu-layers",
        "--api-key", "--served-model-name", "--chat-template", "--max-queue", "--cors-origins",
        "--max-body-bytes", "--log-level",
    ):  # fmt: skip
        assert flag in text
        assert "LLM_GATEWAY_" + flag[2:].replace("-", "_").upper() in text
    assert "hunter2" not in text


def test_engine_config_mirrors_the_flags() -> None:
    settings = parse(["--model", "m.gguf", "--slots", "4", "--ctx-size", "2048", "--batch-size",
                      "256", "--n-gpu-layers", "-1", "--max-queue", "3"])  # fmt: skip
    config = settings.engine_config()
    assert config.model_path == Path("m.gguf") and config.n_slots == 4
    assert (config.n_ctx, config.n_batch, config.n_ubatch) == (2048, 256, 256)
    assert config.n_gpu_layers == -1 and config.max_queue == 3
    assert not config.split_prompts
    assert parse(["--model", "m.gguf", "--split-prompts", "1"]).engine_config().split_prompts
    assert config.prompts_first and config.shortest_first and config.overlap_output
    assert config.prompt_per_call and config.admit_late
    assert config.short_queue == -1 and config.max_call_tokens == 256  # llama.cpp's batch
    short = parse(["--model", "m.gguf", "--batch-size", "256", "--short-queue", "2"])
    assert short.engine_config().max_call_tokens == 512
    off = ["--prompts-first", "0", "--shortest-first", "no", "--overlap-output", "off"]
    off += ["--prompt-per-call", "0", "--admit-late", "false"]
    config = parse(["--model", "m.gguf", *off]).engine_config()
    assert not (config.prompts_first or config.shortest_first or config.overlap_output)
    assert not (config.prompt_per_call or config.admit_late)
    env = Settings.from_env({"LLM_GATEWAY_OVERLAP_OUTPUT": "0", "LLM_GATEWAY_MODEL": "m.gguf"})
    assert not env.engine_config().overlap_output
    assert settings.model_name == "m"  # the file name when no --served-model-name


def test_the_ubatch_size_is_capped_by_the_batch_size() -> None:
    def ubatch(*flags: str) -> int:
        return parse(["--model", "m.gguf", *flags]).engine_config().n_ubatch

    assert ubatch("--batch-size", "2048") == 512  # llama.cpp's own default
    assert ubatch("--batch-size", "2048", "--ubatch-size", "1024") == 1024
    assert ubatch("--batch-size", "768", "--ubatch-size", "1024") == 768
    with pytest.raises(SystemExit):
        parse(["--ubatch-size", "-1"])


def test_the_json_string_cap_is_bounded_and_zero_means_none() -> None:
    assert parse([]).grammar_limits().max_string is None
    assert parse(["--json-string-max-chars", "64"]).grammar_limits().max_string == 64
    assert parse([], {"LLM_GATEWAY_JSON_STRING_MAX_CHARS": "0"}).grammar_limits().max_string is None
    with pytest.raises(ValueError, match="LLM_GATEWAY_JSON_STRING_MAX_CHARS"):
        Settings.from_env({"LLM_GATEWAY_JSON_STRING_MAX_CHARS": "5000"})


def test_the_request_and_shutdown_limits_have_flags_and_variables() -> None:
    settings = parse([])
    assert (settings.shutdown_grace, settings.send_timeout) == (30.0, 30.0)
    assert settings.shutdown_min == 2.0
    assert (settings.max_prompt_chars, settings.max_prompt_tokens) == (1_000_000, 0)
    env = {"LLM_GATEWAY_SHUTDOWN_GRACE": "12.5", "LLM_GATEWAY_MAX_PROMPT_TOKENS": "4096"}
    settings = parse(["--prompt-threads", "2", "--max-prompt-chars", "5000",
                      "--shutdown-min", "0"], env)  # fmt: skip
    assert settings.shutdown_grace == 12.5 and settings.max_prompt_tokens == 4096
    assert settings.shutdown_min == 0.0
    assert settings.prompt_threads == 2 and settings.max_prompt_chars == 5000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHUTDOWN_GRACE", "-1"),
        ("SHUTDOWN_GRACE", "nan"),
        ("SHUTDOWN_MIN", "-2"),
        ("SEND_TIMEOUT", "soon"),
        ("PROMPT_THREADS", "0"),
        ("MAX_PROMPT_CHARS", "0"),
        ("MAX_PROMPT_TOKENS", "-5"),
    ],
)
def test_out_of_range_limits_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"LLM_GATEWAY_{name}"):
        Settings.from_env({f"LLM_GATEWAY_{name}": value})


@pytest.mark.parametrize(
    ("flags", "cores", "expected"),
    [
        ([], 32, 8),
        ([], 16, 8),
        ([], 8, 4),
        ([], 2, 1),
        (["--sampler-threads", "8"], 16, 8),
        (["--sampler-threads", "8"], 2, 2),
    ],
)
def test_sampler_threads_default_to_half_the_cores_and_never_exceed_them(
    flags: list[str], cores: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.settings.os.cpu_count", lambda: cores)
    assert parse(["--model", "m.gguf", *flags]).engine_config().sampler_threads == expected


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--shutdown-min", "-1"], "'-1': must be a number of seconds, 0 or more"),
        (["--split-prompts", "2"], "'2': must be 1/0, true/false, yes/no or on/off"),
        (["--ubatch-size", "x"], "'x': not a number"),
        (["--short-queue", "-2"], "'-2': must be -1 or more"),
    ],
)
def test_a_bad_flag_value_says_what_is_wrong(
    flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(flags)
    assert says in capsys.readouterr().err
