"""``evaluate_routers``: programs and baselines on the held-out split, scored against the results table.

For every router: label accuracy, cost-aware metric, confusion matrix, achieved task accuracy and total cost when
each task is sent where the router says (per-item cost and correctness from the table), parse failures, decision
latency p50/p95, and APGR: the area under ``router.frontier.curve_points`` (RouteLLM's: cost normalised so
always-cheapest is 0 and always-strongest is 1, quality as the performance gap recovered) through the router's one
operating point; 0.5 is the cheap/strong interpolation itself.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from quantswarm.errors import ConfigError
from router.frontier import curve_area, curve_points
from router.labels import RoutingExample, load_labeled, split_examples
from router.metric import CostAwareMetric
from router.router_config import RouterConfig


@dataclass
class RouterScore:
    """One router's results on the held-out split."""

    name: str
    kind: str  # program | baseline
    n: int
    label_accuracy: float
    metric: float
    task_accuracy: float
    total_cost: float
    parse_failures: int
    latency_p50_ms: float
    latency_p95_ms: float
    cost_norm: float = float("nan")
    pgr: float = float("nan")
    apgr: float = float("nan")
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> chosen -> count


def score_router(name: str, kind: str, router, examples: list[RoutingExample], metric: CostAwareMetric,
                 agents: list[str], progress: bool = True) -> tuple[RouterScore, list[dict]]:
    from tqdm import tqdm

    rows = []
    for ex in tqdm(examples, desc=name, leave=False, disable=not progress):
        d = router.route(ex.task)
        rows.append({"router": name, "key": ex.key, "label": ex.agent, "chosen": d.agent,
                     "score": metric.score(ex.agent, d.agent, ex.correct), "correct": bool(ex.correct.get(d.agent)),
                     "cost": float(ex.cost[d.agent]), "latency_ms": d.latency_ms, "parse_failed": d.parse_failed})
    lat = np.array([r["latency_ms"] for r in rows])
    confusion = {a: {b: 0 for b in agents} for a in agents}
    for r in rows:
        confusion[r["label"]][r["chosen"]] += 1
    n = len(rows)
    return RouterScore(
        name, kind, n,
        label_accuracy=sum(r["label"] == r["chosen"] for r in rows) / n,
        metric=sum(r["score"] for r in rows) / n,
        task_accuracy=sum(r["correct"] for r in rows) / n,
        total_cost=sum(r["cost"] for r in rows),
        parse_failures=sum(r["parse_failed"] for r in rows),
        latency_p50_ms=float(np.percentile(lat, 50)),
        latency_p95_ms=float(np.percentile(lat, 95)),
        confusion=confusion,
    ), rows


def _add_areas(scores: list[RouterScore], cheap: RouterScore, strong: RouterScore) -> None:
    dc = strong.total_cost - cheap.total_cost
    da = strong.task_accuracy - cheap.task_accuracy
    for s in scores:
        s.cost_norm = (s.total_cost - cheap.total_cost) / dc if dc else float("nan")
        s.pgr = (s.task_accuracy - cheap.task_accuracy) / da if da else float("nan")
        s.apgr = curve_area([(s.cost_norm, s.pgr)]) if np.isfinite(s.cost_norm) and np.isfinite(s.pgr) else np.nan


def evaluate_routers(config: RouterConfig, programs: list[str], out: str | Path, *, uncompiled: bool = True,
                     log=print) -> list[RouterScore]:
    """Score compiled programs, the uncompiled program and the baselines on the test split; write md/png/json."""
    from router.baselines import ConstantRouter, OracleRouter, RandomRouter, TfidfRouter

    check_programs(programs)  # before any work: a mismatch found after the baselines wastes the whole run
    data = load_labeled(config)
    swarm = data.swarm
    check_programs(programs, swarm.names)
    splits = split_examples(data.examples, config.split_seed, config.train_frac, config.dev_frac)
    test = splits["test"]
    if config.max_test and len(test) > config.max_test:  # a seeded sample across datasets, not the first N
        test = random.Random(config.split_seed).sample(test, config.max_test)
    if not test:
        raise ConfigError(f"the test split of {data.source} is empty; add items or lower train_frac + dev_frac")
    metric = CostAwareMetric(config.partial_credit)
    log(f"{len(test)} held-out items, agents {swarm.names} (cost in {swarm.cost_unit})")

    routers: list[tuple[str, str, object]] = [
        ("oracle", "baseline", OracleRouter(test)),
        ("random", "baseline", RandomRouter(swarm.names, seed=config.seed)),
        *[(f"always:{a}", "baseline", ConstantRouter(a, f"always:{a}")) for a in swarm.names],
        ("tfidf-logreg", "baseline",
         TfidfRouter.fit(splits["train"] + splits["dev"], swarm.cheapest, seed=config.seed)),
    ]
    scores, decisions = [], []
    for name, kind, r in routers:
        s, rows = score_router(name, kind, r, test, metric, swarm.names)
        scores.append(s)
        decisions += rows
    scores += _score_programs(config, programs, swarm, test, metric, uncompiled, decisions, log)

    by = {s.name: s for s in scores}
    cheap, strong = by[f"always:{swarm.cheapest}"], by[f"always:{swarm.strongest}"]
    _add_areas(scores, cheap, strong)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "source": data.source, "n_test": len(test),
            "agents": swarm.to_dict(), "cheapest": swarm.cheapest, "strongest": swarm.strongest,
            "programs": programs, "split_seed": config.split_seed}
    (out / "summary.json").write_text(json.dumps({"meta": meta, "scores": [asdict(s) for s in scores]}, indent=2))
    with open(out / "decisions.jsonl", "w") as f:
        for row in decisions:
            f.write(json.dumps(row) + "\n")
    _plot(scores, cheap, strong, out / "cost_quality.png")
    (out / "report.md").write_text(markdown_report(scores, meta))
    log(f"wrote {out}/report.md, summary.json, decisions.jsonl, cost_quality.png")
    return scores


def check_programs(programs: list[str], agents: list[str] | None = None) -> None:
    """Raise ConfigError unless every program's manifest names the same agent set (and ``agents``, when given)."""
    from router.program import read_manifest

    seen: dict[tuple[str, ...], str] = {}
    for p in programs:
        names = tuple(sorted(read_manifest(p)["agents"]))
        if agents is not None and list(names) != sorted(agents):
            raise ConfigError(f"{p}: compiled for agents {list(names)}, but the data has {sorted(agents)}; "
                              "evaluate it on the --results/--labels it was compiled on")
        seen.setdefault(names, p)
    if len(seen) > 1:
        (a, pa), (b, pb) = list(seen.items())[:2]
        raise ConfigError(f"{pa} was compiled for agents {list(a)} but {pb} for {list(b)}; "
                          "evaluate programs of different agent sets in separate `router eval` runs")


def _score_programs(config, programs, swarm, test, metric, uncompiled, decisions, log) -> list[RouterScore]:
    """Load each compiled program (one llama-server per router model, shared) and score it."""
    from router.program import Router, RouterProgram, load_router, read_manifest
    from router.router_lm import dspy_lm, resolve_router_model, start_router_server

    if not programs and not uncompiled:
        return []
    models = {}
    for p in programs:
        models.setdefault(read_manifest(p)["router_model"], []).append(p)
    if uncompiled and not models:
        models[""] = []
    scores = []
    for model_spec, dirs in models.items():
        engine, api_base = None, config.api_base
        if not api_base:
            model = resolve_router_model(model_spec or config.router_model, swarm.router_model)
            engine = start_router_server(model, n_ctx=config.n_ctx, parallel=1)
            api_base = engine.url
        try:
            todo = [(Path(d).name, load_router(d, api_base=api_base)) for d in dirs]
            if uncompiled and model_spec == next(iter(models)):
                lm = dspy_lm(api_base, max_tokens=config.max_tokens)
                todo.insert(0, ("uncompiled", Router(RouterProgram(swarm, max_chars=config.max_chars), swarm, lm)))
            for name, router in todo:
                log(f"routing {len(test)} items with {name}")
                s, rows = score_router(name, "program", router, test, metric, swarm.names)
                scores.append(s)
                decisions += rows
        finally:
            if engine is not None:
                engine.close()
    return scores


def markdown_report(scores: list[RouterScore], meta: dict) -> str:
    lines = [
        "# Router evaluation", "",
        f"- date: {meta['date']}", f"- data: `{meta['source']}`, {meta['n_test']} held-out items",
        f"- cost unit: {meta['agents']['cost_unit']}; cheapest `{meta['cheapest']}`, strongest `{meta['strongest']}`",
        "- task accuracy and cost: each held-out item sent where the router says, scored from the results rows",
        "- APGR: area under the random-mixing curve through the router's (normalised cost, PGR) point; "
        "0.5 = cheap/strong interpolation", "",
        "| router | kind | label acc | metric | task acc | total cost | norm cost | PGR | APGR | parse fail "
        "| p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(scores, key=lambda s: (s.kind, -s.metric)):
        lines.append(f"| {s.name} | {s.kind} | {s.label_accuracy:.3f} | {s.metric:.3f} | {s.task_accuracy:.3f} | "
                     f"{s.total_cost:.4g} | {s.cost_norm:.3f} | {s.pgr:.3f} | {s.apgr:.3f} | {s.parse_failures} | "
                     f"{s.latency_p50_ms:.2f} | {s.latency_p95_ms:.2f} |")
    lines += ["", "## Confusion matrices (rows: label, columns: chosen)", ""]
    for s in scores:
        if s.name.startswith("always:"):
            continue
        agents = list(s.confusion)
        lines += [f"### {s.name}", "", "| label \\ chosen | " + " | ".join(agents) + " |",
                  "|---|" + "---|" * len(agents)]
        for a in agents:
            lines.append(f"| {a} | " + " | ".join(str(s.confusion[a][b]) for b in agents) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _plot(scores: list[RouterScore], cheap: RouterScore, strong: RouterScore, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5))
    ax1.plot([cheap.total_cost, strong.total_cost], [cheap.task_accuracy, strong.task_accuracy], "k--", lw=1,
             label="cheap/strong interpolation")
    for s in scores:
        marker = "s" if s.name.startswith("always:") else "o" if s.kind == "baseline" else "*"
        ax1.scatter(s.total_cost, s.task_accuracy, marker=marker, s=90 if marker == "*" else 45)
        ax1.annotate(s.name, (s.total_cost, s.task_accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if not s.name.startswith("always:") and not np.isnan(s.cost_norm) and not np.isnan(s.pgr):
            xs, ys = curve_points([(s.cost_norm, s.pgr)])
            ax2.plot(xs, ys, label=f"{s.name} (APGR {s.apgr:.2f})", lw=2 if s.kind == "program" else 1)
    ax2.plot([0, 1], [0, 1], "k--", lw=1, label="cheap/strong (0.50)")
    ax1.set_xlabel("total cost of the held-out items")
    ax1.set_ylabel("task accuracy")
    ax1.set_title("Cost vs achieved accuracy")
    ax2.set_xlabel("normalised cost (0 = always-cheapest, 1 = always-strongest)")
    ax2.set_ylabel("performance gap recovered")
    ax2.set_title("Cost-quality curves (random mixing)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
