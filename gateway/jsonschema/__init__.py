"""JSON Schema -> GBNF grammars (llama.cpp's format) whose every sentence validates.

`schema_grammar` serves `response_format` json_schema; gateway/tools.py composes several
documents (one per tool) with `Builder` over one rule table. Every grammar is bounded by
`Limits`; what a grammar cannot enforce but a check after generation can is listed in
`JsonGrammar.unenforced` (see validate.py), and what neither can is a SchemaError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.jsonschema.builder import Builder, finish, new_rules
from gateway.jsonschema.errors import SchemaError
from gateway.jsonschema.keywords import check_document
from gateway.jsonschema.limits import Limits

__all__ = ["Builder", "JsonGrammar", "Limits", "SchemaError", "json_object_grammar",
           "schema_grammar"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class JsonGrammar:
    """A grammar and the keywords (with their places) that only a check after generation
    enforces; empty when the grammar alone guarantees valid output."""

    gbnf: str
    unenforced: tuple[str, ...] = ()


def schema_grammar(schema: Any, limits: Limits) -> JsonGrammar:
    """The grammar of JSON texts valid against `schema`; SchemaError if we cannot make one."""
    check_document(schema, limits)
    rules = new_rules(limits)
    builder = Builder(schema, rules)
    root = builder.build()
    return JsonGrammar(finish(rules, root, limits), tuple(builder.unenforced_keywords))


def json_object_grammar(limits: Limits) -> str:
    """Any JSON object (response_format json_object)."""
    return finish(new_rules(limits), "object", limits)
