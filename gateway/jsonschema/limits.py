"""The bounds every grammar stays within, so that no schema can exhaust memory or time.

llama.cpp expands `x{m,n}` into n rules when it parses a grammar, so every repetition count,
the number of properties, enum values and `$ref` expansions, and the size of the grammar text
are capped here; a schema that needs more gets a 400 naming the keyword (or, for an upper bound
such as a large `maxLength`, is enforced after generation instead; see README).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_REPEAT = 1000  # llama.cpp's parser turns counts above 2000 into "no limit" (silently)


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on one grammar; the defaults are what the server uses."""

    max_repeat: int = MAX_REPEAT  # largest count in x{m,n}: minLength, maxItems, regex {n,m}, ...
    max_properties: int = 512  # properties of one object
    max_enum: int = 1024  # values of one enum
    max_ref_depth: int = 10  # nested $ref expansions (recursive schemas stop here)
    max_schema_depth: int = 64  # nesting of the schema document itself
    max_schema_nodes: int = 20_000  # subschemas visited, $ref expansions included
    max_grammar_bytes: int = 512 * 1024  # the GBNF text
    max_digits: int = 18  # digits of an integer part (bounds with more are refused)
    max_fraction_digits: int = 15  # digits after the decimal point
    # Longest string the grammar lets the model write where the schema sets no maxLength (or
    # one above max_repeat); None = no limit. A random-weight model never closes a string on its
    # own, so the demo model needs one; a real model does not.
    max_string: int | None = None

    def __post_init__(self) -> None:
        if self.max_string is not None and not 0 < self.max_string <= self.max_repeat:
            raise ValueError(f"max_string must be in [1, {self.max_repeat}] or None")
