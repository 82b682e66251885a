"""Both engine backends on the real SmolLM2 GGUF."""

import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from quantswarm.engine import GenerationParams, open_engine
from quantswarm.engine.server import post_json, top_logprobs
from quantswarm.errors import EngineError

MSGS = [{"role": "user", "content": "Name a colour."}]
MCQ = [{"role": "user", "content": "Which is a colour?\nA. dog\nB. red\nC. car\nD. run\nAnswer:"}]


def test_inprocess_deterministic_and_logprobs(smollm2):
    with open_engine(str(smollm2), backend="llama-cpp-python", n_ctx=512, seed=7) as eng:
        p = GenerationParams(max_tokens=12, seed=7)
        a, b = eng.chat(MSGS, p), eng.chat(MSGS, p)
        assert a.text and a.text == b.text
        assert 0 < a.completion_tokens <= 12 and a.prompt_tokens > 0
        lp = eng.choice_logprobs(MCQ, list("ABCD"))
        assert set(lp) == set("ABCD") and all(v < 0 and not math.isinf(v) for v in lp.values())
        assert sum(math.exp(v) for v in lp.values()) <= 1.0 + 1e-6
        g = eng.chat(MCQ, GenerationParams(max_tokens=3, grammar="root ::= [ABCD]"))
        assert g.text in list("ABCD")
        stop = eng.chat(MSGS, GenerationParams(max_tokens=40, stop=(".",)))
        assert "." not in stop.text


def test_server_concurrent(smollm2, llama_server_bin):
    with open_engine(str(smollm2), backend="llama-server", n_ctx=512, parallel=2, seed=7) as eng:
        assert eng.healthy() and eng.host == "127.0.0.1"
        p = GenerationParams(max_tokens=12, seed=7)
        with ThreadPoolExecutor(2) as ex:
            outs = list(ex.map(lambda _: eng.chat(MSGS, p), range(2)))
        assert all(o.text and o.completion_tokens > 0 for o in outs)
        # greedy and alone in the server: the same prompt gives the same answer (two sequences decoded in one
        # batch may differ in the last bits, so determinism is checked one request at a time)
        assert eng.chat(MSGS, p).text == eng.chat(MSGS, p).text
        lp = eng.choice_logprobs(MCQ, list("ABCD"))
        assert any(not math.isinf(v) for v in lp.values())
        # the answer's top log-probabilities are validated: llama-server writes a NaN one (NaN weights) as null
        body = post_json(eng._client, "/v1/chat/completions", {"messages": MCQ, "max_tokens": 1, "temperature": 0.0,
                                                                 "logprobs": True, "top_logprobs": 5})
        tops = top_logprobs(body)
        assert len(tops) == 5 and all(isinstance(t, str) and v <= 0 for t, v in tops)
        body["choices"][0]["logprobs"]["content"][0]["top_logprobs"][2]["logprob"] = None
        with pytest.raises(EngineError, match="1 top log-probabilities that are not numbers"):
            top_logprobs(body)
        metrics = eng.metrics_text()
        assert "llamacpp:" in metrics
        pid = eng.pid
    import os

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_bad_backend(smollm2):
    with pytest.raises(EngineError, match="unknown backend"):
        open_engine(str(smollm2), backend="vllm")
