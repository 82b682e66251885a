"""The slots x n_ctx sweep: a knee per n_ctx over increasing slots, at one concurrency held for every point."""

from __future__ import annotations

import copy

from serving.bench import BenchConfig, capacity_knees, describe_knees, sweep_concurrency
from serving.swarm_config import load_swarm


def row(par: int, ctx: int, tps: float) -> dict:
    return {"parallel": par, "n_ctx": ctx, "concurrency": 8, "tok/s": tps}


# the order the old sweep produced: slots outer, n_ctx inner, so neighbours differ in n_ctx
INTERLEAVED = [row(1, 256, 40.0), row(1, 512, 36.0), row(2, 256, 70.0), row(2, 512, 66.0),
               row(4, 256, 74.0), row(4, 512, 110.0), row(8, 256, 75.0), row(8, 512, 112.0)]


def test_knee_per_n_ctx_over_slots_not_across_n_ctx():
    knees = capacity_knees(INTERLEAVED)
    # n_ctx 256: 40 -> 70 (+75%) -> 74 (+6%): the knee is 2 slots; n_ctx 512: 36 -> 66 -> 110 -> 112: 4 slots
    assert knees == {256: 2, 512: 5}
    assert INTERLEAVED[knees[256]]["parallel"] == 2 and INTERLEAVED[knees[512]]["parallel"] == 4
    # the slowest row (1 slot, n_ctx 512) is never a knee: the old comparison of neighbours marked it
    assert 1 not in knees.values()


def test_knee_ignores_row_order():
    shuffled = [INTERLEAVED[i] for i in (7, 2, 5, 0, 3, 6, 1, 4)]
    knees = capacity_knees(shuffled)
    assert {ctx: shuffled[i]["parallel"] for ctx, i in knees.items()} == {256: 2, 512: 4}


def test_no_knee_when_throughput_still_rises_or_slots_were_not_swept():
    rising = [row(1, 256, 10.0), row(2, 256, 19.0), row(4, 256, 30.0)]
    assert capacity_knees(rising) == {256: None}
    assert describe_knees(rising, capacity_knees(rising)) == ["n_ctx 256: no knee within 4 slots (tok/s still rising)"]
    single = [row(2, 256, 10.0), row(2, 512, 9.0)]
    assert capacity_knees(single) == {256: None, 512: None}
    assert "2+ values" in describe_knees(single, capacity_knees(single))[0]
    spec_slots = [{"parallel": "spec", "n_ctx": 256, "tok/s": 10.0}, {"parallel": "spec", "n_ctx": 512, "tok/s": 9.0}]
    assert capacity_knees(spec_slots) == {}
    assert describe_knees(spec_slots, {}) == ["no knee: the sweep has no --sweep-parallel values, "
                                              "so slots were not varied"]


def test_knee_skips_a_failed_point_without_dividing_by_zero():
    rows = [row(1, 256, 0.0), row(2, 256, 20.0), row(4, 256, 21.0)]
    assert capacity_knees(rows) == {256: 1}
    assert describe_knees(rows, {256: 1}) == ["n_ctx 256: knee at 2 slots per agent (20.0 tok/s; more slots add < 10%)"]


def test_concurrency_is_held_at_the_largest_points_slots(smollm2, tmp_path):
    spec = tmp_path / "swarm.yaml"
    spec.write_text(f"version: 1\nagents:\n  a: {{model: {smollm2}, n_ctx: 256, parallel: 1}}\n"
                    f"  b: {{model: {smollm2}, n_ctx: 256, parallel: 1}}\nrouter: {{default_agent: a}}\n"
                    "vram: {budget_mib: 0}\nmonitor: {enabled: false}\n")
    cfg = load_swarm(spec)
    points = []
    for par in (1, 2, 4):
        c = copy.deepcopy(cfg)
        for a in c.agents.values():
            a.parallel = par
        points.append(c)
    assert sweep_concurrency(points, requested=5) == 8  # 2 agents x 4 slots: no point may leave slots idle
    assert sweep_concurrency(points, requested=16) == 16


def test_default_outputs_stay_out_of_the_repository():
    assert BenchConfig().out.startswith("runs/") and BenchConfig().results.startswith("runs/")
