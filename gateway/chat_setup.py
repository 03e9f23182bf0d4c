"""Everything a chat request needs before it reaches the engine: its parameters checked, its
tools planned, its prompt rendered and its grammar (cached, built off the event loop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.chat_grammar import ChatGrammar, GrammarCache, ResponseSpec
from gateway.chat_output import ChoiceOutput
from gateway.errors import APIError
from gateway.extra_params import refuse_unknown
from gateway.jsonschema import SchemaError
from gateway.messages import to_turns
from gateway.protocol import ChatCompletionRequest, ResponseFormat
from gateway.templates import (
    VICUNA_SYSTEM,
    ChatTemplate,
    ChatTemplateError,
    RenderedPrompt,
    Turn,
)
from gateway.tool_prompt import as_text, instruction, tool_dicts, with_instruction
from gateway.tools import ToolPlan, plan_tools
from gateway.workers import Workers

_TOP_LOGPROBS_MAX = 20


@dataclass(frozen=True, slots=True)
class ChatSetup:
    """A checked chat request: the rendered prompt, tools plan, response kind and grammar."""

    prompt: RenderedPrompt
    plan: ToolPlan | None
    response: ResponseSpec
    grammar: ChatGrammar

    def choice_output(self) -> ChoiceOutput:
        """A fresh reader of one choice's answer."""
        return ChoiceOutput(self.plan, self.grammar, self.response.kind == "text")


class ChatPreparer:
    """Prepares chat requests for one template, with one grammar cache."""

    def __init__(self, template: ChatTemplate, grammars: GrammarCache) -> None:
        self.template = template
        self.grammars = grammars

    async def prepare(self, req: ChatCompletionRequest, workers: Workers) -> ChatSetup:
        """The setup of `req`; APIError (400) for anything it cannot honour. The template is
        rendered in `workers`, off the event loop."""
        refuse_unsupported(req)
        plan = plan_tools(
            req.tools, req.tool_choice, req.parallel_tool_calls, req.functions, req.function_call
        )
        response = response_spec(req.response_format)
        prompt = await workers.run(self.render, req, plan, response)
        try:
            grammar = await self.grammars.get(plan, response)
        except SchemaError as e:
            raise APIError(400, str(e), param=e.param, code="invalid_schema") from e
        return ChatSetup(prompt, plan, response, grammar)

    def render(
        self, req: ChatCompletionRequest, plan: ToolPlan | None, response: ResponseSpec
    ) -> RenderedPrompt:
        """The prompt: the messages, with the tools offered in the system message (or, for a
        template that refuses system messages, at the start of the first user message)."""
        messages = to_turns(req.messages)
        is_active = plan is not None and plan.mode != "none"
        text = instruction(plan, response.kind == "text") if plan and is_active else None
        tools = tool_dicts(plan) if plan is not None and is_active else None
        default_system = VICUNA_SYSTEM if self.template.name == "vicuna" else None
        try:
            return self._render(with_instruction(messages, text, default_system), tools)
        except ChatTemplateError as e:
            has_system = any(t.role == "system" for t in messages)
            if text is None or has_system:
                raise APIError(400, str(e), param="messages") from e
        try:
            return self._render(with_instruction(messages, text, None, into_user=True), tools)
        except ChatTemplateError as e:
            raise APIError(400, str(e), param="messages") from e

    def _render(self, turns: list[Turn], tools: list[dict[str, Any]] | None) -> RenderedPrompt:
        if self.template.supports_tools:
            return self.template.render(turns, tools)
        return self.template.render(as_text(turns))


def response_spec(response_format: ResponseFormat | None) -> ResponseSpec:
    """What a plain answer must be, from `response_format`."""
    if response_format is None or response_format.type == "text":
        return ResponseSpec("text")
    if response_format.type == "json_object":
        return ResponseSpec("json_object")
    spec = response_format.json_schema
    if spec is None:
        raise APIError(400, "json_schema is required", param="response_format.json_schema")
    return ResponseSpec("json_schema", spec.schema_)


def refuse_unsupported(req: ChatCompletionRequest) -> None:
    """Unknown or unsupported parameters are 400s naming them, as OpenAI answers."""
    refuse_unknown(req.model_extra)
    if req.store:
        raise APIError(400, "store: true is not supported: nothing is stored", param="store")
    if req.top_logprobs is not None:
        if not 0 <= req.top_logprobs <= _TOP_LOGPROBS_MAX:
            above = req.top_logprobs > _TOP_LOGPROBS_MAX
            raise APIError(
                400,
                f"top_logprobs must be in [0, {_TOP_LOGPROBS_MAX}], got {req.top_logprobs}",
                param="top_logprobs",
                code="integer_above_max_value" if above else "integer_below_min_value",
            )
        if not req.logprobs:
            message = "top_logprobs needs logprobs set to true"
            raise APIError(400, message, param="top_logprobs")
