"""Typed records that cross the swarm's edges: HTTP chat requests, bus tasks and bus results.

Every outside input is parsed here; a bad one raises :class:`RequestError` (HTTP requests, which the
gateway turns into an OpenAI-shaped 400 naming the field) or pydantic's ValidationError (bus tasks,
which the bus dead-letters with the reason).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class RequestError(ValueError):
    """A chat request the gateway refuses (HTTP 400): the message and the OpenAI ``param`` it names."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ChatMessage(BaseModel):
    """One chat message; OpenAI content-part lists are joined to their text, ``developer`` is a system message."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict] | None = ""

    @field_validator("content")
    @classmethod
    def _text(cls, v):
        if v is None:
            return ""
        if isinstance(v, list):
            parts = [p.get("text", "") for p in v if isinstance(p, dict) and p.get("type") == "text"]
            if len(parts) != len(v):
                raise ValueError("only text content parts are supported")
            return "".join(parts)
        return v

    @field_validator("role")
    @classmethod
    def _developer(cls, v):
        return "system" if v == "developer" else v


class ResponseFormat(BaseModel):
    """``text``, ``json_object``, or ``json_schema`` with ``{"name", "schema", "strict"}`` (a grammar in llama.cpp)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict | None = None

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, v):
        if v is not None and not isinstance(v.get("schema", {}), dict):
            raise ValueError("json_schema.schema must be a JSON Schema object")
        return v


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


# OpenAI chat-completions fields, by what the gateway does with them. Honoured: the ChatRequest fields below
# (forwarded to the agent's llama-server, which implements them). Informational (they do not change the answer):
# accepted and not forwarded. Refused: a 400 naming the field, unless given at the value that means "off".
INFORMATIONAL = frozenset({"user", "metadata", "safety_identifier", "prompt_cache_key", "service_tier", "store"})
REFUSED = {  # field -> values that mean "not used" and so are accepted
    "tools": ([],), "tool_choice": ("none",), "parallel_tool_calls": (), "functions": ([],), "function_call": ("none",),
    "audio": (), "modalities": (["text"],), "prediction": (), "web_search_options": (), "reasoning_effort": (),
    "verbosity": (),
}


class ChatRequest(BaseModel):
    """An OpenAI chat-completions request as the gateway serves it.

    Build one from an outside body with :meth:`from_openai`, which refuses every field the gateway does
    not honour (``n`` > 1, tools, audio, unknown keys ...) with a :class:`RequestError` naming it; a
    field given as ``null`` counts as not given.
    """

    model_config = ConfigDict(extra="forbid")
    model: str = "auto"
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None  # any number (OpenAI caps it at 4; llama-server takes more)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    n: int = Field(default=1, ge=1)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v):
        if v != 1:
            raise ValueError(f"the gateway serves 1 choice per request, not {v}; send {v} requests instead")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        for tok, b in (v or {}).items():
            if not tok.isdigit() or not -100 <= b <= 100:
                raise ValueError("keys are token ids and values lie in [-100, 100]")
        return v

    @model_validator(mode="after")
    def _combinations(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs: true")
        return self

    @classmethod
    def from_openai(cls, body: dict) -> ChatRequest:
        """Validate an outside request body; raises :class:`RequestError` with the offending ``param``."""
        given = {k: v for k, v in body.items() if v is not None}
        for key, value in given.items():
            if key in REFUSED and value not in REFUSED[key]:
                raise RequestError(f"{key}: not supported by this gateway (tools, audio, predicted outputs, web "
                                   "search and reasoning controls are not served); leave it out", key)
            if key == "service_tier" and value not in ("auto", "default"):
                raise RequestError(f"service_tier: only 'auto' or 'default' is served, not {value!r}", key)
            if key == "store" and value is not False:
                raise RequestError("store: completions are not stored by this gateway; leave it out", key)
            if key not in cls.model_fields and key not in INFORMATIONAL and key not in REFUSED:
                raise RequestError(f"{key}: unknown field (not an OpenAI chat-completions field the gateway "
                                   "serves)", key)
        msgs = given.get("messages")
        if isinstance(msgs, list):  # clients echo assistant messages back with null fields
            given["messages"] = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m
                                 for m in msgs]
        try:
            return cls.model_validate({k: v for k, v in given.items() if k in cls.model_fields})
        except ValidationError as exc:
            e = exc.errors()[0]
            msg = str(e.get("ctx", {}).get("error") or e["msg"])
            if e["loc"]:
                raise RequestError(f"{'.'.join(map(str, e['loc']))}: {msg}", str(e["loc"][0])) from None
            raise RequestError(msg, msg.split(":", 1)[0] if ":" in msg else None) from None  # checks name their field

    @property
    def wants_json(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"

    @property
    def wants_usage(self) -> bool:
        """Whether a streaming client asked for the final usage chunk (``stream_options.include_usage``)."""
        return self.stream_options is not None and self.stream_options.include_usage

    def user_text(self) -> str:
        """The text the router sees: the last user message."""
        for m in reversed(self.messages):
            if m.role == "user":
                return str(m.content)
        return str(self.messages[-1].content)

    def upstream_body(self, stream: bool = False) -> dict:
        """The body sent to a llama-server worker: every honoured field; streams always carry usage (metrics)."""
        body: dict = {"messages": [{"role": m.role, "content": m.content} for m in self.messages],
                      "temperature": self.temperature, "top_p": self.top_p, "stream": stream}
        mt = self.max_completion_tokens or self.max_tokens
        if mt is not None:
            body["max_tokens"] = mt
        if self.stop:
            body["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        for key in ("seed", "frequency_penalty", "presence_penalty", "logit_bias", "top_logprobs"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.logprobs:
            body["logprobs"] = True
        if self.wants_json:
            body["response_format"] = self.response_format.model_dump(exclude_none=True)
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
