"""Metric, APGR area, baselines and the TF-IDF router's JSON round trip (no LM)."""

from __future__ import annotations

import json

import pytest

from router.baselines import ConstantRouter, OracleRouter, RandomRouter, TfidfRouter
from router.frontier import curve_area
from router.labels import labels_from_jsonl, split_examples
from router.metric import CostAwareMetric
from router.router_config import RouterConfig
from router.swarm import load_swarm


@pytest.fixture(scope="module")
def data():
    cfg = RouterConfig()
    return labels_from_jsonl(cfg.labels, load_swarm(cfg.swarm))


def test_cost_aware_metric():
    m = CostAwareMetric(partial_credit=0.4)
    correct = {"tiny": False, "mid": True, "big": True}
    assert m.score("mid", "mid", correct) == 1.0
    assert m.score("mid", "big", correct) == 0.4  # dearer but competent
    assert m.score("mid", "tiny", correct) == 0.0  # failed the item
    assert "cheapest competent agent is mid" in m.feedback(type("E", (), {"agent": "mid", "correct": correct}), "big")


def test_apgr_area_brackets():
    apgr_area = lambda x, y: curve_area([(x, y)])  # noqa: E731 - one operating point, as `router eval` scores it
    assert apgr_area(0.5, 0.5) == pytest.approx(0.5)  # on the cheap/strong line
    assert apgr_area(0.0, 1.0) == pytest.approx(1.0)  # strong quality at cheap cost
    assert apgr_area(1.0, 0.0) == pytest.approx(0.0)  # strong cost at cheap quality
    assert apgr_area(0.2, 0.8) > 0.5 > apgr_area(0.8, 0.2)


def test_tfidf_round_trip_is_json_and_predicts_the_same(tmp_path, data):
    splits = split_examples(data.examples, 0, 0.5, 0.2)
    router = TfidfRouter.fit(splits["train"] + splits["dev"], data.swarm.cheapest)
    path = router.save(tmp_path / "tfidf.json")
    state = json.loads(path.read_text())  # plain JSON, nothing pickled
    assert state["format"] == "quantswarm-router-tfidf/1" and set(state["classes"]) <= set(data.swarm.names)
    again = TfidfRouter.load(path)
    for ex in splits["test"]:
        assert again.route(ex.task).agent == router.route(ex.task).agent
    right = sum(router.route(ex.task).agent == ex.agent for ex in splits["test"])
    assert right / len(splits["test"]) > 1 / len(data.swarm.names)  # better than chance on held-out tasks


def test_simple_baselines(data):
    ex = data.examples[:5]
    assert {OracleRouter(ex).route(e.task).agent for e in ex} == {e.agent for e in ex}
    assert ConstantRouter("coder", "always:coder").route("x").agent == "coder"
    r1, r2 = RandomRouter(data.swarm.names, seed=3), RandomRouter(data.swarm.names, seed=3)
    assert [r1.route("x").agent for _ in range(10)] == [r2.route("x").agent for _ in range(10)]


def test_tfidf_load_rejects_other_files(tmp_path):
    from quantswarm.errors import ConfigError

    p = tmp_path / "x.json"
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="format"):
        TfidfRouter.load(p)
