"""A chat choice's generated text in the wire format: content, or tool calls read back.

Without tools the text is the content. With tools the model wrote the JSON envelope
(tool_parser.py): calls become `tool_calls` (content null, finish_reason "tool_calls"), or the
legacy `function_call`; a `response` becomes the content. Streamed deltas and whole messages
come from the same parser events, so both agree. Keywords the grammar could not enforce are
checked here once a choice is complete.
"""

from __future__ import annotations

from gateway.chat_grammar import ChatGrammar
from gateway.choices import ChoiceState, chat_logprobs
from gateway.errors import APIError
from gateway.protocol import AssistantMessage, ChatChoice, DeltaMessage
from gateway.tool_parser import CallStarted, ContentDelta, EnvelopeParser, Event
from gateway.tool_protocol import FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta
from gateway.tools import ToolPlan


class ChoiceOutput:
    """One choice: feed it the generated text, read deltas, the message and the finish."""

    def __init__(self, plan: ToolPlan | None, grammar: ChatGrammar, is_text_response: bool):
        self._grammar = grammar
        self._is_legacy = plan is not None and plan.is_legacy
        uses_envelope = plan is not None and plan.mode != "none"
        self._parser = EnvelopeParser(is_text_response) if uses_envelope else None
        self._text: list[str] = []
        self._has_events = False

    def feed(self, text: str) -> list[DeltaMessage]:
        """The stream deltas that `text` (the next piece of the answer) completes."""
        self._text.append(text)
        if self._parser is None:
            return [DeltaMessage(content=text)] if text else []
        was_malformed = self._parser.is_malformed
        events = self._parser.feed(text)
        self._has_events = self._has_events or bool(events)
        out = [self._delta(event) for event in events]
        if self._parser.is_malformed and not self._has_events:
            # not the envelope after all (cannot happen under the grammar): pass it on as text
            out.append(DeltaMessage(content="".join(self._text) if not was_malformed else text))
        return out

    def _delta(self, event: Event) -> DeltaMessage:
        if isinstance(event, ContentDelta):
            return DeltaMessage(content=event.text)
        if isinstance(event, CallStarted):
            if self._is_legacy:
                return DeltaMessage(function_call={"name": event.name, "arguments": ""})
            function = FunctionCallDelta(name=event.name, arguments="")
            call = ToolCallDelta(index=event.index, id=event.id, type="function", function=function)
            return DeltaMessage(tool_calls=[call])
        if self._is_legacy:
            return DeltaMessage(function_call={"arguments": event.text})
        function = FunctionCallDelta(arguments=event.text)
        return DeltaMessage(tool_calls=[ToolCallDelta(index=event.index, function=function)])

    def message(self) -> AssistantMessage:
        """The whole answer as the assistant message."""
        parser = self._parser
        text = "".join(self._text)
        if parser is None or (parser.is_malformed and not self._has_events):
            return AssistantMessage(content=text)
        if not parser.calls:
            return AssistantMessage(content="".join(parser.content))
        calls = [
            ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments_text))
            for c in parser.calls
        ]
        if self._is_legacy:
            return AssistantMessage(function_call=calls[0].function)
        return AssistantMessage(tool_calls=calls)

    def finish_reason(self, engine_reason: str | None) -> str | None:
        """ "tool_calls" (legacy: "function_call") for a complete answer that called tools."""
        parser = self._parser
        if engine_reason == "stop" and parser is not None and parser.calls and parser.is_complete:
            return "function_call" if self._is_legacy else "tool_calls"
        return engine_reason

    def problem(self) -> str | None:
        """What the complete answer breaks that the grammar could not enforce, if anything."""
        grammar, parser = self._grammar, self._parser
        if parser is not None and parser.calls:
            for call in parser.calls:
                check = grammar.tool_checks.get(call.name)
                found = check.problem(call.arguments_text) if check else None
                if found:
                    return f"the arguments of {call.name} break {found}"
            return None
        if grammar.response_check is None:
            return None
        text = "".join(parser.content) if parser is not None else "".join(self._text)
        found = grammar.response_check.problem(text)
        return f"the answer breaks {found}" if found else None


def chat_choice(choice: ChoiceState, output: ChoiceOutput, with_logprobs: bool) -> ChatChoice:
    """A whole (non-streamed) choice; an answer that breaks its schema is a 500 naming how."""
    output.feed("".join(choice.text))
    reason = output.finish_reason(choice.api_finish_reason)
    problem = output.problem() if reason != "length" else None
    if problem:
        # the request's trace counted it already (as 200: the engine did its part)
        raise APIError(500, problem, code="schema_validation_failed", is_counted=True)
    return ChatChoice(
        index=choice.index,
        message=output.message(),
        logprobs=chat_logprobs(choice) if with_logprobs else None,
        finish_reason=reason,
    )
