"""The grammar of one chat request: response_format, tool calls, or both; built and cached.

With tools (tool_choice auto, required or a named function) the model writes one JSON envelope
(tool_parser.py reads it back): `{"tool_calls": [{"name": ..., "arguments": {...}}, ...]}`,
or, under auto, `{"response": ...}` where the response is a string, or the JSON value that
response_format asks for. Each call's arguments follow that function's parameters schema.
Grammars are built in a worker thread and cached per distinct request shape, so an agent that
sends the same tools every turn pays for building them once.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.jsonschema import Builder, Limits, SchemaError, json_object_grammar, schema_grammar
from gateway.jsonschema.builder import finish, new_rules
from gateway.jsonschema.gbnf import WS, Rules, alternatives, json_literal, literal, repeat, seq
from gateway.jsonschema.keywords import check_document
from gateway.jsonschema.validate import OutputCheck
from gateway.tools import ToolPlan, ToolSpec

RESPONSE_FORMAT_PARAM = ("response_format", "json_schema", "schema")


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    """What a plain answer must be: free text, any JSON object, or JSON valid for a schema."""

    kind: str  # "text" | "json_object" | "json_schema"
    schema: Any = None

    def key(self) -> str:
        """Canonical JSON of everything the grammar depends on."""
        return json.dumps([self.kind, self.schema], sort_keys=True)


@dataclass(frozen=True, slots=True)
class ChatGrammar:
    """A request's grammar (None: unconstrained) and the checks left for after generation."""

    gbnf: str | None
    response_check: OutputCheck | None = None
    tool_checks: dict[str, OutputCheck] = field(default_factory=dict)


def build_grammar(plan: ToolPlan | None, response: ResponseSpec, limits: Limits) -> ChatGrammar:
    """The grammar for tools under `plan` (if it calls for any) and for `response`."""
    if plan is None or plan.mode == "none":
        return _response_only(response, limits)
    rules = new_rules(limits)
    tool_checks: dict[str, OutputCheck] = {}
    calls = [_call(rules, spec, limits, tool_checks) for spec in plan.callable]
    call = rules.add("call", alternatives(calls))
    more = repeat(f'( "," {WS} {call} )', 0, plan.max_calls - 1)
    calls_expr = seq(literal('"tool_calls"'), '":"', WS, '"["', WS, call, more, WS, '"]"')
    options = [calls_expr]
    response_check = None
    if plan.mode == "auto":
        value, response_check = _response_value(rules, response, limits)
        options.append(seq(literal('"response"'), '":"', WS, value))
    root = seq('"{"', WS, alternatives(options), WS, '"}"')
    return ChatGrammar(finish(rules, root, limits), response_check, tool_checks)


def _response_only(response: ResponseSpec, limits: Limits) -> ChatGrammar:
    if response.kind == "text":
        return ChatGrammar(None)
    if response.kind == "json_object":
        return ChatGrammar(json_object_grammar(limits))
    try:
        grammar = schema_grammar(response.schema, limits)
    except SchemaError as e:
        raise e.under(RESPONSE_FORMAT_PARAM) from e
    check = OutputCheck(response.schema) if grammar.unenforced else None
    return ChatGrammar(grammar.gbnf, check)


def _response_value(
    rules: Rules, response: ResponseSpec, limits: Limits
) -> tuple[str, OutputCheck | None]:
    if response.kind == "text":
        return "string", None
    if response.kind == "json_object":
        return "object", None
    check_document(response.schema, limits, RESPONSE_FORMAT_PARAM)
    builder = Builder(response.schema, rules, RESPONSE_FORMAT_PARAM)
    value = builder.build()
    return value, OutputCheck(response.schema) if builder.unenforced_keywords else None


def _call(rules: Rules, spec: ToolSpec, limits: Limits, checks: dict[str, OutputCheck]) -> str:
    if spec.parameters is None:
        arguments = seq('"{"', WS, '"}"')
    else:
        path = (*spec.param.split("."), "parameters")
        check_document(spec.parameters, limits, path)
        # arguments are an object even when the schema leaves `type` out
        schema = {"type": "object", **spec.parameters}
        builder = Builder(schema, rules, path)
        arguments = builder.build()
        if builder.unenforced_keywords:
            checks[spec.name] = OutputCheck(spec.parameters)
    body = seq(
        '"{"', WS, literal('"name"'), '":"', WS, json_literal(spec.name), '","', WS,
        literal('"arguments"'), '":"', WS, arguments, WS, '"}"',
    )  # fmt: skip
    return rules.add(f"call-{spec.name}", body)


class GrammarCache:
    """Built grammars by request shape (LRU); builds run in a worker thread, once per shape."""

    def __init__(
        self, limits: Limits, capacity: int = 256, compile: Callable[[str], None] | None = None
    ) -> None:
        self.limits = limits
        self.capacity = capacity
        # also in the worker thread: llama.cpp's own parse, so that it never runs on the loop
        self.compile = compile
        # a schema that cannot be built is remembered too: a client repeating it pays nothing
        self._built: OrderedDict[str, ChatGrammar | SchemaError] = OrderedDict()
        self._building: dict[str, asyncio.Future[ChatGrammar | SchemaError]] = {}
        self.builds = 0  # how many grammars were built (for tests and curiosity)

    async def get(self, plan: ToolPlan | None, response: ResponseSpec) -> ChatGrammar:
        """The grammar for this plan and response; SchemaError if it cannot be built."""
        if (plan is None or plan.mode == "none") and response.kind == "text":
            return ChatGrammar(None)
        key = json.dumps([plan.key() if plan else None, response.key()])
        built = self._built.get(key)
        if built is not None:
            self._built.move_to_end(key)
        else:
            if key not in self._building:
                self._building[key] = asyncio.ensure_future(self._build(key, plan, response))
            built = await asyncio.shield(self._building[key])
        if isinstance(built, SchemaError):
            raise built.under(())  # a fresh copy: re-raising one object grows its traceback
        return built

    def _build_and_compile(self, plan: ToolPlan | None, response: ResponseSpec) -> ChatGrammar:
        grammar = build_grammar(plan, response, self.limits)
        if grammar.gbnf is not None and self.compile is not None:
            try:
                self.compile(grammar.gbnf)
            except ValueError as e:
                raise SchemaError(f"the grammar built from it does not parse: {e}") from e
        return grammar

    async def _build(
        self, key: str, plan: ToolPlan | None, response: ResponseSpec
    ) -> ChatGrammar | SchemaError:
        try:
            built: ChatGrammar | SchemaError = await asyncio.to_thread(
                self._build_and_compile, plan, response
            )
        except SchemaError as e:
            built = e
        finally:
            del self._building[key]
        self.builds += 1
        self._built[key] = built
        if len(self._built) > self.capacity:
            self._built.popitem(last=False)
        return built
