"""The runner's grammar samplers: parsed once per grammar text, cloned per sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batching.config import EngineConfig
from batching.runner import LlamaRunner

pytestmark = pytest.mark.model
DIGITS = "root ::= [0-9] [a-z]\n"


def _allowed(runner: LlamaRunner, grammar: object) -> set[str]:
    row = np.zeros(runner.n_vocab, dtype=np.float32)
    grammar.mask(row)  # type: ignore[attr-defined]
    return {runner.pieces[t].decode("utf-8", "replace") for t in np.flatnonzero(np.isfinite(row))}


def test_clones_of_one_grammar_follow_their_own_tokens(tiny_model: Path) -> None:
    runner = LlamaRunner(EngineConfig(model_path=tiny_model, n_slots=1, n_ctx=64, n_batch=16))
    try:
        first, second = runner.make_grammar(DIGITS), runner.make_grammar(DIGITS)
        digit = runner.pieces.index(b"7")
        first.accept(digit)
        assert "7" in _allowed(runner, second) and "a" not in _allowed(runner, second)
        assert "a" in _allowed(runner, first) and "7" not in _allowed(runner, first)
        first.close()
        second.close()
        with pytest.raises(ValueError, match="does not parse"):
            runner.make_grammar("root ::= nonsense (")
    finally:
        runner.close()
