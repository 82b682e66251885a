"""Typed records that cross the swarm's edges: HTTP chat requests, bus tasks and bus results.

Every outside input is parsed here; a bad one raises pydantic's ValidationError, which the gateway
turns into a 400 and the bus into a dead letter, both with the reason.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChatMessage(BaseModel):
    """One chat message; OpenAI content-part lists are joined to their text."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict] = ""

    @field_validator("content")
    @classmethod
    def _text(cls, v):
        if isinstance(v, list):
            parts = [p.get("text", "") for p in v if isinstance(p, dict) and p.get("type") == "text"]
            if len(parts) != len(v):
                raise ValueError("only text content parts are supported")
            return "".join(parts)
        return v


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"] = "text"


class ChatRequest(BaseModel):
    """The OpenAI chat-completions subset the gateway serves (unknown OpenAI fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    model: str = "auto"
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    response_format: ResponseFormat | None = None

    @property
    def wants_json(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"

    def user_text(self) -> str:
        """The text the router sees: the last user message."""
        for m in reversed(self.messages):
            if m.role == "user":
                return str(m.content)
        return str(self.messages[-1].content)

    def upstream_body(self, stream: bool = False) -> dict:
        """The body sent to a llama-server worker."""
        body: dict = {"messages": [{"role": m.role, "content": m.content} for m in self.messages],
                      "temperature": self.temperature, "top_p": self.top_p, "stream": stream}
        mt = self.max_completion_tokens or self.max_tokens
        if mt is not None:
            body["max_tokens"] = mt
        if self.seed is not None:
            body["seed"] = self.seed
        if self.stop:
            body["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        if self.wants_json:
            body["response_format"] = {"type": "json_object"}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body


class BusTask(BaseModel):
    """A task on ``tasks.new``: an id (also the NATS message id, for dedup) and a chat request."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@-]+$")
    model: str = "auto"
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    response_format: ResponseFormat | None = None
    meta: dict = Field(default_factory=dict)

    def chat_request(self) -> ChatRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        msgs = self.messages or [ChatMessage(role="user", content=self.prompt or "")]
        return ChatRequest(model=self.model, messages=msgs, max_tokens=self.max_tokens,
                           temperature=self.temperature, response_format=self.response_format)


class BusResult(BaseModel):
    """A result on ``results.completed`` (message id ``result:<task id>``)."""

    id: str
    agent: str
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    route_source: str = ""
    route_ms: float = 0.0
    fallbacks: list[dict] = Field(default_factory=list)
    failovers: list[dict] = Field(default_factory=list)
    worker_host: str = ""
    meta: dict = Field(default_factory=dict)


class DeadLetter(BaseModel):
    """A message on ``tasks.dead``: why it was refused, and the raw payload (truncated)."""

    id: str | None = None
    reason: str
    raw: str
    deliveries: int = 1
