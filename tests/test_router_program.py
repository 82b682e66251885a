"""The router program: Literal signature, lenient parsing, JSON save/load round trip (no LM needed)."""

from __future__ import annotations

import json
import typing

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from quantswarm.errors import ConfigError
from router.compiler import to_dspy
from router.labels import labels_from_jsonl
from router.program import LenientChatAdapter, RouterProgram, load_program, route_signature, save_program
from router.router_config import RouterConfig
from router.swarm import load_swarm


@pytest.fixture(scope="module")
def data():
    cfg = RouterConfig()
    return labels_from_jsonl(cfg.labels, load_swarm(cfg.swarm))


def test_agent_field_is_a_literal_of_agent_names(data):
    sig = route_signature(data.swarm)
    ann = sig.output_fields["agent"].annotation
    assert typing.get_origin(ann) is typing.Literal
    assert set(typing.get_args(ann)) == set(data.swarm.names)
    assert "coder" in sig.instructions and "cheapest first" in sig.instructions


def test_lenient_adapter(data):
    sig = route_signature(data.swarm)
    adapter = LenientChatAdapter(data.swarm.names)
    assert adapter.parse(sig, "[[ ## agent ## ]]\ncoder\n\n[[ ## completed ## ]]")["agent"] == "coder"
    assert adapter.parse(sig, "I think the Writer should do it.")["agent"] == "writer"
    with pytest.raises(AdapterParseError):
        adapter.parse(sig, "mathematics is fun")  # no agent name as a word


def test_save_load_round_trip(tmp_path, data):
    program = RouterProgram(data.swarm, rationale=True)
    trainset = to_dspy(data.examples[:6])
    compiled = dspy.LabeledFewShot(k=4).compile(program, trainset=trainset)
    manifest = {"optimizer": "labeled", "swarm": data.swarm.to_dict(), "agents": data.swarm.names,
                "rationale": True, "max_tokens": 64, "max_chars": 600, "router_model": "x.gguf"}
    out = save_program(compiled, tmp_path / "p", manifest)
    state = json.loads((out / "program.json").read_text())
    assert "metadata" in state and "dependency_versions" in state["metadata"]
    assert not list(out.glob("*.pkl"))
    loaded, m = load_program(out)
    assert m["optimizer"] == "labeled" and m["format"] == "quantswarm-router/1" and m["date"]
    before = compiled.route.predict if hasattr(compiled.route, "predict") else compiled.route
    after = loaded.route.predict if hasattr(loaded.route, "predict") else loaded.route
    assert [d["task"] for d in after.demos] == [d["task"] for d in before.demos]
    assert len(after.demos) == 4
    assert after.signature.instructions == before.signature.instructions


def test_load_refuses_a_mismatched_program(tmp_path, data):
    out = save_program(RouterProgram(data.swarm, rationale=True), tmp_path / "p",
                       {"optimizer": "x", "swarm": data.swarm.to_dict(), "agents": data.swarm.names,
                        "rationale": True, "max_tokens": 64, "max_chars": 600, "router_model": "x.gguf"})
    m = json.loads((out / "manifest.json").read_text())
    m["rationale"] = False  # the saved state has a ChainOfThought; the manifest now says Predict
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="does not fit"):
        load_program(out)
    (out / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="format"):
        load_program(out)


def test_lenient_adapter_takes_a_bare_proposal_text(data):
    sig = dspy.Signature("context -> proposed_instruction")
    adapter = LenientChatAdapter(data.swarm.names)
    got = adapter.parse(sig, "Send maths to math and code to coder.")
    assert got == {"proposed_instruction": "Send maths to math and code to coder."}


def test_agent_grammar_allows_exactly_the_adapter_answer_with_one_agent():
    from router.program import agent_grammar

    g = agent_grammar(["small", "big@Q2_K"])
    assert g.splitlines() == ['root ::= "[[ ## agent ## ]]\\n" agent "\\n\\n[[ ## completed ## ]]"',
                              'agent ::= "small" | "big@Q2_K"']
