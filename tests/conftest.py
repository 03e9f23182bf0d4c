"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from batching.demo_model import write_demo_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight demo GGUF, written once per test session (about a second)."""
    return write_demo_model(tmp_path_factory.mktemp("models") / "tiny.gguf", "tiny")
