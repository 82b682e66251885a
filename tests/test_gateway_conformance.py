"""OpenAI conformance of the gateway: every field is honoured or refused with an OpenAI-shaped 400, and streamed
chunks follow the spec for clients that did and did not ask for usage. Live part: one real llama-server agent."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from serving.gateway import GatewayServer
from serving.schemas import ChatRequest, RequestError
from serving.swarm import Swarm
from serving.swarm_config import load_swarm
from tests.test_serving_live import free_block

MSGS = [{"role": "user", "content": "Name a colour."}]


@pytest.mark.parametrize(
    "extra, param, needle",
    [
        ({"n": 2}, "n", "1 choice per request, not 2"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported by this gateway"),
        ({"tool_choice": "auto"}, "tool_choice", "not supported"),
        ({"audio": {"voice": "alloy"}}, "audio", "not supported"),
        ({"modalities": ["text", "audio"]}, "modalities", "not supported"),
        ({"reasoning_effort": "low"}, "reasoning_effort", "not supported"),
        ({"store": True}, "store", "not stored"),
        ({"service_tier": "flex"}, "service_tier", "only 'auto' or 'default'"),
        ({"top_k": 5}, "top_k", "unknown field"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when stream is true"),
        ({"top_logprobs": 3}, "top_logprobs", "needs logprobs: true"),
        ({"logit_bias": {"hello": 5}}, "logit_bias", "token ids"),
        ({"frequency_penalty": 3}, "frequency_penalty", "less than or equal to 2"),
        ({"response_format": {"type": "xml"}}, "response_format", "response_format.type"),
        ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages", "messages.0.name"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages", "messages.0.role"),
    ],
)
def test_unserved_fields_are_refused(extra, param, needle):
    with pytest.raises(RequestError, match=needle) as exc:
        ChatRequest.from_openai({"model": "auto", "messages": MSGS, **extra})
    assert exc.value.param == param


def test_served_fields_reach_the_agent():
    schema = {"name": "c", "schema": {"type": "object", "properties": {"colour": {"type": "string"}}}}
    req = ChatRequest.from_openai({
        "messages": [{"role": "developer", "content": "Be brief."}, *MSGS,
                     {"role": "assistant", "content": "Red.", "refusal": None}, *MSGS],
        "n": 1, "seed": 3, "presence_penalty": 0.5, "frequency_penalty": -0.5, "logit_bias": {"42": -100},
        "logprobs": True, "top_logprobs": 2, "stop": "\n", "max_completion_tokens": 9, "user": "u-1",
        "metadata": {"k": "v"}, "store": False, "service_tier": "auto", "tools": [], "tool_choice": None,
        "response_format": {"type": "json_schema", "json_schema": schema},
    })
    body = req.upstream_body()
    assert body["messages"][0] == {"role": "system", "content": "Be brief."} and len(body["messages"]) == 4
    assert {k: body[k] for k in ("seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                                 "top_logprobs", "stop", "max_tokens")} == {
        "seed": 3, "presence_penalty": 0.5, "frequency_penalty": -0.5, "logit_bias": {"42": -100.0}, "logprobs": True,
        "top_logprobs": 2, "stop": ["\n"], "max_tokens": 9}
    assert body["response_format"] == {"type": "json_schema", "json_schema": schema}
    assert "user" not in body and "metadata" not in body and "n" not in body


# --- live: one real llama-server agent behind the gateway -----------------------------------------------------


@pytest.fixture(scope="module")
def gw(smollm2, tmp_path_factory):
    d = tmp_path_factory.mktemp("conf")
    base = free_block(2)
    spec = d / "swarm.yaml"
    spec.write_text(yaml.safe_dump({
        "agents": {"chat": {"model": str(smollm2), "n_ctx": 256, "parallel": 2, "n_threads": 1}},
        "router": {"default_agent": "chat"}, "vram": {"budget_mib": 0}, "gateway": {"port": base + 1},
        "workers": {"start_port": base, "log_dir": str(d / "logs")}, "monitor": {"enabled": False},
    }))
    swarm = Swarm(load_swarm(spec), log=lambda _m: None)
    swarm.start()
    try:
        with GatewayServer(swarm) as g, httpx.Client(base_url=g.url, timeout=120) as client:
            yield client
    finally:
        swarm.close()


def post(gw, **kw):
    return gw.post("/v1/chat/completions", json={"model": "auto", "messages": MSGS, "max_tokens": 4, **kw})


def test_n_2_is_refused_with_openai_error_shape(gw):
    r = post(gw, n=2)
    assert r.status_code == 400
    assert r.json() == {"error": {"message": "n: the gateway serves 1 choice per request, not 2; send 2 requests "
                                             "instead", "type": "invalid_request_error", "param": "n", "code": 400}}
    assert post(gw, n=1).status_code == 200


def test_logprobs_and_json_schema_are_honoured(gw):
    r = post(gw, logprobs=True, top_logprobs=2)
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == r.json()["usage"]["completion_tokens"]
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in content)
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "blue"]}},
              "required": ["colour"]}
    r = post(gw, max_tokens=24, response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert json.loads(r.json()["choices"][0]["message"]["content"])["colour"] in ("red", "blue")


def stream(gw, **kw) -> list:
    with gw.stream("POST", "/v1/chat/completions", json={"model": "auto", "messages": MSGS, "max_tokens": 4,
                                                         "stream": True, **kw}) as r:
        assert r.status_code == 200
        events = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_stream_without_usage(gw):
    chunks = stream(gw)
    assert chunks and all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert all(len(c["choices"]) == 1 and "delta" in c["choices"][0] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    assert stream(gw, stream_options={"include_usage": False}) and all(
        "usage" not in c for c in stream(gw, stream_options={"include_usage": False}))


def test_stream_with_usage(gw):
    chunks = stream(gw, stream_options={"include_usage": True})
    *body, last = chunks
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 4
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + 4
    assert body and all(c["usage"] is None and len(c["choices"]) == 1 for c in body)
