"""Agent frameworks, unchanged, against the real gateway and the demo model: LangChain's
bind_tools and with_structured_output, and instructor's TOOLS mode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import instructor
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel, Field

pytestmark = pytest.mark.model


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str
    age: int = Field(ge=0, le=120)
    email: str | None = None


@tool
def get_weather(city: str, days: int = 1) -> str:
    """The weather forecast for a city."""
    return f"Sunny in {city} for {days} days"


@pytest.fixture(scope="module")
def chat(gateway_url: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{gateway_url}/v1", api_key="unused", model="tiny",  # type: ignore[arg-type]
        max_tokens=300, seed=3, max_retries=0,  # type: ignore[call-arg]
    )  # fmt: skip


def test_langchain_bind_tools_round_trip(chat: ChatOpenAI) -> None:
    question = HumanMessage("What is the weather in Paris?")
    called = chat.bind_tools([get_weather], tool_choice="get_weather").invoke([question])
    assert isinstance(called, AIMessage) and len(called.tool_calls) == 1
    call = called.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    answer = chat.bind_tools([get_weather]).invoke([question, called, result])
    assert isinstance(answer, AIMessage)
    assert answer.tool_calls or (isinstance(answer.content, str) and answer.content)


def test_langchain_structured_output_by_function_calling(chat: ChatOpenAI) -> None:
    extract = chat.with_structured_output(Person, method="function_calling")
    person = extract.invoke("Ann, 34, writes to ann@example.com.")
    assert isinstance(person, Person) and 0 <= person.age <= 120


@pytest.fixture(scope="module")
def sdk(gateway_url: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_instructor_tools_mode_extracts_a_pydantic_model(sdk: OpenAI) -> None:
    client = instructor.from_openai(sdk, mode=instructor.Mode.TOOLS)
    kwargs: Any = {"max_tokens": 300, "seed": 5}
    person = client.chat.completions.create(
        model="tiny", response_model=Person, max_retries=0,
        messages=[{"role": "user", "content": "Bob is 41."}], **kwargs,
    )  # fmt: skip
    assert isinstance(person, Person) and 0 <= person.age <= 120
