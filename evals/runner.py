"""Run an eval grid (models × tasks) and append per-item rows to the results table.

Concurrent by default: the engine's llama-server backend with ``parallel`` slots and as many
client threads (continuous batching), else that many in-process contexts. Resumable: items
already in the table for the same agent, model file, task and task version are skipped, so a
rerun adds no rows. Energy is read from NVML at every flush and shared among that batch's
items by their token counts; block-level facts (wall time, peak VRAM) go to ``blocks.jsonl``.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from evals.eval_config import EvalConfig
from evals.ladder import read_ladder
from evals.task import Task, load_task
from quantswarm.energy import EnergyMeter, device_label, sample
from quantswarm.engine import Engine, best_choice, open_engine
from quantswarm.engine.base import GenerationParams
from quantswarm.errors import ConfigError, EngineError, QuantswarmError
from quantswarm.loaders import Item
from quantswarm.registry import inspect_gguf, resolve_model, sha256_file
from quantswarm.results import ResultRow, ResultsTable, new_run_id, prompt_hash, versions_json


@dataclass
class ModelSpec:
    """A model of the grid: its agent name, file and how it was made."""

    agent: str
    path: str
    quant: str
    reference: str = ""


def expand_models(specs: list[str]) -> list[ModelSpec]:
    """GGUF paths, ``NAME=PATH``, catalogue names and ladder folders → ModelSpecs."""
    out: list[ModelSpec] = []
    for spec in specs:
        name, _, target = spec.rpartition("=") if "=" in spec else ("", "", spec)
        p = Path(target).expanduser()
        if p.is_dir():
            for r in read_ladder(p):
                stem = Path(r.path).name.removesuffix(".gguf").rsplit(".", 1)[0]  # <stem>.<QUANT>.gguf
                out.append(ModelSpec(f"{name or stem}@{r.quant}", r.path, r.quant.removesuffix("-imat"), r.reference))
            continue
        path = resolve_model(target)
        info = inspect_gguf(path)
        out.append(ModelSpec(name or path.stem, str(path), info.file_type))
    agents = [m.agent for m in out]
    dupes = {a for a in agents if agents.count(a) > 1}
    if dupes:
        raise ConfigError(f"two models share the agent name(s) {sorted(dupes)}: name them with NAME=PATH")
    return out


ERROR_PREFIX = "[error]"  # output of an item the engine refused; scored wrong and counted in the report


def engine_alive(engine: Engine) -> bool:
    """False when a llama-server backend's process has died (then the run stops and can be resumed)."""
    proc = getattr(engine, "proc", None)
    return proc is None or proc.poll() is None


class _EnergyClock:
    """Joules since the last lap from the GPU's energy counter (None without NVML)."""

    def __init__(self, gpu: int = 0):
        self.gpu = gpu
        s = sample(gpu)
        self.last = s.energy_mj if s else None

    def lap(self) -> float | None:
        if self.last is None:
            return None
        s = sample(self.gpu)
        if s is None or s.energy_mj is None:
            return None
        joules, self.last = (s.energy_mj - self.last) / 1000.0, s.energy_mj
        return joules


def _answer(engine: Engine, task: Task, messages: list[dict], params: GenerationParams) -> tuple[str, int, int, float]:
    """(output, prompt tokens, completion tokens, latency ms) for one item."""
    if task.method == "logprob":
        t0 = time.perf_counter()
        lp = engine.choice_logprobs(messages, task.choices)
        latency = (time.perf_counter() - t0) * 1000
        rounded = {k: (round(v, 4) if not math.isinf(v) else None) for k, v in lp.items()}
        return best_choice(lp) + "\t" + json.dumps(rounded), 0, 1, latency
    c = engine.chat(messages, params)
    return c.text, c.prompt_tokens, c.completion_tokens, c.latency_ms


def _rows(
    model: ModelSpec,
    sha: str,
    backend: str,
    task: Task,
    item: Item,
    messages,
    answer,
    run_id: str,
    seed: int,
    device: str,
    versions: str,
) -> list[ResultRow]:
    output, ptok, ctok, latency = answer
    scored_text = output.split("\t", 1)[0] if task.method == "logprob" else output
    if output.startswith(ERROR_PREFIX):
        scored_text = ""
    prompt = json.dumps(messages)
    return [
        ResultRow(
            run_id=run_id,
            agent=model.agent,
            model_file=Path(model.path).name,
            model_sha=sha,
            quant=model.quant,
            reference=model.reference,
            backend=backend,
            task=task.name,
            task_version=task.version,
            dataset=task.dataset,
            split=item.split,
            item_id=item.item_id,
            subject=item.subject,
            filter=r.filter,
            primary=r.primary,
            prompt_hash=prompt_hash(prompt),
            prompt=prompt,
            output=output,
            extracted=r.extracted,
            gold=item.gold,
            correct=r.correct,
            prompt_tokens=ptok,
            completion_tokens=ctok,
            latency_ms=latency,
            seed=seed,
            device=device,
            versions=versions,
            source="eval",
        )
        for r in task.score(scored_text, item)
    ]


def run_eval(cfg: EvalConfig) -> Path:
    """Evaluate every model on every task; returns the results table directory."""
    table = ResultsTable(cfg.results)
    run_id = cfg.run_id or new_run_id("eval")
    models = expand_models(cfg.models)
    tasks = [load_task(t) for t in cfg.tasks]
    device = device_label()
    data = {}
    for t in tasks:
        items = t.load_items(cfg.limit_for(t.name), cfg.seed, cfg.data_dir, cfg.source, split=cfg.split)
        data[t.name] = (items, t.load_fewshot_pool(cfg.data_dir, cfg.source))
    done = table.done_keys()
    tally = _Tally()
    for model in models:
        sha = sha256_file(model.path)
        todo = {
            t.name: [it for it in data[t.name][0] if (model.agent, sha, t.name, t.version, it.item_id) not in done]
            for t in tasks
        }
        if not any(todo.values()):
            if cfg.progress:
                print(f"{model.agent}: all items already in {cfg.results}, skipped")
            continue
        engine = open_engine(
            model.path,
            backend=cfg.backend,
            n_ctx=cfg.n_ctx,
            parallel=cfg.parallel,
            n_gpu_layers=cfg.n_gpu_layers,
            n_threads=cfg.n_threads,
            seed=cfg.seed,
        )
        try:
            versions = versions_json({"task_versions": ",".join(f"{t.name}:{t.version}" for t in tasks)})
            for task in tasks:
                if todo[task.name]:
                    _run_block(
                        cfg,
                        table,
                        run_id,
                        model,
                        sha,
                        engine,
                        task,
                        todo[task.name],
                        data[task.name][1],
                        device,
                        versions,
                        tally=tally,
                    )
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into one by the CLI
            print(f"interrupted: {tally.rows} rows ({tally.items} items) saved to {cfg.results} by this run; "
                  "rerun the same command to resume", file=sys.stderr)
            raise
        finally:
            engine.close()  # stops llama-server, so requests still in flight fail at once instead of finishing
    return Path(cfg.results)


@dataclass
class _Tally:
    """Rows and items this run has written to the results table."""

    rows: int = 0
    items: int = 0


def _run_block(
    cfg: EvalConfig,
    table: ResultsTable,
    run_id: str,
    model: ModelSpec,
    sha: str,
    engine: Engine,
    task: Task,
    items: list[Item],
    pool: list[Item],
    device: str,
    versions: str,
    tally: _Tally | None = None,
) -> None:
    tally = tally or _Tally()
    params = replace(task.generation, seed=cfg.seed, max_tokens=cfg.max_tokens or task.generation.max_tokens)
    clock = _EnergyClock()
    buffer: list[list[ResultRow]] = []
    t0 = time.time()
    tokens = 0

    def flush() -> None:
        joules = clock.lap()
        if joules is not None and buffer:
            weights = [max(1, g[0].prompt_tokens + g[0].completion_tokens) for g in buffer]
            for g, w in zip(buffer, weights, strict=True):
                for row in g:
                    row.joules = joules * w / sum(weights)
        tally.rows += table.append([row for g in buffer for row in g])
        tally.items += len(buffer)
        buffer.clear()

    def one(item: Item):
        msgs = task.messages(item, task.fewshot_items(item, pool))
        try:
            return item, msgs, _answer(engine, task, msgs, params)
        except EngineError as exc:  # e.g. a prompt longer than n_ctx: recorded as a failed item, not a lost run
            if not engine_alive(engine):
                raise
            return item, msgs, (f"{ERROR_PREFIX} {exc}", 0, 0, 0.0)

    def take(fut: Future) -> None:
        nonlocal tokens
        item, msgs, answer = fut.result()
        tokens += answer[2]
        buffer.append(_rows(model, sha, engine.backend, task, item, msgs, answer, run_id, cfg.seed, device, versions))
        bar.update(1)
        bar.set_postfix(tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")

    bar = tqdm(total=len(items), desc=f"{model.agent} {task.name}", unit="item", disable=not cfg.progress)
    # bounded submission: at most two items per slot are queued, so an interrupt has little to drop and the wait
    # below returns to Python (where Ctrl-C is raised) every time an item finishes
    pool_exec = ThreadPoolExecutor(max_workers=engine.parallel)
    window = 2 * engine.parallel
    queue = iter(items)
    pending: set[Future] = set()
    with EnergyMeter() as meter:
        try:
            while True:
                pending.update(pool_exec.submit(one, it) for it in itertools.islice(queue, window - len(pending)))
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    pending.discard(fut)
                    take(fut)
                if len(buffer) >= cfg.flush_every:
                    flush()
        except (QuantswarmError, KeyboardInterrupt):
            # never join the workers here: they may be inside a long HTTP call; the caller closes the engine,
            # which makes those calls fail at once
            pool_exec.shutdown(wait=False, cancel_futures=True)
            for fut in pending:  # items that finished while we stopped are kept too
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    take(fut)
            flush()  # keep what finished, so a rerun resumes from here
            bar.close()
            raise
        pool_exec.shutdown()
        flush()
    bar.close()
    block = {
        "run_id": run_id,
        "agent": model.agent,
        "quant": model.quant,
        "reference": model.reference,
        "bits_per_weight": round(inspect_gguf(model.path).bits_per_weight, 3),
        "task": task.name,
        "items": len(items),
        "wall_s": round(time.time() - t0, 3),
        "completion_tokens": tokens,
        "max_tokens": None if task.method == "logprob" else params.max_tokens,  # the cap the report's truncated uses
        "backend": engine.backend,
        "parallel": engine.parallel,
        "device": device,
        "joules": meter.joules,
        "peak_vram_mib": meter.peak_vram_mib,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(Path(cfg.results) / "blocks.jsonl", "a") as f:
        f.write(json.dumps(block) + "\n")
