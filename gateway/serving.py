"""Serving: an API request -> prompt -> token ids -> engine -> a response or stream chunks."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import cast

from batching.params import ParamError, SamplingParams
from gateway.backend import Backend
from gateway.chat_grammar import GrammarCache
from gateway.chat_output import chat_choice
from gateway.chat_setup import ChatPreparer
from gateway.choices import completion_logprobs
from gateway.errors import APIError, clip
from gateway.extra_params import refuse_unknown
from gateway.jsonschema import Limits
from gateway.limits import RequestLimits
from gateway.metrics import Metrics
from gateway.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    GenerateRequest,
    GenerateResponse,
    ModelCard,
    ModelList,
    SamplingRequest,
)
from gateway.run import Run
from gateway.streams import ChunkStream, chat_chunks, completion_chunks
from gateway.templates import ChatTemplate
from gateway.tokens import PromptTokenizer
from gateway.workers import Workers

CompletionResult = CompletionResponse | ChunkStream
ChatResult = ChatCompletionResponse | ChunkStream


class Serving:
    """The API's logic over one engine, one model name and one chat template."""

    def __init__(
        self,
        engine: Backend,
        model_name: str,
        template: ChatTemplate,
        metrics: Metrics,
        limits: RequestLimits,
        workers: Workers,
        grammar_limits: Limits | None = None,
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.template = template
        self.metrics = metrics
        self.limits = limits
        self.workers = workers  # prompts are rendered and tokenized there, off the event loop
        self.tokenizer = PromptTokenizer(engine)
        self.created = int(time.time())
        self.grammars = GrammarCache(grammar_limits or Limits(), compile=engine.compile_grammar)
        self.chat_preparer = ChatPreparer(template, self.grammars)
        self.fingerprint = _fingerprint(engine, template)

    def models(self) -> ModelList:
        card = ModelCard(
            id=self.model_name, created=self.created, max_model_len=self.engine.model.n_ctx
        )
        return ModelList(data=[card])

    async def completion(self, req: CompletionRequest) -> CompletionResult:
        """POST /v1/completions: a response, or (stream=true) the chunks' JSON."""
        self._check_request(req)
        _refuse_unsupported(req)
        items = _prompt_items(req.prompt)
        self.limits.check_sequences(len(items), req.n)
        self.limits.check_chars(sum(len(p) for p in items if isinstance(p, str)), "prompt")
        texts, prompts = await self.workers.run(self._completion_prompts, items)
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        for ids in prompts:
            self._check_fits(len(ids), max_tokens, "prompt")
        params = self._params(req, max_tokens, logprobs=req.logprobs)
        run = await self._start("cmpl", "/v1/completions", prompts, params, req.n)
        echo = texts if req.echo else None
        if req.stream:
            return completion_chunks(run, self.model_name, req, echo)
        tally = await run.collect()
        choices = [
            CompletionChoice(
                index=c.index,
                text=(echo[c.index // req.n] if echo else "") + "".join(c.text),
                logprobs=completion_logprobs(c) if req.logprobs is not None else None,
                finish_reason=c.api_finish_reason,
            )
            for c in tally.choices
        ]
        return CompletionResponse(
            id=run.request_id,
            created=int(time.time()),
            model=self.model_name,
            choices=choices,
            usage=tally.usage(),
        )

    async def chat(self, req: ChatCompletionRequest) -> ChatResult:
        """POST /v1/chat/completions: a response, or (stream=true) the chunks' JSON."""
        self._check_request(req)
        self.limits.check_sequences(1, req.n)
        self.limits.check_chars(sum(_num_chars(m) for m in req.messages), "messages")
        setup = await self.chat_preparer.prepare(req, self.workers)
        ids = await self.workers.run(self.tokenizer.chat, setup.prompt)
        max_tokens = (
            req.max_tokens if req.max_completion_tokens is None else req.max_completion_tokens
        )
        if max_tokens is None:
            max_tokens = self.engine.model.n_ctx - len(ids)  # the rest of the context
        self._check_fits(len(ids), max_tokens, "messages")
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        params = self._params(req, max_tokens, setup.grammar.gbnf, logprobs)
        run = await self._start("chatcmpl", "/v1/chat/completions", [ids], params, req.n)
        outputs = [setup.choice_output() for _ in run.tally.choices]
        if req.stream:
            return chat_chunks(run, self.model_name, req, outputs, self.fingerprint)
        tally = await run.collect()
        choices = [
            chat_choice(c, output, req.logprobs)
            for c, output in zip(tally.choices, outputs, strict=True)
        ]
        return ChatCompletionResponse(
            id=run.request_id,
            created=int(time.time()),
            model=self.model_name,
            system_fingerprint=self.fingerprint,
            choices=choices,
            usage=tally.usage(),
        )

    async def generate(self, req: GenerateRequest) -> GenerateResponse:
        """POST /generate/: the legacy endpoint; the prompt is sent as it is, no template."""
        self.limits.check_chars(len(req.prompt), "prompt")
        ids = await self.workers.run(self.tokenizer.text, req.prompt)
        self._check_fits(len(ids), req.max_tokens, "prompt")
        try:
            params = SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature)
        except ParamError as e:
            raise APIError.from_param_error(e) from e
        run = await self._start("gen", "/generate/", [ids], params, 1)
        tally = await run.collect()
        return GenerateResponse(text="".join(tally.choices[0].text))

    # -- helpers --------------------------------------------------------------------------

    def _check_request(self, req: SamplingRequest) -> None:
        if req.model is not None and req.model != self.model_name:
            raise APIError(
                404,
                f"The model {clip(req.model)!r} does not exist; "
                f"this server serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )
        if req.n > self.engine.model.n_slots:
            message = f"n must be at most {self.engine.model.n_slots} (the server's slots)"
            raise APIError(400, message, param="n")

    def _completion_prompts(
        self, items: list[str | list[int]]
    ) -> tuple[list[str], list[list[int]]]:
        """The prompts' texts (for echo) and token ids (in a worker thread)."""
        texts: list[str] = []
        prompts: list[list[int]] = []
        n_vocab = self.engine.model.n_vocab
        for item in items:
            if isinstance(item, str):
                texts.append(item)
                prompts.append(self.tokenizer.text(item))
                continue
            if not item or not all(0 <= t < n_vocab for t in item):
                message = f"token id prompts must be non-empty, with ids in [0, {n_vocab})"
                raise APIError(400, message, param="prompt")
            texts.append(self.engine.detokenize(item))
            prompts.append(list(item))
        return texts, prompts

    def _check_fits(self, num_prompt: int, max_tokens: int, prompt_param: str) -> None:
        self.limits.check_tokens(num_prompt, prompt_param)
        n_ctx = self.engine.model.n_ctx
        if num_prompt + max(max_tokens, 1) <= n_ctx:
            return
        message = (
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{num_prompt + max_tokens} tokens ({num_prompt} in the prompt, {max_tokens} for "
            "the completion). Please reduce the prompt or the completion length."
        )
        param = prompt_param if num_prompt >= n_ctx else "max_tokens"
        raise APIError(400, message, param=param, code="context_length_exceeded")

    def _params(
        self,
        req: SamplingRequest,
        max_tokens: int,
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> SamplingParams:
        n_vocab = self.engine.model.n_vocab
        if req.logit_bias and not all(0 <= t < n_vocab for t in req.logit_bias):
            raise APIError(
                400, f"logit_bias keys must be token ids in [0, {n_vocab})", param="logit_bias"
            )
        try:
            return req.to_sampling_params(max_tokens, grammar, logprobs)
        except ParamError as e:
            raise APIError.from_param_error(e) from e

    async def _start(
        self, prefix: str, endpoint: str, prompts: list[list[int]], params: SamplingParams, n: int
    ) -> Run:
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        trace = self.metrics.start_request(endpoint)
        try:
            return await Run.start(self.engine, trace, request_id, prompts, params, n)
        except APIError as e:
            if e.status == 429:
                self.metrics.rejected()
            raise


def _num_chars(message: ChatMessage) -> int:
    """Characters of a message's text, for the prompt size limit."""
    content = message.content
    if isinstance(content, list):
        return sum(len(part.text or "") for part in content)
    return len(content or "")


def _fingerprint(engine: Backend, template: ChatTemplate) -> str:
    """What decides the outputs besides the request: model file, its size, the template."""
    model = engine.model
    seed = f"{model.model_id}|{model.quantization}|{model.n_ctx}|{model.n_vocab}|{template.name}"
    return "fp_" + hashlib.sha256(seed.encode()).hexdigest()[:10]


def _prompt_items(
    prompt: str | list[str] | list[int] | list[list[int]],
) -> list[str | list[int]]:
    """The prompts of a completion request: strings or token id lists."""
    items: list[str | list[int]]
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        items = [prompt]  # one prompt: a string or a list of token ids
    else:
        items = cast("list[str | list[int]]", list(prompt))  # strings or id lists
    if not items:
        raise APIError(400, "prompt must not be empty", param="prompt")
    return items


def _refuse_unsupported(req: CompletionRequest) -> None:
    """Completion options this server cannot honour: a 400 rather than a silent difference."""
    refuse_unknown(req.model_extra)
    if req.suffix:
        raise APIError(400, "suffix is not supported", param="suffix")
    if req.best_of is not None and req.best_of != req.n:
        raise APIError(400, "best_of must equal n (or be left out)", param="best_of")
    if req.echo and req.logprobs is not None:
        message = "echo with logprobs (prompt logprobs) is not supported"
        raise APIError(400, message, param="echo")
