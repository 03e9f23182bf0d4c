"""IncrementalDetokenizer: byte pieces in, only whole UTF-8 characters out."""

from __future__ import annotations

import pytest

from batching.detokenizer import IncrementalDetokenizer

EURO = "€".encode()  # 3 bytes
GRIN = "😀".encode()  # 4 bytes


def _stream(pieces: list[bytes]) -> list[str]:
    detok = IncrementalDetokenizer(pieces)
    return [detok.push(t) for t in range(len(pieces))]


def test_ascii_pieces_pass_straight_through() -> None:
    assert _stream([b"Hello", b",", b" world"]) == ["Hello", ",", " world"]


def test_three_byte_char_split_into_single_bytes_comes_out_once_complete() -> None:
    assert _stream([b"a", EURO[:1], EURO[1:2], EURO[2:], b"b"]) == ["a", "", "", "€", "b"]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_four_byte_emoji_split_anywhere_comes_out_whole(cut: int) -> None:
    assert _stream([GRIN[:cut], GRIN[cut:]]) == ["", "😀"]


def test_text_before_a_partial_char_is_not_held_back() -> None:
    assert _stream([b"ok " + EURO[:2], EURO[2:] + b"!"]) == ["ok ", "€!"]


def test_several_chars_and_a_partial_one_in_one_piece() -> None:
    text = "€é😀"
    data = text.encode()
    assert _stream([data[:-1], data[-1:]]) == ["€é", "😀"]


@pytest.mark.parametrize("size", range(1, 5))
def test_every_split_into_fixed_size_pieces_yields_only_whole_chars(size: int) -> None:
    text = "a€bé😀c\u4e2d"
    data = text.encode()
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    deltas = _stream(chunks)
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)


def test_flush_of_a_broken_tail_gives_a_replacement_char() -> None:
    detok = IncrementalDetokenizer([b"x", EURO[:2]])
    assert detok.push(0) == "x"
    assert detok.push(1) == ""
    assert detok.flush() == "\ufffd"
    assert detok.flush() == ""


def test_flush_with_nothing_pending_is_empty() -> None:
    detok = IncrementalDetokenizer([b"abc"])
    assert detok.push(0) == "abc"
    assert detok.flush() == ""


def test_invalid_bytes_are_replaced_not_held_forever() -> None:
    # a lead byte followed by ASCII can never complete: emit it as U+FFFD with the ASCII
    detok = IncrementalDetokenizer([EURO[:1], b"a", b"\x80", b"b"])
    assert detok.push(0) == ""
    assert detok.push(1) == "\ufffda"
    assert detok.push(2) + detok.push(3) == "\ufffdb"


def test_empty_pieces_change_nothing() -> None:
    assert _stream([b"", EURO[:1], b"", EURO[1:], b""]) == ["", "", "", "€", ""]
