"""Wire models of the OpenAI-compatible API (pydantic v2): requests, responses, stream chunks.

Requests only check types and shapes here; value ranges are checked once, by
`SamplingParams`, whose `ParamError` names the offending parameter. Lists stop at their first
bad item (`List`) and logit_bias is bounded before its entries are looked at: pydantic reports
every bad item, and a 4 MB list of them took seconds on the event loop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from batching.params import SamplingParams
from gateway.tool_protocol import (
    FunctionCall,
    FunctionCallChoice,
    FunctionDefinition,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
)

MAX_LOGIT_BIAS = 4096  # entries

T = TypeVar("T")
List = Annotated[list[T], Field(fail_fast=True)]  # a list whose first bad item is the error


def _omit_none(value: Any) -> bool:
    return value is None


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Parameters shared by completions and chat completions."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | List[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)  # 64 bits, as llama.cpp
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[int, float] | None = None
    user: str | None = None
    # Extensions that vLLM and llama-server users know.
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _token_ids(cls, value: Any) -> Any:
        """JSON keys are strings: each must be a token id. Bounded before it is looked at."""
        if not isinstance(value, dict):
            return value
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias takes at most {MAX_LOGIT_BIAS} tokens")
        try:
            return {int(key): bias for key, bias in value.items()}
        except ValueError:
            raise ValueError("logit_bias keys must be token ids (integers)") from None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def to_sampling_params(
        self, max_tokens: int, grammar: str | None = None, logprobs: int | None = None
    ) -> SamplingParams:
        """The engine's parameters; raises ParamError for out-of-range values."""
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=_or(self.temperature, 1.0),
            top_p=_or(self.top_p, 1.0),
            top_k=_or(self.top_k, 0),
            min_p=_or(self.min_p, 0.0),
            presence_penalty=_or(self.presence_penalty, 0.0),
            frequency_penalty=_or(self.frequency_penalty, 0.0),
            repetition_penalty=_or(self.repetition_penalty, 1.0),
            seed=self.seed,
            logit_bias=dict(self.logit_bias or {}),
            stop=tuple(stop),
            ignore_eos=self.ignore_eos,
            grammar=grammar,
            logprobs=logprobs,
        )


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


class CompletionRequest(SamplingRequest):
    """POST /v1/completions. Unknown fields are kept (extra) so that serving can refuse them by
    name, as OpenAI does."""

    model_config = ConfigDict(extra="allow")

    prompt: str | List[str] | List[int] | List[List[int]]
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class ContentPart(BaseModel):
    """One part of a message's content; gateway/messages.py refuses the non-text kinds."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    refusal: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | List[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant
    tool_call_id: str | None = None  # tool
    function_call: FunctionCall | None = None  # assistant, legacy
    refusal: str | None = None  # assistant


class JsonSchemaFormat(BaseModel):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(SamplingRequest):
    """POST /v1/chat/completions. Unknown fields are kept (extra) so that serving can refuse
    them by name, as OpenAI does."""

    model_config = ConfigDict(extra="allow")

    messages: List[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None  # legacy tools
    function_call: FunctionCallChoice | None = None  # legacy tool_choice
    metadata: dict[str, str] | None = None  # accepted, not stored
    store: bool | None = None


class GenerateRequest(BaseModel):
    """POST /generate/, the legacy endpoint of the original Vicuna batching server."""

    prompt: str
    max_tokens: int = 256
    temperature: float = 0.7


class GenerateResponse(BaseModel):
    text: str


# -- responses --------------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    """A whole completion, or one stream chunk of it (same object type, as OpenAI does)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = Field(default=None, exclude_if=_omit_none)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, exclude_if=_omit_none)
    function_call: FunctionCall | None = Field(default=None, exclude_if=_omit_none)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = Field(default=None, exclude_if=_omit_none)
    content: str | None = Field(default=None, exclude_if=_omit_none)
    refusal: str | None = Field(default=None, exclude_if=_omit_none)
    tool_calls: list[ToolCallDelta] | None = Field(default=None, exclude_if=_omit_none)
    function_call: dict[str, str] | None = Field(default=None, exclude_if=_omit_none)


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: Usage | None = None  # null on every chunk but the last when include_usage is asked


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llm-gateway"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# What a router in front of several gateways asks of each replica (vllm-router's worker API).


class WorkerLoad(BaseModel):
    load: int  # requests on this replica, running or queued: the power-of-two policy's number
    running: int
    waiting: int
    kv_cache_usage: float


class WorkerModelInfo(BaseModel):
    model_path: str  # the served model id, as the routers of the SGLang family ask for it
    is_generation: bool = True
    max_model_len: int
    quantization: str


class WorkerServerInfo(BaseModel):
    served_model_name: str
    slots: int
    ctx_size: int
    batch_size: int
    max_queue: int
    n_gpu_layers: int
    version: str
