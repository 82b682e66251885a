"""APGR, CPT and the frontier figures on fixtures whose values are computed by hand."""

from __future__ import annotations

import math

import pytest

from router.frontier import cpt as cpt_at
from router.frontier import curve_area, evaluate_decisions
from router.labels import RoutingExample


def test_area_and_cpt_of_known_curves():
    assert curve_area([]) == pytest.approx(0.5)  # random mixing of cheapest and strongest
    # one point (0.2, 0.8): area = 0.2*0.8/2 + 0.8*(0.8+1)/2 = 0.08 + 0.72
    assert curve_area([(0.2, 0.8)]) == pytest.approx(0.80)
    assert cpt_at([(0.2, 0.8)], 0.5) == pytest.approx(0.125)  # on the first segment: 0.5/0.8*0.2
    assert cpt_at([(0.2, 0.8)], 0.9) == pytest.approx(0.2 + 0.1 / 0.2 * 0.8)  # 0.6
    # a point below an earlier one does not lower the curve (running max)
    assert curve_area([(0.2, 0.8), (0.5, 0.3)]) == pytest.approx(curve_area([(0.2, 0.8), (0.5, 0.8)]))


def _ex(key: str, p: dict[str, float], label: str) -> RoutingExample:
    return RoutingExample(key, f"task {key}", label, {a: v >= 0.5 for a, v in p.items()},
                          {"cheap": 1.0, "strong": 9.0}, "custom", p_success=p)


def test_router_figures_on_a_fixture():
    test = [_ex("1", {"cheap": 1.0, "strong": 1.0}, "cheap"), _ex("2", {"cheap": 0.0, "strong": 1.0}, "strong"),
            _ex("3", {"cheap": 0.0, "strong": 0.5}, "strong"), _ex("4", {"cheap": 1.0, "strong": 0.0}, "cheap")]
    decisions = {"always:cheap": [["cheap"] * 4], "always:strong": [["strong"] * 4],
                 "oracle": [["cheap", "strong", "strong", "cheap"]]}
    res = {r.name: r for r in evaluate_decisions(test, ["cheap", "strong"], "cheap", "strong", decisions,
                                                 n_boot=200)}
    assert res["always:cheap"].accuracy == pytest.approx(0.5)
    assert res["always:strong"].accuracy == pytest.approx(2.5 / 4)
    o = res["oracle"]
    assert o.accuracy == pytest.approx(3.5 / 4)
    assert o.cost == pytest.approx(5.0)  # two items at 1 J, two at 9 J
    assert o.acc_ratio_vs_strongest == pytest.approx(3.5 / 2.5)
    assert o.cost_ratio_vs_strongest == pytest.approx(5 / 9)
    # normalised cost (5-1)/(9-1) = 0.5; PGR (0.875-0.5)/(0.625-0.5) = 3 -> clipped to 1 on the curve
    assert o.points[0] == pytest.approx((0.5, 3.0))
    assert o.apgr == pytest.approx(0.5 * 1.0 / 2 + 0.5 * 1.0)
    assert o.cpt["50"] == pytest.approx(0.25)
    assert o.label_accuracy == 1.0
    assert o.share == {"cheap": 0.5, "strong": 0.5}
    assert o.apgr_ci[0] <= o.apgr <= o.apgr_ci[1] or math.isclose(o.apgr_ci[0], o.apgr)


def test_kind_policy_is_the_cheapest_agent_above_tau_per_kind():
    from router.program import kind_policy
    from router.swarm import AgentSpec, Swarm

    swarm = Swarm([AgentSpec("small", 1.0), AgentSpec("big", 5.0)], "J/item", "big")
    exs = [RoutingExample(f"e{i}", "t", "small", {}, {}, "easy", p_success={"small": 0.8, "big": 0.9})
           for i in range(3)]
    exs += [RoutingExample(f"g{i}", "t", "big", {}, {}, "gsm8k", p_success={"small": p, "big": 0.7})
            for i, p in enumerate((0.1, 0.6, 0.2))]  # small's mean 0.3
    assert kind_policy(exs, swarm, tau=0.5) == {"one_step_question": "small", "math_word_problem": "big"}
    assert kind_policy(exs, swarm, tau=0.95) == {"one_step_question": "big", "math_word_problem": "big"}


def test_kind_and_index_programs_save_and_load(tmp_path):
    from router.program import RouterProgram, load_program, save_program
    from router.swarm import AgentSpec, Swarm

    swarm = Swarm([AgentSpec("small", 1.0), AgentSpec("big", 5.0)], "J/item", "big")
    prog = RouterProgram(swarm, structure="kind", policy={"math_word_problem": "big", "one_step_question": "small"})
    manifest = {"swarm": swarm.to_dict(), "agents": swarm.names, "rationale": False, "max_tokens": 24,
                "max_chars": 600, "router_model": "m.gguf", "structure": "kind", "choice": "name",
                "policy": prog.policy}
    save_program(prog, tmp_path / "kind", manifest)
    loaded, m = load_program(tmp_path / "kind")
    assert loaded.structure == "kind" and loaded.policy == prog.policy
    assert '"math_word_problem"' in loaded._lm_config["extra_body"]["grammar"]
    idx = RouterProgram(swarm, choice="index")
    assert idx.letters == {"A": "small", "B": "big"} and '"A" | "B"' in idx._lm_config["extra_body"]["grammar"]


def test_bootstrap_resamples_items_with_their_own_decisions():
    """A router that is right on exactly the items it routes: its CI must contain its accuracy (the decision of a
    resampled item is that item's decision, not the decision at the resample's position)."""
    test = [_ex(str(i), {"cheap": float(i % 2), "strong": float(1 - i % 2)}, "cheap") for i in range(40)]
    perfect = [["cheap" if i % 2 else "strong" for i in range(40)]]
    (r,) = evaluate_decisions(test, ["cheap", "strong"], "cheap", "strong", {"perfect": perfect}, n_boot=300)
    assert r.accuracy == 1.0 and r.accuracy_ci == (1.0, 1.0)
