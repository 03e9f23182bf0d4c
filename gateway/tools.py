"""The tools of a chat request, checked: which functions, which tool_choice, parallel calls.

`functions` / `function_call` (OpenAI's legacy form) map onto the same plan; a legacy request
is answered in the legacy form (`message.function_call`, finish_reason "function_call").
Every mistake is a 400 naming the parameter, as OpenAI names it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import APIError
from gateway.tool_protocol import (
    FunctionCallChoice,
    FunctionDefinition,
    FunctionName,
    NamedToolChoice,
    Tool,
    ToolChoice,
)

MAX_TOOLS = 128  # OpenAI's limit
MAX_PARALLEL_CALLS = 8  # calls in one answer when parallel_tool_calls is on
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

Mode = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One function the model may call; parameters None = it takes no arguments."""

    index: int
    name: str
    description: str
    parameters: dict[str, Any] | None
    param: str  # where it came from, e.g. "tools.2.function"


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What the model may do with the tools: answer (auto), must call (required, named)."""

    mode: Mode
    tools: tuple[ToolSpec, ...]
    named: str | None = None
    is_parallel: bool = True
    is_legacy: bool = False

    @property
    def callable(self) -> tuple[ToolSpec, ...]:
        """The functions the output grammar offers."""
        if self.mode == "named":
            return tuple(t for t in self.tools if t.name == self.named)
        return self.tools if self.mode != "none" else ()

    @property
    def max_calls(self) -> int:
        """Calls one answer may hold: a named choice asks for that one call."""
        return MAX_PARALLEL_CALLS if self.is_parallel and self.mode != "named" else 1

    def key(self) -> str:
        """Everything the grammar depends on, as canonical JSON (the grammar cache's key)."""
        specs = [[t.name, t.parameters, t.index] for t in self.callable]
        return json.dumps([self.mode, self.max_calls, specs], sort_keys=True)


def plan_tools(
    tools: list[Tool] | None,
    tool_choice: ToolChoice | None,
    parallel_tool_calls: bool | None,
    functions: list[FunctionDefinition] | None,
    function_call: FunctionCallChoice | None,
) -> ToolPlan | None:
    """The checked plan, or None for a request without tools."""
    if functions is not None:
        if tools is not None:
            raise APIError(400, "send tools or (legacy) functions, not both", param="functions")
        return _legacy_plan(functions, function_call)
    if function_call is not None:
        raise APIError(400, "function_call needs functions", param="function_call")
    if tools is None:
        if tool_choice is not None:
            message = "tool_choice is only allowed when tools are specified"
            raise APIError(400, message, param="tool_choice")
        if parallel_tool_calls is not None:
            message = "parallel_tool_calls is only allowed when tools are specified"
            raise APIError(400, message, param="parallel_tool_calls")
        return None
    specs = _specs([_function_of(tool, i) for i, tool in enumerate(tools)], "tools", "function")
    mode, named = _choice(tool_choice, specs, "tool_choice")
    return ToolPlan(mode, specs, named, parallel_tool_calls is not False)


def _legacy_plan(
    functions: list[FunctionDefinition], function_call: FunctionCallChoice | None
) -> ToolPlan:
    specs = _specs(functions, "functions", None)
    choice: ToolChoice | None
    if isinstance(function_call, FunctionName):
        choice = NamedToolChoice(type="function", function=function_call)
    else:
        choice = function_call
    mode, named = _choice(choice, specs, "function_call")
    return ToolPlan(mode, specs, named, is_parallel=False, is_legacy=True)


def _function_of(tool: Tool, index: int) -> FunctionDefinition:
    if tool.type != "function":
        message = f"tool type {tool.type[:50]!r} is not supported; only 'function' tools are"
        raise APIError(400, message, param=f"tools.{index}.type")
    if tool.function is None:
        raise APIError(400, "a function tool needs `function`", param=f"tools.{index}.function")
    return tool.function


def _specs(
    functions: list[FunctionDefinition], param: str, sub: str | None
) -> tuple[ToolSpec, ...]:
    if not functions:
        raise APIError(400, f"{param} must hold at least one function", param=param)
    if len(functions) > MAX_TOOLS:
        raise APIError(400, f"{param} may hold at most {MAX_TOOLS} functions", param=param)
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    for i, fn in enumerate(functions):
        where = f"{param}.{i}" + (f".{sub}" if sub else "")
        if not _NAME.fullmatch(fn.name):
            message = f"function name {fn.name[:80]!r} must match ^[a-zA-Z0-9_-]{{1,64}}$"
            raise APIError(400, message, param=f"{where}.name")
        if fn.name in seen:
            message = f"function name {fn.name!r} appears twice; names must be unique"
            raise APIError(400, message, param=f"{where}.name")
        seen.add(fn.name)
        _check_object_schema(fn.parameters, f"{where}.parameters")
        specs.append(ToolSpec(i, fn.name, fn.description or "", fn.parameters, where))
    return tuple(specs)


def _check_object_schema(schema: dict[str, Any] | None, param: str) -> None:
    """Arguments are always a JSON object: the schema must describe one."""
    if schema is None:
        return
    kind = schema.get("type", "object")
    if kind != "object" and "$ref" not in schema:
        message = f"parameters must be a JSON Schema of type 'object', not {str(kind)[:50]!r}"
        raise APIError(400, message, param=param)


def _choice(
    choice: ToolChoice | None, specs: tuple[ToolSpec, ...], param: str
) -> tuple[Mode, str | None]:
    if choice is None or choice == "auto":
        return "auto", None
    if choice == "none" or choice == "required":
        return choice, None
    assert isinstance(choice, NamedToolChoice)
    name = choice.function.name
    if not any(spec.name == name for spec in specs):
        message = f"{param} names function {name[:80]!r}, which is not among the tools"
        raise APIError(400, message, param=param)
    return "named", name
