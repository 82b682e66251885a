"""Counters and latency summaries of a running swarm, rendered as Prometheus text for ``/metrics``."""

from __future__ import annotations

import threading
from collections import defaultdict


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    def esc(v: str) -> str:
        return str(v).replace("\\", "/").replace('"', "'").replace("\n", " ")

    inner = ",".join(f'{k}="{esc(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    """Thread-safe counters (``inc``) and latency sums (``observe``), keyed by name and labels."""

    HELP = {
        "quantswarm_requests_total": "chat requests answered, by agent, route source and outcome",
        "quantswarm_fallbacks_total": "answers re-sent to the next fallback agent, by reason kind",
        "quantswarm_failovers_total": "requests moved off a worker that failed mid-request",
        "quantswarm_prompt_tokens_total": "prompt tokens processed, by agent",
        "quantswarm_completion_tokens_total": "tokens generated, by agent",
        "quantswarm_request_latency_ms": "end-to-end request latency (summary), by agent",
        "quantswarm_route_latency_ms": "router decision latency (summary)",
        "quantswarm_bus_tasks_total": "bus tasks by outcome (completed, dead, retried)",
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple], float] = defaultdict(float)
        self._sums: dict[tuple[str, tuple], list[float]] = defaultdict(lambda: [0.0, 0.0])

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._counters[(name, tuple(sorted(labels.items())))] += value

    def observe(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            s = self._sums[(name, tuple(sorted(labels.items())))]
            s[0] += value
            s[1] += 1

    def value(self, name: str, **labels: str) -> float:
        """Sum of a counter over every label set that includes ``labels``."""
        want = set(labels.items())
        with self._lock:
            return sum(v for (n, lab), v in self._counters.items() if n == name and want <= set(lab))

    def render(self, gauges: list[tuple[str, dict[str, str], float, str]] = ()) -> str:
        """Prometheus exposition text; ``gauges`` are (name, labels, value, help) read at scrape time."""
        lines: list[str] = []
        with self._lock:
            counters = sorted(self._counters.items())
            sums = sorted(self._sums.items())
        seen: set[str] = set()

        def head(name: str, kind: str, help: str = "") -> None:
            if name not in seen:
                seen.add(name)
                lines.append(f"# HELP {name} {help or self.HELP.get(name, name)}")
                lines.append(f"# TYPE {name} {kind}")

        for (name, lab), v in counters:
            head(name, "counter")
            lines.append(f"{name}{_labels(dict(lab))} {v:g}")
        for (name, lab), (total, count) in sums:
            head(name, "summary")
            lines.append(f"{name}_sum{_labels(dict(lab))} {total:.3f}")
            lines.append(f"{name}_count{_labels(dict(lab))} {count:g}")
        for name, lab, v, help in sorted(gauges, key=lambda g: g[0]):
            head(name, "gauge", help)
            lines.append(f"{name}{_labels(lab)} {v:g}")
        return "\n".join(lines) + "\n"
