"""Request fields the wire models do not declare: a 400 naming each, as OpenAI answers, with
the few exceptions clients and routers send that change nothing here.

A misspelt parameter (`max_token`) or one this server cannot honour must not be dropped in
silence: the client would get a different answer than it asked for and never know why.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import APIError

# OpenAI parameters this server cannot honour: a 400 rather than a silent difference.
UNSUPPORTED = ("audio", "prediction", "web_search_options", "reasoning_effort", "verbosity")
# Accepted and ignored: they change nothing a client could notice here.
HARMLESS = {"prompt_cache_key", "safety_identifier", "service_tier", "modalities"}
# Engine extensions that routers (vllm-router) write into every body they forward, accepted at
# the values that change nothing here (we strip no stop text, produce no reasoning or hidden
# states, continue no message, and never print special tokens); any other value is a 400.
ROUTER_DEFAULTS: dict[str, tuple[object, ...]] = {
    "no_stop_trim": (False,),
    "continue_final_message": (False,),
    "skip_special_tokens": (True,),
    "return_hidden_states": (False,),
    "separate_reasoning": (True, False),
    "stream_reasoning": (True, False),
    "include_reasoning": (True, False),
}


def refuse_unknown(extra: dict[str, Any] | None) -> None:
    """A 400 for the first undeclared field (`model_extra`) that is not known to be harmless."""
    for key, value in (extra or {}).items():
        if key in HARMLESS and _is_harmless(key, value):
            continue
        if key in ROUTER_DEFAULTS and value in ROUTER_DEFAULTS[key]:
            continue
        if key in UNSUPPORTED or key in HARMLESS or key in ROUTER_DEFAULTS:
            raise APIError(400, f"{key} is not supported by this server", param=key)
        raise APIError(400, f"Unrecognized request argument supplied: {key[:100]}", param=key[:100])


def _is_harmless(key: str, value: object) -> bool:
    if key == "modalities":
        return value == ["text"]
    if key == "service_tier":
        return value in (None, "auto", "default")
    return True
