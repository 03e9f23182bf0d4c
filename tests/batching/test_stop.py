"""StopChecker: stop strings cut the text, and a possible start of one is held back."""

from __future__ import annotations

import pytest

from batching.stop import StopChecker


def _run(stops: tuple[str, ...], pushes: list[str]) -> tuple[list[str], bool]:
    checker = StopChecker(stops)
    deltas: list[str] = []
    for text in pushes:
        emit, hit = checker.push(text)
        deltas.append(emit)
        if hit:
            return deltas, True
    deltas.append(checker.flush())
    return deltas, False


def test_no_stops_is_a_passthrough() -> None:
    checker = StopChecker(())
    assert checker.push("a##b") == ("a##b", False)
    assert checker.flush() == ""


def test_stop_inside_one_push_cuts_before_it() -> None:
    assert StopChecker(("###",)).push("abc###def") == ("abc", True)


def test_stop_split_across_pushes_is_never_emitted() -> None:
    deltas, hit = _run(("###",), ["Hello #", "#", "# world"])
    assert hit
    assert deltas == ["Hello ", "", ""]


def test_stop_split_over_many_single_chars() -> None:
    deltas, hit = _run(("END",), list("xyEND"))
    assert hit
    assert "".join(deltas) == "xy"


def test_held_prefix_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    deltas, hit = _run(("###",), ["a#", "#b"])
    assert not hit
    assert deltas[:2] == ["a", "##b"]
    assert "".join(deltas) == "a##b"


def test_longest_possible_prefix_is_held() -> None:
    checker = StopChecker(("abcd",))
    assert checker.push("xabc") == ("x", False)
    assert checker.push("e") == ("abce", False)


def test_overlapping_partial_matches() -> None:
    # "aab" could start at either "a": both must stay held until the "b" decides
    checker = StopChecker(("aab",))
    assert checker.push("aa") == ("", False)
    assert checker.push("a") == ("a", False)
    assert checker.push("b") == ("", True)


@pytest.mark.parametrize("stops", [("STOP", "ST"), ("ST", "STOP"), ("TOP", "S")])
def test_earliest_of_several_stops_wins(stops: tuple[str, ...]) -> None:
    assert StopChecker(stops).push("xxSTOP") == ("xx", True)


def test_earliest_stop_wins_across_pushes() -> None:
    deltas, hit = _run(("world", "lo"), ["hel", "lo world"])
    assert hit
    assert "".join(deltas) == "hel"


def test_flush_releases_held_text() -> None:
    checker = StopChecker(("</s>",))
    assert checker.push("done </") == ("done ", False)
    assert checker.flush() == "</"
    assert checker.flush() == ""


def test_multibyte_stop_string() -> None:
    deltas, hit = _run(("€€",), ["1 €", "€ 2"])
    assert hit
    assert "".join(deltas) == "1 "
