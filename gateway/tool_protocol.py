"""Wire models of tool calling (pydantic v2): tool definitions, tool_choice, calls in messages,
and the tool-call objects of responses and stream deltas, in OpenAI's shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def _omit_none(value: Any) -> bool:
    return value is None


class FunctionDefinition(BaseModel):
    """A function the model may call; `parameters` is a JSON schema of an object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    """One entry of `tools`."""

    type: str  # only "function"; checked in tools.py so the error says so plainly
    function: FunctionDefinition | None = None


class FunctionName(BaseModel):
    """A function named by tool_choice or the legacy function_call."""

    name: str


class NamedToolChoice(BaseModel):
    """tool_choice {"type": "function", "function": {"name": ...}}."""

    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice
FunctionCallChoice = Literal["none", "auto"] | FunctionName  # the legacy `function_call`


class FunctionCall(BaseModel):
    """A call's function: its name and its arguments as a JSON string."""

    name: str
    arguments: str


class ToolCall(BaseModel):
    """A call in an assistant message (request or response)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


# -- stream deltas ------------------------------------------------------------------------


class FunctionCallDelta(BaseModel):
    """The function part of a tool-call delta."""

    name: str | None = Field(default=None, exclude_if=_omit_none)
    arguments: str | None = Field(default=None, exclude_if=_omit_none)


class ToolCallDelta(BaseModel):
    """The first delta of a call has index, id, type and function.name (arguments "");
    later ones only the index and a fragment of the arguments."""

    index: int
    id: str | None = Field(default=None, exclude_if=_omit_none)
    type: Literal["function"] | None = Field(default=None, exclude_if=_omit_none)
    function: FunctionCallDelta
