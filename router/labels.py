"""Routing labels from measurement: each item goes to the cheapest agent that got it right.

From a results table (several agents on the same items, primary-filter rows), the cost of an
agent is measured: joules per item where every agent has them, else latency x ``power_w``,
else bits-per-weight x parameters of its GGUF. Items no agent solved go to ``unsolved_agent``
(default: the most accurate agent). Hand-labeled JSONL (``task``, ``agent``) is the other source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from quantswarm.errors import ConfigError, DataError
from quantswarm.loaders import iter_jsonl
from quantswarm.paths import models_dir
from quantswarm.results import ResultsTable
from router.swarm import AgentSpec, Swarm


@dataclass
class RoutingExample:
    """One routed task: its text, the label, and per-agent correctness and cost of this item."""

    key: str  # dataset/split/item_id, or labels:<line>
    task: str
    agent: str
    correct: dict[str, bool]
    cost: dict[str, float]
    dataset: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def solved(self) -> bool:
        return any(self.correct.values())


@dataclass
class LabeledData:
    """A swarm and its labeled examples (what compile and eval consume)."""

    swarm: Swarm
    examples: list[RoutingExample]
    source: str


def _task_texts(frame: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """Question text per (dataset, split, item_id), from the benchmark data where it can be loaded."""
    from quantswarm.loaders import load

    texts: dict[tuple[str, str, str], str] = {}
    for (dataset, split), _ in frame.groupby(["dataset", "split"]):
        try:
            items = load(dataset, split)
        except Exception:  # not a benchmark we can load (a bench profile, a custom set): use the prompt column
            continue
        for it in items:
            text = it.question
            if it.choices:
                text += "\n" + "\n".join(f"{letter}. {c}" for letter, c in zip("ABCD", it.choices, strict=False))
            texts[(dataset, split, it.item_id)] = text
    return texts


def _gguf_proxy_cost(model_file: str, root: Path) -> float | None:
    """bits-per-weight x parameters (in Gbit) of a GGUF found under ``root``, else None."""
    from quantswarm.registry import inspect_gguf

    hits = [root / model_file] if (root / model_file).is_file() else list(root.glob(f"**/{model_file}"))
    if not hits:
        return None
    info = inspect_gguf(hits[0])
    return info.bits_per_weight * info.n_params / 1e9


def labels_from_results(
    path: str | Path, *, power_w: float = 30.0, unsolved_agent: str = "", task: str = "",
    model_root: Path | None = None, cost_basis: str = "auto",
) -> LabeledData:
    """Label every item answered by all agents with the cheapest agent that got it right."""
    frame = ResultsTable(path).read()
    frame = frame[frame["primary"]]
    if task:
        frame = frame[frame["task"] == task]
    if frame.empty:
        raise DataError(f"{path}: no primary rows{f' for task {task!r}' if task else ''}; run `quantswarm eval` first")
    agents = sorted(frame["agent"].unique())
    if len(agents) < 2:
        raise DataError(f"{path}: rows of only {agents}; routing needs at least two agents on the same items")
    frame = frame.sort_values("timestamp").drop_duplicates(["agent", "dataset", "split", "item_id"], keep="last")
    counts = frame.groupby(["dataset", "split", "item_id"])["agent"].nunique()
    shared = counts[counts == len(agents)].index
    if len(shared) == 0:
        raise DataError(f"{path}: no item was answered by all of {agents}; run every agent on the same items")
    frame = frame.set_index(["dataset", "split", "item_id"]).loc[shared].reset_index()

    has_joules = frame.groupby("agent")["joules"].apply(lambda s: s.notna().all()).all()
    has_latency = frame.groupby("agent")["latency_ms"].apply(lambda s: (s > 0).all()).all()
    if cost_basis == "joules" and not has_joules:
        raise DataError(f"{path}: cost_basis=joules but some agents' rows have no joules; use latency or size")
    if cost_basis == "latency" and not has_latency:
        raise DataError(f"{path}: cost_basis=latency but some rows have no latency; use size")
    if has_joules and cost_basis in ("auto", "joules"):
        unit, frame["cost"] = "J/item", frame["joules"]
    elif has_latency and cost_basis in ("auto", "latency"):
        unit, frame["cost"] = f"J/item (latency x {power_w:g} W)", frame["latency_ms"] / 1000 * power_w
    else:
        unit = "Gbit/item (bits/weight x params)"
        root = model_root or models_dir()
        proxy = {}
        for agent, model_file in frame.groupby("agent")["model_file"].first().items():
            proxy[agent] = _gguf_proxy_cost(model_file, root)
            if proxy[agent] is None:
                raise DataError(f"{path}: rows of {agent} have neither joules nor latency, and {model_file} is not "
                                f"under {root}; set QUANTSWARM_MODELS to where the GGUF files are")
        frame["cost"] = frame["agent"].map(proxy)

    stats = frame.groupby("agent").agg(cost=("cost", "mean"), accuracy=("correct", "mean"),
                                       model_file=("model_file", "first"), quant=("quant", "first"))
    specs = [AgentSpec(a, float(r.cost), f"{r.model_file} ({r.quant})", float(r.accuracy), str(r.model_file))
             for a, r in stats.iterrows()]
    strongest = unsolved_agent or max(specs, key=lambda s: (s.accuracy, -s.cost)).name
    if strongest not in agents:
        raise ConfigError(f"unsolved_agent={unsolved_agent!r} is not an agent of {path}: {agents}")
    swarm = Swarm(specs, unit, strongest, router_model=min(specs, key=lambda s: s.cost).model_file)

    texts = _task_texts(frame)
    examples = []
    for (dataset, split, item_id), grp in frame.groupby(["dataset", "split", "item_id"], sort=True):
        correct = {str(a): bool(c) for a, c in zip(grp["agent"], grp["correct"], strict=True)}
        cost = {str(a): float(c) for a, c in zip(grp["agent"], grp["cost"], strict=True)}
        solvers = [a for a in swarm.names if correct[a]]
        label = min(solvers, key=lambda a: (swarm.cost(a), a)) if solvers else strongest  # by the agent's mean cost
        text = texts.get((dataset, split, item_id)) or str(grp["prompt"].iloc[0])
        examples.append(RoutingExample(f"{dataset}/{split}/{item_id}", text, label, correct, cost, dataset))
    return LabeledData(swarm, examples, str(path))


def labels_from_jsonl(path: str | Path, swarm: Swarm) -> LabeledData:
    """Hand labels: one ``{"task": str, "agent": str, "also_ok": [str, ...]?}`` per line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such labels file; give --labels FILE.jsonl")
    examples = []
    for n, row in iter_jsonl(p):
        if not isinstance(row.get("task"), str) or not isinstance(row.get("agent"), str):
            raise DataError(f"{p}:{n}: needs string fields 'task' and 'agent'")
        ok = {row["agent"], *row.get("also_ok", [])}
        unknown = ok - set(swarm.names)
        if unknown:
            raise DataError(f"{p}:{n}: agent(s) {sorted(unknown)} not in the swarm {swarm.names}; fix the label "
                            "or add the agent to the swarm spec")
        examples.append(RoutingExample(
            f"labels:{n}", row["task"], row["agent"], {a: a in ok for a in swarm.names},
            {a: swarm.cost(a) for a in swarm.names}, str(row.get("kind", "")),
        ))
    if len(examples) < 3:
        raise DataError(f"{p}: only {len(examples)} labeled tasks; routing needs at least a few")
    return LabeledData(swarm, examples, str(p))


def split_of(key: str, seed: int, train_frac: float, dev_frac: float) -> str:
    """Deterministic split of one item from a hash of its key: train | dev | test."""
    u = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if u < train_frac else "dev" if u < train_frac + dev_frac else "test"


def split_examples(examples: list[RoutingExample], seed: int, train_frac: float, dev_frac: float
                   ) -> dict[str, list[RoutingExample]]:
    out: dict[str, list[RoutingExample]] = {"train": [], "dev": [], "test": []}
    for ex in examples:
        out[split_of(ex.key, seed, train_frac, dev_frac)].append(ex)
    return out


def load_labeled(config) -> LabeledData:
    """Labeled data named by a RouterConfig: its results table, or its JSONL plus swarm spec."""
    from router.swarm import load_swarm

    if config.results:
        return labels_from_results(config.results, power_w=config.power_w, unsolved_agent=config.unsolved_agent,
                                   task=config.task, cost_basis=config.cost_basis)
    swarm = load_swarm(config.swarm)
    if config.unsolved_agent:
        swarm = Swarm(swarm.agents, swarm.cost_unit, config.unsolved_agent, swarm.router_model)
    return labels_from_jsonl(config.labels, swarm)
