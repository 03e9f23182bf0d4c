"""The grammar of a chat request with tools: whatever llama.cpp lets the model write parses
back into valid calls; grammars are built once per request shape, off the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from gateway.chat_grammar import GrammarCache, ResponseSpec, build_grammar
from gateway.jsonschema import Limits, SchemaError
from gateway.tool_parser import EnvelopeParser
from gateway.tool_protocol import FunctionName, NamedToolChoice, Tool
from gateway.tools import ToolPlan, plan_tools
from tests.gateway.jsonschema.sampling import GrammarSampler

LIMITS = Limits(max_string=16)
PARAMETERS = {
    "get_weather": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
    },
    "add": {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": 0, "maximum": 99},
            "b": {"type": "integer"},
        },
        "required": ["a", "b"],
    },
}
TOOLS = [
    Tool.model_validate({"type": "function", "function": {"name": n, "parameters": p}})
    for n, p in PARAMETERS.items()
] + [Tool.model_validate({"type": "function", "function": {"name": "now"}})]


def plan(choice: Any, parallel: bool | None = None) -> ToolPlan:
    made = plan_tools(TOOLS, choice, parallel, None, None)
    assert made is not None
    return made


def _check_calls(parser: EnvelopeParser, names: set[str], max_calls: int) -> None:
    assert 1 <= len(parser.calls) <= max_calls
    for call in parser.calls:
        assert call.name in names
        arguments = json.loads(call.arguments_text)
        jsonschema.validate(arguments, PARAMETERS.get(call.name, {"maxProperties": 0}))


@pytest.mark.model
@pytest.mark.parametrize("parallel", [None, False])
def test_required_always_yields_valid_calls(
    grammar_sampler: GrammarSampler, parallel: bool | None
) -> None:
    the_plan = plan("required", parallel)
    gbnf = build_grammar(the_plan, ResponseSpec("text"), LIMITS).gbnf
    assert gbnf is not None
    for seed in range(10):
        text = grammar_sampler.sample(gbnf, seed, max_tokens=800)
        assert text is not None
        parser = EnvelopeParser()
        parser.feed(text)
        assert parser.is_complete
        _check_calls(parser, {"get_weather", "add", "now"}, the_plan.max_calls)


@pytest.mark.model
def test_a_named_function_is_called_exactly_once(grammar_sampler: GrammarSampler) -> None:
    named = NamedToolChoice(type="function", function=FunctionName(name="add"))
    gbnf = build_grammar(plan(named), ResponseSpec("text"), LIMITS).gbnf
    for seed in range(6):
        parser = EnvelopeParser()
        parser.feed(grammar_sampler.sample(gbnf or "", seed) or "")
        _check_calls(parser, {"add"}, 1)


@pytest.mark.model
def test_auto_answers_in_text_or_calls(grammar_sampler: GrammarSampler) -> None:
    gbnf = build_grammar(plan("auto"), ResponseSpec("text"), LIMITS).gbnf
    kinds = set()
    for seed in range(16):
        parser = EnvelopeParser()
        parser.feed(grammar_sampler.sample(gbnf or "", seed, max_tokens=800) or "")
        assert parser.is_complete
        if parser.calls:
            _check_calls(parser, {"get_weather", "add", "now"}, 8)
        kinds.add("calls" if parser.calls else "text")
    assert kinds == {"calls", "text"}


@pytest.mark.model
def test_auto_with_a_response_format_answers_in_that_schema(
    grammar_sampler: GrammarSampler,
) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    grammar = build_grammar(plan("auto"), ResponseSpec("json_schema", schema), LIMITS)
    for seed in range(10):
        parser = EnvelopeParser(is_text_response=False)
        parser.feed(grammar_sampler.sample(grammar.gbnf or "", seed, max_tokens=800) or "")
        if not parser.calls:
            jsonschema.validate(json.loads("".join(parser.content)), schema)


def test_arguments_are_an_object_even_when_the_schema_leaves_type_out() -> None:
    loose = Tool.model_validate({"type": "function", "function": {"name": "f", "parameters": {}}})
    the_plan = plan_tools([loose], "required", None, None, None)
    gbnf = build_grammar(the_plan, ResponseSpec("text"), LIMITS).gbnf or ""
    assert '"\\"arguments\\"" ":" ws schema ws' in gbnf and 'schema ::= "{"' in gbnf


def test_tool_choice_none_and_plain_text_need_no_grammar() -> None:
    assert build_grammar(plan("none"), ResponseSpec("text"), LIMITS).gbnf is None
    assert build_grammar(None, ResponseSpec("text"), LIMITS).gbnf is None
    assert build_grammar(None, ResponseSpec("json_object"), LIMITS).gbnf is not None


def test_a_schema_error_names_the_tool_parameter() -> None:
    n = {"type": "integer", "minimum": 3, "maximum": 1}
    parameters = {"type": "object", "properties": {"n": n}}
    bad = Tool.model_validate(
        {"type": "function", "function": {"name": "f", "parameters": parameters}}
    )
    the_plan = plan_tools([TOOLS[0], bad], "auto", None, None, None)
    with pytest.raises(SchemaError) as err:
        build_grammar(the_plan, ResponseSpec("text"), LIMITS)
    assert err.value.param == "tools.1.function.parameters.properties.n.maximum"
    with pytest.raises(SchemaError) as err:
        build_grammar(None, ResponseSpec("json_schema", {"type": "array", "minItems": -1}), LIMITS)
    assert err.value.param == "response_format.json_schema.schema.minItems"


def test_the_cache_builds_each_shape_once_in_a_worker_thread() -> None:
    threads: set[str] = set()

    async def main() -> GrammarCache:
        cache = GrammarCache(LIMITS, capacity=2)
        original = build_grammar

        def spy(*args: Any) -> Any:
            threads.add(threading.current_thread().name)
            return original(*args)

        import gateway.chat_grammar as module

        module.build_grammar = spy  # type: ignore[assignment]
        try:
            same = [cache.get(plan("required"), ResponseSpec("text")) for _ in range(5)]
            grammars = await asyncio.gather(*same)
            assert len({id(g) for g in grammars}) == 1
            await cache.get(plan("required"), ResponseSpec("text"))
            await cache.get(plan("auto"), ResponseSpec("text"))
        finally:
            module.build_grammar = original
        return cache

    cache = asyncio.run(main())
    assert cache.builds == 2 and threading.main_thread().name not in threads


def test_a_schema_that_cannot_be_built_is_remembered_too() -> None:
    bad = ResponseSpec("json_schema", {"type": "string", "minLength": 3, "maxLength": 1})

    async def main() -> GrammarCache:
        cache = GrammarCache(LIMITS)
        for _ in range(3):
            with pytest.raises(SchemaError, match="maxLength"):
                await cache.get(None, bad)
        return cache

    assert asyncio.run(main()).builds == 1


def test_llama_cpps_parse_runs_in_the_worker_thread_once_per_shape() -> None:
    parsed: list[tuple[str, str]] = []

    def compile_grammar(gbnf: str) -> None:
        parsed.append((threading.current_thread().name, gbnf))

    async def main() -> None:
        cache = GrammarCache(LIMITS, compile=compile_grammar)
        for _ in range(3):
            grammar = await cache.get(plan("required"), ResponseSpec("text"))
        assert parsed == [(parsed[0][0], grammar.gbnf)]
        assert parsed[0][0] != threading.main_thread().name  # never on the event loop

    asyncio.run(main())


def test_a_grammar_llama_cpp_refuses_is_a_schema_error_remembered_like_the_others() -> None:
    calls = 0

    def refuse(gbnf: str) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("the grammar does not parse as GBNF with a 'root' rule")

    async def main() -> None:
        cache = GrammarCache(LIMITS, compile=refuse)
        for _ in range(2):
            with pytest.raises(SchemaError, match="does not parse"):
                await cache.get(None, ResponseSpec("json_object"))

    asyncio.run(main())
    assert calls == 1
