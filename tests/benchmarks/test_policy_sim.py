"""benchmarks/policy_sim.py ranks scheduling policies on the CPU: its clock and its load must
behave like the GPU benchmark's, or its rankings mean nothing."""

from __future__ import annotations

from tests.benchmarks.scripts import load_script


def test_a_ubatch_costs_what_the_step_profile_measured_and_grows_with_its_tokens() -> None:
    sim = load_script("policy_sim")
    assert sim.ubatch_ms(64) == 16.5 and sim.ubatch_ms(480) == 44.0
    assert sim.ubatch_ms(1) < sim.ubatch_ms(100) < sim.ubatch_ms(512) < sim.ubatch_ms(2048)


def test_a_closed_loop_serves_every_request_in_full_and_measures_its_first_token() -> None:
    module = load_script("policy_sim")
    sim = module.Sim("fixed", n_batch=1024, n_ubatch=512, seed=0)
    ttft, tokens, wall = sim.phase(16)
    assert len(ttft) == 16 and tokens == 16 * 128
    # 16 prompts of 256 tokens at once, 1,024 a step: the first four get a token after one step
    assert min(ttft) > 0.05 and sorted(ttft)[3] == min(ttft) < sorted(ttft)[4]
    assert wall > 128 * module.ubatch_ms(16) / 1000  # at least 128 steps of 16 decode tokens
