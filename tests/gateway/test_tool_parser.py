"""The envelope read back as it streams: however the text is cut, the same calls come out."""

from __future__ import annotations

import json

from gateway.tool_parser import ArgumentsDelta, CallStarted, ContentDelta, EnvelopeParser

CALLS = (
    '{ "tool_calls": [ {"name": "get_weather", "arguments": {"city": "Pa\\"ris}", "n": [1, {}]}}'
    ', {"name":"now","arguments":{}} ] }'
)


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_calls_come_out_the_same_however_the_text_is_cut() -> None:
    for size in (1, 2, 3, 7, len(CALLS)):
        parser = EnvelopeParser()
        events = [e for piece in _pieces(CALLS, size) for e in parser.feed(piece)]
        assert parser.is_complete and not parser.is_malformed
        assert [(c.index, c.name) for c in parser.calls] == [(0, "get_weather"), (1, "now")]
        arguments = [c.arguments_text for c in parser.calls]
        assert [json.loads(a) for a in arguments] == [{"city": 'Pa"ris}', "n": [1, {}]}, {}]
        starts = [e for e in events if isinstance(e, CallStarted)]
        assert [s.id for s in starts] == [c.id for c in parser.calls]
        assert all(s.id.startswith("call_") and len(s.id) == 29 for s in starts)
        for call in parser.calls:  # the deltas add up to the arguments
            text = "".join(
                e.text for e in events if isinstance(e, ArgumentsDelta) and e.index == call.index
            )
            assert text == call.arguments_text


def test_a_call_starts_before_its_arguments_and_fragments_are_joined_per_feed() -> None:
    parser = EnvelopeParser()
    events = parser.feed('{"tool_calls": [{"name": "f", "arguments": {"a": 1')
    assert isinstance(events[0], CallStarted) and events[1:] == [ArgumentsDelta(0, '{"a": 1')]
    assert not parser.is_complete and not parser.is_malformed  # cut short, not wrong


def test_a_text_response_is_unescaped_even_across_pieces() -> None:
    parser = EnvelopeParser()
    text = '{"response": "tab\\there \\u00e9 \\ud83d\\ude00 \\"q\\""}'
    out = "".join(
        e.text for p in _pieces(text, 1) for e in parser.feed(p) if isinstance(e, ContentDelta)
    )
    assert out == 'tab\there é 😀 "q"' and parser.is_complete and not parser.calls


def test_a_json_response_is_passed_on_as_written() -> None:
    for value in ('{"a": [1, "}"]}', "12.5", '"x"', "null"):
        parser = EnvelopeParser(is_text_response=False)
        events = parser.feed(f'{{"response": {value}}}')
        assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == value
        assert parser.is_complete


def test_text_that_is_not_the_envelope_is_flagged() -> None:
    for text in ("Hello there", '{"answer": 1}', '{"tool_calls": {"name": "f"}}'):
        parser = EnvelopeParser()
        parser.feed(text)
        assert parser.is_malformed and not parser.is_complete
