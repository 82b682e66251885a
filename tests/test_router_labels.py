"""Label derivation from a constructed results table with a known answer; hand labels; the split."""

from __future__ import annotations

import json

import pytest

from quantswarm.errors import ConfigError, DataError
from quantswarm.results import ResultRow, ResultsTable
from router.labels import labels_from_jsonl, labels_from_results, split_examples
from router.router_config import RouterConfig
from router.swarm import load_swarm

# item -> which agents got it right; costs: tiny 1 J, mid 3 J, big 10 J per item
KNOWN = {
    "q1": {"tiny": True, "mid": True, "big": True},  # -> tiny (cheapest solver)
    "q2": {"tiny": False, "mid": True, "big": True},  # -> mid
    "q3": {"tiny": False, "mid": False, "big": True},  # -> big
    "q4": {"tiny": False, "mid": False, "big": False},  # nobody: -> most accurate (big)
    "q5": {"tiny": True, "mid": False, "big": False},  # -> tiny
}
JOULES = {"tiny": 1.0, "mid": 3.0, "big": 10.0}
LATENCY = {"tiny": 100.0, "mid": 200.0, "big": 900.0}


def _rows(agent: str, joules: bool = True) -> list[ResultRow]:
    rows = []
    for item, ok in KNOWN.items():
        common = dict(run_id="r1", agent=agent, model_file=f"{agent}.gguf", model_sha="0", quant="Q4_K_M",
                      task="gsm8k_cot", dataset="custom", split="test", item_id=item, output="", extracted="",
                      gold="", prompt=f"question {item}", latency_ms=LATENCY[agent])
        rows.append(ResultRow(**common, correct=ok[agent], filter="flexible", primary=True,
                              joules=JOULES[agent] if joules else None))
        # a non-primary filter row that says the opposite must be ignored
        rows.append(ResultRow(**common, correct=not ok[agent], filter="strict", primary=False))
    return rows


def test_cheapest_solver_labels_with_joules(tmp_path):
    table = ResultsTable(tmp_path / "t")
    for agent in ("big", "tiny", "mid"):
        table.append(_rows(agent))
    data = labels_from_results(tmp_path / "t")
    assert data.swarm.names == ["tiny", "mid", "big"]
    assert data.swarm.cost_unit == "J/item"
    assert data.swarm.strongest == "big"
    assert [a.cost for a in data.swarm.agents] == [1.0, 3.0, 10.0]
    got = {ex.key.split("/")[-1]: ex.agent for ex in data.examples}
    assert got == {"q1": "tiny", "q2": "mid", "q3": "big", "q4": "big", "q5": "tiny"}
    ex = next(e for e in data.examples if e.key.endswith("q2"))
    assert ex.correct == {"tiny": False, "mid": True, "big": True}
    assert ex.cost == {"tiny": 1.0, "mid": 3.0, "big": 10.0}
    assert ex.task == "question q2"  # unknown dataset: the prompt column is the task text


def test_latency_cost_and_unsolved_agent(tmp_path):
    table = ResultsTable(tmp_path / "t")
    for agent in ("tiny", "mid", "big"):
        table.append(_rows(agent, joules=False))
    data = labels_from_results(tmp_path / "t", power_w=20.0, unsolved_agent="mid")
    assert data.swarm.cost_unit.startswith("J/item (latency")
    assert data.swarm.cost("big") == pytest.approx(0.9 * 20.0)
    got = {ex.key.split("/")[-1]: ex.agent for ex in data.examples}
    assert got["q4"] == "mid" and got["q3"] == "big"
    with pytest.raises(ConfigError, match="unsolved_agent"):
        labels_from_results(tmp_path / "t", unsolved_agent="nobody")


def test_items_not_answered_by_all_agents_are_dropped(tmp_path):
    table = ResultsTable(tmp_path / "t")
    table.append(_rows("tiny"))
    table.append([r for r in _rows("big") if r.item_id != "q5"])
    data = labels_from_results(tmp_path / "t")
    assert sorted(e.key.split("/")[-1] for e in data.examples) == ["q1", "q2", "q3", "q4"]


def test_one_agent_is_an_error(tmp_path):
    ResultsTable(tmp_path / "t").append(_rows("tiny"))
    with pytest.raises(DataError, match="at least two agents"):
        labels_from_results(tmp_path / "t")


def test_shipped_labels_and_swarm():
    cfg = RouterConfig()
    swarm = load_swarm(cfg.swarm)
    data = labels_from_jsonl(cfg.labels, swarm)
    assert {"math", "knowledge", "coder", "writer", "generalist"} == set(swarm.names)
    assert {e.agent for e in data.examples} == set(swarm.names)
    assert swarm.strongest == "generalist" and swarm.cheapest in ("knowledge", "math")
    coder = next(e for e in data.examples if e.agent == "coder")
    assert coder.correct["generalist"] and not coder.correct["math"]


def test_bad_label_lines_name_the_line(tmp_path):
    swarm = load_swarm(RouterConfig().swarm)
    bad = tmp_path / "l.jsonl"
    bad.write_text(json.dumps({"task": "x", "agent": "math"}) + "\n" + json.dumps({"task": "y", "agent": "chef"}))
    with pytest.raises(DataError, match=r"l.jsonl:2: agent\(s\) \['chef'\]"):
        labels_from_jsonl(bad, swarm)
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="l.jsonl:1: not valid JSON"):
        labels_from_jsonl(bad, swarm)


def test_split_is_deterministic_and_covers_all():
    swarm = load_swarm(RouterConfig().swarm)
    data = labels_from_jsonl(RouterConfig().labels, swarm)
    a = split_examples(data.examples, 0, 0.5, 0.2)
    b = split_examples(data.examples, 0, 0.5, 0.2)
    assert [e.key for e in a["test"]] == [e.key for e in b["test"]]
    assert sum(len(v) for v in a.values()) == len(data.examples)
    assert all(len(v) > 0 for v in a.values())


def test_config_validation_says_what_to_set():
    with pytest.raises(ConfigError, match="optimizer='adam'"):
        RouterConfig(optimizer="adam")
    with pytest.raises(ConfigError, match="not both"):
        RouterConfig(results="x", labels="y")
    with pytest.raises(ConfigError, match="partial_credit"):
        RouterConfig(partial_credit=2.0)


def test_eval_max_test_scores_a_seeded_sample_of_the_held_out_split(tmp_path):
    import json

    from router.evaluate import evaluate_routers

    full = evaluate_routers(RouterConfig(), [], tmp_path / "all", uncompiled=False, log=lambda _: None)
    n_all = json.loads((tmp_path / "all" / "summary.json").read_text())["meta"]["n_test"]
    capped = evaluate_routers(RouterConfig(max_test=5), [], tmp_path / "five", uncompiled=False, log=lambda _: None)
    meta = json.loads((tmp_path / "five" / "summary.json").read_text())["meta"]
    assert n_all > 5 and meta["n_test"] == 5
    assert {s.name for s in capped} == {s.name for s in full}  # same baselines scored, on fewer items
    with pytest.raises(ConfigError, match="max_test"):
        RouterConfig(max_test=-1)


def test_probability_labels_from_k_answers_and_tau(tmp_path):
    """Three answers per (agent, item): p = share right; label = cheapest agent with p >= tau (hand-computed)."""
    answers = {  # item -> agent -> three answers
        "a": {"tiny": [1, 1, 0], "big": [1, 1, 1]},  # p tiny 2/3, big 1
        "b": {"tiny": [1, 0, 0], "big": [1, 1, 0]},  # p tiny 1/3, big 2/3
        "c": {"tiny": [0, 0, 0], "big": [0, 0, 1]},  # p tiny 0, big 1/3
        "d": {"tiny": [0, 0, 0], "big": [0, 0, 0]},  # nobody: the most accurate agent overall
    }
    rows = []
    for item, per_agent in answers.items():
        for agent, outs in per_agent.items():
            for seed, ok in enumerate(outs):
                rows.append(ResultRow(run_id="r", agent=agent, model_file=f"{agent}.gguf", model_sha="0",
                                      quant="Q4_K_M", task="t", dataset="custom", split="test", item_id=item,
                                      output="", extracted="", gold="", correct=bool(ok), prompt=f"q {item}",
                                      joules=JOULES[agent], seed=seed, temperature=0.7, filter="f", primary=True))
    ResultsTable(tmp_path / "t").append(rows)
    for tau, want in ((0.5, {"a": "tiny", "b": "big", "c": "big", "d": "big"}),
                      (0.3, {"a": "tiny", "b": "tiny", "c": "big", "d": "big"}),
                      (0.9, {"a": "big", "b": "big", "c": "big", "d": "big"})):
        data = labels_from_results(tmp_path / "t", tau=tau)
        got = {ex.key.split("/")[-1]: ex.agent for ex in data.examples}
        assert got == want, tau
    ex = next(e for e in data.examples if e.key.endswith("/b"))
    assert ex.p_success == pytest.approx({"tiny": 1 / 3, "big": 2 / 3})
    assert ex.extra["k"] == 3


def test_energy_cost_file_sets_the_cost_per_answer(tmp_path):
    table = ResultsTable(tmp_path / "t")
    for agent in ("tiny", "big"):
        table.append([ResultRow(run_id="r", agent=agent, model_file="m", model_sha="0", quant="Q", task="t",
                                dataset="custom", split="test", item_id="q", output="", extracted="", gold="",
                                correct=True, prompt="q", prompt_tokens=10, completion_tokens=100, primary=True)])
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"agents": {"tiny": {"j_per_gen_token": 0.01, "j_per_prompt_token": 0.001},
                                            "big": {"j_per_gen_token": 0.1}}}))
    data = labels_from_results(tmp_path / "t", cost_file=str(costs))
    assert data.examples[0].cost == pytest.approx({"tiny": 0.01 * 100 + 0.001 * 10, "big": 0.1 * 100})
    assert data.examples[0].extra["cost_basis"].startswith("J/item (energy")
    costs.write_text(json.dumps({"agents": {"tiny": {"j_per_gen_token": 0.01}}}))
    with pytest.raises(DataError, match="no energy model for agents"):
        labels_from_results(tmp_path / "t", cost_file=str(costs))
