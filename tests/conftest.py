"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batching.config import EngineConfig
from batching.demo_model import write_demo_model
from batching.runner import LlamaRunner
from tests.gateway.jsonschema.sampling import GrammarSampler


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight demo GGUF, written once per test session (about a second)."""
    return write_demo_model(tmp_path_factory.mktemp("models") / "tiny.gguf", "tiny")


@pytest.fixture(scope="session")
def grammar_sampler(tiny_model: Path) -> Iterator[GrammarSampler]:
    """Draws sentences of a grammar with llama.cpp's grammar sampler and the demo vocabulary."""
    runner = LlamaRunner(EngineConfig(model_path=tiny_model, n_slots=1, n_ctx=64, n_batch=16))
    try:
        yield GrammarSampler(runner)
    finally:
        runner.close()
