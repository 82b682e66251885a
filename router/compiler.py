"""``compile_router``: labeled data -> train/dev split -> DSPy optimizer on the llama.cpp router LM -> JSON state."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from quantswarm.errors import ConfigError
from router import TFIDF_FILE
from router.labels import RoutingExample, load_labeled, split_examples
from router.metric import CostAwareMetric
from router.router_config import RouterConfig
from router.swarm import Swarm


@dataclass
class CompileResult:
    """Where the program went and how it scored on dev before and after compiling."""

    out: Path
    optimizer: str
    dev_score_before: float
    dev_score_after: float
    n_train: int
    n_dev: int
    seconds: float


def to_dspy(examples: list[RoutingExample]) -> list:
    import dspy

    from router.program import kind_of

    return [dspy.Example(task=ex.task, agent=ex.agent, correct=ex.correct, kind=kind_of(ex.dataset)
                         ).with_inputs("task") for ex in examples]


def capped(examples: list[RoutingExample], n: int, seed: int) -> list[RoutingExample]:
    """At most n examples, a seeded sample that keeps every label present where possible."""
    rng = random.Random(seed)
    pool = sorted(examples, key=lambda e: e.key)
    rng.shuffle(pool)
    by_label: dict[str, list[RoutingExample]] = {}
    for ex in pool:
        by_label.setdefault(ex.agent, []).append(ex)
    out: list[RoutingExample] = []
    while len(out) < min(n, len(pool)):  # round-robin over labels
        for group in by_label.values():
            if group and len(out) < n:
                out.append(group.pop())
    return out


def score_program(program, examples: list, metric: CostAwareMetric, lm, swarm: Swarm, threads: int,
                  desc: str = "dev") -> tuple[float, list]:
    """Mean cost-aware score of a program on dspy examples (parse failures score as the fallback agent)."""
    import dspy
    from tqdm import tqdm

    from router.program import LenientChatAdapter

    adapter = LenientChatAdapter(swarm.names)

    def one(ex):
        with dspy.context(lm=lm, adapter=adapter):
            try:
                pred = program(task=ex.task)
            except Exception:
                pred = dspy.Prediction(agent=swarm.cheapest, parse_failed=True)
        return metric(ex, pred), pred

    with ThreadPoolExecutor(max_workers=threads) as pool:
        got = list(tqdm(pool.map(one, examples), total=len(examples), desc=f"scoring on {desc}", leave=False))
    scores = [s for s, _ in got]
    return (sum(scores) / len(scores) if scores else 0.0), [p for _, p in got]


MIN_DEV = 10  # fewer dev examples than this make the before/after dev score too coarse to compare optimizers


def dev_warning(n_dev: int) -> str:
    """The warning for a dev split too small to judge a compile by."""
    step = f"each item moves the dev score by {1 / n_dev:.2f}" if n_dev else "the dev score is 0 by definition"
    return (f"warning: only {n_dev} dev examples ({step}); add labeled items, raise --max-dev or the config's "
            f"dev_frac to get at least {MIN_DEV}")


def compile_router(config: RouterConfig, log=print) -> CompileResult:
    """Compile a router program with ``config.optimizer`` and save it (JSON state + manifest) to ``config.out``."""
    import dspy

    from quantswarm.registry import sha256_file
    from quantswarm.results import versions_json
    from router.baselines import TfidfRouter
    from router.metric import KindMetric
    from router.optimizers import teleprompter
    from router.program import LenientChatAdapter, RouterProgram, kind_policy, save_program
    from router.router_lm import dspy_lm, resolve_router_model, start_router_server

    t0 = time.perf_counter()
    data = load_labeled(config)
    swarm = data.swarm
    splits = split_examples(data.examples, config.split_seed, config.train_frac, config.dev_frac)
    train = capped(splits["train"], config.max_train, config.seed)
    dev = capped(splits["dev"], config.max_dev, config.seed)
    if len(train) < 2:
        raise ConfigError(f"only {len(train)} training examples in {data.source}; add items or raise train_frac")
    log(f"swarm {swarm.names} (cost in {swarm.cost_unit}); {len(train)} train / {len(dev)} dev examples")
    if len(dev) < MIN_DEV:
        log(dev_warning(len(dev)))

    model = resolve_router_model(config.router_model, swarm.router_model)
    engine = None
    api_base = config.api_base
    if not api_base:
        log(f"starting llama-server for router model {model.name}")
        engine = start_router_server(model, n_ctx=config.n_ctx, parallel=config.num_threads, seed=config.seed,
                                     n_gpu_layers=config.n_gpu_layers)
        api_base = engine.url
    try:
        lm = dspy_lm(api_base, max_tokens=config.max_tokens if not config.rationale else max(config.max_tokens, 64))
        reflection_lm = dspy_lm(config.reflection_model or api_base, max_tokens=config.reflection_max_tokens,
                                temperature=0.7)
        policy = kind_policy(splits["train"], swarm, config.tau) if config.structure == "kind" else None
        if policy:
            log(f"kind policy from {len(splits['train'])} training items (tau {config.tau}): {policy}")
        metric = KindMetric() if config.structure == "kind" else CostAwareMetric(config.partial_credit)
        trainset, devset = to_dspy(train), to_dspy(dev)
        shape = {"rationale": config.rationale, "max_chars": config.max_chars, "structure": config.structure,
                 "choice": config.choice, "policy": policy}
        student = RouterProgram(swarm, catch_parse_errors=False, **shape)  # optimizers see real failures
        before, _ = score_program(RouterProgram(swarm, **shape), devset, metric, lm, swarm, config.num_threads,
                                  "dev (uncompiled)")
        log(f"compiling with {config.optimizer} (seed {config.seed})")
        random.seed(config.seed)
        with dspy.context(lm=lm, adapter=LenientChatAdapter(swarm.names), max_errors=10**6):
            optimizer = teleprompter(config.optimizer, config, metric, lm, reflection_lm)
            compiled = optimizer.compile(student, trainset=trainset, valset=devset)
        compiled.catch_parse_errors = True
        after, _ = score_program(compiled, devset, metric, lm, swarm, config.num_threads, "dev (compiled)")
    finally:
        if engine is not None:
            engine.close()

    seconds = time.perf_counter() - t0
    manifest = {
        "optimizer": config.optimizer,
        "seed": config.seed,
        "swarm": swarm.to_dict(),
        "agents": swarm.names,
        "router_model": str(model),
        "router_model_file": model.name,
        "router_model_sha": sha256_file(model),
        "rationale": config.rationale,
        "max_tokens": config.max_tokens if not config.rationale else max(config.max_tokens, 64),
        "max_chars": config.max_chars,
        "structure": config.structure,
        "choice": config.choice,
        "policy": policy,
        "scores": {"dev_before": before, "dev_after": after,
                   "metric": "kind match" if config.structure == "kind" else "cost-aware",
                   "partial_credit": config.partial_credit},
        "data": {"source": data.source, "n_train": len(train), "n_dev": len(dev), "split_seed": config.split_seed,
                 "train_frac": config.train_frac, "dev_frac": config.dev_frac, "task": config.task},
        "compile_seconds": round(seconds, 1),
        "config": config.to_dict(),
        "versions": versions_json(),
    }
    out = save_program(compiled, config.out, manifest)
    TfidfRouter.fit(splits["train"] + splits["dev"], swarm.cheapest, seed=config.seed).save(out / TFIDF_FILE)
    log(f"saved {out} (dev score {before:.3f} -> {after:.3f}, {seconds:.0f} s)")
    return CompileResult(out, config.optimizer, before, after, len(train), len(dev), seconds)
