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
    """One routed task: its text, the label, and per-agent success and cost of this item.

    ``p_success[agent]`` is the share of that agent's answers to this item that were right (k answers: an estimate of
    its probability of success; 0/1 for one answer); ``correct[agent]`` is ``p_success >= tau``.
    """

    key: str  # dataset/split/item_id, or labels:<line>
    task: str
    agent: str
    correct: dict[str, bool]
    cost: dict[str, float]
    dataset: str = ""
    extra: dict = field(default_factory=dict)
    p_success: dict[str, float] = field(default_factory=dict)

    def p(self, agent: str) -> float:
        """Probability of success of ``agent`` on this item (1/0 from ``correct`` when not measured)."""
        return self.p_success.get(agent, float(self.correct.get(agent, False)))

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


def energy_costs(path: str | Path) -> dict[str, dict[str, float]]:
    """Per-agent energy model ``{agent: {"j_per_gen_token": b, "j_per_logprob_item": c, "j_per_prompt_token": a}}``.

    Written by a calibration run that measured each agent alone on the GPU (NVML energy counter); the energy of one
    generated answer is then ``a * prompt_tokens + b * completion_tokens`` joules, of one log-probability answer
    ``c`` joules (a, c default to 0).
    """
    import json

    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: not a readable energy cost JSON ({exc})") from None
    agents = data.get("agents") if isinstance(data, dict) else None
    if not isinstance(agents, dict) or not agents:
        raise DataError(f"{p}: expected {{\"agents\": {{name: {{j_per_prompt_token, j_per_gen_token}}}}}}")
    out = {}
    for name, v in agents.items():
        try:
            out[name] = {"j_per_gen_token": float(v["j_per_gen_token"]),
                         "j_per_prompt_token": float(v.get("j_per_prompt_token", 0.0)),
                         "j_per_logprob_item": float(v.get("j_per_logprob_item", 0.0))}
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{p}: agents.{name} needs a number j_per_gen_token (and optionally "
                            "j_per_prompt_token, j_per_logprob_item)") from None
        if not all(x == x and x >= 0 for x in out[name].values()):
            raise DataError(f"{p}: agents.{name} has a negative or NaN energy figure: {out[name]}")
    return out


def labels_from_results(
    path: str | Path, *, power_w: float = 30.0, unsolved_agent: str = "", task: str = "",
    model_root: Path | None = None, cost_basis: str = "auto", tau: float = 0.5, cost_file: str = "",
) -> LabeledData:
    """Label every item answered by all agents with the cheapest agent whose success probability is >= ``tau``.

    An agent's success probability on an item is the share of its answers there that were right (k answers per
    item with seeded sampling give an estimate; one greedy answer gives 0 or 1). Items no agent reaches ``tau`` on
    go to ``unsolved_agent``, default the agent with the highest probability there (ties: the cheaper). Cost per
    answer: ``cost_file`` (energy model per agent, see :func:`energy_costs`), else joules, latency x ``power_w`` or
    the GGUF's size, as ``cost_basis`` says; an item's cost for an agent is the mean over its answers.
    """
    frame = ResultsTable(path).read()
    frame = frame[frame["primary"]]
    if task:
        frame = frame[frame["task"].isin(task.split(","))]
    if frame.empty:
        raise DataError(f"{path}: no primary rows{f' for task {task!r}' if task else ''}; run `quantswarm eval` first")
    agents = sorted(frame["agent"].unique())
    if len(agents) < 2:
        raise DataError(f"{path}: rows of only {agents}; routing needs at least two agents on the same items")
    frame = frame[frame["finish_reason"] != "error"]
    frame = frame.sort_values("timestamp").drop_duplicates(
        ["agent", "dataset", "split", "item_id", "seed", "temperature"], keep="last")
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
    if cost_file:
        model = energy_costs(cost_file)
        missing = sorted(set(agents) - set(model))
        if missing:
            raise DataError(f"{cost_file}: no energy model for agents {missing}")
        a = frame["agent"].map(lambda x: model[x]["j_per_prompt_token"])
        b = frame["agent"].map(lambda x: model[x]["j_per_gen_token"])
        c = frame["agent"].map(lambda x: model[x]["j_per_logprob_item"])
        unit = "J/item (energy per token and per log-probability item, each agent measured alone, NVML)"
        generated = a * frame["prompt_tokens"] + b * frame["completion_tokens"].clip(lower=1)
        frame["cost"] = generated.where(frame["finish_reason"] != "logprob", c)
    elif has_joules and cost_basis in ("auto", "joules"):
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

    frame = frame.assign(correct=frame["correct"].astype(float))
    stats = frame.groupby("agent").agg(cost=("cost", "mean"), accuracy=("correct", "mean"),
                                       model_file=("model_file", "first"), quant=("quant", "first"))
    specs = [AgentSpec(a, float(r.cost), f"{r.model_file} ({r.quant})", float(r.accuracy), str(r.model_file))
             for a, r in stats.iterrows()]
    strongest = unsolved_agent or max(specs, key=lambda s: (s.accuracy, -s.cost)).name
    if strongest not in agents:
        raise ConfigError(f"unsolved_agent={unsolved_agent!r} is not an agent of {path}: {agents}")
    swarm = Swarm(specs, unit, strongest, router_model=min(specs, key=lambda s: s.cost).model_file)

    texts = _task_texts(frame)
    per_item = frame.groupby(["dataset", "split", "item_id", "agent"]).agg(
        p=("correct", "mean"), cost=("cost", "mean"), k=("correct", "size"), subject=("subject", "first"),
        prompt=("prompt", "first")).reset_index()
    examples = []
    for (dataset, split, item_id), grp in per_item.groupby(["dataset", "split", "item_id"], sort=True):
        p_success = {str(a): float(p) for a, p in zip(grp["agent"], grp["p"], strict=True)}
        cost = {str(a): float(c) for a, c in zip(grp["agent"], grp["cost"], strict=True)}
        correct = {a: p >= tau for a, p in p_success.items()}
        label = choose_label(swarm, p_success, tau, unsolved_agent or strongest)
        text = texts.get((dataset, split, item_id)) or str(grp["prompt"].iloc[0])
        examples.append(RoutingExample(f"{dataset}/{split}/{item_id}", text, label, correct, cost, dataset,
                                       {"subject": str(grp["subject"].iloc[0]), "k": int(grp["k"].min()),
                                        "cost_basis": unit}, p_success))
    return LabeledData(swarm, examples, str(path))


def choose_label(swarm: Swarm, p_success: dict[str, float], tau: float, unsolved_agent: str) -> str:
    """The cheapest agent with success probability >= tau; else the agent most likely to succeed (ties: the
    cheaper); when no agent ever succeeded, ``unsolved_agent``."""
    able = [a for a in swarm.names if p_success.get(a, 0.0) >= tau]
    if able:
        return min(able, key=lambda a: (swarm.cost(a), a))
    if max(p_success.values(), default=0.0) <= 0.0:
        return unsolved_agent
    return max(swarm.names, key=lambda a: (p_success.get(a, 0.0), -swarm.cost(a)))


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
                                   task=config.task, cost_basis=config.cost_basis, tau=config.tau,
                                   cost_file=config.cost_file)
    swarm = load_swarm(config.swarm)
    if config.unsolved_agent:
        swarm = Swarm(swarm.agents, swarm.cost_unit, config.unsolved_agent, swarm.router_model)
    return labels_from_jsonl(config.labels, swarm)
