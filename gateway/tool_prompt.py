"""How tools reach the prompt.

Every template: the system message gets the functions (name, description and parameters
schema, as JSON) and the reply format the grammar will enforce, e.g. for tool_choice auto

    You can call functions. Each is given as JSON with its name, description and
    parameters (a JSON Schema):
    {"name": "get_weather", "description": "...", "parameters": {...}}
    Reply with one JSON object: {"tool_calls": [{"name": <function name>, "arguments":
    <arguments object>}]} to call functions, or {"response": <your answer as a string>}.

A template without tool support (Vicuna) gets the rest as text as well: an assistant message
that called tools becomes the same JSON envelope, and the results that follow become one user
turn ("Result of get_weather (call call_abc): ..."). A jinja template that reads `tools` gets
the tool definitions, the calls and the `tool` messages as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.templates import Turn
from gateway.tools import ToolPlan

_CALL = '{"name": <function name>, "arguments": <arguments object>}'


def instruction(plan: ToolPlan, is_text_response: bool = True) -> str:
    """The system text that offers the functions and states the reply format."""
    functions = "\n".join(
        json.dumps(
            {"name": t.name, "description": t.description, "parameters": t.parameters or {}},
            ensure_ascii=False,
        )
        for t in plan.tools
    )
    calls = (
        f'{{"tool_calls": [{_CALL}]}}'
        if plan.max_calls == 1
        else (f'{{"tool_calls": [{_CALL}, ...]}}')
    )
    if plan.mode == "named":
        reply = f'Call the function "{plan.named}": reply with one JSON object, {calls}.'
    elif plan.mode == "required":
        reply = f"Call one or more of these functions: reply with one JSON object, {calls}."
    else:
        answer = "<your answer as a string>" if is_text_response else "<your answer as JSON>"
        reply = (
            f"Reply with one JSON object: {calls} to call functions, or "
            f'{{"response": {answer}}} to answer directly.'
        )
    return (
        "You can call functions. Each is given as JSON with its name, description and "
        f"parameters (a JSON Schema):\n{functions}\n{reply}"
    )


def tool_dicts(plan: ToolPlan) -> list[dict[str, Any]]:
    """The tools in OpenAI's shape, for a jinja template's `tools` variable."""
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description,
                                          "parameters": t.parameters or {}}}
        for t in plan.tools
    ]  # fmt: skip


def with_instruction(
    turns: Sequence[Turn], text: str | None, default_system: str | None, into_user: bool = False
) -> list[Turn]:
    """`text` appended to the system message (one is added, with `default_system`, if none);
    `into_user`: put it before the first user message instead (templates without a system
    role)."""
    if text is None:
        return list(turns)
    if into_user:
        first = next((i for i, t in enumerate(turns) if t.role == "user"), None)
        if first is not None:
            turn = turns[first]
            merged = Turn("user", f"{text}\n\n{turn.content}", name=turn.name)
            return [*turns[:first], merged, *turns[first + 1 :]]
    if turns and turns[0].role == "system":
        first_turn = turns[0]
        return [Turn("system", f"{first_turn.content}\n\n{text}".strip()), *turns[1:]]
    system = f"{default_system}\n\n{text}" if default_system else text
    return [Turn("system", system), *turns]


def as_text(turns: Sequence[Turn]) -> list[Turn]:
    """Tool calls and results written out, for a template that knows only three roles."""
    out: list[Turn] = []
    names = {c.id: c.name for t in turns for c in t.tool_calls}
    follows_result = False  # results of one round of calls make one user turn
    for turn in turns:
        if turn.role == "tool":
            name = turn.name or names.get(turn.tool_call_id or "", "a function")
            call = f" (call {turn.tool_call_id})" if turn.tool_call_id else ""
            line = f"Result of {name}{call}: {turn.content}"
            if follows_result:
                line = f"{out.pop().content}\n{line}"
            out.append(Turn("user", line))
        elif turn.tool_calls:
            out.append(Turn("assistant", envelope(turn)))
        else:
            out.append(turn)
        follows_result = turn.role == "tool"
    return out


def envelope(turn: Turn) -> str:
    """An assistant turn's calls in the reply format the grammar enforces."""
    calls = [{"name": c.name, "arguments": _arguments(c.arguments)} for c in turn.tool_calls]
    return json.dumps({"tool_calls": calls}, ensure_ascii=False)


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
