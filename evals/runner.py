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
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from evals.eval_config import EvalConfig
from evals.ladder import read_ladder
from evals.task import Task, load_task
from quantswarm.energy import EnergyMeter, device_label, free_vram_mib, sample
from quantswarm.engine import Engine, best_choice, open_engine
from quantswarm.engine.base import GenerationParams
from quantswarm.engine.replicas import auto_replicas, replica_mib
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


def model_identity(path: str, lora: str | None = None) -> str:
    """The ``model_sha`` of rows: the GGUF's sha256 prefix, plus ``+`` and the LoRA's when one is applied."""
    sha = sha256_file(path)
    return f"{sha}+{sha256_file(lora, 8)}" if lora else sha


def engine_alive(engine: Engine) -> bool:
    """False when a llama-server backend's process has died (then the run stops and can be resumed)."""
    if hasattr(engine, "alive"):
        return engine.alive()
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


@dataclass
class Answer:
    """One model answer to one item, as the results rows record it."""

    output: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str = ""
    choice_logprobs: dict[str, float] | None = None


def _answer(engine: Engine, task: Task, messages: list[dict], params: GenerationParams) -> Answer:
    """The engine's answer to one item: a generation, or the choices' next-token log-probabilities."""
    if task.method == "logprob":
        t0 = time.perf_counter()
        lp = engine.choice_logprobs(messages, task.choices)
        latency = (time.perf_counter() - t0) * 1000
        rounded = {k: round(v, 4) for k, v in lp.items() if not math.isinf(v)}
        return Answer(best_choice(lp), 0, 1, latency, "logprob", rounded)
    c = engine.chat(messages, params)
    return Answer(c.text, c.prompt_tokens, c.completion_tokens, c.latency_ms, c.finish_reason)


@dataclass
class RowContext:
    """What every row of one block shares: model, task, decoding settings and provenance."""

    model: ModelSpec
    sha: str
    backend: str
    task: Task
    run_id: str
    params: GenerationParams
    n_ctx: int
    data_source: str
    device: str
    versions: str
    allow_code_execution: bool = False


def _rows(ctx: RowContext, item: Item, messages, answer: Answer, seed: int) -> list[ResultRow]:
    error = answer.finish_reason == "error"  # scored as an empty answer: every filter reads nothing
    scored = ctx.task.score("" if error else answer.output, item, allow_code_execution=ctx.allow_code_execution)
    prompt = json.dumps(messages)
    return [
        ResultRow(
            run_id=ctx.run_id,
            agent=ctx.model.agent,
            model_file=Path(ctx.model.path).name,
            model_sha=ctx.sha,
            quant=ctx.model.quant,
            reference=ctx.model.reference,
            backend=ctx.backend,
            task=ctx.task.name,
            task_version=ctx.task.version,
            dataset=ctx.task.dataset,
            split=item.split,
            item_id=item.item_id,
            subject=item.subject,
            filter=r.filter,
            primary=r.primary,
            prompt_hash=prompt_hash(prompt),
            prompt=prompt,
            output=answer.output,
            extracted=r.extracted,
            gold=item.gold,
            correct=r.correct and not error,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            latency_ms=answer.latency_ms,
            seed=seed,
            temperature=ctx.params.temperature,
            max_tokens=ctx.params.max_tokens,
            n_ctx=ctx.n_ctx,
            finish_reason=answer.finish_reason,
            choice_logprobs=answer.choice_logprobs,
            data_source=ctx.data_source,
            device=ctx.device,
            versions=ctx.versions,
            source="eval",
        )
        for r in scored
    ]


def block_params(cfg: EvalConfig, task: Task) -> GenerationParams:
    """The task's decoding settings with the config's overrides (seed, max_tokens, temperature, top_p)."""
    g = task.generation
    return replace(g, seed=cfg.seed, max_tokens=cfg.max_tokens or g.max_tokens,
                   temperature=g.temperature if cfg.temperature is None else cfg.temperature,
                   top_p=g.top_p if cfg.top_p is None else cfg.top_p)


CHARS_PER_TOKEN = 3.0  # measured 3.6-4.8 characters per token on GSM8K/MMLU/HumanEval prompts (Qwen2.5's tokenizer)
TEMPLATE_TOKENS_PER_MESSAGE = 8  # role markers and separators of a chat template


def context_needed(tasks: list[Task], data: dict[str, tuple], cfg: EvalConfig) -> tuple[int, str]:
    """Context tokens per slot that fit the longest prompt of the items to answer plus the task's max_tokens,
    estimated from characters (``CHARS_PER_TOKEN``, a floor, so the estimate errs long) and rounded up to 256;
    returns (tokens, the task that needs them)."""
    need, which = 0, ""
    for t in tasks:
        items, pool = data[t.name][0], data[t.name][1]
        longest = max((sum(len(m["content"]) for m in msgs) / CHARS_PER_TOKEN + TEMPLATE_TOKENS_PER_MESSAGE * len(msgs)
                       for msgs in (t.messages(it, t.fewshot_items(it, pool)) for it in items)), default=0)
        tokens = math.ceil((longest + block_params(cfg, t).max_tokens) / 256) * 256
        if tokens > need:
            need, which = tokens, t.name
    return need, which


def replicas_for(cfg: EvalConfig, model: ModelSpec, n_ctx: int) -> int:
    """``cfg.replicas``, with ``auto`` resolved for this model (``engine.replicas.auto_replicas``; said on stderr)."""
    if cfg.replicas != "auto":
        return int(cfg.replicas)
    if cfg.backend == "llama-cpp-python":
        print(f"note: {model.agent}: replicas auto = 1 (in-process backend)", file=sys.stderr)
        return 1
    info = inspect_gguf(model.path)
    free = free_vram_mib() if cfg.n_gpu_layers != 0 else []
    per = replica_mib(Path(model.path).stat().st_size, info.kv_bytes_per_token(), n_ctx, cfg.parallel, info.n_vocab)
    n, why = auto_replicas(free, per, os.cpu_count() or 1, cfg.concurrent_models)
    print(f"note: {model.agent}: replicas auto = {n} ({why})", file=sys.stderr)
    return n


def run_eval(cfg: EvalConfig) -> Path:
    """Evaluate every model on every task; returns the results table directory.

    Each item is answered ``cfg.repeats`` times (seeds ``seed .. seed+repeats-1``). An item whose answer is
    already in the table with the same identity (agent, model sha, task version, seed, temperature, max_tokens,
    n_ctx) is skipped; an answer that errored is retried. ``cfg.n_ctx`` per slot is raised, with a note on stderr,
    when the longest prompt plus max_tokens would not fit (``context_needed``): a 5-shot MMLU prompt reaches ~3k tokens.
    """
    from quantswarm.loaders import resolve_source

    table = ResultsTable(cfg.results)
    run_id = cfg.run_id or new_run_id("eval")
    models = expand_models(cfg.models)
    tasks = [load_task(t) for t in cfg.tasks]
    for t in tasks:
        if t.method == "code" and not cfg.allow_code_execution:
            raise ConfigError(f"task {t.name} runs model-written code against its tests; allow it explicitly "
                              "with --allow-code-execution (it runs in a sandboxed subprocess)")
    device = device_label()
    data = {}
    for t in tasks:
        items = t.load_items(cfg.limit_for(t.name), cfg.seed, cfg.data_dir, cfg.source, split=cfg.split)
        where = str(resolve_source(t.dataset, cfg.split or t.split, cfg.data_dir, cfg.source))
        data[t.name] = (items, t.load_fewshot_pool(cfg.data_dir, cfg.source), where)
    need, which = context_needed(tasks, data, cfg)
    n_ctx = max(cfg.n_ctx, need)
    if n_ctx > cfg.n_ctx:
        print(f"note: n_ctx per slot raised from {cfg.n_ctx} to {n_ctx}: the longest {which} prompt plus max_tokens "
              f"needs about {need} tokens", file=sys.stderr)
    done = table.done_keys()
    tally = _Tally()
    seeds = [cfg.seed + r for r in range(cfg.repeats)]
    unknown = set(cfg.loras) - {m.agent for m in models}
    if unknown:
        raise ConfigError(f"loras names agents {sorted(unknown)} that are not among {[m.agent for m in models]}")
    versions = versions_json({"task_versions": ",".join(f"{t.name}:{t.version}" for t in tasks),
                              **({"sampling": "llama-server --backend-sampling"} if cfg.backend_sampling else {})})
    live: list[Engine] = []  # engines open now: an interrupt of concurrent models closes them all

    def one_model(model: ModelSpec) -> None:
        lora = cfg.loras.get(model.agent)
        sha = model_identity(model.path, lora)
        todo = {}
        for t in tasks:
            p = block_params(cfg, t)
            todo[t.name] = [(it, s) for s in seeds for it in data[t.name][0]
                            if (model.agent, sha, t.name, t.version, it.item_id, s, p.temperature, p.max_tokens,
                                n_ctx) not in done]
        if not any(todo.values()):
            if cfg.progress:
                print(f"{model.agent}: all items already in {cfg.results} with these settings, skipped")
            return
        engine = open_engine(
            model.path,
            backend="llama-server" if cfg.backend_sampling else cfg.backend,
            n_ctx=n_ctx,
            parallel=cfg.parallel,
            n_gpu_layers=cfg.n_gpu_layers,
            n_threads=cfg.n_threads,
            seed=cfg.seed,
            **({"replicas": replicas, "gpus": tuple(cfg.gpus)}
               if (replicas := replicas_for(cfg, model, n_ctx)) > 1 or cfg.gpus else {}),
            **({"lora_path": lora} if lora else {}),
            **({"extra_args": ("--backend-sampling",)} if cfg.backend_sampling else {}),
        )
        live.append(engine)
        try:
            for task in tasks:
                if todo[task.name]:
                    ctx = RowContext(model, sha, engine.backend, task, run_id, block_params(cfg, task), n_ctx,
                                     data[task.name][2], device, versions, cfg.allow_code_execution)
                    _run_block(cfg, table, ctx, engine, todo[task.name], data[task.name][1], tally,
                               energy=cfg.concurrent_models == 1 and not cfg.shared_device)
        finally:
            engine.close()  # stops llama-server, so requests still in flight fail at once instead of finishing
            live.remove(engine)

    if cfg.shared_device:
        print("note: the device is shared with other work: energy per row and per block is not recorded",
              file=sys.stderr)
    elif cfg.concurrent_models > 1 and len(models) > 1:
        print(f"note: {min(cfg.concurrent_models, len(models))} models at once on one device: energy per row and "
              "per block is not recorded (the GPU's energy counter cannot tell the models apart)", file=sys.stderr)
    try:
        if cfg.concurrent_models == 1 or len(models) == 1:
            for model in models:
                one_model(model)
        else:
            _run_concurrently(one_model, models, cfg.concurrent_models, live)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into one by the CLI
        print(f"interrupted: {tally.rows} rows ({tally.items} items) saved to {cfg.results} by this run; "
              "rerun the same command to resume", file=sys.stderr)
        raise
    return Path(cfg.results)


def _run_concurrently(one_model, models: list[ModelSpec], workers: int, live: list[Engine]) -> None:
    """``one_model`` for every model, ``workers`` at a time; the first failure (or Ctrl-C) closes every open
    engine, so the other models' requests fail at once, keeps what they saved, and is raised."""
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = [pool.submit(one_model, m) for m in models]
    try:
        for fut in as_completed(futures):
            fut.result()
    except BaseException:
        for f in futures:
            f.cancel()
        with ThreadPoolExecutor(max(1, len(live))) as closer:  # at once: a busy llama-server takes seconds to stop
            list(closer.map(lambda e: e.close(), list(live)))
        pool.shutdown(wait=True)  # the workers flush what finished, then end on their closed engines
        raise
    pool.shutdown()


@dataclass
class _Tally:
    """Rows and items this run has written to the results table (written from several threads)."""

    rows: int = 0
    items: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, rows: int, items: int) -> None:
        with self.lock:
            self.rows += rows
            self.items += items


def _run_block(
    cfg: EvalConfig,
    table: ResultsTable,
    ctx: RowContext,
    engine: Engine,
    items: list[tuple[Item, int]],
    pool: list[Item],
    tally: _Tally | None = None,
    energy: bool = True,
) -> None:
    """Answer ``items`` with ``engine`` and append their rows; ``energy`` False leaves joules empty (other models
    share the device's energy counter)."""
    task, model = ctx.task, ctx.model
    tally = tally or _Tally()
    clock = _EnergyClock() if energy else None
    buffer: list[list[ResultRow]] = []
    t0 = time.time()
    tokens = 0

    def flush() -> None:
        joules = clock.lap() if clock else None
        if joules is not None and buffer:
            weights = [max(1, g[0].prompt_tokens + g[0].completion_tokens) for g in buffer if g]
            for g, w in zip([g for g in buffer if g], weights, strict=True):
                for row in g:
                    row.joules = joules * w / sum(weights)
        tally.add(table.append([row for g in buffer for row in g]), len(buffer))
        buffer.clear()

    def one(item: Item, seed: int):
        msgs = task.messages(item, task.fewshot_items(item, pool))
        try:
            answer = _answer(engine, task, msgs, replace(ctx.params, seed=seed))
        except EngineError as exc:  # e.g. a prompt longer than n_ctx: an error row, retried by a rerun
            if not engine_alive(engine):
                raise
            answer = Answer(f"{ERROR_PREFIX} {exc}", finish_reason="error")
        return answer, _rows(ctx, item, msgs, answer, seed)  # scored here: code tasks run in these threads

    errors = 0

    def take(fut: Future) -> None:
        nonlocal tokens, errors
        answer, rows = fut.result()
        tokens += answer.completion_tokens
        errors += answer.finish_reason == "error"
        buffer.append(rows)
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
                pending.update(pool_exec.submit(one, it, s) for it, s in itertools.islice(queue, window - len(pending)))
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
    if errors:
        print(f"{model.agent} {task.name}: {errors} of {len(items)} answers errored (recorded as errors, retried "
              "by a rerun)")
    info = inspect_gguf(model.path)
    block = {
        "run_id": ctx.run_id,
        "agent": model.agent,
        "quant": model.quant,
        "reference": model.reference,
        "bits_per_weight": round(info.bits_per_weight, 3),
        "tensor_types": info.tensor_types_label(),
        "k_quant_fell_back": info.k_quant_fell_back,
        "task": task.name,
        "items": len(items),
        "errors": errors,
        "wall_s": round(time.time() - t0, 3),
        "completion_tokens": tokens,
        "backend": engine.backend,
        "parallel": engine.parallel,
        "replicas": getattr(engine, "replicas", 1),
        "gpus": list(getattr(engine, "gpus", ())),
        "backend_sampling": cfg.backend_sampling,
        "temperature": ctx.params.temperature,
        "max_tokens": ctx.params.max_tokens,
        "device": ctx.device,
        "joules": meter.joules if energy else None,
        "peak_vram_mib": meter.peak_vram_mib,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(Path(cfg.results) / "blocks.jsonl", "a") as f:
        f.write(json.dumps(block) + "\n")
