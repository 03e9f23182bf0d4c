"""A test helper: strings drawn from a grammar by llama.cpp's own grammar sampler.

Random logits over the demo model's vocabulary pick among the tokens the grammar allows, as
the random-weight demo model does when it serves a request, so every sample is a sentence of
the grammar exactly as llama.cpp enforces it.
"""

from __future__ import annotations

import numpy as np

from batching.runner import LlamaRunner


class GrammarSampler:
    def __init__(self, runner: LlamaRunner) -> None:
        self.runner = runner

    def sample(self, gbnf: str, seed: int, max_tokens: int = 400) -> str | None:
        """One sentence of the grammar; None if it was still going after max_tokens."""
        runner = self.runner
        grammar = runner.make_grammar(gbnf)
        rng = np.random.default_rng(seed)
        pieces: list[bytes] = []
        try:
            for _ in range(max_tokens):
                row = rng.standard_normal(runner.n_vocab).astype(np.float32) * 3
                grammar.mask(row)
                token = int(np.argmax(row))
                if token in runner.eog_ids:
                    return b"".join(pieces).decode("utf-8", errors="replace")
                grammar.accept(token)
                pieces.append(runner.pieces[token])
        finally:
            grammar.close()
        return None
