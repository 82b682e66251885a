"""The gateway's ``/metrics``, scraped and read back with prometheus_client's own text parser."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.gateway import build_app
from serving.routing import RouteInfo
from serving.swarm import ChatOutcome, Swarm
from serving.swarm_config import config_from_dict


def scrape(client: TestClient) -> dict:
    text = client.get("/metrics").text
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_scrape_parses_with_latency_histograms_per_agent(tmp_path, smollm2):
    agents = {n: {"model": str(smollm2), "n_ctx": 64, "parallel": 1} for n in ("chat", "coder")}
    swarm = Swarm(config_from_dict({"agents": agents, "vram": {"budget_mib": 0}}, tmp_path / "s.yaml"))
    for agent, ms in (("chat", 40.0), ("chat", 700.0), ("coder", 3000.0)):
        swarm._record(ChatOutcome(agent=agent, text="x", response={}, route=RouteInfo(agent, "named"),
                                  latency_ms=ms, prompt_tokens=5, completion_tokens=7))
    swarm.metrics.observe("quantswarm_route_latency_ms", 2.0)
    swarm.metrics.inc("quantswarm_fallbacks_total", agent="chat", reason="empty answer")
    families = scrape(TestClient(build_app(swarm)))

    latency = families["quantswarm_request_latency_ms"]
    assert latency.type == "histogram"
    count = {s.labels["agent"]: s.value for s in latency.samples if s.name.endswith("_count")}
    total = {s.labels["agent"]: s.value for s in latency.samples if s.name.endswith("_sum")}
    assert count == {"chat": 2, "coder": 1} and total == {"chat": 740.0, "coder": 3000.0}
    buckets = {(s.labels["agent"], s.labels["le"]): s.value for s in latency.samples if s.name.endswith("_bucket")}
    assert buckets[("chat", "50.0")] == 1 and buckets[("chat", "1000.0")] == 2 and buckets[("coder", "+Inf")] == 1
    assert buckets[("coder", "2500.0")] == 0

    requests = families["quantswarm_requests"]  # the parser drops a counter's _total suffix from the family name
    assert requests.type == "counter"
    ok = {s.labels["agent"]: s.value for s in requests.samples if s.labels["outcome"] == "ok"}
    assert ok == {"chat": 2, "coder": 1}
    tokens = families["quantswarm_completion_tokens"]
    assert {s.labels["agent"]: s.value for s in tokens.samples} == {"chat": 14, "coder": 7}
    assert families["quantswarm_route_latency_ms"].type == "histogram"
    assert [s.labels for s in families["quantswarm_fallbacks"].samples] == [{"agent": "chat", "reason": "empty answer"}]
    assert swarm.metrics.value("quantswarm_requests_total", agent="chat") == 2
