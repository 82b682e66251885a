"""Counters and latency histograms of a running swarm, exposed through ``prometheus_client`` for ``/metrics``.

Each swarm has its own registry. Request latency is a histogram per agent (milliseconds), the router's
decision latency another; counters count requests, fallbacks, failovers, tokens and bus tasks. Gauges that
describe the moment (worker up, restarts, GPU power) are read at scrape time and passed to :meth:`Metrics.render`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000)

# name -> (kind, help, label names); a name not listed here gets its labels from its first use
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "quantswarm_requests_total": ("counter", "chat requests answered, by agent, route source and outcome",
                                  ("agent", "outcome", "source")),
    "quantswarm_fallbacks_total": ("counter", "answers re-sent to the next fallback agent, by reason kind",
                                   ("agent", "reason")),
    "quantswarm_failovers_total": ("counter", "requests moved off a worker that failed mid-request", ("agent",)),
    "quantswarm_prompt_tokens_total": ("counter", "prompt tokens processed, by agent", ("agent",)),
    "quantswarm_completion_tokens_total": ("counter", "tokens generated, by agent", ("agent",)),
    "quantswarm_request_latency_ms": ("histogram", "end-to-end request latency in milliseconds, by agent",
                                      ("agent",)),
    "quantswarm_route_latency_ms": ("histogram", "router decision latency in milliseconds", ()),
    "quantswarm_bus_tasks_total": ("counter", "bus tasks by outcome (completed, dead, retried)", ("outcome",)),
}

Gauge = tuple[str, dict[str, str], float, str]  # name, labels, value, help


class _Gauges:
    """A one-scrape collector of gauges read at scrape time, one family per name."""

    def __init__(self, gauges: Iterable[Gauge]):
        self.gauges = sorted(gauges, key=lambda g: g[0])

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for name, labels, value, help in self.gauges:
            keys = sorted(labels)
            fam = families.setdefault(name, GaugeMetricFamily(name, help or name, labels=keys))
            fam.add_metric([str(labels[k]) for k in keys], float(value))
        yield from families.values()


class _WithoutCreated:
    """The registry's families less their ``*_created`` samples, so each family is one block of lines."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for fam in self.registry.collect():
            fam.samples = [s for s in fam.samples if not s.name.endswith("_created")]
            yield fam


class Metrics:
    """Thread-safe counters (``inc``) and histograms (``observe``), keyed by name and labels."""

    HELP = {name: help for name, (_, help, _) in FAMILIES.items()}

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Counter | Histogram] = {}

    def _get(self, name: str, kind: str, labels: dict[str, str]) -> Counter | Histogram:
        metric = self._metrics.get(name)
        if metric is None:
            _, help, names = FAMILIES.get(name, (kind, name, tuple(sorted(labels))))
            if kind == "histogram":
                metric = Histogram(name, help, names, registry=self.registry, buckets=LATENCY_BUCKETS_MS)
            else:
                metric = Counter(name, help, names, registry=self.registry)
            metric = self._metrics.setdefault(name, metric)
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._get(name, "counter", labels).inc(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._get(name, "histogram", labels).observe(value)

    def value(self, name: str, **labels: str) -> float:
        """Sum of a counter over every label set that includes ``labels``."""
        want = set(labels.items())
        sample = name if name.endswith("_total") else f"{name}_total"
        return sum(s.value for fam in self.registry.collect() for s in fam.samples
                   if s.name == sample and want <= set(s.labels.items()))

    def render(self, gauges: Iterable[Gauge] = ()) -> str:
        """Prometheus exposition text; ``gauges`` are (name, labels, value, help) read at scrape time."""
        return (generate_latest(_WithoutCreated(self.registry)) + generate_latest(_Gauges(gauges))).decode()
