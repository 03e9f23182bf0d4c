"""benchmarks/prefix_bench.py: the scheduler's prefix lookups, timed on the CPU."""

from __future__ import annotations

import sys

import pytest

from tests.benchmarks.scripts import load_script


def test_it_times_every_case_over_a_table_whose_free_slots_hold_the_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_script("prefix_bench")
    monkeypatch.setattr(
        sys,
        "argv",
        ["prefix_bench", "--slots", "4", "--prefix", "40", "--history", "50", "--repeat", "1"],
    )
    bench.main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["shared", "distinct", "short", "follow-ups"]
    assert all("4 waiting x 4 free slots" in line and line.endswith(" ms") for line in lines)


def test_fresh_token_ids_are_equal_but_not_the_same_objects() -> None:
    bench = load_script("prefix_bench")
    tokens = [31999, 1000, 70000]
    copy = bench.fresh(tokens)
    assert copy == tokens and all(a is not b for a, b in zip(copy, tokens, strict=True))
