"""sample(): one token per row, each row with its own parameters, seed and history."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from batching.params import SamplingParams
from batching.sampler import Sampler
from batching.sampling_state import Logits, SamplingState

V = 8
SAMPLER = Sampler()
sample = SAMPLER.sample
PIECES = [f" t{i}".encode() for i in range(V)]


def _state(seed: int = 0, prompt_ids: list[int] | None = None, **kw: object) -> SamplingState:
    return SamplingState(SamplingParams(**kw), seed, prompt_ids or [])  # type: ignore[arg-type]


def _logits(n_rows: int, seed: int = 0, vocab: int = V) -> Logits:
    return np.random.default_rng(seed).standard_normal((n_rows, vocab)).astype(np.float32)


def _draws(state: SamplingState, n: int, row: Logits) -> list[int]:
    return [sample(row[None, :].copy(), [0], [state], PIECES)[0][0] for _ in range(n)]


def _softmax(row: Logits) -> np.ndarray:
    e = np.exp(row.astype(np.float64) - row.max())
    return e / e.sum()


def test_greedy_is_argmax_of_each_row() -> None:
    logits = _logits(5)
    states = [_state(temperature=0.0) for _ in range(5)]
    tokens, logprobs = sample(logits, list(range(5)), states, PIECES)
    assert tokens == np.argmax(logits, axis=1).tolist()
    assert logprobs is None


def test_rows_can_be_picked_out_of_order_and_shared() -> None:
    logits = _logits(4)
    states = [_state(temperature=0.0) for _ in range(3)]
    tokens, _ = sample(logits, [3, 1, 3], states, PIECES)
    best = np.argmax(logits, axis=1)
    assert tokens == [best[3], best[1], best[3]]


def test_sampling_leaves_the_logits_untouched() -> None:
    logits = _logits(2)
    before = logits.copy()
    states = [_state(seed=1, presence_penalty=1.0, logit_bias={0: 5.0}), _state(seed=2)]
    for _ in range(3):
        sample(logits, [0, 1], states, PIECES)
    np.testing.assert_array_equal(logits, before)


def test_same_seed_same_tokens() -> None:
    row = _logits(1)[0]
    assert _draws(_state(seed=42), 30, row) == _draws(_state(seed=42), 30, row)


def test_different_seeds_different_tokens() -> None:
    row = np.zeros(V, np.float32)  # uniform: two streams agreeing 30 times is ~(1/8)^30
    assert _draws(_state(seed=1), 30, row) != _draws(_state(seed=2), 30, row)


ROW_PARAMS = [
    {"temperature": 1.0},
    {"temperature": 0.7, "top_k": 3},
    {"temperature": 1.0, "top_p": 0.6},
    {"temperature": 1.0, "min_p": 0.2},
    {"temperature": 1.3, "presence_penalty": 0.5},
]
OTHER_PARAMS = [
    {"temperature": 0.0},
    {"temperature": 1.0, "top_k": 5},
    {"temperature": 0.5, "top_p": 0.9},
    {"temperature": 1.5, "min_p": 0.05},
    {"temperature": 1.0, "frequency_penalty": 1.0},
    {"temperature": 0.9, "top_k": 2, "top_p": 0.8},
    {"temperature": 2.0},
]


@pytest.mark.parametrize("params", ROW_PARAMS, ids=lambda p: ",".join(p))
def test_a_rows_tokens_do_not_depend_on_the_rest_of_the_batch(params: dict[str, float]) -> None:
    alone = _state(seed=7, **params)
    batched = _state(seed=7, **params)
    others = [_state(seed=100 + i, **p) for i, p in enumerate(OTHER_PARAMS)]
    for step in range(40):
        logits = _logits(9, seed=step)
        row = logits[4]
        solo, _ = sample(row[None, :].copy(), [0], [alone], PIECES)
        # the row sits in the middle, rows are not in batch order, and one row is unused
        rows = [0, 1, 2, 3, 4, 5, 6, 8]
        mixed, _ = sample(logits, rows, [*others[:4], batched, *others[4:]], PIECES)
        assert mixed[4] == solo[0], f"step {step}"


def test_top_k_holds_next_to_a_row_without_top_k() -> None:
    # a top_k row alone or next to a plain-temperature row must keep to its k best
    row = np.zeros(V, np.float32)
    row[5] = 0.5
    logits = np.stack([row, row])
    states = [_state(seed=s, top_k=1) for s in range(50)]
    for state in states:
        tokens, _ = sample(logits, [0, 1], [state, _state(seed=9)], PIECES)
        assert tokens[0] == 5


@pytest.mark.parametrize(
    "params",
    [{"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}],
    ids=["top_k=1", "top_p=tiny", "min_p=1"],
)
def test_truncations_that_keep_one_token_equal_greedy(params: dict[str, float]) -> None:
    for seed in range(20):
        logits = _logits(1, seed=seed)
        tokens, _ = sample(logits, [0], [_state(seed=seed, temperature=1.5, **params)], PIECES)
        assert tokens == [int(np.argmax(logits[0]))]


def test_top_k_keeps_to_the_k_best() -> None:
    row = _logits(1, seed=3)[0]
    best = set(np.argsort(-row)[:3].tolist())
    assert set(_draws(_state(seed=1, temperature=2.0, top_k=3), 300, row)) == best


def test_top_p_keeps_to_the_nucleus() -> None:
    row = np.log(np.array([0.5, 0.3, 0.1, 0.05, 0.02, 0.01, 0.01, 0.01], np.float32))
    assert set(_draws(_state(seed=1, top_p=0.75), 400, row)) == {0, 1}
    assert set(_draws(_state(seed=1, top_p=0.85), 400, row)) == {0, 1, 2}


def test_min_p_drops_unlikely_tokens() -> None:
    row = np.log(np.array([0.4, 0.3, 0.15, 0.1, 0.02, 0.01, 0.01, 0.01], np.float32))
    assert set(_draws(_state(seed=1, min_p=0.3), 400, row)) == {0, 1, 2}


def test_temperature_one_matches_softmax() -> None:
    row = np.array([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2], np.float32)
    counts = np.bincount(_draws(_state(seed=123), 4000, row), minlength=V) / 4000
    np.testing.assert_allclose(counts, _softmax(row), atol=0.03)


def test_low_temperature_sharpens() -> None:
    row = np.array([1.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    counts = np.bincount(_draws(_state(seed=5, temperature=0.1), 500, row), minlength=V)
    assert counts[0] > 0.8 * 500


def test_logit_bias_forces_and_forbids() -> None:
    row = _logits(1, seed=4)[0]
    worst, best = int(np.argmin(row)), int(np.argmax(row))
    assert set(_draws(_state(seed=1, logit_bias={worst: 100.0}), 50, row)) == {worst}
    assert best not in _draws(_state(seed=1, temperature=2.0, logit_bias={best: -100.0}), 300, row)
    greedy = _state(temperature=0.0, logit_bias={best: -100.0})
    assert sample(row[None, :].copy(), [0], [greedy], PIECES)[0] != [best]


def _slightly_five() -> Logits:
    row = np.zeros(V, np.float32)
    row[5], row[4] = 1.0, 0.9
    return row


@pytest.mark.parametrize(
    "params",
    [{"presence_penalty": 0.5}, {"frequency_penalty": 0.5}, {"repetition_penalty": 1.5}],
    ids=["presence", "frequency", "repetition"],
)
def test_penalties_make_a_repeated_token_lose(params: dict[str, float]) -> None:
    row = _slightly_five()
    fresh = _state(temperature=0.0, **params)
    assert sample(row[None, :].copy(), [0], [fresh], PIECES)[0] == [5]  # now 5 was accepted
    assert sample(row[None, :].copy(), [0], [fresh], PIECES)[0] == [4]


def test_repetition_penalty_counts_the_prompt() -> None:
    row = _slightly_five()
    state = _state(temperature=0.0, prompt_ids=[5], repetition_penalty=1.5)
    assert sample(row[None, :].copy(), [0], [state], PIECES)[0] == [4]


def test_repetition_penalty_pushes_negative_logits_further_down() -> None:
    row = np.full(V, -3.0, np.float32)
    row[5], row[4] = -1.0, -1.2
    state = _state(temperature=0.0, prompt_ids=[5], repetition_penalty=1.5)
    assert sample(row[None, :].copy(), [0], [state], PIECES)[0] == [4]


def test_frequency_penalty_grows_with_the_count() -> None:
    row = np.zeros(V, np.float32)
    row[5], row[4] = 1.0, 0.0
    state = _state(temperature=0.0, frequency_penalty=0.4)
    tokens = [sample(row[None, :].copy(), [0], [state], PIECES)[0][0] for _ in range(4)]
    assert tokens[:3] == [5, 5, 5]
    assert tokens[3] != 5  # 1.0 - 3 * 0.4 < 0, the logit of every other token


def test_logprobs_are_the_models_own_distribution() -> None:
    logits = _logits(2, seed=8)
    states = [_state(seed=1, logprobs=3, logit_bias={0: 50.0}), _state(seed=2)]
    tokens, logprobs = sample(logits, [0, 1], states, PIECES)
    assert logprobs is not None and logprobs[1] is None
    lp = logprobs[0]
    assert lp is not None
    expected = np.log(_softmax(logits[0]))
    assert lp.token_id == tokens[0] == 0  # the bias chose it; the logprob ignores the bias
    assert lp.token == PIECES[0]
    assert lp.logprob == pytest.approx(expected[0], abs=1e-5)
    assert [t for t, _, _ in lp.top] == np.argsort(-logits[0])[:3].tolist()
    assert [p for _, p, _ in lp.top] == [PIECES[t] for t, _, _ in lp.top]
    top = [x for _, _, x in lp.top]
    assert top == sorted(top, reverse=True)
    assert top == pytest.approx(np.sort(expected)[::-1][:3].tolist(), abs=1e-5)


@pytest.mark.parametrize("k", [0, 1, 5])
def test_logprobs_count(k: int) -> None:
    logits = _logits(1, seed=9)
    _, logprobs = sample(logits, [0], [_state(temperature=0.0, logprobs=k)], PIECES)
    assert logprobs is not None and logprobs[0] is not None
    assert len(logprobs[0].top) == k


class OnlyEven:
    """A grammar that allows even tokens only."""

    def __init__(self) -> None:
        self.accepted: list[int] = []
        self.is_closed = False

    def allows(self, token_id: int) -> bool:
        return token_id % 2 == 0

    def mask(self, row: Logits) -> None:
        row[1::2] = -np.inf

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    def close(self) -> None:
        self.is_closed = True


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_grammar_masks_tokens_and_sees_every_accepted_token(temperature: float) -> None:
    grammar = OnlyEven()
    state = SamplingState(SamplingParams(temperature=temperature), 3, [], grammar)
    row = np.zeros(V, np.float32)
    row[1::2] = 5.0  # the odd tokens are by far the likeliest
    chosen = [sample(row[None, :].copy(), [0], [state], PIECES)[0][0] for _ in range(20)]
    assert all(t % 2 == 0 for t in chosen)
    assert grammar.accepted == chosen
    state.close()
    assert grammar.is_closed
    assert state.grammar is None


def _nucleus(row: Logits, temperature: float, top_p: float) -> set[int]:
    """The top-p nucleus computed the slow, obvious way: sort, softmax, cumulative sum."""
    probs = _softmax(row / temperature)
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    return set(order[: int(np.searchsorted(cum, top_p)) + 1].tolist())


@pytest.mark.parametrize("top_p", [0.9, 0.3, 0.02])
def test_top_p_on_a_flat_large_vocabulary_stays_in_the_exact_nucleus(top_p: float) -> None:
    # flat rows like a random-weight model's: the nucleus spans thousands of tokens, and a small
    # top_p makes most first draws fall outside it (the rejection path, then the exact floor)
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((16, 4000)) * 0.5).astype(np.float32)
    pieces = [b"x"] * 4000
    states = [_state(seed=s, temperature=0.9, top_p=top_p) for s in range(16)]
    for _ in range(10):
        tokens, _ = sample(logits, list(range(16)), states, pieces)
        for r, t in enumerate(tokens):
            assert t in _nucleus(logits[r], 0.9, top_p)


def test_top_p_draws_follow_the_renormalised_nucleus() -> None:
    row = np.log(np.array([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01], np.float32))
    draws = _draws(_state(seed=3, top_p=0.7), 6000, row)
    counts = np.bincount(draws, minlength=V) / len(draws)
    expected = np.array([0.3, 0.25, 0.2, 0, 0, 0, 0, 0]) / 0.75
    np.testing.assert_allclose(counts, expected, atol=0.03)


def test_a_small_nucleus_is_drawn_exactly_in_proportion() -> None:
    # top_p 0.15: most first draws land in the flat tail, so the exact floor path draws
    probs = np.full(2000, 0.79 / 1995)
    probs[:5] = [0.08, 0.06, 0.04, 0.02, 0.01]
    row = np.log(probs).astype(np.float32)
    pieces = [b"x"] * 2000
    draws = [
        sample(row[None, :].copy(), [0], [_state(seed=s, top_p=0.15)], pieces)[0][0]
        for s in range(3000)
    ]
    counts = np.bincount(draws, minlength=2000) / len(draws)
    assert counts[3:].sum() == 0
    np.testing.assert_allclose(counts[:3], np.array([0.08, 0.06, 0.04]) / 0.18, atol=0.03)


def test_a_small_nucleus_among_top_k_of_a_tiny_vocabulary() -> None:
    # the floor search's scratch once overlapped the top-k candidates' ids on small vocabularies
    row = (np.random.default_rng(0).standard_normal(64) * 0.01).astype(np.float32)
    worst = int(np.argmin(row))
    for s in range(300):
        state = _state(seed=s, top_p=0.1, top_k=63)
        token = sample(row[None, :].copy(), [0], [state], [b"x"] * 64)[0][0]
        assert 0 <= token < 64 and token != worst


def test_tokens_tied_at_the_nucleus_floor_all_stay_in_it() -> None:
    row = np.zeros(4000, np.float32)
    row[:200] = 5.0  # 200 tied tokens carry about half the mass; top_p 0.1 ends inside them
    pieces = [b"x"] * 4000
    draws = {
        sample(row[None, :].copy(), [0], [_state(seed=s, top_p=0.1)], pieces)[0][0]
        for s in range(300)
    }
    assert draws <= set(range(200))
    assert len(draws) > 100  # every tied token is a candidate, not only the first few


@pytest.mark.parametrize("k", [1, 7, 40, 300])
def test_top_k_on_a_large_vocabulary_keeps_to_the_k_best(k: int) -> None:
    rng = np.random.default_rng(k)
    logits = rng.standard_normal((8, 5003)).astype(np.float32)  # not a multiple of any block
    pieces = [b"x"] * 5003
    states = [_state(seed=s, temperature=1.5, top_k=k) for s in range(8)]
    for _ in range(5):
        tokens, _ = sample(logits, list(range(8)), states, pieces)
        for r, t in enumerate(tokens):
            assert logits[r, t] >= np.sort(logits[r])[-k]


def test_logprobs_on_a_large_vocabulary_match_numpy() -> None:
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((3, 32000)) * 4).astype(np.float32)
    pieces = [b"x"] * 32000
    states = [_state(seed=s, logprobs=20) for s in range(3)]
    tokens, logprobs = sample(logits, [0, 1, 2], states, pieces)
    assert logprobs is not None
    for r, lp in enumerate(logprobs):
        assert lp is not None
        row = logits[r].astype(np.float64)
        expected = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
        assert lp.logprob == pytest.approx(expected[tokens[r]], abs=1e-4)
        assert [t for t, _, _ in lp.top] == np.argsort(-row, kind="stable")[:20].tolist()
        assert [x for _, _, x in lp.top] == pytest.approx(np.sort(expected)[::-1][:20], abs=1e-4)


def test_threads_split_the_rows_without_changing_any_token() -> None:
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((64, 3000)).astype(np.float32)
    pieces = [b"x"] * 3000
    params = [*ROW_PARAMS, *OTHER_PARAMS]

    def run(sampler: Sampler) -> list[int]:
        states = [_state(seed=i, **params[i % len(params)]) for i in range(64)]
        return [
            t for _ in range(3) for t in sampler.sample(logits, list(range(64)), states, pieces)[0]
        ]

    threaded = Sampler(n_threads=4)
    try:
        assert run(threaded) == run(SAMPLER)
    finally:
        threaded.close()
    assert run(threaded) == run(SAMPLER)  # a closed sampler still samples, on one thread


def test_a_forked_child_samples_on_its_own_thread_without_waiting_for_absent_workers() -> None:
    logits = np.random.default_rng(4).standard_normal((32, 3000)).astype(np.float32)
    threaded = Sampler(n_threads=4)
    try:
        expected = threaded.sample(logits, list(range(32)), [_state(i) for i in range(32)], [])[0]
        pid = os.fork()  # the pool's workers do not exist in the child
        if pid == 0:
            got = threaded.sample(logits, list(range(32)), [_state(i) for i in range(32)], [])[0]
            os._exit(0 if got == expected else 1)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung in the sampler")
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        threaded.close()


def test_threads_split_the_log_probabilities_without_changing_any() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((40, 3000)).astype(np.float32)
    pieces = [b"x"] * 3000

    def run(sampler: Sampler) -> list[object]:
        states = [_state(seed=i, temperature=0.8, logprobs=i % 4) for i in range(40)]
        return sampler.sample(logits, list(range(40)), states, pieces)[1] or []

    threaded = Sampler(n_threads=3)
    try:
        threaded_lps, single_lps = run(threaded), run(SAMPLER)
    finally:
        threaded.close()
    assert threaded_lps == single_lps and len(threaded_lps) == 40


class CountingGrammar(OnlyEven):
    """OnlyEven that counts how often the whole row had to be masked."""

    def __init__(self) -> None:
        super().__init__()
        self.num_masks = 0

    def mask(self, row: Logits) -> None:
        self.num_masks += 1
        super().mask(row)


def test_a_grammar_row_is_masked_only_when_its_first_draw_is_refused() -> None:
    row = np.zeros(V, np.float32)
    row[0::2] = 5.0  # the allowed even tokens are by far the likeliest: first draws pass
    grammar = CountingGrammar()
    state = SamplingState(SamplingParams(temperature=1.0), 3, [], grammar)
    chosen = [sample(row[None, :].copy(), [0], [state], PIECES)[0][0] for _ in range(50)]
    assert all(t % 2 == 0 for t in chosen)
    assert grammar.num_masks < 5  # e^-5 of the mass is odd: a refusal is rare


def test_two_choices_sharing_a_row_keep_their_own_bias_and_the_row_is_untouched() -> None:
    logits = _logits(1, seed=6)
    before = logits.copy()
    states = [
        _state(temperature=0.0, logit_bias={3: 100.0}),
        _state(temperature=0.0, logit_bias={6: 100.0}),
    ]
    tokens, _ = sample(logits, [0, 0], states, PIECES)
    assert tokens == [3, 6]
    np.testing.assert_array_equal(logits, before)
